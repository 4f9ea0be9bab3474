// A TCP connection that may be upgraded to TLS (implicit TLS or STARTTLS), with a
// timeout on every operation. This is the only transport the protocol clients
// (IMAP, Redis) use; they never touch sockets directly.
//
// Timeouts: each operation takes a duration. When it elapses the socket is shut
// down, the pending operation fails, and the call returns errc::timed_out. After
// any error the stream is unusable; the owner closes it and reconnects.
// One read and one write may be in flight at the same time (IMAP IDLE: a read
// waits for the server while DONE is written); each direction has its own deadline.
#pragma once

#include "config/model.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <optional>
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
};
const boost::system::error_category& net_category();
inline error_code make_error_code(errc e) {
  return {static_cast<int>(e), net_category()};
}

// An OpenSSL client context: TLS >= 1.2, peer verification unless
// opts.verify_peer is false, CA from opts.ca_file/ca_path or the system store;
// buffers released while a session is idle (SSL_MODE_RELEASE_BUFFERS). Shared:
// the same settings (and the same CA file on disk) give the same context while
// any connection holds it.
std::shared_ptr<asio::ssl::context> make_client_tls_context(const config::tls_options& opts,
                                                            error_code& ec);

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
  // and sends `host` as SNI.
  asio::awaitable<error_code> start_tls(std::shared_ptr<asio::ssl::context> ctx,
                                        const std::string& host, duration timeout);

  // Reads at least one byte into `buf`. Returns 0 and sets ec on error/EOF
  // (EOF maps to errc::closed).
  asio::awaitable<std::size_t> read_some(asio::mutable_buffer buf, duration timeout,
                                         error_code& ec);

  // Writes all of `buf`.
  asio::awaitable<error_code> write_all(asio::const_buffer buf, duration timeout);
  // Writes all of `bufs`, in order, with gathered writes (writev).
  asio::awaitable<error_code> write_all(const std::vector<asio::const_buffer>& bufs,
                                        duration timeout);

  // Closes the socket; pending operations complete with an error. Idempotent.
  void close();

  bool is_open() const;
  bool is_tls() const { return tls_.has_value(); }
  asio::any_io_executor get_executor() const { return executor_; }

  // Human text about the last failure (resolver/OpenSSL detail); never secrets.
  const std::string& last_error() const { return last_error_; }

 private:
  class watchdog;
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
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  deadline read_deadline_;
  deadline write_deadline_;
  std::string last_error_;
};

}  // namespace mailroom::net

template <>
struct boost::system::is_error_code_enum<mailroom::net::errc> : std::true_type {};
