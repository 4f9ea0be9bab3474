// A TCP connection that may be upgraded to TLS (implicit TLS or STARTTLS), with a
// timeout on every operation. This is the only transport the protocol clients
// (IMAP, Redis) use; they never touch sockets directly.
//
// TLS runs OpenSSL directly on the socket (SSL_set_fd): OpenSSL reads and
// writes the descriptor itself, and the stream waits for readiness through
// Asio (async_wait) when OpenSSL asks for it. asio::ssl::stream keeps two
// 17 KiB buffers per connection and a 17 KiB BIO pair each way (68 KiB); here
// an idle session holds no buffer at all (SSL_MODE_RELEASE_BUFFERS frees
// OpenSSL's own between records), which is what makes thousands of idle
// IMAPS mailboxes cheap.
//
// Timeouts: each operation takes a duration. When it elapses the socket is shut
// down, the pending operation fails, and the call returns errc::timed_out. After
// any error the stream is unusable; the owner closes it and reconnects.
// One read and one write may be in flight at the same time (IMAP IDLE: a read
// waits for the server while DONE is written); each direction has its own deadline.
#pragma once

#include "config/model.hpp"
#include "net/tls_context.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace mailroom::net {

struct deadline_state;
namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;
using duration = std::chrono::steady_clock::duration;

// Transport errors, classified by whether a retry (a new connection) can help.
enum class errc {
  timed_out = 1,         // retriable
  connect_failed,        // retriable: refused, unreachable, DNS
  tls_handshake_failed,  // retriable unless certificate_rejected
  certificate_rejected,  // permanent until the operator fixes trust or host name
  closed,                // peer closed the connection; retriable
  tls_failed,            // TLS protocol error after the handshake; retriable
};
const boost::system::error_category& net_category();
inline error_code make_error_code(errc e) {
  return {static_cast<int>(e), net_category()};
}

class stream {
 public:
  explicit stream(asio::any_io_executor ex);
  ~stream();
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;

  // Resolves host, connects to the first address that answers, sets TCP_NODELAY
  // and SO_KEEPALIVE.
  asio::awaitable<error_code> connect(const std::string& host, std::uint16_t port,
                                      duration timeout);

  // TLS handshake on the connected socket (implicit TLS, or after STARTTLS's OK).
  // Verifies the certificate against `host` (RFC 6125) when ctx verifies peers,
  // and sends `host` as SNI. Offers the session the context remembers for
  // host:port (tls_context.hpp).
  asio::awaitable<error_code> start_tls(std::shared_ptr<asio::ssl::context> ctx,
                                        const std::string& host, duration timeout);

  // Reads at least one byte into `buf`. Returns 0 and sets ec on error/EOF
  // (EOF maps to errc::closed).
  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, duration timeout,
                                         error_code& ec);

  // Writes all of `buf`.
  asio::awaitable<error_code> write_all(asio::const_buffer buf, duration timeout);
  // Writes all of `bufs`, in order: gathered writes (writev) in plaintext,
  // joined into records of up to 16 KiB over TLS.
  asio::awaitable<error_code> write_all(const std::vector<asio::const_buffer>& bufs,
                                        duration timeout);

  // Closes the socket; pending operations complete with an error. Idempotent.
  void close();

  bool is_open() const;
  bool is_tls() const { return ssl_ != nullptr; }
  // Whether the last handshake resumed a remembered session.
  bool tls_resumed() const;
  // notAfter of the peer's certificate (Unix seconds, for an expiry alert);
  // 0 without TLS or certificate.
  std::int64_t certificate_expiry() const;
  asio::any_io_executor get_executor() const { return executor_; }

  // Human text about the last failure (resolver/OpenSSL detail); never secrets.
  const std::string& last_error() const { return last_error_; }

 private:
  class watchdog;
  struct ssl_free {
    // Without a shutdown on record, SSL_free marks the session not
    // resumable (as after a fatal alert), and the session the context
    // remembers for this peer is that same object. A connection that ended
    // in a fatal alert was marked by OpenSSL already.
    void operator()(SSL* ssl) const {
      SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
      SSL_free(ssl);
    }
  };
  // Runs an SSL_* call until it makes progress, waiting on the socket as
  // OpenSSL asks. Returns its positive result, or 0 with ec set.
  template <typename Call>
  asio::awaitable<int> tls_call(Call call, error_code& ec);
  // Writes all of `b` over TLS.
  asio::awaitable<void> tls_write(asio::const_buffer b, error_code& ec);
  // Maps a failed SSL_* call to a transport error, with last_error_ set.
  error_code tls_failure(int ssl_error, int saved_errno, const char* what);
  // Both write_all()s: one buffer, or a sequence written with writev.
  template <typename Buffers>
  asio::awaitable<error_code> write_buffers(const Buffers& bufs, duration timeout);
  struct deadline {
    explicit deadline(asio::any_io_executor ex);
    asio::steady_timer timer;
    std::shared_ptr<deadline_state> state;
  };
  asio::any_io_executor executor_;
  tcp::socket socket_;
  std::shared_ptr<asio::ssl::context> tls_ctx_;
  std::uint16_t port_ = 0;  // of the last connect()
  std::string tls_peer_;    // "host:port", the session cache's key; outlives ssl_
  std::unique_ptr<SSL, ssl_free> ssl_;
  deadline read_deadline_;
  deadline write_deadline_;
  std::string last_error_;
};

}  // namespace mailroom::net

template <>
struct boost::system::is_error_code_enum<mailroom::net::errc> : std::true_type {};
