#include "imap/client.hpp"

#include "auth/sasl.hpp"
#include "auth/token_endpoint.hpp"
#include "imap/proto/command_writer.hpp"
#include "imap/proto/decode.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cctype>

namespace mailroom::imap {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

class client_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.imap.client"; }
  std::string message(int ev) const override {
    switch (static_cast<client_errc>(ev)) {
      case client_errc::auth_failed:
        return "login rejected";
      case client_errc::command_failed:
        return "command failed";
      case client_errc::server_bye:
        return "server closed the session";
      case client_errc::starttls_refused:
        return "server does not offer STARTTLS";
      case client_errc::plaintext_refused:
        return "server refuses LOGIN without TLS";
      case client_errc::mailbox_missing:
        return "mailbox cannot be selected";
      case client_errc::login_deferred:
        return "login deferred by the server";
      case client_errc::mechanism_missing:
        return "server does not offer the authentication mechanism";
    }
    return "unknown IMAP client error";
  }
};

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

const char* status_name(status s) {
  switch (s) {
    case status::ok:
      return "OK";
    case status::no:
      return "NO";
    case status::bad:
      return "BAD";
    case status::bye:
      return "BYE";
    case status::preauth:
      return "PREAUTH";
  }
  return "?";
}

// A NO to LOGIN that says the refusal will pass: RFC 5530 §3 codes for a
// temporary failure, a limit (of sessions, say) or an operation in the way,
// and Gmail's "[ALERT] Too many simultaneous connections." (its limit of 15
// sessions per account). Any other NO means the credentials were refused.
bool login_refusal_passes(const std::optional<response_code>& code, const std::string& text) {
  if (code) {
    const std::string name = upper(code->name);
    if (name == "UNAVAILABLE" || name == "LIMIT" || name == "INUSE" || name == "SERVERBUG")
      return true;
  }
  return upper(text).find("TOO MANY SIMULTANEOUS CONNECTIONS") != std::string::npos;
}

}  // namespace

const boost::system::error_category& client_category() {
  static client_category_impl c;
  return c;
}

bool is_permanent(const error_code& ec) {
  return ec == client_errc::auth_failed || ec == client_errc::starttls_refused ||
         ec == client_errc::plaintext_refused || ec == client_errc::mailbox_missing ||
         ec == client_errc::mechanism_missing || ec == net::errc::certificate_rejected ||
         ec == auth::token_errc::refused;
}

client::client(asio::any_io_executor ex, const config::mailbox& mb, client_options opts)
    : executor_(ex),
      mb_(mb),
      opts_(opts),
      stream_(ex),
      session_(opts.parser_limits),
      read_buffer_(min_read_buffer) {}

client::~client() {
  close();
}

error_code client::fail(error_code ec, std::string detail) {
  last_error_ = std::move(detail);
  return ec;
}

asio::awaitable<error_code> client::flush() {
  // One write at a time: a DONE sent by interrupt_idle() may race with a flush
  // from the reading coroutine. Whoever writes drains everything queued.
  if (writing_) co_return error_code{};
  writing_ = true;
  error_code ec;
  for (std::string out = session_.take_output(); !out.empty(); out = session_.take_output()) {
    ec = co_await stream_.write_all(asio::buffer(out), opts_.command_timeout);
    if (ec) break;
  }
  writing_ = false;
  if (ec) last_error_ = stream_.last_error();
  co_return ec;
}

asio::awaitable<boost::system::result<session::event>> client::next_event(
    std::chrono::milliseconds timeout) {
  for (;;) {
    auto ev = session_.next_event();
    if (!ev) {
      last_error_ = "protocol error: " + ev.error().message();
      co_return ev.error();
    }
    if (*ev) co_return std::move(**ev);
    // A "+" may have released a held literal segment (RFC 3501 §7.5).
    if (auto ec = co_await flush()) co_return ec;
    error_code ec;
    const std::size_t n = co_await stream_.read_some(asio::buffer(read_buffer_), timeout, ec);
    if (ec) {
      // The connection closing after a BYE: the BYE says why.
      if (ec == net::errc::closed && bye_seen_) co_return make_error_code(client_errc::server_bye);
      last_error_ = stream_.last_error();
      if (ec == net::errc::closed) co_return make_error_code(client_errc::server_bye);
      co_return ec;
    }
    session_.receive(std::string_view(read_buffer_.data(), n));
    // A read that filled the buffer: more is coming (a large FETCH), so read
    // in bigger pieces; fewer system calls for megabyte literals.
    if (n == read_buffer_.size() && read_buffer_.size() < max_read_buffer)
      read_buffer_.resize(read_buffer_.size() * 2);
  }
}

