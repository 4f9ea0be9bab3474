// The IMAP client: runs the I/O-free protocol core (imap/proto) over a
// net::stream. One client = one connection = one selected mailbox. All methods
// are called from one coroutine at a time, except interrupt_idle(), which may be
// called from anywhere on the same executor while idle() runs.
#pragma once

#include "common/secret.hpp"
#include "config/model.hpp"
#include "imap/proto/fetch_summary.hpp"
#include "imap/proto/session.hpp"
#include "net/stream.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mailroom::imap {

// Errors of this layer. Retriable ones are cured by a new connection;
// permanent ones need the operator (or the server) to change something.
enum class client_errc {
  auth_failed = 1,    // permanent: LOGIN answered NO
  command_failed,     // retriable: a command answered NO/BAD (text in last_error())
  server_bye,         // retriable: the server sent BYE or closed the connection
  starttls_refused,   // permanent: start_tls set but the server lacks STARTTLS
  plaintext_refused,  // permanent: LOGINDISABLED on an unencrypted connection
  mailbox_missing,    // permanent: SELECT answered NO
  login_deferred,     // retriable: LOGIN answered NO for a passing reason (RFC 5530
                      // UNAVAILABLE, LIMIT, INUSE, SERVERBUG; Gmail's session limit)
  mechanism_missing,  // permanent: the server does not offer AUTH=XOAUTH2 / OAUTHBEARER
};
const boost::system::error_category& client_category();
inline boost::system::error_code make_error_code(client_errc e) {
  return {static_cast<int>(e), client_category()};
}
// True when reconnecting cannot help without an operator's change.
bool is_permanent(const boost::system::error_code& ec);

// Where the OAuth2 access token of AUTHENTICATE XOAUTH2 / OAUTHBEARER comes
// from (auth::oauth2_token_source). Tokens are numbered so that a token the
// server refused is renewed once, however many sessions saw it refused.
class token_source {
 public:
  struct token {
    secret value;
    std::uint64_t generation = 0;
  };
  // While get() waits, `cancel` ends the wait (get() then returns
  // operation_aborted); empty otherwise. The caller keeps it alive.
  struct wait_handle {
    std::function<void()> cancel;
  };
  virtual ~token_source() = default;
  // A token that is still valid. Errors: auth::token_errc (refused is
  // permanent, unavailable retriable), with a reason in `error_detail` that
  // never contains a token or a secret.
  virtual boost::asio::awaitable<boost::system::result<token>> get(
      std::string& error_detail, std::shared_ptr<wait_handle> wait) = 0;
  // The server refused this token: the next get() fetches a new one (unless
  // a newer token exists already).
  virtual void reject(std::uint64_t generation) = 0;
  // For /metrics: tokens obtained, and failed requests.
  virtual std::uint64_t renewals() const { return 0; }
  virtual std::uint64_t failures() const { return 0; }
};

struct client_options {
  std::chrono::seconds connect_timeout{30};   // TCP connect + TLS handshake + greeting
  std::chrono::seconds command_timeout{120};  // silence allowed while a command runs
  std::chrono::seconds logout_timeout{5};
  limits parser_limits;
  std::size_t uid_set_max_chars = 1000;  // keeps command lines short (RFC 7162 §4: 8000 octets)
  // Required with auth_method xoauth2 / oauthbearer.
  std::shared_ptr<token_source> tokens;
};

// What UID FETCH (UID RFC822.SIZE FLAGS) tells about a message before its body
// is fetched: enough to leave out oversize messages without reading them.
struct message_meta {
  std::uint32_t uid = 0;
  std::uint64_t size = 0;
  std::vector<std::string> flags;
  std::int64_t internal_date = 0;  // with_date: seconds since the epoch; 0: unknown
};

// Called with each message fetched by uid_fetch_bodies(), in server order.
using body_handler = std::function<void(std::uint32_t uid, std::string&& body)>;

enum class idle_end { new_mail, timeout, interrupted };

// What uid_move() did.
enum class move_outcome {
  moved,   // gone from the folder: UID MOVE, or UID COPY + \Deleted + UID EXPUNGE
  copied,  // copied, and flagged \Deleted (and the given mark) in the folder: without
           // MOVE and UIDPLUS only a plain EXPUNGE could remove it, which would also
           // remove other clients' \Deleted messages
};

