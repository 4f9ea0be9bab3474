#include "observability/health_server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <chrono>

namespace mailroom::observability {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

health_server::health_server(asio::any_io_executor ex) : executor_(ex), acceptor_(ex) {}

health_server::~health_server() {
  stop();
}

error_code health_server::listen(const std::string& address, std::uint16_t port) {
  error_code ec;
  const auto addr = asio::ip::make_address(address, ec);
  if (ec) return ec;
  const tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (ec) return ec;
  acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  acceptor_.bind(ep, ec);
  if (ec) return ec;
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

std::uint16_t health_server::port() const {
  error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void health_server::stop() {
  error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> health_server::serve() {
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      continue;  // e.g. EMFILE; keep serving
    }
    asio::co_spawn(executor_, handle(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> health_server::handle(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  error_code ec;
  http::request_parser<http::string_body> parser;
  parser.header_limit(8 * 1024);  // a probe sends a few hundred bytes
  parser.body_limit(8 * 1024);
  stream.expires_after(std::chrono::seconds(10));
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  const auto& req = parser.get();
  http::response<http::string_body> res;
  res.version(req.version());
  res.keep_alive(false);
  const std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));
  // Like WEBrick's mount_proc: a route and anything below it, any method.
  for (std::string_view route : {"/liveness", "/readiness", "/metrics"}) {
    if (path.starts_with(route) && (path.size() == route.size() || path[route.size()] == '/'))
      path = route;
  }
  std::optional<http_reply> reply;
  if (routes_) reply = routes_(path);
  if (!reply && path == "/liveness") {
    reply = http_reply{running_ ? 200u : 500u, running_ ? "OK\n" : "Not running\n"};
  }
  if (!reply) reply = http_reply{404, "Not Found\n"};
  res.result(static_cast<http::status>(reply->status));
  res.set(http::field::content_type, reply->content_type);
  res.body() = std::move(reply->body);
  res.prepare_payload();
  co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

}  // namespace mailroom::observability