void client::note_untagged(const response& r) {
  if (r.keyword == "EXISTS" && r.number) {
    // The number of messages (RFC 3501 §7.3.1): new mail makes it grow. A
    // server may repeat it unchanged (Courier sends "* 0 EXISTS" after an
    // EXPUNGE), which is no new mail.
    if (!exists_ || *r.number > *exists_) new_mail_hint_ = true;
    exists_ = *r.number;
  } else if (r.keyword == "EXISTS") {
    new_mail_hint_ = true;
  }
  if (r.keyword == "EXPUNGE" && exists_ && *exists_ > 0) --*exists_;
  if (r.keyword == "CAPABILITY") capabilities_ = decode_capabilities(r);
  if (r.code && r.code->name == "CAPABILITY") capabilities_ = decode_capabilities(r);
  if (auto v = decode_uidvalidity(r)) uidvalidity_ = *v;
  if (r.st == status::bye) {
    // RFC 3501 §7.1.5; an [ALERT] in it must reach the operator (§7.1).
    last_error_ =
        "server said BYE: " +
        (r.code ? "[" + r.code->name + (r.code->args.empty() ? "" : " " + r.code->args) + "] "
                : std::string()) +
        r.text;
    bye_seen_ = true;
  }
}

asio::awaitable<boost::system::result<client::tagged_outcome>> client::run(
    const command_builder& cmd) {
  const untagged_handler none;
  co_return co_await run(cmd, none);
}

asio::awaitable<boost::system::result<client::tagged_outcome>> client::run(
    const command_builder& cmd, const untagged_handler& on_untagged) {
  const std::string tag = session_.submit(cmd);
  if (auto ec = co_await flush()) co_return ec;
  for (;;) {
    auto ev = co_await next_event(opts_.command_timeout);
    if (!ev) co_return ev.error();
    switch (ev->k) {
      case session::event::kind::untagged:
        note_untagged(ev->resp);
        if (on_untagged) on_untagged(ev->resp);
        break;
      case session::event::kind::continuation:
        break;  // not expected outside literals/IDLE; ignore
      case session::event::kind::tagged:
        if (ev->resp.tag != tag) break;
        if (ev->resp.code && ev->resp.code->name == "CAPABILITY")
          capabilities_ = decode_capabilities(ev->resp);
        co_return tagged_outcome{ev->resp.st.value_or(status::bad), ev->resp.code, ev->resp.text};
    }
  }
}

bool client::has_capability(std::string_view cap) const {
  const std::string want = upper(std::string(cap));
  return std::find(capabilities_.begin(), capabilities_.end(), want) != capabilities_.end();
}

bool client::take_new_mail_hint() {
  return std::exchange(new_mail_hint_, false);
}

