#include "net/stream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <type_traits>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

namespace mailroom::net {

namespace {

class net_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mailroom.net"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::timed_out:
        return "timed out";
      case errc::connect_failed:
        return "connection failed";
      case errc::tls_handshake_failed:
        return "TLS handshake failed";
      case errc::certificate_rejected:
        return "server certificate rejected";
      case errc::closed:
        return "connection closed by peer";
      case errc::tls_failed:
        return "TLS protocol error";
    }
    return "unknown transport error";
  }
};

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

const boost::system::error_category& net_category() {
  static net_category_impl c;
  return c;
}

// Shared between the stream and its pending timer callback, so a callback that
// fires after the stream is gone, or after the operation it guarded completed,
// does nothing.
struct deadline_state {
  std::uint64_t generation = 0;
  bool fired = false;
  tcp::socket* socket = nullptr;
};

class stream::watchdog {
 public:
  watchdog(deadline& d, duration timeout) : d_(d) {
    auto& st = *d_.state;
    gen_ = ++st.generation;
    st.fired = false;
    d_.timer.expires_after(timeout);
    std::weak_ptr<deadline_state> weak = d_.state;
    const auto gen = gen_;
    d_.timer.async_wait([weak, gen](error_code ec) {
      auto st = weak.lock();
      if (ec || !st || st->generation != gen || !st->socket) return;
      st->fired = true;
      error_code ignored;
      st->socket->close(ignored);  // the pending operation completes with an error
    });
  }
  ~watchdog() {
    ++d_.state->generation;
    d_.timer.cancel();
  }
  bool fired() const { return d_.state->fired; }
  // Maps the operation's error to timed_out when the deadline caused it.
  error_code translate(error_code ec) const {
    if (ec && fired()) return make_error_code(errc::timed_out);
    return ec;
  }

 private:
  deadline& d_;
  std::uint64_t gen_ = 0;
};

stream::deadline::deadline(asio::any_io_executor ex)
    : timer(ex), state(std::make_shared<deadline_state>()) {}

stream::stream(asio::any_io_executor ex)
    : executor_(ex), socket_(ex), read_deadline_(ex), write_deadline_(ex) {
  read_deadline_.state->socket = &socket_;
  write_deadline_.state->socket = &socket_;
}

stream::~stream() {
  read_deadline_.state->socket = nullptr;
  write_deadline_.state->socket = nullptr;
  error_code ignored;
  read_deadline_.timer.cancel();
  write_deadline_.timer.cancel();
  socket_.close(ignored);
}

asio::awaitable<error_code> stream::connect(const std::string& host, std::uint16_t port,
                                            duration timeout) {
  ssl_.reset();
  port_ = port;
  error_code ec;
  if (socket_.is_open()) socket_.close(ec);
  watchdog wd(write_deadline_, timeout);
  tcp::resolver resolver(executor_);
  // The resolver runs getaddrinfo on Asio's internal thread, not on the loop.
  auto results = co_await resolver.async_resolve(host, std::to_string(port),
                                                 asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (wd.fired()) co_return make_error_code(errc::timed_out);
    last_error_ = "cannot resolve " + host + ": " + ec.message();
    co_return make_error_code(errc::connect_failed);
  }
  co_await asio::async_connect(socket_, results, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    ec = wd.translate(ec);
    last_error_ = "cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message();
    if (ec == errc::timed_out) co_return ec;
    co_return make_error_code(errc::connect_failed);
  }
  socket_.set_option(tcp::no_delay(true), ec);
  socket_.set_option(asio::socket_base::keep_alive(true), ec);
  // Linux defaults probe after 2 h idle; a peer that vanished (half-open
  // connection) would go unnoticed that long. Probe after 60 s, every 10 s,
  // give up after 6 unanswered probes: about 2 minutes.
  const int fd = socket_.native_handle();
  const int idle = 60, interval = 10, count = 6;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  co_return error_code{};
}

