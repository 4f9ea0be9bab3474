// Real redis-server / redis-sentinel processes for integration tests.
//
// Each server runs in the foreground as our child (--daemonize no), on a port
// found free by binding port 0, with its files in a fresh temp dir; it is
// killed and reaped in the destructor. Readiness is polled (PING, a bounded
// number of attempts) and a child that exits early (port taken) fails fast.
//
// cmd() talks to a server over a plain blocking socket with the RESP core
// only, so assertions never depend on the client under test.
#pragma once

#include "support/temp_dir.hpp"

#include "redis/resp/encoder.hpp"
#include "redis/resp/parser.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace mailroom::test_support {

// A TCP port nobody listens on right now (the kernel's pick for port 0).
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// One command over a new blocking connection, after the `prelude` commands
// (AUTH, SELECT) whose replies are ignored. Returns nullopt when the server
// cannot be reached or does not answer within `timeout`.
inline std::optional<redis::reply> raw_command(
    std::uint16_t port, const std::vector<std::string>& args,
    const std::vector<std::vector<std::string>>& prelude = {},
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  std::string out;
  for (const auto& p : prelude) redis::append_command(out, p);
  redis::append_command(out, args);
  const std::size_t expected = prelude.size() + 1;
  for (std::size_t sent = 0; sent < out.size();) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      return std::nullopt;
    }
    sent += static_cast<std::size_t>(n);
  }
  redis::resp_parser parser;
  std::vector<redis::reply> replies;
  char buf[16384];
  while (replies.size() < expected) {
    auto r = parser.next();
    if (!r.has_value()) break;
    if (r->has_value()) {
      replies.push_back(std::move(**r));
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    parser.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
  ::close(fd);
  if (replies.size() < expected) return std::nullopt;
  return replies.back();
}

// Polls `ready` up to `attempts` times, `interval` apart.
inline bool wait_until(const std::function<bool()>& ready, int attempts = 200,
                       std::chrono::milliseconds interval = std::chrono::milliseconds(25)) {
  for (int i = 0; i < attempts; ++i) {
    if (ready()) return true;
    std::this_thread::sleep_for(interval);
  }
  return false;
}

// A child process; SIGKILL + reap on stop() and in the destructor.
class child_process {
 public:
  child_process() = default;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() { stop(); }

  void start(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    stop();
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + " failed");
    pid_ = pid;
  }

  // False once the child has exited (e.g. its port was taken).
  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

struct redis_server_options {
  std::string requirepass;
  // ACL rules, one `user ...` line each, e.g. "mailroom on >s3cret ~* &* +@all".
  std::vector<std::string> acl_users;
  std::optional<std::uint16_t> replica_of;  // port of the primary on 127.0.0.1
  std::vector<std::string> extra_args;

  static redis_server_options with_password(std::string pass) {
    redis_server_options o;
    o.requirepass = std::move(pass);
    return o;
  }
  static redis_server_options with_acl_user(std::string rule) {
    redis_server_options o;
    o.acl_users.push_back(std::move(rule));
    return o;
  }
  static redis_server_options replica(std::uint16_t primary_port) {
    redis_server_options o;
    o.replica_of = primary_port;
    return o;
  }
};

class redis_server {
 public:
  explicit redis_server(redis_server_options opts = {}) : opts_(std::move(opts)) {
    port_ = free_port();
    start();
  }

  std::uint16_t port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_.path(); }

  // (Re)starts on the same port and waits until PING answers.
  void start() {
    std::vector<std::string> argv{"/usr/bin/redis-server", "--port", std::to_string(port_),
                                  "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--daemonize", "no", "--dir", dir_.path().string(),
                                  // Without this the first replica sync waits 5 s
                                  // (dependencies-and-test-servers pitfall 9).
                                  "--repl-diskless-sync-delay", "0"};
    if (!opts_.requirepass.empty()) {
      argv.push_back("--requirepass");
      argv.push_back(opts_.requirepass);
    }
    for (const auto& u : opts_.acl_users) {
      // One argv element per word: redis-server quotes an argument that has
      // spaces, which would make the whole rule the user name.
      argv.push_back("--user");
      std::istringstream words(u);
      for (std::string w; words >> w;) argv.push_back(w);
    }
    if (opts_.replica_of) {
      argv.push_back("--replicaof");
      argv.push_back("127.0.0.1");
      argv.push_back(std::to_string(*opts_.replica_of));
    }
    argv.insert(argv.end(), opts_.extra_args.begin(), opts_.extra_args.end());
    process_.start(argv, dir_.path() / "redis.log");
    const bool up = wait_until([&] {
      if (!process_.alive()) return false;
      auto r = raw_command(port_, {"PING"}, admin_auth(), std::chrono::milliseconds(500));
      return r && r->is_simple("PONG");
    });
    if (!up)
      throw std::runtime_error("redis-server on port " + std::to_string(port_) +
                               " did not come up; see " + (dir_.path() / "redis.log").string());
  }

  // SIGKILL: the connection drops without a goodbye, like a crash.
  void stop() { process_.stop(); }

  // A command as the admin (requirepass when set).
  std::optional<redis::reply> cmd(const std::vector<std::string>& args) const {
    return raw_command(port_, args, admin_auth());
  }
  // A command in database `db`.
  std::optional<redis::reply> cmd_in_db(int db, const std::vector<std::string>& args) const {
    auto prelude = admin_auth();
    prelude.push_back({"SELECT", std::to_string(db)});
    return raw_command(port_, args, prelude);
  }

  // Waits until this replica has synced with its primary.
  bool wait_replica_synced() const {
    return wait_until([&] {
      auto r = cmd({"INFO", "replication"});
      return r && r->str.find("master_link_status:up") != std::string::npos;
    });
  }

 private:
  std::vector<std::vector<std::string>> admin_auth() const {
    if (opts_.requirepass.empty()) return {};
    return {{"AUTH", opts_.requirepass}};
  }

  redis_server_options opts_;
  mailroom::test::temp_dir dir_{"mailroom-redis"};
  std::uint16_t port_ = 0;
  child_process process_;
};