asio::awaitable<error_code> client::connect_and_login(
    const std::function<void(const char*)>& on_step) {
  const auto connect_timeout = std::chrono::duration_cast<net::duration>(opts_.connect_timeout);
  if (auto ec = co_await stream_.connect(mb_.host, mb_.port, connect_timeout))
    co_return fail(ec, stream_.last_error());

  on_step("Starting TLS session");
  if (mb_.ssl.enabled) {
    error_code ec;
    auto ctx = net::make_client_tls_context(mb_.ssl, ec);
    if (!ctx) co_return fail(net::errc::certificate_rejected, "cannot load CA: " + ec.message());
    if (auto e = co_await stream_.start_tls(ctx, mb_.host, connect_timeout))
      co_return fail(e, stream_.last_error());
  }

  // Greeting (RFC 3501 §7.1): OK, PREAUTH or BYE.
  auto greeting = co_await next_event(opts_.connect_timeout);
  if (!greeting) co_return greeting.error();
  if (greeting->k != session::event::kind::untagged || !greeting->resp.st ||
      *greeting->resp.st == status::bye) {
    co_return fail(client_errc::server_bye, "unexpected greeting: " + greeting->resp.text);
  }
  note_untagged(greeting->resp);

  if (!mb_.ssl.enabled && mb_.start_tls) {
    if (capabilities_.empty()) {
      const command_builder capability_cmd("CAPABILITY");
      auto r = co_await run(capability_cmd);
      if (!r) co_return r.error();
    }
    if (!has_capability("STARTTLS"))
      co_return fail(client_errc::starttls_refused, "server does not announce STARTTLS");
    const command_builder starttls_cmd("STARTTLS");
    auto r = co_await run(starttls_cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok)
      co_return fail(client_errc::starttls_refused, "STARTTLS refused: " + r->text);
    // Anything the server sent after its OK and before the handshake would be
    // plaintext injected into the TLS session (RFC 3501 §6.2.1, CVE-2011-0411).
    if (session_.buffered() != 0)
      co_return fail(client_errc::server_bye, "data after STARTTLS response; dropped");
    error_code ec;
    config::tls_options tls = mb_.ssl;
    tls.enabled = true;
    auto ctx = net::make_client_tls_context(tls, ec);
    if (!ctx) co_return fail(net::errc::certificate_rejected, "cannot load CA: " + ec.message());
    if (auto e = co_await stream_.start_tls(ctx, mb_.host, connect_timeout))
      co_return fail(e, stream_.last_error());
    capabilities_.clear();  // must be asked again after STARTTLS (RFC 3501 §6.2.1)
  }

  if (capabilities_.empty()) {
    const command_builder capability_cmd("CAPABILITY");
    auto r = co_await run(capability_cmd);
    if (!r) co_return r.error();
  }
  if (has_capability("LOGINDISABLED"))
    co_return fail(client_errc::plaintext_refused, "server announces LOGINDISABLED");
  session_.set_literal_plus(has_capability("LITERAL+"));

  if (*greeting->resp.st == status::preauth) co_return error_code{};
  // The password would cross the network in clear (RFC 3501 §11.1 asks for
  // TLS); only an explicit setting allows that, e.g. for a loopback server.
  if (!mb_.ssl.enabled && !mb_.start_tls && !mb_.allow_plaintext_login)
    co_return fail(client_errc::plaintext_refused,
                   "refusing LOGIN over an unencrypted connection (use ssl or start_tls, or set "
                   "allow_plaintext_login: true)");
  on_step("Logging into mailbox");
  if (mb_.auth != config::auth_method::login) co_return co_await authenticate();
  command_builder login("LOGIN");
  login.astring(mb_.email).astring(mb_.password.reveal());
  auto r = co_await run(login);
  if (!r) co_return r.error();
  if (r->st != status::ok)
    co_return fail(r->st == status::no && login_refusal_passes(r->code, r->text)
                       ? client_errc::login_deferred
                       : client_errc::auth_failed,
                   std::string("LOGIN ") + status_name(r->st) +
                       (r->code ? " [" + r->code->name + "]" : std::string()) + ": " + r->text);
  if (!r->code || r->code->name != "CAPABILITY") {
    // Capabilities may differ once authenticated (RFC 3501 §6.2.3).
    const command_builder capability_cmd("CAPABILITY");
    auto c = co_await run(capability_cmd);
    if (!c) co_return c.error();
  }
  session_.set_literal_plus(has_capability("LITERAL+"));
  co_return error_code{};
}