namespace {

// OpenSSL's queued errors as one line, oldest first; the queue is emptied.
std::string openssl_errors() {
  std::string out;
  char buf[256];
  while (const unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

}  // namespace

template <typename Call>
asio::awaitable<int> stream::tls_call(Call call, error_code& ec) {
  for (;;) {
    if (!socket_.is_open()) {  // closed by close() or a deadline
      ec = asio::error::operation_aborted;
      last_error_ = ec.message();
      co_return 0;
    }
    // The error queue is per thread and shared by every connection on it.
    ERR_clear_error();
    errno = 0;
    const int r = call(ssl_.get());
    if (r > 0) co_return r;
    const int saved_errno = errno;
    const int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      // OpenSSL consumed what the socket had; wait for more (or for room).
      const auto what =
          err == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write;
      co_await socket_.async_wait(what, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        last_error_ = ec.message();
        co_return 0;
      }
      continue;
    }
    ec = tls_failure(err, saved_errno, "TLS");
    co_return 0;
  }
}

error_code stream::tls_failure(int ssl_error, int saved_errno, const char* what) {
  switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:  // close_notify (RFC 8446 §6.1)
      last_error_ = "TLS session closed by peer";
      return make_error_code(errc::closed);
    case SSL_ERROR_SYSCALL: {
      std::string detail = openssl_errors();
      if (detail.empty() &&
          (saved_errno == 0 || saved_errno == ECONNRESET || saved_errno == EPIPE)) {
        last_error_ = saved_errno == 0 ? "connection closed by peer" : std::strerror(saved_errno);
        return make_error_code(errc::closed);
      }
      last_error_ = std::string(what) + ": " +
                    (detail.empty() ? std::string(std::strerror(saved_errno)) : detail);
      return error_code(saved_errno != 0 ? saved_errno : EIO, boost::system::system_category());
    }
    default: {
      // OpenSSL 3 reports a TCP close without close_notify as an SSL error
      // (a truncation attack is only possible on length-less protocols; IMAP
      // and RESP frame every reply).
      if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        last_error_ = "connection closed by peer (without TLS close_notify)";
        return make_error_code(errc::closed);
      }
      std::string detail = openssl_errors();
      last_error_ = std::string(what) + " error: " + (detail.empty() ? "unknown" : detail);
      return make_error_code(errc::tls_failed);
    }
  }
}

asio::awaitable<error_code> stream::start_tls(std::shared_ptr<asio::ssl::context> ctx,
                                              const std::string& host, duration timeout) {
  tls_ctx_ = std::move(ctx);
  ssl_.reset(SSL_new(tls_ctx_->native_handle()));
  error_code ec;
  if (!ssl_ || !socket_.is_open()) {
    last_error_ = "TLS with " + host + ": " + (ssl_ ? "not connected" : openssl_errors());
    ssl_.reset();
    co_return make_error_code(errc::tls_handshake_failed);
  }
  SSL* ssl = ssl_.get();
  // OpenSSL reads and writes the descriptor itself (a socket BIO that does
  // not close it); it must never block the loop.
  socket_.non_blocking(true, ec);
  SSL_set_fd(ssl, socket_.native_handle());
  SSL_set_connect_state(ssl);
  const bool ip_literal = is_ip_literal(host);
  if (!ip_literal) {
    // SNI (RFC 6066 §3) only carries DNS names.
    SSL_set_tlsext_host_name(ssl, host.c_str());
  }
  if (SSL_CTX_get_verify_mode(tls_ctx_->native_handle()) & SSL_VERIFY_PEER) {
    // RFC 6125 name check as part of chain verification: DNS names against
    // the SANs (wildcards in the left-most label only), IP literals against
    // IP SANs.
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (ip_literal) {
      X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    }
  }
  count_tls_handshake();
  tls_peer_ = host + ":" + std::to_string(port_);
  prepare_resumption(ssl, &tls_peer_);
  watchdog wd(read_deadline_, timeout);
  auto handshake = [](SSL* s) { return SSL_do_handshake(s); };
  co_await tls_call(handshake, ec);
  if (!ec) co_return error_code{};
  ec = wd.translate(ec);
  if (ec == errc::timed_out) {
    last_error_ = "TLS handshake with " + host + " timed out";
    co_return ec;
  }
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    last_error_ = "certificate of " + host + " rejected: " + X509_verify_cert_error_string(verify);
    co_return make_error_code(errc::certificate_rejected);
  }
  last_error_ = "TLS handshake with " + host + " failed: " + last_error_;
  co_return make_error_code(errc::tls_handshake_failed);
}

bool stream::tls_resumed() const {
  return ssl_ && SSL_session_reused(ssl_.get()) == 1;
}

