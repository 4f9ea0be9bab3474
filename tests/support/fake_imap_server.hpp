// A scripted IMAP server for component tests: listens on 127.0.0.1 port 0,
// runs one script per accepted connection (the first connection gets the first
// script added, and so on), each on its own thread with plain blocking sockets.
//
// A script is a list of steps: expect a client line matching a pattern (group 1
// of the pattern, if any, becomes the tag that tagged() answers with), send
// bytes (whole, or in small pieces), check that the client stays silent for a
// while, call back into the test, close the connection. When the script ends
// with the connection still open, the server keeps reading until the client
// closes it, so anything the client sends afterwards still shows in the
// transcript.
//
// Every line the client sends (without its CRLF) is recorded per connection;
// tests assert the exact transcript. A failed expectation is recorded in
// errors() and closes that connection, so the client sees a dropped connection
// instead of hanging.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mailroom::test {

class imap_connection;

// A builder of steps; each step returns false to end the connection's script.
class imap_script {
 public:
  using step = std::function<bool(imap_connection&)>;

  // Sends `bytes` as they are.
  imap_script& send(std::string bytes);
  // Sends `text` followed by CRLF.
  imap_script& line(std::string text) { return send(std::move(text) + "\r\n"); }
  // Sends "<tag> <text>" and CRLF, the tag captured by the last expect().
  imap_script& tagged(std::string text);
  // Sends `bytes` in pieces of `piece` bytes, each written separately.
  imap_script& send_in_pieces(std::string bytes, std::size_t piece);
  // The client's next line must match `pattern` (ECMAScript, whole line
  // without CRLF). Capture group 1, when present, becomes the tag.
  imap_script& expect(std::string pattern);
  // The client must send nothing for `d`.
  imap_script& silence(std::chrono::milliseconds d);
  // The client must close the connection without sending another line.
  imap_script& expect_eof();
  // Runs `fn` on the server thread (e.g. to wake a waiting test coroutine).
  imap_script& call(std::function<void()> fn);
  // Waits (on the server thread, sending nothing) until `ready()` is true,
  // e.g. until the client logged a decision or a delivery arrived: an
  // observable event, never a fixed time. Fails the connection, naming
  // `what`, if it does not happen within `limit`.
  imap_script& wait_for(std::function<bool()> ready, std::string what,
                        std::chrono::milliseconds limit = std::chrono::seconds(10));
  // Handles every further line with `fn` until the client closes;
  // `fn` returns false to end the script.
  imap_script& serve(std::function<bool(imap_connection&, const std::string& line)> fn);
  // Closes the connection at once (e.g. in the middle of a response).
  imap_script& close();
  // Any custom step.
  imap_script& then(step s) {
    steps_.push_back(std::move(s));
    return *this;
  }

  // The bytes of a synchronizing literal: "{N}\r\n" + bytes.
  static std::string literal(const std::string& bytes) {
    return "{" + std::to_string(bytes.size()) + "}\r\n" + bytes;
  }

  const std::vector<step>& steps() const { return steps_; }

 private:
  std::vector<step> steps_;
};

class fake_imap_server;

// One accepted connection, as seen by the steps of its script.
class imap_connection {
 public:
  imap_connection(fake_imap_server& server, std::size_t index, int fd)
      : server_(server), index_(index), fd_(fd) {}

  std::size_t index() const { return index_; }
  const std::string& tag() const { return tag_; }
  void set_tag(std::string t) { tag_ = std::move(t); }

  // False when the peer is gone.
  bool send(const std::string& bytes);
  // The next line (without CRLF), or nothing on EOF/timeout; records it.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout, bool& timed_out);
  // True when the client sent nothing (and did not close) within `d`.
  bool quiet_for(std::chrono::milliseconds d, std::string& got);
  void fail(const std::string& what);
  std::chrono::milliseconds expect_timeout();
  void close_now();
  bool closed() const { return closed_; }

 private:
  fake_imap_server& server_;
  std::size_t index_;
  int fd_;
  bool closed_ = false;
  std::string buffer_;
  std::string tag_;
};