asio::awaitable<error_code> client::authenticate() {
  const bool bearer = mb_.auth == config::auth_method::oauthbearer;
  const std::string mechanism = bearer ? "OAUTHBEARER" : "XOAUTH2";
  if (!opts_.tokens) co_return fail(client_errc::auth_failed, "no OAuth2 token source");
  if (!has_capability("AUTH=" + mechanism))
    co_return fail(client_errc::mechanism_missing,
                   "the server does not offer AUTH=" + mechanism + " (auth_method)");
  const bool initial_response = has_capability("SASL-IR");
  std::string refused;  // the first refusal, for the error text
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string detail;
    // The request may take its time (up to its own timeout); close() ends
    // the wait, so that a shutdown need not wait for it.
    auto token = co_await opts_.tokens->get(detail, token_wait_);
    if (!token)
      co_return fail(token.error(), token.error() == asio::error::operation_aborted
                                        ? "waiting for an OAuth2 token: session closed"
                                        : detail);
    const std::string sasl = bearer
                                 ? auth::oauthbearer_initial_response(mb_.email, mb_.host, mb_.port,
                                                                      token->value.reveal())
                                 : auth::xoauth2_initial_response(mb_.email, token->value.reveal());
    command_builder cmd("AUTHENTICATE");
    cmd.atom(mechanism);
    if (initial_response) cmd.atom(sasl);  // RFC 4959
    const std::string tag = session_.submit(cmd);
    if (auto ec = co_await flush()) co_return ec;
    bool response_sent = initial_response;
    std::string challenge;
    std::optional<session::event> done;
    while (!done) {
      auto ev = co_await next_event(opts_.command_timeout);
      if (!ev) co_return ev.error();
      if (ev->k == session::event::kind::untagged) {
        note_untagged(ev->resp);
        continue;
      }
      if (ev->k == session::event::kind::continuation) {
        if (!response_sent) {
          session_.submit_continuation_response(sasl);
          response_sent = true;
        } else {
          // An error challenge (RFC 7628 §3.2.2): answer it to get the NO.
          challenge = auth::describe_error_challenge(ev->resp.text);
          session_.submit_continuation_response(auth::error_challenge_answer(bearer));
        }
        if (auto ec = co_await flush()) co_return ec;
        continue;
      }
      if (ev->resp.tag == tag) done = std::move(*ev);
    }
    const response& r = done->resp;
    if (r.st == status::ok) {
      if (r.code && r.code->name == "CAPABILITY") {
        capabilities_ = decode_capabilities(r);
      } else {
        const command_builder capability_cmd("CAPABILITY");
        auto c = co_await run(capability_cmd);
        if (!c) co_return c.error();
      }
      session_.set_literal_plus(has_capability("LITERAL+"));
      co_return error_code{};
    }
    const std::string text = "AUTHENTICATE " + mechanism + " " + status_name(*r.st) +
                             (r.code ? " [" + r.code->name + "]" : std::string()) + ": " + r.text +
                             (challenge.empty() ? "" : " (" + challenge + ")");
    if (r.st == status::no && login_refusal_passes(r.code, r.text))
      co_return fail(client_errc::login_deferred, text);
    // The token may have expired or been revoked since it was issued: one
    // more try with a new one; a second refusal is the credentials'.
    opts_.tokens->reject(token->generation);
    if (refused.empty()) refused = text;
    if (attempt == 1)
      co_return fail(client_errc::auth_failed,
                     text + "; refused again with a new token from " + mb_.oauth2.token_url);
  }
  co_return fail(client_errc::auth_failed, refused);
}

asio::awaitable<error_code> client::select(const std::string& folder) {
  const std::string verb = "SELECT";
  co_return co_await open_folder(verb, folder);
}

asio::awaitable<error_code> client::open_folder(const std::string& verb,
                                                const std::string& folder) {
  uidvalidity_ = 0;
  exists_.reset();
  command_builder cmd(verb);
  cmd.mailbox(folder);
  auto r = co_await run(cmd);
  if (!r) co_return r.error();
  if (r->st != status::ok)
    co_return fail(client_errc::mailbox_missing, verb + " " + folder + ": " + r->text);
  new_mail_hint_ = false;
  co_return error_code{};
}

asio::awaitable<boost::system::result<std::vector<std::uint32_t>>> client::uid_search(
    const std::string& criteria) {
  std::vector<std::uint32_t> uids;
  command_builder cmd("UID SEARCH");
  cmd.atom(criteria);  // verbatim, as mail_room sends search_command
  const untagged_handler collect = [&](response& resp) {
    if (resp.keyword != "SEARCH") return;
    if (auto found = decode_search(resp)) uids.insert(uids.end(), found->begin(), found->end());
  };
  auto r = co_await run(cmd, collect);
  if (!r) co_return r.error();
  if (r->st != status::ok)
    co_return fail(client_errc::command_failed, "UID SEARCH " + criteria + ": " + r->text);
  co_return uids;
}