class client {
 public:
  client(boost::asio::any_io_executor ex, const config::mailbox& mb, client_options opts = {});
  ~client();

  // TCP, implicit TLS or STARTTLS, greeting, CAPABILITY, then LOGIN or (with
  // auth_method xoauth2 / oauthbearer) AUTHENTICATE with an OAuth2 token.
  // `on_step` is told "Starting TLS session" / "Logging into mailbox" for the log.
  boost::asio::awaitable<boost::system::error_code> connect_and_login(
      const std::function<void(const char*)>& on_step);

  // SELECT; afterwards uidvalidity() is known.
  boost::asio::awaitable<boost::system::error_code> select(const std::string& folder);

  boost::asio::awaitable<boost::system::result<std::vector<std::uint32_t>>> uid_search(
      const std::string& criteria);

  // UID FETCH <uids> (UID BODY.PEEK[]): never sets \Seen (RFC 3501 §6.4.5).
  boost::asio::awaitable<boost::system::error_code> uid_fetch_bodies(
      const std::vector<std::uint32_t>& uids, const body_handler& on_body);

  // UID FETCH <uids> (UID RFC822.SIZE FLAGS [INTERNALDATE]), in server order.
  // Messages expunged meanwhile are simply missing.
  boost::asio::awaitable<boost::system::result<std::vector<message_meta>>> uid_fetch_meta(
      const std::vector<std::uint32_t>& uids, bool with_date = false);

  // Moves messages to `folder`: UID MOVE with the MOVE extension (RFC 6851),
  // otherwise UID COPY, then \Deleted and UID EXPUNGE of them (UIDPLUS, RFC
  // 4315 §2.1). Without either, UID COPY, then \Deleted plus `mark_copied`
  // (e.g. a keyword that keeps them out of later passes): move_outcome::copied.
  boost::asio::awaitable<boost::system::result<move_outcome>> uid_move(
      const std::vector<std::uint32_t>& uids, const std::string& folder,
      const std::string& mark_copied);

  // CREATE <folder> (RFC 3501 §6.3.3). A folder that exists already is a NO
  // ([ALREADYEXISTS], RFC 5530): client_errc::command_failed, like any refusal.
  boost::asio::awaitable<boost::system::error_code> create(const std::string& folder);

  // UID STORE <uids> +FLAGS.SILENT (<flags>).
  boost::asio::awaitable<boost::system::error_code> uid_store_add_flags(
      const std::vector<std::uint32_t>& uids, const std::string& flags);

  // UID EXPUNGE <uids> with UIDPLUS (RFC 4315 §2.1: only our messages go),
  // otherwise EXPUNGE.
  boost::asio::awaitable<boost::system::error_code> expunge(const std::vector<std::uint32_t>& uids);

  // IDLE (RFC 2177) until an EXISTS arrives, `timeout` passes, or
  // interrupt_idle() is called; then DONE and wait for the tagged OK. With
  // `wake_on_new_mail` false, an EXISTS does not end it (it is remembered for
  // take_new_mail_hint()): for waiting out a backoff while the session stays
  // alive.
  boost::asio::awaitable<boost::system::result<idle_end>> idle(std::chrono::milliseconds timeout,
                                                               bool wake_on_new_mail = true);
  void interrupt_idle();

  // LOGOUT with a short timeout, then close. Best effort.
  boost::asio::awaitable<void> logout();
  void close();

  // Bytes of the socket read buffer now held (for tests and memory figures).
  std::size_t read_buffer_size() const { return read_buffer_.size(); }
  bool has_capability(std::string_view cap) const;
  std::uint32_t uidvalidity() const { return uidvalidity_; }
  // True when an EXISTS arrived outside IDLE since the last call.
  bool take_new_mail_hint();
  // Human detail about the last failure (server text, TLS reason); no secrets.
  const std::string& last_error() const { return last_error_; }
  // Whether the TLS handshake of this session resumed an earlier session.
  bool tls_resumed() const { return stream_.tls_resumed(); }
  // notAfter of the server's certificate (Unix seconds); 0 without TLS.
  std::int64_t certificate_expiry() const { return stream_.certificate_expiry(); }

