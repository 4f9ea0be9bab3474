// net::stream over TLS against an OpenSSL server on 127.0.0.1: the handshake
// and the certificate checks, megabytes in both directions, session
// resumption, timeouts, the ways a peer ends a connection, and a write that
// goes out while a read is pending (IMAP IDLE).
//
// The server is blocking OpenSSL on a thread of its own; the client runs on an
// io_context through test::run_bounded. No step waits for a fixed time: the
// client waits for bytes from the server, the server for bytes from the client
// or its close, and the test for what a server script reports in a promise.
#include "net/stream.hpp"

#include "support/async_test.hpp"
#include "support/temp_dir.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace mailroom::net {
namespace {

namespace fs = std::filesystem;
using mailroom::test::async_flag;
using ::testing::HasSubstr;

// Arguments of co_await expressions are named objects, never temporaries
// (g++ 12 may destroy a temporary there twice).
const std::string kLoopback = "127.0.0.1";
const std::string kLocalhost = "localhost";
const std::string kWrongName = "mail.example.org";
const std::string kGreeting = "* OK hello\r\n";
const std::string kNoop = "a1 NOOP\r\n";
const std::string kDone = "DONE\r\n";
const std::string kAck = "ack\r\n";

// For every step that must succeed: far more than loopback needs.
constexpr duration kIoTimeout = std::chrono::seconds(5);
// For the steps that must time out: the server never answers them.
constexpr duration kShortTimeout = std::chrono::milliseconds(200);
constexpr auto kShortTimeoutMs =
    std::chrono::duration_cast<std::chrono::milliseconds>(kShortTimeout).count();

constexpr std::size_t kMiB = 1024 * 1024;

// --- OpenSSL objects -------------------------------------------------------------

struct pkey_deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct x509_deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct ssl_ctx_deleter {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct ssl_deleter {
  void operator()(SSL* p) const { SSL_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_deleter>;
using x509_ptr = std::unique_ptr<X509, x509_deleter>;
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, ssl_ctx_deleter>;
using ssl_ptr = std::unique_ptr<SSL, ssl_deleter>;

// Empties this thread's OpenSSL error queue into one line.
std::string openssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? std::string("no OpenSSL error queued") : out;
}

// Setup failures throw: gtest reports an exception from SetUp() or a test.
void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what + ": " + openssl_errors());
}

// --- a test PKI: a CA and a server certificate it signed -------------------------

struct credentials {
  pkey_ptr key;
  x509_ptr cert;
};

pkey_ptr new_p256_key() {
  pkey_ptr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  check(key != nullptr, "EC P-256 key generation");
  return key;
}

// An unsigned v3 certificate for `key`, subject CN=`cn`, valid for a day.
x509_ptr new_certificate(EVP_PKEY* key, long serial, const char* cn) {
  x509_ptr x(X509_new());
  check(x != nullptr, "X509_new");
  check(X509_set_version(x.get(), 2) == 1, "X509_set_version");
  check(ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial) == 1, "serial number");
  // A minute back: a clock slightly behind is no reason for this test to fail.
  check(X509_gmtime_adj(X509_getm_notBefore(x.get()), -60) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600) != nullptr, "notAfter");
  check(X509_set_pubkey(x.get(), key) == 1, "X509_set_pubkey");
  check(X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(cn), -1, -1, 0) == 1,
        "subject CN");
  return x;
}

// Adds the extension `nid` = `value` (openssl.cnf syntax) to `cert`, issued by `issuer`.
void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX v3{};
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &v3, nid, value);
  check(ext != nullptr, value);
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(added == 1, value);
}