asio::awaitable<error_code> client::uid_fetch_bodies(const std::vector<std::uint32_t>& uids,
                                                     const body_handler& on_body) {
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID FETCH");
    cmd.atom(set).atom("(UID BODY.PEEK[])");
    const untagged_handler collect = [&](response& resp) {
      if (resp.keyword != "FETCH") return;
      auto item = decode_fetch(std::move(resp));
      // FETCH responses without a body are flag updates from other sessions.
      if (item && item->uid && item->body) on_body(*item->uid, std::move(*item->body));
    };
    auto r = co_await run(cmd, collect);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "UID FETCH: " + r->text);
  }
  co_return error_code{};
}

asio::awaitable<boost::system::result<std::vector<message_meta>>> client::uid_fetch_meta(
    const std::vector<std::uint32_t>& uids, bool with_date) {
  std::vector<message_meta> out;
  out.reserve(uids.size());
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID FETCH");
    cmd.atom(set).atom(with_date ? "(UID RFC822.SIZE FLAGS INTERNALDATE)"
                                 : "(UID RFC822.SIZE FLAGS)");
    const untagged_handler collect = [&](response& resp) {
      if (resp.keyword != "FETCH") return;
      auto item = decode_fetch(std::move(resp));
      // Unsolicited FETCH responses (flag changes by other sessions) lack a size.
      if (item && item->uid && item->size)
        out.push_back(
            {*item->uid, *item->size, std::move(item->flags), item->internal_date.value_or(0)});
    };
    auto r = co_await run(cmd, collect);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "UID FETCH: " + r->text);
  }
  co_return out;
}

asio::awaitable<boost::system::result<move_outcome>> client::uid_move(
    const std::vector<std::uint32_t>& uids, const std::string& folder,
    const std::string& mark_copied) {
  const bool move = has_capability("MOVE");
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd(move ? "UID MOVE" : "UID COPY");
    cmd.atom(set).mailbox(folder);
    auto r = co_await run(cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok)
      co_return fail(client_errc::command_failed, std::string(move ? "UID MOVE" : "UID COPY") +
                                                      " to " + folder + ": " + r->text);
  }
  if (move) co_return move_outcome::moved;
  if (!has_capability("UIDPLUS")) {
    const std::string flags = "\\Deleted" + (mark_copied.empty() ? "" : " " + mark_copied);
    if (auto ec = co_await uid_store_add_flags(uids, flags)) co_return ec;
    co_return move_outcome::copied;
  }
  const std::string deleted = "\\Deleted";
  if (auto ec = co_await uid_store_add_flags(uids, deleted)) co_return ec;
  if (auto ec = co_await expunge(uids)) co_return ec;
  co_return move_outcome::moved;
}

asio::awaitable<error_code> client::create(const std::string& folder) {
  command_builder cmd("CREATE");
  cmd.mailbox(folder);
  auto r = co_await run(cmd);
  if (!r) co_return r.error();
  if (r->st != status::ok)
    co_return fail(client_errc::command_failed, "CREATE " + folder + ": " + r->text);
  co_return error_code{};
}

asio::awaitable<error_code> client::uid_store_add_flags(const std::vector<std::uint32_t>& uids,
                                                        const std::string& flags) {
  const std::string op = "+FLAGS.SILENT";
  co_return co_await uid_store(uids, op, flags);
}

asio::awaitable<error_code> client::uid_store(const std::vector<std::uint32_t>& uids,
                                              const std::string& op, const std::string& flags) {
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID STORE");
    cmd.atom(set).atom(op).atom("(" + flags + ")");
    auto r = co_await run(cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "UID STORE: " + r->text);
  }
  co_return error_code{};
}

asio::awaitable<error_code> client::expunge(const std::vector<std::uint32_t>& uids) {
  if (!has_capability("UIDPLUS")) {
    const command_builder expunge_cmd("EXPUNGE");
    auto r = co_await run(expunge_cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "EXPUNGE: " + r->text);
    co_return error_code{};
  }
  for (const auto& set : format_uid_sets(uids, opts_.uid_set_max_chars)) {
    command_builder cmd("UID EXPUNGE");
    cmd.atom(set);
    auto r = co_await run(cmd);
    if (!r) co_return r.error();
    if (r->st != status::ok) co_return fail(client_errc::command_failed, "UID EXPUNGE: " + r->text);
  }
  co_return error_code{};
}