std::int64_t stream::certificate_expiry() const {
  if (!ssl_) return 0;
  // A resumed session keeps the peer's certificate (RFC 8446 §2.2 tickets
  // carry the authentication of the original handshake).
  X509* cert = SSL_get0_peer_certificate(ssl_.get());
  if (!cert) return 0;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

asio::awaitable<std::size_t> stream::read_some(asio::mutable_buffer buf, duration timeout,
                                               error_code& ec) {
  ec = {};
  std::size_t n = 0;
  watchdog wd(read_deadline_, timeout);
  if (ssl_) {
    // SSL_read first, always: a record may hold more than the last read
    // took, and the socket would not become readable for it.
    const int want = static_cast<int>(std::min<std::size_t>(buf.size(), INT_MAX));
    auto read = [&buf, want](SSL* s) { return SSL_read(s, buf.data(), want); };
    const int r = co_await tls_call(read, ec);
    if (r > 0) n = static_cast<std::size_t>(r);
  } else {
    n = co_await socket_.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) {
    // The TLS path has set last_error_ already.
    ec = wd.translate(ec);
    if (ec == errc::timed_out) {
      last_error_ = "read timed out";
    } else if (ec == asio::error::eof || ec == asio::error::connection_reset) {
      last_error_ = ec.message();
      ec = make_error_code(errc::closed);
    } else if (!ssl_) {
      last_error_ = ec.message();
    }
  }
  co_return n;
}

asio::awaitable<void> stream::tls_write(asio::const_buffer b, error_code& ec) {
  while (b.size() > 0 && !ec) {
    // Partial writes are on (one record at a time); a retry after
    // WANT_WRITE repeats the same call, as SSL_write requires.
    const int want = static_cast<int>(std::min<std::size_t>(b.size(), INT_MAX));
    auto write = [&b, want](SSL* s) { return SSL_write(s, b.data(), want); };
    const int r = co_await tls_call(write, ec);
    if (r > 0) b += static_cast<std::size_t>(r);
  }
}

template <typename Buffers>
asio::awaitable<error_code> stream::write_buffers(const Buffers& bufs, duration timeout) {
  error_code ec;
  watchdog wd(write_deadline_, timeout);
  if (!ssl_) {
    co_await asio::async_write(socket_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  } else if constexpr (std::is_same_v<Buffers, asio::const_buffer>) {
    co_await tls_write(bufs, ec);
  } else {
    // Small buffers are joined into records of up to 16 KiB (RFC 8446
    // §5.1), so that a command made of many pieces is not one record (and
    // one send) per piece.
    constexpr std::size_t record = 16384;
    std::string joined;
    for (auto it = asio::buffer_sequence_begin(bufs); it != asio::buffer_sequence_end(bufs) && !ec;
         ++it) {
      const asio::const_buffer b = *it;
      if (joined.size() + b.size() > record && !joined.empty()) {
        const asio::const_buffer full = asio::buffer(joined);
        co_await tls_write(full, ec);
        joined.clear();
      }
      if (b.size() > record) {
        if (!ec) co_await tls_write(b, ec);
      } else {
        joined.append(static_cast<const char*>(b.data()), b.size());
      }
    }
    const asio::const_buffer rest = asio::buffer(joined);
    if (rest.size() > 0 && !ec) co_await tls_write(rest, ec);
  }
  if (ec) {
    ec = wd.translate(ec);
    if (ec == errc::timed_out) {
      last_error_ = "write timed out";
    } else if (!ssl_) {
      last_error_ = ec.message();
    }
    if (ec == asio::error::broken_pipe || ec == asio::error::connection_reset)
      ec = make_error_code(errc::closed);
  }
  co_return ec;
}

asio::awaitable<error_code> stream::write_all(asio::const_buffer buf, duration timeout) {
  co_return co_await write_buffers(buf, timeout);
}

asio::awaitable<error_code> stream::write_all(const std::vector<asio::const_buffer>& bufs,
                                              duration timeout) {
  co_return co_await write_buffers(bufs, timeout);
}

void stream::close() {
  error_code ignored;
  read_deadline_.timer.cancel();
  write_deadline_.timer.cancel();
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

bool stream::is_open() const {
  return socket_.is_open();
}

}  // namespace mailroom::net