  // Operator commands (src/ops) -------------------------------------------
  // Defined in client_ops.cpp. Only the operator CLI calls these.

  // EXAMINE (RFC 3501 §6.3.2): SELECT read-only, so listing commands cannot
  // change a flag even by accident. Afterwards uidvalidity() is known.
  boost::asio::awaitable<boost::system::error_code> examine(const std::string& folder);

  // UID FETCH <uids> (UID FLAGS INTERNALDATE RFC822.SIZE <section>), with
  // `section` e.g. "BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT)]" or
  // "BODY.PEEK[]": PEEK never sets \Seen (RFC 3501 §6.4.5). The UID sets are
  // pipelined: all commands are written before the first answer is read.
  using summary_handler = std::function<void(message_summary&&)>;
  boost::asio::awaitable<boost::system::error_code> uid_fetch_summaries(
      const std::vector<std::uint32_t>& uids, const std::string& section,
      const summary_handler& on_message);

  // UID STORE <uids> -FLAGS.SILENT (<flags>), e.g. to make a message unseen.
  boost::asio::awaitable<boost::system::error_code> uid_store_remove_flags(
      const std::vector<std::uint32_t>& uids, const std::string& flags);
  // End of operator commands ------------------------------------------------

 private:
  struct tagged_outcome {
    status st = status::bad;
    std::optional<response_code> code;
    std::string text;
  };
  using untagged_handler = std::function<void(response&)>;

  boost::asio::awaitable<boost::system::error_code> flush();
  boost::asio::awaitable<boost::system::result<session::event>> next_event(
      std::chrono::milliseconds timeout);
  void send_done();
  // g++ 12 mishandles class-type temporaries inside co_await expressions
  // (they can be destroyed twice): callers pass named objects only.
  boost::asio::awaitable<boost::system::result<tagged_outcome>> run(const command_builder& cmd);
  boost::asio::awaitable<boost::system::result<tagged_outcome>> run(
      const command_builder& cmd, const untagged_handler& on_untagged);
  void note_untagged(const response& r);
  // SELECT or EXAMINE (same answer, RFC 3501 §6.3.2).
  boost::asio::awaitable<boost::system::error_code> open_folder(const std::string& verb,
                                                                const std::string& folder);
  // UID STORE <uids> <op> (<flags>), op = "+FLAGS.SILENT" or "-FLAGS.SILENT".
  boost::asio::awaitable<boost::system::error_code> uid_store(
      const std::vector<std::uint32_t>& uids, const std::string& op, const std::string& flags);
  boost::system::error_code fail(boost::system::error_code ec, std::string detail);
  // AUTHENTICATE XOAUTH2 / OAUTHBEARER (SASL-IR when offered, RFC 4959); a
  // refused token is renewed and tried once more.
  boost::asio::awaitable<boost::system::error_code> authenticate();

  boost::asio::any_io_executor executor_;
  const config::mailbox& mb_;
  client_options opts_;
  net::stream stream_;
  session session_;
  std::vector<std::string> capabilities_;
  std::uint32_t uidvalidity_ = 0;
  bool new_mail_hint_ = false;
  std::optional<std::uint32_t> exists_;  // messages in the selected folder, as last announced
  bool bye_seen_ = false;                // last_error_ holds the server's BYE text
  bool idling_ = false;
  bool done_sent_ = false;
  bool interrupted_ = false;
  bool polling_ = false;  // waiting out `timeout` on a server without IDLE
  bool writing_ = false;
  // Callbacks scheduled on the executor check this before touching the client.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::string idle_tag_;
  std::shared_ptr<boost::asio::steady_timer> idle_timer_;
  // Ends a wait for an OAuth2 token when the session is closed (shutdown).
  std::shared_ptr<token_source::wait_handle> token_wait_ =
      std::make_shared<token_source::wait_handle>();
  std::string last_error_;
  // Starts small (an idle session needs little), doubles while reads fill it,
  // back to the minimum before each IDLE.
  static constexpr std::size_t min_read_buffer = 4 * 1024;
  static constexpr std::size_t max_read_buffer = 256 * 1024;
  std::vector<char> read_buffer_;
};

}  // namespace mailroom::imap

template <>
struct boost::system::is_error_code_enum<mailroom::imap::client_errc> : std::true_type {};
