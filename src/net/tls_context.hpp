// Client TLS contexts, shared per distinct configuration, and the TLS sessions
// they remember for resumption. No I/O here: net::stream drives the handshakes.
#pragma once

#include "config/model.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <openssl/ssl.h>

namespace mailroom::net {

// An OpenSSL client context: TLS >= 1.2, peer verification unless
// opts.verify_peer is false, CA from opts.ca_file/ca_path or the system store;
// buffers released while a session is idle (SSL_MODE_RELEASE_BUFFERS);
// client-side session cache (below). Shared: the same settings (and the same
// CA file on disk) give the same context while any connection holds it.
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const config::tls_options& opts,
                                                                   boost::system::error_code& ec);

// Session resumption (RFC 8446 §2.2; RFC 5077 for TLS 1.2): every context
// made above remembers the last session each peer ("host:port") issued on it,
// and a new connection to that peer offers it. A resumed handshake skips the
// certificate chain and its verification; the session keeps the verified peer
// of the full handshake it came from, and never crosses contexts (a context
// is one trust configuration).
//
// Before the handshake: ties `ssl` to `peer` (which must outlive `ssl`) so
// that sessions the server issues are remembered under it, and offers the
// session remembered for it, if any.
void prepare_resumption(SSL* ssl, const std::string* peer);

// TLS handshakes started by this process, and a hook called (on the
// handshaking thread) at each one: app/heap_trimmer. One hook per process;
// nullptr removes it.
std::uint64_t tls_handshakes();
void count_tls_handshake();
void set_handshake_hook(std::function<void()> hook);

// Sessions remembered by the context of `ssl`, for tests and diagnostics.
std::size_t remembered_sessions(const SSL_CTX* ctx);

}  // namespace mailroom::net