credentials make_ca(const char* cn) {
  credentials ca;
  ca.key = new_p256_key();
  ca.cert = new_certificate(ca.key.get(), 1, cn);
  X509* x = ca.cert.get();
  check(X509_set_issuer_name(x, X509_get_subject_name(x)) == 1, "CA issuer");
  add_extension(x, x, NID_basic_constraints, "critical,CA:TRUE");
  add_extension(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(x, x, NID_subject_key_identifier, "hash");
  check(X509_sign(x, ca.key.get(), EVP_sha256()) > 0, "signing the CA certificate");
  return ca;
}

// The server's certificate: names 127.0.0.1 (IP SAN) and localhost (DNS SAN)
// only, so any other name is a mismatch. The CN names neither.
credentials make_server_credentials(const credentials& ca) {
  credentials leaf;
  leaf.key = new_p256_key();
  leaf.cert = new_certificate(leaf.key.get(), 2, "mailroom test server");
  X509* x = leaf.cert.get();
  X509* issuer = ca.cert.get();
  check(X509_set_issuer_name(x, X509_get_subject_name(issuer)) == 1, "server issuer");
  add_extension(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(x, issuer, NID_key_usage, "critical,digitalSignature");
  add_extension(x, issuer, NID_ext_key_usage, "serverAuth");
  add_extension(x, issuer, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
  add_extension(x, issuer, NID_authority_key_identifier, "keyid:always");
  check(X509_sign(x, ca.key.get(), EVP_sha256()) > 0, "signing the server certificate");
  return leaf;
}

void write_pem(const fs::path& path, X509* cert) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  check(bio != nullptr, "creating " + path.string());
  const int written = PEM_write_bio_X509(bio, cert);
  BIO_free(bio);
  check(written == 1, "writing " + path.string());
}

// One server context for all connections of a test: its session ticket key
// is what lets a later connection resume the session of an earlier one.
ssl_ctx_ptr make_server_context(const credentials& server) {
  ssl_ctx_ptr ctx(SSL_CTX_new(TLS_server_method()));
  check(ctx != nullptr, "SSL_CTX_new");
  check(SSL_CTX_use_certificate(ctx.get(), server.cert.get()) == 1, "server certificate");
  check(SSL_CTX_use_PrivateKey(ctx.get(), server.key.get()) == 1, "server key");
  check(SSL_CTX_check_private_key(ctx.get()) == 1, "server key and certificate");
  static const unsigned char kSessionContext[] = "mailroom-tls-stream-test";
  check(SSL_CTX_set_session_id_context(ctx.get(), kSessionContext, sizeof kSessionContext - 1) == 1,
        "session id context");
  return ctx;
}

// --- what server scripts do (blocking, on the server thread) ---------------------

bool send_text(SSL* ssl, std::string_view bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl, bytes.data() + sent, bytes.size() - sent, &n) != 1) return false;
    sent += n;
  }
  return true;
}

// Exactly `size` bytes of application data, or nothing if the connection ends first.
std::optional<std::string> receive_exactly(SSL* ssl, std::size_t size) {
  std::string out(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    std::size_t n = 0;
    if (SSL_read_ex(ssl, out.data() + got, size - got, &n) != 1) return std::nullopt;
    got += n;
  }
  return out;
}

// Holds the connection until the client closes it (or the server is
// destroyed), discarding whatever arrives. Raw reads: this works in any TLS
// state, also after the server sent its own close_notify.
void wait_until_client_closes(SSL* ssl) {
  const int fd = SSL_get_fd(ssl);
  char buf[4096];
  while (::recv(fd, buf, sizeof buf, 0) > 0) {
  }
}

// A TCP FIN and no close_notify: a peer that just closes its socket.
void close_without_close_notify(SSL* ssl) {
  SSL_set_quiet_shutdown(ssl, 1);  // the server's final SSL_shutdown() sends nothing
  ::shutdown(SSL_get_fd(ssl), SHUT_WR);
}