class fake_imap_server {
 public:
  fake_imap_server() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd_ < 0) throw std::runtime_error("socket");
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      ::close(listen_fd_);
      throw std::runtime_error("bind/listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~fake_imap_server() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      // shutdown() wakes the accept(), poll() and recv() calls blocked on them.
      ::shutdown(listen_fd_, SHUT_RDWR);
      for (auto& c : conns_)
        if (c->fd >= 0) ::shutdown(c->fd, SHUT_RDWR);
    }
    acceptor_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      for (auto& c : conns_) threads.push_back(std::move(c->thread));
    }
    for (auto& t : threads)
      if (t.joinable()) t.join();
    ::close(listen_fd_);
  }

  fake_imap_server(const fake_imap_server&) = delete;
  fake_imap_server& operator=(const fake_imap_server&) = delete;

  std::uint16_t port() const { return port_; }

  // The script for the next connection not yet given one. Add scripts before
  // the client connects.
  void add(imap_script script) {
    std::lock_guard lock(mutex_);
    scripts_.push_back(std::move(script));
  }

  // How long expect() waits for a line before failing.
  void set_expect_timeout(std::chrono::milliseconds t) {
    std::lock_guard lock(mutex_);
    expect_timeout_ = t;
  }
  std::chrono::milliseconds expect_timeout() {
    std::lock_guard lock(mutex_);
    return expect_timeout_;
  }

  // Lines received on connection `i` (0-based), without CRLF.
  std::vector<std::string> transcript(std::size_t i) {
    std::lock_guard lock(mutex_);
    return i < conns_.size() ? conns_[i]->lines : std::vector<std::string>{};
  }
  std::size_t connection_count() {
    std::lock_guard lock(mutex_);
    return conns_.size();
  }
  // Failed expectations and unexpected connections, in order.
  std::vector<std::string> errors() {
    std::lock_guard lock(mutex_);
    return errors_;
  }
  // Waits until every accepted connection has ended (script done and the
  // client gone, or closed by the script). False on timeout.
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] {
      for (auto& c : conns_)
        if (!c->finished) return false;
      return true;
    });
  }

 private:
  friend class imap_connection;

  struct conn_state {
    int fd = -1;
    std::vector<std::string> lines;
    bool finished = false;
    std::thread thread;
  };

  void accept_loop() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;  // shut down
      std::lock_guard lock(mutex_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      // Each scripted line goes out at once, not after the client's delayed ACK.
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      const std::size_t index = conns_.size();
      auto st = std::make_unique<conn_state>();
      st->fd = fd;
      std::optional<imap_script> script;
      if (index < scripts_.size()) script = scripts_[index];
      conn_state* raw = st.get();
      conns_.push_back(std::move(st));
      raw->thread = std::thread(
          [this, index, fd, script = std::move(script)] { run_connection(index, fd, script); });
    }
  }

  void run_connection(std::size_t index, int fd, const std::optional<imap_script>& script) {
    imap_connection c(*this, index, fd);
    if (!script) {
      record_error("connection " + std::to_string(index) + ": no script for it");
      c.send("* BYE no script for this connection\r\n");
    } else {
      for (const auto& s : script->steps()) {
        if (c.closed() || !s(c)) break;
      }
      // Script done: keep reading (and recording) until the client closes.
      while (!c.closed()) {
        bool timed_out = false;
        if (!c.read_line(std::chrono::hours(1), timed_out) && !timed_out) break;
      }
    }
    c.close_now();
    std::lock_guard lock(mutex_);
    conns_[index]->finished = true;
    cv_.notify_all();
  }

  void record_line(std::size_t index, std::string line) {
    std::lock_guard lock(mutex_);
    conns_[index]->lines.push_back(std::move(line));
  }
  void record_error(std::string e) {
    std::lock_guard lock(mutex_);
    errors_.push_back(std::move(e));
  }
  void forget_fd(std::size_t index) {
    std::lock_guard lock(mutex_);
    if (conns_[index]->fd >= 0) ::close(conns_[index]->fd);
    conns_[index]->fd = -1;
  }

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::chrono::milliseconds expect_timeout_{std::chrono::seconds(10)};
  std::vector<imap_script> scripts_;
  std::vector<std::unique_ptr<conn_state>> conns_;
  std::vector<std::string> errors_;
  std::thread acceptor_;
};

// --- imap_connection ---------------------------------------------------------

