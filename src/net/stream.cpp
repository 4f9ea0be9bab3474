#include "net/stream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <sys/stat.h>

#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <tuple>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

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

namespace {

// What makes two client contexts interchangeable: the settings, and the CA
// file as it is on disk now (a replaced file makes a new context, so CA
// rotations are picked up at the next connect, as when every connection
// built its own). A CA directory (ca_path) is read by OpenSSL at each
// verification, so its name is enough.
struct context_key {
  bool verify_peer = true;
  std::string ca_file;
  std::string ca_path;
  std::int64_t file_mtime_ns = 0;
  std::int64_t file_size = -1;
  std::uint64_t file_inode = 0;
  auto tie() const {
    return std::tie(verify_peer, ca_file, ca_path, file_mtime_ns, file_size, file_inode);
  }
  bool operator<(const context_key& o) const { return tie() < o.tie(); }
};

context_key key_of(const config::tls_options& opts) {
  context_key k;
  k.verify_peer = opts.verify_peer;
  if (!opts.verify_peer) return k;
  k.ca_file = opts.ca_file;
  k.ca_path = opts.ca_path;
  // Without ca_file/ca_path, the system store's file (SSL_CERT_FILE or
  // OpenSSL's default) is loaded whole into the context: watch it too.
  std::string file = opts.ca_file;
  if (opts.ca_file.empty() && opts.ca_path.empty()) {
    const char* env = std::getenv(X509_get_default_cert_file_env());
    file = env != nullptr ? env : X509_get_default_cert_file();
  }
  struct stat st {};
  if (!file.empty() && ::stat(file.c_str(), &st) == 0) {
    k.file_mtime_ns =
        static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    k.file_size = static_cast<std::int64_t>(st.st_size);
    k.file_inode = static_cast<std::uint64_t>(st.st_ino);
  }
  if (opts.ca_file.empty() && opts.ca_path.empty()) k.ca_file = "system:" + file;
  return k;
}

std::shared_ptr<asio::ssl::context> build_client_tls_context(const config::tls_options& opts,
                                                             error_code& ec) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
  // An idle session holds no OpenSSL read or write buffer (each sized for a
  // 16 KiB record): a mailbox in IDLE reads a few bytes every few minutes.
  SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  if (!opts.verify_peer) {
    ctx->set_verify_mode(asio::ssl::verify_none);
    return ctx;
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  if (!opts.ca_file.empty()) {
    ctx->load_verify_file(opts.ca_file, ec);
    if (ec) return nullptr;
  }
  if (!opts.ca_path.empty()) {
    ctx->add_verify_path(opts.ca_path, ec);
    if (ec) return nullptr;
  }
  if (opts.ca_file.empty() && opts.ca_path.empty()) {
    // The system store; OpenSSL also honours SSL_CERT_FILE / SSL_CERT_DIR here.
    ctx->set_default_verify_paths(ec);
    if (ec) return nullptr;
  }
  return ctx;
}

}  // namespace

std::shared_ptr<asio::ssl::context> make_client_tls_context(const config::tls_options& opts,
                                                            error_code& ec) {
  // One context per distinct configuration, shared by every connection that
  // uses it: building one loads the CA file (Debian's system store holds 144
  // certificates) into a store of its own. Measured with a one-certificate CA
  // file, 1,000 idle IMAPS sessions took 15.5 MB less (with released buffers;
  // bench/RESULTS.md). Contexts no connection uses any more are freed.
  static std::mutex mutex;
  static std::map<context_key, std::weak_ptr<asio::ssl::context>> cache;
  const context_key key = key_of(opts);
  std::lock_guard lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) {
    if (auto ctx = it->second.lock()) return ctx;
  }
  for (auto it = cache.begin(); it != cache.end();) {
    it = it->second.expired() ? cache.erase(it) : std::next(it);
  }
  auto ctx = build_client_tls_context(opts, ec);
  if (ctx) cache[key] = ctx;
  return ctx;
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
  tls_.reset();
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

asio::awaitable<error_code> stream::start_tls(std::shared_ptr<asio::ssl::context> ctx,
                                              const std::string& host, duration timeout) {
  tls_ctx_ = std::move(ctx);
  tls_.emplace(socket_, *tls_ctx_);
  SSL* ssl = tls_->native_handle();
  if (!is_ip_literal(host)) {
    // SNI (RFC 6066 §3) only carries DNS names.
    SSL_set_tlsext_host_name(ssl, host.c_str());
  }
  if (SSL_CTX_get_verify_mode(tls_ctx_->native_handle()) & SSL_VERIFY_PEER) {
    tls_->set_verify_mode(asio::ssl::verify_peer);
    tls_->set_verify_callback(asio::ssl::host_name_verification(host));
  }
  error_code ec;
  watchdog wd(read_deadline_, timeout);
  co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                 asio::redirect_error(asio::use_awaitable, ec));
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
  last_error_ = "TLS handshake with " + host + " failed: " + ec.message();
  co_return make_error_code(errc::tls_handshake_failed);
}

asio::awaitable<std::size_t> stream::read_some(asio::mutable_buffer buf, duration timeout,
                                               error_code& ec) {
  ec = {};
  std::size_t n = 0;
  watchdog wd(read_deadline_, timeout);
  if (tls_) {
    n = co_await tls_->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    n = co_await socket_.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) {
    ec = wd.translate(ec);
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
        ec == asio::error::connection_reset) {
      last_error_ = ec.message();
      ec = make_error_code(errc::closed);
    } else if (ec != errc::timed_out) {
      last_error_ = ec.message();
    } else {
      last_error_ = "read timed out";
    }
  }
  co_return n;
}

template <typename Buffers>
asio::awaitable<error_code> stream::write_buffers(const Buffers& bufs, duration timeout) {
  error_code ec;
  watchdog wd(write_deadline_, timeout);
  if (tls_) {
    co_await asio::async_write(*tls_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await asio::async_write(socket_, bufs, asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) {
    ec = wd.translate(ec);
    last_error_ = ec == errc::timed_out ? "write timed out" : ec.message();
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