// When the script returns, the server's close() of the socket sends a TCP RST
// (SO_LINGER with a zero timeout), and no close_notify goes before it.
void reset_when_closed(SSL* ssl) {
  SSL_set_quiet_shutdown(ssl, 1);
  const linger abort_on_close{1, 0};
  ::setsockopt(SSL_get_fd(ssl), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
}

// What a server script reports to the test, once.
template <class T>
struct report {
  std::shared_ptr<std::promise<T>> promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
};

// The reported value; nothing when the script ended without reporting (the
// server drops each script, and with it its promise, after the connection)
// or did not report within 10 s.
template <class T>
std::optional<T> reported(std::future<T>& f) {
  if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return std::nullopt;
  try {
    return f.get();
  } catch (const std::future_error&) {
    return std::nullopt;
  }
}

// --- the server ------------------------------------------------------------------

// A TLS server on 127.0.0.1, port 0. One thread accepts connections one after
// another; the n-th connection gets the n-th handler added: a TLS handshake
// followed by a script, or silence (no TLS at all). After a script the server
// sends close_notify unless the script ended the session itself, and closes
// the socket. Destruction ends every blocking accept, read and write and
// joins the thread.
class tls_server {
 public:
  using script = std::function<void(SSL*)>;

  explicit tls_server(ssl_ctx_ptr ctx) : ctx_(std::move(ctx)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) throw std::runtime_error("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 8) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error("cannot listen on 127.0.0.1");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { accept_loop(); });
  }

  ~tls_server() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      // shutdown() wakes the accept(), and the read or write of a connection.
      ::shutdown(listen_fd_, SHUT_RDWR);
      if (conn_fd_ >= 0) ::shutdown(conn_fd_, SHUT_RDWR);
    }
    cv_.notify_all();  // ends a silent connection's wait
    thread_.join();
    ::close(listen_fd_);
  }

  tls_server(const tls_server&) = delete;
  tls_server& operator=(const tls_server&) = delete;

  std::uint16_t port() const { return port_; }

  // The next connection: a TLS handshake, then `s`. Add before the client connects.
  void add(script s) {
    std::lock_guard lock(mutex_);
    handlers_.push_back(handler{true, std::move(s)});
  }
  // The next connection: accepted, then neither read nor written until the
  // server is destroyed.
  void add_silent() {
    std::lock_guard lock(mutex_);
    handlers_.push_back(handler{false, nullptr});
  }

  // Waits until `n` connections have ended on the server side.
  bool wait_finished(std::size_t n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return finished_ >= n; });
  }
  // One entry per failed server handshake, with OpenSSL's reason.
  std::vector<std::string> handshake_failures() {
    std::lock_guard lock(mutex_);
    return handshake_failures_;
  }
  // Connections nobody expected, and other failures of the server itself.
  std::vector<std::string> errors() {
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  struct handler {
    bool tls = true;
    script run;
  };

  void accept_loop() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // the listening socket was shut down
      }
      std::optional<handler> h;
      std::size_t index = 0;
      {
        std::lock_guard lock(mutex_);
        if (stopping_) {
          ::close(fd);
          return;
        }
        conn_fd_ = fd;
        index = accepted_++;
        if (index < handlers_.size()) h = std::move(handlers_[index]);
      }
      serve(index, fd, h);
      h.reset();  // drops the script's promises: a report never made shows as broken
      {
        std::lock_guard lock(mutex_);
        conn_fd_ = -1;
        ::close(fd);
        ++finished_;
      }
      cv_.notify_all();
    }
  }

  void serve(std::size_t index, int fd, std::optional<handler>& h) {
    // Each write goes out at once, not after the client's delayed ACK.
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!h) {
      record_error("connection " + std::to_string(index) + " was not expected");
      return;
    }
    if (!h->tls) {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_; });
      return;
    }
    ssl_ptr ssl(SSL_new(ctx_.get()));
    if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
      record_error("SSL_new/SSL_set_fd: " + openssl_errors());
      return;
    }
    if (SSL_accept(ssl.get()) != 1) {
      const std::string why = openssl_errors();
      std::lock_guard lock(mutex_);
      handshake_failures_.push_back("connection " + std::to_string(index) + ": " + why);
      return;
    }
    try {
      h->run(ssl.get());
    } catch (const std::exception& e) {
      record_error("connection " + std::to_string(index) + ": script threw " + e.what());
    }
    if ((SSL_get_shutdown(ssl.get()) & SSL_SENT_SHUTDOWN) == 0) (void)SSL_shutdown(ssl.get());
    ERR_clear_error();  // the next connection starts with an empty error queue
  }

  void record_error(std::string e) {
    std::lock_guard lock(mutex_);
    errors_.push_back(std::move(e));
  }

  ssl_ctx_ptr ctx_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int conn_fd_ = -1;  // the connection being served, for the destructor to shut down
  std::size_t accepted_ = 0;
  std::size_t finished_ = 0;
  std::vector<handler> handlers_;
  std::vector<std::string> handshake_failures_;
  std::vector<std::string> errors_;
  std::thread thread_;
};

// --- client helpers (coroutines on the test's io_context) ------------------------

