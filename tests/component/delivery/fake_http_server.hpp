// A minimal HTTP/1.1 server for component tests: listens on 127.0.0.1 port 0
// on its own thread, records each request (method, target, headers, body) and
// answers with a programmable status, or never answers (to force timeouts).
// Tests wait on next_request(), never on sleeps.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mailroom::test {

struct recorded_request {
  std::string method;
  std::string target;  // "/path" or, through a proxy, "http://host/path"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The value of the first header named `name` (case-insensitive), if any.
  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (std::equal(k.begin(), k.end(), name.begin(), name.end(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        return v;
      }
    }
    return std::nullopt;
  }
  std::size_t header_count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& [k, v] : headers) {
      if (std::equal(k.begin(), k.end(), name.begin(), name.end(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        ++n;
      }
    }
    return n;
  }
};

class fake_http_server {
 public:
  // status 0: read the request, record it, never answer.
  explicit fake_http_server(int status = 200, std::string body = "{\"success\":true}")
      : status_(status), response_body_(std::move(body)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) throw std::runtime_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      throw std::runtime_error("bind/listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~fake_http_server() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      // shutdown() wakes the accept() and recv() calls blocked on these sockets.
      ::shutdown(listen_fd_, SHUT_RDWR);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    thread_.join();
    ::close(listen_fd_);
    for (int fd : open_fds_) ::close(fd);
  }

  std::uint16_t port() const { return port_; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // The status and body of the answers from now on.
  void set_response(int status, std::string body) {
    std::lock_guard lock(mutex_);
    status_ = status;
    response_body_ = std::move(body);
  }
  void set_status(int status) {
    std::lock_guard lock(mutex_);
    status_ = status;
  }
  // Header lines ("Name: value\r\n" each) added to the answers from now on.
  void set_extra_headers(std::string lines) {
    std::lock_guard lock(mutex_);
    extra_headers_ = std::move(lines);
  }

  // Requests received so far (taken by next_request() or not).
  std::size_t received() {
    std::lock_guard lock(mutex_);
    return received_;
  }

  // The next request received; fails (throws) if none arrives within 10 s.
  recorded_request next_request() {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [this] { return !requests_.empty(); })) {
      throw std::runtime_error("no request received");
    }
    recorded_request r = std::move(requests_.front());
    requests_.pop_front();
    return r;
  }
  std::size_t pending_requests() {
    std::lock_guard lock(mutex_);
    return requests_.size();
  }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;  // shut down
      {
        std::lock_guard lock(mutex_);
        if (stopping_) {
          ::close(fd);
          return;
        }
        open_fds_.insert(fd);
      }
      handle(fd);
    }
  }

  void handle(int fd) {
    std::string data;
    char buf[65536];
    std::size_t header_end;
    while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return close_fd(fd);
      data.append(buf, static_cast<std::size_t>(n));
    }
    recorded_request req;
    const std::string head = data.substr(0, header_end);
    std::size_t line_end = head.find("\r\n");
    const std::string request_line = head.substr(0, line_end);
    const std::size_t sp1 = request_line.find(' ');
    const std::size_t sp2 = request_line.rfind(' ');
    req.method = request_line.substr(0, sp1);
    req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::size_t content_length = 0;
    while (line_end != std::string::npos && line_end < head.size()) {
      const std::size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line =
          head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      if (line.empty()) continue;
      const std::size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower == "content-length") content_length = std::stoul(value);
      req.headers.emplace_back(std::move(name), std::move(value));
    }
    req.body = data.substr(header_end + 4);
    while (req.body.size() < content_length) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return close_fd(fd);
      req.body.append(buf, static_cast<std::size_t>(n));
    }
    int status;
    std::string body;
    std::string extra;
    {
      std::lock_guard lock(mutex_);
      status = status_;
      body = response_body_;
      extra = extra_headers_;
      ++received_;
      requests_.push_back(std::move(req));
    }
    cv_.notify_all();
    if (status == 0) return;  // hang: the socket stays open until the server is destroyed
    const std::string response = "HTTP/1.1 " + std::to_string(status) + " Status\r\n" +
                                 "Content-Type: application/json\r\n" + extra +
                                 "Content-Length: " + std::to_string(body.size()) +
                                 "\r\nConnection: close\r\n\r\n" + body;
    std::size_t sent = 0;
    while (sent < response.size()) {
      const ssize_t n = ::send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<std::size_t>(n);
    }
    close_fd(fd);
  }

  void close_fd(int fd) {
    std::lock_guard lock(mutex_);
    open_fds_.erase(fd);
    ::close(fd);
  }

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  int status_;
  std::string response_body_;
  std::string extra_headers_;
  std::size_t received_ = 0;
  std::deque<recorded_request> requests_;
  std::set<int> open_fds_;
  std::thread thread_;
};

// A local port with nothing listening: bound, then closed.
inline std::uint16_t unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace mailroom::test