// One redis-sentinel monitoring `master_name` at 127.0.0.1:<master_port>, with
// the short timings of tests/servers/start-redis.sh.
class redis_sentinel {
 public:
  redis_sentinel(std::uint16_t master_port, std::string master_name = "mymaster")
      : name_(std::move(master_name)) {
    port_ = free_port();
    // Sentinel rewrites its config file, so it must be a writable copy.
    const auto conf = dir_.path() / "sentinel.conf";
    std::ofstream(conf) << "port " << port_ << "\n"
                        << "bind 127.0.0.1\n"
                        << "daemonize no\n"
                        << "dir " << dir_.path().string() << "\n"
                        << "sentinel monitor " << name_ << " 127.0.0.1 " << master_port << " 1\n"
                        << "sentinel down-after-milliseconds " << name_ << " 1000\n"
                        << "sentinel failover-timeout " << name_ << " 3000\n";
    process_.start({"/usr/bin/redis-sentinel", conf.string()}, dir_.path() / "sentinel.log");
    const bool up = wait_until([&] {
      if (!process_.alive()) return false;
      auto r = master_address();
      return r.has_value();
    });
    if (!up)
      throw std::runtime_error("redis-sentinel did not come up; see " +
                               (dir_.path() / "sentinel.log").string());
  }

  std::uint16_t port() const { return port_; }

  std::optional<redis::reply> cmd(const std::vector<std::string>& args) const {
    return raw_command(port_, args);
  }

  // The master port Sentinel reports now.
  std::optional<std::uint16_t> master_address() const {
    auto r = cmd({"SENTINEL", "get-master-addr-by-name", name_});
    if (!r || r->k != redis::reply::kind::array || r->elements.size() != 2) return std::nullopt;
    return static_cast<std::uint16_t>(std::stoi(r->elements[1].str));
  }

  // Waits until Sentinel has discovered `n` healthy replicas (a failover
  // needs one).
  bool wait_replicas(std::size_t n) const {
    return wait_until(
        [&] {
          auto r = cmd({"SENTINEL", "replicas", name_});
          if (!r || r->k != redis::reply::kind::array || r->elements.size() < n) return false;
          for (const auto& replica : r->elements) {
            // Each replica is a flat [field, value, ...] list.
            for (std::size_t i = 0; i + 1 < replica.elements.size(); i += 2) {
              if (replica.elements[i].str == "flags" && replica.elements[i + 1].str != "slave") {
                return false;
              }
            }
          }
          return true;
        },
        400);
  }

  void stop() { process_.stop(); }

 private:
  std::string name_;
  mailroom::test::temp_dir dir_{"mailroom-redis"};
  std::uint16_t port_ = 0;
  child_process process_;
};

}  // namespace mailroom::test_support