// Bytes with no short period (a linear congruential generator), so a lost,
// doubled or reordered piece shows as a difference.
std::string pattern(std::size_t n, std::uint32_t seed) {
  std::string out(n, '\0');
  std::uint32_t x = seed;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// "equal", or the sizes and the first differing offset (never megabytes of bytes).
std::string compare_bytes(const std::string& got, const std::string& want) {
  const auto diff = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
  if (diff.first == got.end() && diff.second == want.end()) return "equal";
  return "got " + std::to_string(got.size()) + " bytes, want " + std::to_string(want.size()) +
         ", first difference at offset " + std::to_string(diff.first - got.begin());
}

// One read_some() of at most 4 KiB, appended to `out`. A read_some() that
// returns no bytes and no error is a failure of its own.
asio::awaitable<error_code> read_more(stream& s, std::string& out) {
  std::array<char, 4096> chunk{};
  error_code ec;
  const asio::mutable_buffer buf = asio::buffer(chunk);
  const std::size_t n = co_await s.read_some(buf, kIoTimeout, ec);
  if (ec) co_return ec;
  if (n == 0) {
    ADD_FAILURE() << "read_some() returned no bytes and no error";
    co_return boost::system::errc::make_error_code(boost::system::errc::io_error);
  }
  out.append(chunk.data(), n);
  co_return error_code{};
}

// Reads until `out` holds a CRLF (anything after it in the same read stays in `out`).
asio::awaitable<error_code> read_line(stream& s, std::string& out) {
  while (out.find("\r\n") == std::string::npos) {
    const error_code ec = co_await read_more(s, out);
    if (ec) co_return ec;
  }
  co_return error_code{};
}

// Reads until `out` holds at least `size` bytes.
asio::awaitable<error_code> read_bytes(stream& s, std::string& out, std::size_t size) {
  while (out.size() < size) {
    const error_code ec = co_await read_more(s, out);
    if (ec) co_return ec;
  }
  co_return error_code{};
}

// connect() to `connect_host`, then start_tls() for `tls_host`: the first error.
asio::awaitable<error_code> connect_tls(stream& s, const std::string& connect_host,
                                        std::uint16_t port, std::shared_ptr<asio::ssl::context> ctx,
                                        const std::string& tls_host) {
  error_code ec = co_await s.connect(connect_host, port, kIoTimeout);
  if (ec) co_return ec;
  ec = co_await s.start_tls(ctx, tls_host, kIoTimeout);
  co_return ec;
}

// The reading half of the IDLE test: the continuation line, then a read that
// stays pending until the server answers DONE. A named function rather than a
// lambda: it is what co_spawn runs.
asio::awaitable<void> idle_reader(stream& s, std::string& continuation, std::string& answer,
                                  error_code& ec, async_flag idling, async_flag answered) {
  ec = co_await read_line(s, continuation);
  // set() only posts: the waiting coroutine resumes after this one has gone
  // on into its next read and suspended there (the server sends nothing more
  // until it has DONE).
  idling.set();
  if (!ec) ec = co_await read_line(s, answer);
  answered.set();
}

// --- the fixture -----------------------------------------------------------------

class TlsStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // As mailroom's main() does: writing to a connection the peer has closed
    // is an error (EPIPE), not the end of the process. Both OpenSSL's socket
    // BIO on the server thread and a stream driving OpenSSL on its socket
    // write with write(2).
    std::signal(SIGPIPE, SIG_IGN);
  }

  void SetUp() override {
    ca_ = make_ca("mailroom test CA");
    write_pem(tmp_.path() / "ca.pem", ca_.cert.get());
    trust_test_ca_.verify_peer = true;
    trust_test_ca_.ca_file = (tmp_.path() / "ca.pem").string();
    server_ = std::make_unique<tls_server>(make_server_context(make_server_credentials(ca_)));
  }

  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->errors(), std::vector<std::string>{});
    }
  }

  std::uint16_t port() const { return server_->port(); }

  // A client stream that lives until the end of the test (closed before the
  // server goes away, so the server's scripts see the client leave).
  stream& new_stream() {
    streams_.push_back(std::make_unique<stream>(io_.get_executor()));
    return *streams_.back();
  }

  // Connects with `ctx` to the server, naming it `name`: the handshake must
  // fail with certificate_rejected, the error naming `name`, and the
  // server's handshake must fail too (the client aborted it).
  void check_rejected(std::shared_ptr<asio::ssl::context> ctx, const std::string& name) {
    server_->add([](SSL*) {});  // not reached: the client rejects the certificate
    stream& s = new_stream();
    const std::uint16_t server_port = port();
    error_code ec;
    run([&]() -> asio::awaitable<void> {
      ec = co_await connect_tls(s, kLoopback, server_port, ctx, name);
    });
    EXPECT_EQ(ec, errc::certificate_rejected) << ec.message() << ": " << s.last_error();
    EXPECT_THAT(s.last_error(), HasSubstr(name));
    s.close();
    ASSERT_TRUE(server_->wait_finished(1));
    EXPECT_EQ(server_->handshake_failures().size(), 1u);
  }

  std::shared_ptr<asio::ssl::context> context_for(const config::tls_options& opts) {
    error_code ec;
    auto ctx = make_client_tls_context(opts, ec);
    if (!ctx) ADD_FAILURE() << "make_client_tls_context: " << ec.message();
    return ctx;
  }

  // Runs the coroutine `body()` until it, and all it started, are done (at
  // most `limit`). On a timeout the streams are closed so that the pending
  // operations end before the test's variables go away.
  template <class F>
  void run(F&& body, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto r = mailroom::test::run_bounded(io_, body(), limit);
    if (!r.finished) {
      ADD_FAILURE() << "the client did not finish within " << limit.count() << " ms";
      for (auto& s : streams_) s->close();
      io_.restart();
      io_.run_for(std::chrono::seconds(2));
    }
    if (r.failure) {
      try {
        std::rethrow_exception(r.failure);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "exception: " << e.what();
      } catch (...) {
        ADD_FAILURE() << "unknown exception";
      }
    }
  }

  // What the client saw of a server that sends "bye\r\n" and then ends the
  // connection: the line, then the read that meets the end.
  struct ending {
    error_code tls, line_ec, ack_ec, end;
    std::string line;
    std::size_t n = 99;  // what the last read_some() returned
    std::string last_error;
  };

  // The line arrived, then the next read ended with errc::closed.
  static void expect_line_then_closed(const ending& e) {
    ASSERT_FALSE(e.tls) << e.tls.message() << ": " << e.last_error;
    EXPECT_FALSE(e.line_ec) << e.line_ec.message() << ": " << e.last_error;
    EXPECT_EQ(e.line, "bye\r\n");
    EXPECT_EQ(e.end, errc::closed) << e.end.message() << ": " << e.last_error;
    EXPECT_EQ(e.n, 0u);
  }

  // `ack`: the client writes "ack\r\n" after the line, telling the server it
  // has read it (so a reset cannot overtake the line).
  ending read_to_the_end(bool ack) {
    ending e;
    auto ctx = context_for(trust_test_ca_);
    if (!ctx) return e;
    stream& s = new_stream();
    const std::uint16_t server_port = port();
    run([&]() -> asio::awaitable<void> {
      e.tls = co_await connect_tls(s, kLoopback, server_port, ctx, kLoopback);
      if (e.tls) {
        e.last_error = s.last_error();
        co_return;
      }
      e.line_ec = co_await read_line(s, e.line);
      if (ack) {
        const asio::const_buffer b = asio::buffer(kAck);
        e.ack_ec = co_await s.write_all(b, kIoTimeout);
      }
      std::array<char, 64> chunk{};
      const asio::mutable_buffer buf = asio::buffer(chunk);
      e.n = co_await s.read_some(buf, kIoTimeout, e.end);
      e.last_error = s.last_error();
    });
    return e;
  }

  // Declared first, destroyed last: streams and server use it to the end.
  asio::io_context io_;
  mailroom::test::temp_dir tmp_{"mailroom-tls-stream"};
  credentials ca_;
  config::tls_options trust_test_ca_;
  std::unique_ptr<tls_server> server_;
  // Destroyed before the server: the clients close, the server's scripts end.
  std::vector<std::unique_ptr<stream>> streams_;
};

