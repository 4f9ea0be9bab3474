#include "net/tls_context.hpp"

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <tuple>

#include <openssl/x509.h>

namespace mailroom::net {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// The sessions one context remembers: the newest per peer. A peer issues a
// new session on every handshake (TLS 1.3 servers send tickets after each
// one), so the newest replaces the one before. Bounded by the number of
// peers a configuration names; the cap only guards against a runaway list.
struct session_store {
  static constexpr std::size_t max_peers = 4096;
  std::mutex mutex;
  std::map<std::string, SSL_SESSION*, std::less<>> sessions;  // one reference each
  session_store() = default;
  session_store(const session_store&) = delete;
  session_store& operator=(const session_store&) = delete;
  ~session_store() {
    for (auto& [peer, s] : sessions) SSL_SESSION_free(s);
  }
};

// A context and its sessions live and die together: connections hold the
// context through a shared_ptr aliasing this holder.
struct context_holder {
  asio::ssl::context context{asio::ssl::context::tls_client};
  session_store store;
};

// ex_data slots: the store on the SSL_CTX, the peer name on each SSL.
int store_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
int peer_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

session_store* store_of(const SSL_CTX* ctx) {
  return static_cast<session_store*>(SSL_CTX_get_ex_data(ctx, store_index()));
}

// OpenSSL calls this for each session the server issued: after the
// handshake in TLS 1.2, on each NewSessionTicket in TLS 1.3 (RFC 8446 §4.6.1).
// Returning 1 keeps the reference OpenSSL passed.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  const auto* peer = static_cast<const std::string*>(SSL_get_ex_data(ssl, peer_index()));
  session_store* store = store_of(SSL_get_SSL_CTX(ssl));
  if (peer == nullptr || store == nullptr || !SSL_SESSION_is_resumable(session)) return 0;
  std::lock_guard lock(store->mutex);
  auto it = store->sessions.find(*peer);
  if (it != store->sessions.end()) {
    SSL_SESSION_free(it->second);
    it->second = session;
    return 1;
  }
  if (store->sessions.size() >= session_store::max_peers) {
    for (auto& [p, s] : store->sessions) SSL_SESSION_free(s);
    store->sessions.clear();
  }
  store->sessions.emplace(*peer, session);
  return 1;
}

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
  auto holder = std::make_shared<context_holder>();
  std::shared_ptr<asio::ssl::context> ctx(holder, &holder->context);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_ex_data(native, store_index(), &holder->store);
  // Sessions are kept by peer in the store, not in OpenSSL's internal cache
  // (which a client cannot look up by peer).
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(native, on_new_session);
  // A TLS 1.2 server's HelloRequest is ignored (RFC 5746 renegotiation is
  // never needed by IMAP or Redis, and a read would otherwise have to write).
  SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
  // An idle session holds no OpenSSL read or write buffer (each sized for a
  // 16 KiB record): a mailbox in IDLE reads a few bytes every few minutes.
  // Partial writes: SSL_write returns after each record, so a write that
  // waits for socket room is retried with the rest (net::stream).
  SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE);
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

void prepare_resumption(SSL* ssl, const std::string* peer) {
  SSL_set_ex_data(ssl, peer_index(), const_cast<std::string*>(peer));
  session_store* store = store_of(SSL_get_SSL_CTX(ssl));
  if (store == nullptr) return;
  std::lock_guard lock(store->mutex);
  auto it = store->sessions.find(*peer);
  if (it == store->sessions.end()) return;
  if (SSL_SESSION_is_resumable(it->second)) {
    SSL_set_session(ssl, it->second);  // takes its own reference
  } else {
    SSL_SESSION_free(it->second);
    store->sessions.erase(it);
  }
}

namespace {
std::atomic<std::uint64_t> handshakes{0};
std::mutex hook_mutex;
std::function<void()> handshake_hook;
}  // namespace

std::uint64_t tls_handshakes() {
  return handshakes.load(std::memory_order_relaxed);
}

void count_tls_handshake() {
  handshakes.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(hook_mutex);
  if (handshake_hook) handshake_hook();
}

void set_handshake_hook(std::function<void()> hook) {
  std::lock_guard lock(hook_mutex);
  handshake_hook = std::move(hook);
}

std::size_t remembered_sessions(const SSL_CTX* ctx) {
  session_store* store = store_of(ctx);
  if (store == nullptr) return 0;
  std::lock_guard lock(store->mutex);
  return store->sessions.size();
}

}  // namespace mailroom::net
