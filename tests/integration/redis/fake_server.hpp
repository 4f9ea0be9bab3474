// A scripted fake Redis on 127.0.0.1:<port 0> for wire-level tests.
#pragma once

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <functional>
#include <optional>
#include <string>

namespace mailroom::test_support {

namespace asio = boost::asio;
using asio::ip::tcp;

// Accepts one connection; for every chunk received, records it and lets
// `respond` return what to send back ("" sends nothing).
class fake_server {
 public:
  fake_server(asio::io_context& ctx,
              std::function<std::string(const std::string& received)> respond)
      : acceptor_(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        respond_(std::move(respond)) {
    asio::co_spawn(ctx, serve(), asio::detached);
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  const std::string& received() const { return received_; }
  void stop() {
    boost::system::error_code ec;
    acceptor_.close(ec);
    if (socket_) socket_->close(ec);
  }

 private:
  asio::awaitable<void> serve() {
    boost::system::error_code ec;
    tcp::socket s = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    socket_.emplace(std::move(s));
    char buf[4096];
    for (;;) {
      const std::size_t n = co_await socket_->async_read_some(
          asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      received_.append(buf, n);
      const std::string out = respond_(received_);
      if (!out.empty()) {
        co_await asio::async_write(*socket_, asio::buffer(out),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
      }
    }
  }

  tcp::acceptor acceptor_;
  std::optional<tcp::socket> socket_;
  std::function<std::string(const std::string&)> respond_;
  std::string received_;
};

}  // namespace mailroom::test_support