// --- handshake and data ----------------------------------------------------------

TEST_F(TlsStreamTest, HandshakeThenOneLineEachWay) {
  report<std::string> command;
  server_->add([p = command.promise](SSL* ssl) {
    if (!send_text(ssl, kGreeting)) return;
    p->set_value(receive_exactly(ssl, kNoop.size()).value_or("<client closed>"));
    wait_until_client_closes(ssl);
  });
  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  error_code connect_ec, tls_ec, read_ec, write_ec;
  bool tls_before = true, tls_after = false;
  std::string greeting;
  run([&]() -> asio::awaitable<void> {
    connect_ec = co_await s.connect(kLoopback, server_port, kIoTimeout);
    if (connect_ec) co_return;
    tls_before = s.is_tls();
    tls_ec = co_await s.start_tls(ctx, kLoopback, kIoTimeout);
    if (tls_ec) co_return;
    tls_after = s.is_tls();
    read_ec = co_await read_line(s, greeting);
    const asio::const_buffer noop = asio::buffer(kNoop);
    write_ec = co_await s.write_all(noop, kIoTimeout);
  });
  ASSERT_FALSE(connect_ec) << connect_ec.message() << ": " << s.last_error();
  ASSERT_FALSE(tls_ec) << tls_ec.message() << ": " << s.last_error();
  EXPECT_FALSE(tls_before);
  EXPECT_TRUE(tls_after);
  EXPECT_FALSE(read_ec) << read_ec.message() << ": " << s.last_error();
  EXPECT_EQ(greeting, kGreeting);
  EXPECT_FALSE(write_ec) << write_ec.message() << ": " << s.last_error();
  EXPECT_EQ(reported(command.future).value_or("<no report>"), kNoop);
}