void client::send_done() {
  if (!idling_ || done_sent_) return;
  done_sent_ = true;
  session_.submit_idle_done();
  asio::co_spawn(
      executor_,
      [this, alive = alive_]() -> asio::awaitable<void> {
        if (!*alive) co_return;
        co_await flush();
      },
      asio::detached);
}

void client::interrupt_idle() {
  interrupted_ = true;
  if (polling_ && idle_timer_) idle_timer_->cancel();  // no IDLE: end the poll wait
  send_done();
}

asio::awaitable<boost::system::result<idle_end>> client::idle(std::chrono::milliseconds timeout,
                                                              bool wake_on_new_mail) {
  interrupted_ = false;
  if (!has_capability("IDLE")) {
    // No IDLE: poll every `timeout` (mail_room requires IDLE; we degrade).
    idle_timer_ = std::make_shared<asio::steady_timer>(executor_, timeout);
    error_code ec;
    polling_ = true;
    co_await idle_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    polling_ = false;
    co_return interrupted_ ? idle_end::interrupted : idle_end::timeout;
  }
  // Thousands of sessions can sit in IDLE at once, and they receive a few
  // short lines: give back what a large FETCH grew the buffer to.
  if (read_buffer_.size() > min_read_buffer) {
    read_buffer_.resize(min_read_buffer);
    read_buffer_.shrink_to_fit();
  }
  const std::string tag = session_.submit(command_builder("IDLE"));
  idling_ = true;
  done_sent_ = false;
  if (auto ec = co_await flush()) {
    idling_ = false;
    co_return ec;
  }
  idle_end end = idle_end::timeout;
  bool got_continuation = false;
  idle_timer_ = std::make_shared<asio::steady_timer>(executor_, timeout);
  idle_timer_->async_wait([this, alive = alive_](error_code ec) {
    if (!ec && *alive) send_done();
  });
  if (new_mail_hint_ && wake_on_new_mail) {
    end = idle_end::new_mail;
    send_done();
  }
  // The server may stay silent for the whole IDLE; allow that plus the usual
  // command timeout for its answer to DONE before calling the connection dead.
  const auto read_timeout = timeout + opts_.command_timeout;
  boost::system::result<idle_end> outcome = end;
  for (;;) {
    auto ev = co_await next_event(read_timeout);
    if (!ev) {
      outcome = ev.error();
      break;
    }
    if (ev->k == session::event::kind::continuation) {
      got_continuation = true;
      continue;
    }
    if (ev->k == session::event::kind::untagged) {
      note_untagged(ev->resp);
      if (ev->resp.keyword == "EXISTS" && wake_on_new_mail && new_mail_hint_) {
        // RFC 2177: end IDLE as soon as new mail is announced.
        if (!done_sent_) end = idle_end::new_mail;
        send_done();
      }
      continue;
    }
    if (ev->resp.tag != tag) continue;
    if (ev->resp.st != status::ok) {
      outcome = fail(client_errc::command_failed,
                     (got_continuation ? "IDLE ended: " : "IDLE refused: ") + ev->resp.text);
    } else {
      outcome = interrupted_ ? idle_end::interrupted : end;
    }
    break;
  }
  idle_timer_->cancel();
  idling_ = false;
  // Handled by this IDLE's end, or (not waking) left for the next pass.
  if (wake_on_new_mail) new_mail_hint_ = false;
  co_return outcome;
}

asio::awaitable<void> client::logout() {
  if (!stream_.is_open()) co_return;
  const auto saved = opts_.command_timeout;
  opts_.command_timeout = opts_.logout_timeout;
  const command_builder logout_cmd("LOGOUT");
  auto r = co_await run(logout_cmd);
  (void)r;  // BYE then OK, or the server just closes: either is fine
  opts_.command_timeout = saved;
  close();
}

void client::close() {
  if (token_wait_->cancel) token_wait_->cancel();
  *alive_ = false;
  alive_ = std::make_shared<bool>(true);
  if (idle_timer_) idle_timer_->cancel();
  stream_.close();
}

}  // namespace mailroom::imap
