// The HTTP health endpoint GitLab's Helm chart probes (gitlab-mail_room's
// /liveness): 200 "OK\n" while running, 500 "Not running\n" once shutdown began.
// The service adds routes (/liveness with stall detection, /readiness,
// /metrics) through set_routes(); without them only /liveness answers.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace mailroom::observability {

struct http_reply {
  unsigned status = 200;
  std::string body;
  std::string content_type = "text/plain";
};
// Called with the request path (query removed, "/liveness/x" as "/liveness");
// nullopt falls back to the built-in /liveness or 404.
using route_handler = std::function<std::optional<http_reply>(std::string_view path)>;

class health_server {
 public:
  explicit health_server(boost::asio::any_io_executor ex);
  ~health_server();

  // Binds and listens; returns the error (address in use, bad address).
  boost::system::error_code listen(const std::string& address, std::uint16_t port);
  std::uint16_t port() const;

  // Accepts connections until stop().
  boost::asio::awaitable<void> serve();
  void set_running(bool running) { running_ = running; }
  bool running() const { return running_; }
  void set_routes(route_handler h) { routes_ = std::move(h); }
  void stop();

 private:
  boost::asio::awaitable<void> handle(boost::asio::ip::tcp::socket socket);
  boost::asio::any_io_executor executor_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  bool running_ = true;
  route_handler routes_;
};

}  // namespace mailroom::observability