// More than a TLS record (16 KiB) at a time in both directions: partial
// records, reads that want a write and writes that want a read.
TEST_F(TlsStreamTest, AMegabyteEachWayArrivesIntact) {
  const std::string down = pattern(kMiB + 123, 1);
  const std::string up = pattern(kMiB + 77, 2);
  report<std::string> upload;
  // By value: the server thread may still be writing if the test body ends early.
  server_->add([down, size = up.size(), p = upload.promise](SSL* ssl) {
    if (!send_text(ssl, down)) return;
    p->set_value(receive_exactly(ssl, size).value_or("<client closed>"));
    wait_until_client_closes(ssl);
  });
  // One gathered write of three pieces: small, large, small.
  std::vector<asio::const_buffer> pieces;
  const std::size_t first = 7;
  const std::size_t second = kMiB - 30;
  pieces.push_back(asio::buffer(up.data(), first));
  pieces.push_back(asio::buffer(up.data() + first, second));
  pieces.push_back(asio::buffer(up.data() + first + second, up.size() - first - second));

  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  error_code tls_ec, read_ec, write_ec;
  std::string received;
  run([&]() -> asio::awaitable<void> {
    tls_ec = co_await connect_tls(s, kLoopback, server_port, ctx, kLoopback);
    if (tls_ec) co_return;
    read_ec = co_await read_bytes(s, received, down.size());
    if (read_ec) co_return;
    write_ec = co_await s.write_all(pieces, kIoTimeout);
  });
  ASSERT_FALSE(tls_ec) << tls_ec.message() << ": " << s.last_error();
  EXPECT_FALSE(read_ec) << read_ec.message() << ": " << s.last_error();
  EXPECT_EQ(compare_bytes(received, down), "equal");
  EXPECT_FALSE(write_ec) << write_ec.message() << ": " << s.last_error();
  EXPECT_EQ(compare_bytes(reported(upload.future).value_or("<no report>"), up), "equal");
}

// --- session resumption ----------------------------------------------------------

TEST_F(TlsStreamTest, ASecondConnectionResumesTheSessionAnotherHostDoesNot) {
  report<int> reused1, reused2, reused3;
  // Each connection: what the server saw of resumption, then a line (after
  // the TLS 1.3 NewSessionTicket messages that the handshake left behind),
  // then the connection stays until the client closes it.
  const auto greet = [](std::shared_ptr<std::promise<int>> reused) {
    return [reused](SSL* ssl) {
      reused->set_value(SSL_session_reused(ssl));
      if (send_text(ssl, kGreeting)) wait_until_client_closes(ssl);
    };
  };
  server_->add(greet(reused1.promise));
  server_->add(greet(reused2.promise));
  server_->add(greet(reused3.promise));

  struct outcome {
    error_code tls, read;
    std::string line, last_error;
    bool resumed = false;
  };
  const std::uint16_t server_port = port();
  // A connection: handshake; one line, which makes the client process the
  // session tickets; then the client closes.
  const auto connection = [&](std::shared_ptr<asio::ssl::context> ctx, const std::string& host) {
    outcome o;
    stream& s = new_stream();
    run([&]() -> asio::awaitable<void> {
      o.tls = co_await connect_tls(s, host, server_port, ctx, host);
      o.last_error = s.last_error();
      if (o.tls) co_return;
      o.read = co_await read_line(s, o.line);
      o.resumed = s.tls_resumed();
      s.close();
    });
    return o;
  };

  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  const outcome one = connection(ctx, kLoopback);
  ASSERT_FALSE(one.tls) << one.tls.message() << ": " << one.last_error;
  EXPECT_FALSE(one.read) << one.read.message();
  EXPECT_EQ(one.line, kGreeting);
  EXPECT_FALSE(one.resumed) << "the first connection had no session to resume";
  EXPECT_EQ(reported(reused1.future).value_or(-1), 0);

  // The same settings, while `ctx` is held: the same context, and with it the
  // session cached for 127.0.0.1:<port>.
  auto same = context_for(trust_test_ca_);
  ASSERT_TRUE(same);
  EXPECT_EQ(same.get(), ctx.get());
  const outcome two = connection(same, kLoopback);
  ASSERT_FALSE(two.tls) << two.tls.message() << ": " << two.last_error;
  EXPECT_FALSE(two.read) << two.read.message();
  EXPECT_EQ(two.line, kGreeting);
  EXPECT_TRUE(two.resumed) << "the client did not resume the cached session";
  EXPECT_EQ(reported(reused2.future).value_or(-1), 1) << "the server did not see a resumption";

  // Another peer name is another cache entry: a full handshake, and the
  // certificate is checked against the name (DNS:localhost).
  const outcome three = connection(same, kLocalhost);
  ASSERT_FALSE(three.tls) << three.tls.message() << ": " << three.last_error;
  EXPECT_FALSE(three.read) << three.read.message();
  EXPECT_EQ(three.line, kGreeting);
  EXPECT_FALSE(three.resumed) << "a session of 127.0.0.1 was offered to localhost";
  EXPECT_EQ(reported(reused3.future).value_or(-1), 0);
}