inline bool imap_connection::send(const std::string& bytes) {
  if (closed_) return false;
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

inline std::optional<std::string> imap_connection::read_line(std::chrono::milliseconds timeout,
                                                             bool& timed_out) {
  timed_out = false;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const std::size_t eol = buffer_.find("\r\n");
    if (eol != std::string::npos) {
      std::string line = buffer_.substr(0, eol);
      buffer_.erase(0, eol + 2);
      server_.record_line(index_, line);
      return line;
    }
    if (closed_) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      return std::nullopt;
    }
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1 << 30)));
    if (r == 0) continue;
    if (r < 0) return std::nullopt;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      // EOF: a last line without CRLF is still recorded.
      if (!buffer_.empty()) server_.record_line(index_, std::exchange(buffer_, {}));
      close_now();
      return std::nullopt;
    }
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

inline bool imap_connection::quiet_for(std::chrono::milliseconds d, std::string& got) {
  if (!buffer_.empty()) {
    got = buffer_;
    return false;
  }
  pollfd p{fd_, POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(d.count()));
  if (r == 0) return true;
  char buf[65536];
  const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_PEEK);
  got = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("<EOF>");
  return false;
}

inline void imap_connection::fail(const std::string& what) {
  server_.record_error("connection " + std::to_string(index_) + ": " + what);
}

inline std::chrono::milliseconds imap_connection::expect_timeout() {
  return server_.expect_timeout();
}

inline void imap_connection::close_now() {
  if (closed_) return;
  closed_ = true;
  ::shutdown(fd_, SHUT_RDWR);
  server_.forget_fd(index_);
}

// --- imap_script ---------------------------------------------------------------

inline imap_script& imap_script::send(std::string bytes) {
  return then([bytes = std::move(bytes)](imap_connection& c) {
    c.send(bytes);
    return true;
  });
}

inline imap_script& imap_script::tagged(std::string text) {
  return then([text = std::move(text)](imap_connection& c) {
    c.send(c.tag() + " " + text + "\r\n");
    return true;
  });
}

inline imap_script& imap_script::send_in_pieces(std::string bytes, std::size_t piece) {
  return then([bytes = std::move(bytes), piece](imap_connection& c) {
    for (std::size_t at = 0; at < bytes.size(); at += piece) {
      if (!c.send(bytes.substr(at, piece))) return false;
      // Gives each piece its own TCP segment, so the client sees short reads.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  });
}

inline imap_script& imap_script::expect(std::string pattern) {
  return then([pattern, re = std::regex(pattern)](imap_connection& c) {
    bool timed_out = false;
    auto got = c.read_line(c.expect_timeout(), timed_out);
    if (!got) {
      c.fail("expected /" + pattern + "/, " +
             (timed_out ? std::string("client sent nothing") : std::string("client closed")));
      c.close_now();
      return false;
    }
    std::smatch m;
    if (!std::regex_match(*got, m, re)) {
      c.fail("expected /" + pattern + "/, client sent: " + *got);
      c.close_now();
      return false;
    }
    if (m.size() > 1) c.set_tag(m[1].str());
    return true;
  });
}

inline imap_script& imap_script::silence(std::chrono::milliseconds d) {
  return then([d](imap_connection& c) {
    std::string got;
    if (!c.quiet_for(d, got)) c.fail("expected silence, client sent: " + got);
    return true;
  });
}

inline imap_script& imap_script::expect_eof() {
  return then([](imap_connection& c) {
    bool timed_out = false;
    auto got = c.read_line(std::chrono::seconds(10), timed_out);
    if (got) c.fail("expected the client to close, got: " + *got);
    if (timed_out) c.fail("expected the client to close; it stayed connected");
    return false;
  });
}

inline imap_script& imap_script::call(std::function<void()> fn) {
  return then([fn = std::move(fn)](imap_connection&) {
    fn();
    return true;
  });
}

inline imap_script& imap_script::wait_for(std::function<bool()> ready, std::string what,
                                          std::chrono::milliseconds limit) {
  return then([ready = std::move(ready), what = std::move(what), limit](imap_connection& c) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ready()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        c.fail("waited " + std::to_string(limit.count()) + " ms in vain for " + what);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  });
}

inline imap_script& imap_script::serve(
    std::function<bool(imap_connection&, const std::string& line)> fn) {
  return then([fn = std::move(fn)](imap_connection& c) {
    for (;;) {
      bool timed_out = false;
      auto got = c.read_line(std::chrono::hours(1), timed_out);
      if (!got) return false;
      if (!fn(c, *got)) return false;
    }
  });
}

inline imap_script& imap_script::close() {
  return then([](imap_connection& c) {
    c.close_now();
    return false;
  });
}

}  // namespace mailroom::test