// --- certificate checks ----------------------------------------------------------

TEST_F(TlsStreamTest, ACertificateFromAnotherCaIsRejected) {
  const credentials other_ca = make_ca("another test CA");
  write_pem(tmp_.path() / "other-ca.pem", other_ca.cert.get());
  config::tls_options trust_other;
  trust_other.ca_file = (tmp_.path() / "other-ca.pem").string();
  auto ctx = context_for(trust_other);
  ASSERT_TRUE(ctx);
  check_rejected(ctx, kLoopback);
}

TEST_F(TlsStreamTest, ACertificateForAnotherNameIsRejected) {
  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  // A trusted certificate, but it names 127.0.0.1 and localhost only.
  check_rejected(ctx, kWrongName);
}

TEST_F(TlsStreamTest, WithoutVerificationAnUntrustedCertificateIsAccepted) {
  server_->add([](SSL* ssl) {
    if (send_text(ssl, kGreeting)) wait_until_client_closes(ssl);
  });
  // No CA file either: only the system store, which knows nothing of the test CA.
  config::tls_options no_verify;
  no_verify.verify_peer = false;
  auto ctx = context_for(no_verify);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  error_code tls_ec, read_ec;
  std::string greeting;
  run([&]() -> asio::awaitable<void> {
    tls_ec = co_await connect_tls(s, kLoopback, server_port, ctx, kLoopback);
    if (tls_ec) co_return;
    read_ec = co_await read_line(s, greeting);
  });
  ASSERT_FALSE(tls_ec) << tls_ec.message() << ": " << s.last_error();
  EXPECT_TRUE(s.is_tls());
  EXPECT_FALSE(read_ec) << read_ec.message() << ": " << s.last_error();
  EXPECT_EQ(greeting, kGreeting);
}

// --- timeouts --------------------------------------------------------------------

TEST_F(TlsStreamTest, AServerThatNeverSpeaksTlsTimesOutTheHandshake) {
  server_->add_silent();  // accepts, then never reads or writes: only the timeout ends it
  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  error_code connect_ec, tls_ec;
  std::chrono::milliseconds took{0};
  run([&]() -> asio::awaitable<void> {
    connect_ec = co_await s.connect(kLoopback, server_port, kIoTimeout);
    if (connect_ec) co_return;
    const auto start = std::chrono::steady_clock::now();
    tls_ec = co_await s.start_tls(ctx, kLoopback, kShortTimeout);
    took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  });
  ASSERT_FALSE(connect_ec) << connect_ec.message() << ": " << s.last_error();
  EXPECT_EQ(tls_ec, errc::timed_out) << tls_ec.message() << ": " << s.last_error();
  EXPECT_GE(took.count(), kShortTimeoutMs);  // a timer never fires early
}

TEST_F(TlsStreamTest, ASilentServerTimesOutTheRead) {
  server_->add([](SSL* ssl) { wait_until_client_closes(ssl); });  // sends nothing
  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  error_code tls_ec, read_ec;
  std::size_t n = 99;
  std::chrono::milliseconds took{0};
  run([&]() -> asio::awaitable<void> {
    tls_ec = co_await connect_tls(s, kLoopback, server_port, ctx, kLoopback);
    if (tls_ec) co_return;
    // Only the session tickets arrive: records without application data.
    std::array<char, 4096> chunk{};
    const asio::mutable_buffer buf = asio::buffer(chunk);
    const auto start = std::chrono::steady_clock::now();
    n = co_await s.read_some(buf, kShortTimeout, read_ec);
    took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  });
  ASSERT_FALSE(tls_ec) << tls_ec.message() << ": " << s.last_error();
  EXPECT_EQ(read_ec, errc::timed_out) << read_ec.message() << ": " << s.last_error();
  EXPECT_EQ(n, 0u);
  EXPECT_GE(took.count(), kShortTimeoutMs);
}

// --- the peer ends the connection ------------------------------------------------

TEST_F(TlsStreamTest, CloseNotifyAfterALineIsClosed) {
  server_->add([](SSL* ssl) {
    if (!send_text(ssl, "bye\r\n")) return;
    (void)SSL_shutdown(ssl);  // close_notify; the socket stays open
    wait_until_client_closes(ssl);
  });
  const ending e = read_to_the_end(false);
  expect_line_then_closed(e);
}

TEST_F(TlsStreamTest, ATcpCloseWithoutCloseNotifyIsClosed) {
  server_->add([](SSL* ssl) {
    if (!send_text(ssl, "bye\r\n")) return;
    close_without_close_notify(ssl);  // FIN after the line
    wait_until_client_closes(ssl);
  });
  const ending e = read_to_the_end(false);
  expect_line_then_closed(e);
}

TEST_F(TlsStreamTest, AResetAfterALineIsClosed) {
  report<std::string> ack;
  server_->add([p = ack.promise](SSL* ssl) {
    if (!send_text(ssl, "bye\r\n")) return;
    // The client has read the line once its ack is here; then: RST.
    p->set_value(receive_exactly(ssl, kAck.size()).value_or("<client closed>"));
    reset_when_closed(ssl);
  });
  const ending e = read_to_the_end(true);
  EXPECT_FALSE(e.ack_ec) << e.ack_ec.message() << ": " << e.last_error;
  EXPECT_EQ(reported(ack.future).value_or("<no report>"), kAck);
  expect_line_then_closed(e);
}

// --- a read and a write at the same time -----------------------------------------

// IMAP IDLE: a read waits for the server while the client writes DONE; the
// server's answer to DONE completes that read.
TEST_F(TlsStreamTest, AWriteGoesOutWhileAReadIsPending) {
  report<std::string> done;
  server_->add([p = done.promise](SSL* ssl) {
    if (!send_text(ssl, "+ idling\r\n")) return;
    const auto line = receive_exactly(ssl, kDone.size());
    p->set_value(line.value_or("<client closed>"));
    if (line == kDone && send_text(ssl, "a2 OK done\r\n")) wait_until_client_closes(ssl);
  });
  auto ctx = context_for(trust_test_ca_);
  ASSERT_TRUE(ctx);
  stream& s = new_stream();
  const std::uint16_t server_port = port();
  async_flag idling(io_.get_executor());
  async_flag answered(io_.get_executor());
  error_code tls_ec, read_ec, write_ec;
  std::string continuation, answer;
  bool answered_before_done = true;
  run([&]() -> asio::awaitable<void> {
    tls_ec = co_await connect_tls(s, kLoopback, server_port, ctx, kLoopback);
    if (tls_ec) co_return;
    asio::co_spawn(io_, idle_reader(s, continuation, answer, read_ec, idling, answered),
                   asio::detached);
    // The continuation is read and the next read is pending.
    co_await idling.wait();
    answered_before_done = answered.is_set();
    const asio::const_buffer done_line = asio::buffer(kDone);
    write_ec = co_await s.write_all(done_line, kIoTimeout);
    co_await answered.wait();  // the reader's frame refers to this test's variables
  });
  ASSERT_FALSE(tls_ec) << tls_ec.message() << ": " << s.last_error();
  EXPECT_EQ(continuation, "+ idling\r\n");
  EXPECT_FALSE(answered_before_done);
  EXPECT_FALSE(write_ec) << write_ec.message() << ": " << s.last_error();
  EXPECT_EQ(reported(done.future).value_or("<no report>"), kDone);
  EXPECT_FALSE(read_ec) << read_ec.message() << ": " << s.last_error();
  EXPECT_EQ(answer, "a2 OK done\r\n");
}

}  // namespace
}  // namespace mailroom::net
