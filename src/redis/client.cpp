#include "redis/client.hpp"

#include "redis/resp/encoder.hpp"

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <deque>
#include <exception>
#include <utility>

namespace mailroom::redis {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// One caller's command(s) and, once done, their replies or the failure.
struct request {
  request(const asio::any_io_executor& ex, std::size_t n)
      : wake(ex, asio::steady_timer::time_point::max()), expected(n) {}

  // Never expires; cancel() wakes the waiting caller.
  asio::steady_timer wake;
  std::size_t expected;
  std::vector<reply> replies;
  error_code ec;
  bool done = false;

  void finish(error_code e) {
    if (done) return;
    ec = e;
    done = true;
    wake.cancel();
  }
};

error_code from_net(const error_code& ec) {
  if (ec == net::errc::timed_out) return errc::timed_out;
  return errc::connection_failed;
}

std::string host_port(const std::string& host, std::uint16_t port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

// What the transport knows about a failure (resolver/OpenSSL text), else the code.
std::string net_detail(const net::stream& st, const error_code& ec) {
  return st.last_error().empty() ? ec.message() : st.last_error();
}

// Reads until the parser yields one reply.
asio::awaitable<boost::system::result<reply>> read_reply(net::stream& st, resp_parser& parser,
                                                         std::vector<char>& buf,
                                                         net::duration timeout,
                                                         std::string& detail) {
  for (;;) {
    auto r = parser.next();
    if (!r.has_value()) {
      detail = fmt::format("invalid reply: {}", r.error().message());
      co_return error_code(errc::protocol_error);
    }
    if (r->has_value()) co_return std::move(**r);
    error_code ec;
    const std::size_t n = co_await st.read_some(asio::buffer(buf), timeout, ec);
    if (ec) {
      detail = fmt::format("reading reply: {}", net_detail(st, ec));
      co_return from_net(ec);
    }
    parser.feed(std::string_view(buf.data(), n));
  }
}

// One request/reply during connection setup, before pipelining starts. `args`
// by value: it must live in the coroutine frame, not in the caller's.
asio::awaitable<boost::system::result<reply>> exchange(net::stream& st, resp_parser& parser,
                                                       std::vector<char>& buf,
                                                       std::vector<std::string> args,
                                                       net::duration timeout, std::string& detail) {
  std::string out;
  append_command(out, args);
  if (error_code ec = co_await st.write_all(asio::buffer(out), timeout)) {
    detail = fmt::format("writing {}: {}", args.front(), net_detail(st, ec));
    co_return from_net(ec);
  }
  co_return co_await read_reply(st, parser, buf, timeout, detail);
}

std::vector<std::string> auth_command(const std::string& username, const secret& password) {
  std::vector<std::string> args{"AUTH"};
  // Redis 6 ACL form when a user is named; the one-argument form means "default".
  if (!username.empty()) args.push_back(username);
  args.push_back(password.reveal());
  return args;
}

// AUTH on a fresh connection (to a master or a sentinel). On failure sets
// `last_error` (never with the password) and returns the error.
asio::awaitable<error_code> authenticate(net::stream& st, resp_parser& parser,
                                         std::vector<char>& buf, const std::string& username,
                                         const secret& password, net::duration timeout,
                                         const std::string& where, std::string& last_error) {
  std::vector<std::string> args = auth_command(username, password);
  std::string detail;
  auto r = co_await exchange(st, parser, buf, std::move(args), timeout, detail);
  if (!r.has_value()) {
    last_error = fmt::format("{}: {}", where, detail);
    co_return r.error();
  }
  if (r->is_error()) {
    last_error = fmt::format("{} rejected AUTH: {}", where, r->str);
    co_return error_code(errc::auth_failed);
  }
  co_return error_code{};
}

}  // namespace

struct client::state {
  state(asio::any_io_executor e, config::redis_target t, client_options o)
      : ex(std::move(e)),
        target(std::move(t)),
        opts(o),
        idle(ex, asio::steady_timer::time_point::max()),
        read_buf(64 * 1024) {
    for (std::size_t i = 0; i < target.sentinels.size(); ++i) sentinel_order.push_back(i);
  }

  // Registers the stream being set up so that close() can abort it.
  struct connecting_guard {
    connecting_guard(state& s, net::stream* st) : s(s) { s.connecting = st; }
    ~connecting_guard() { s.connecting = nullptr; }
    state& s;
  };

  static asio::awaitable<void> run(std::shared_ptr<state> self);
  // Queues `req` (its bytes already in the outbox) and waits for its replies.
  static asio::awaitable<boost::system::result<std::vector<reply>>> submit(
      std::shared_ptr<state> s, std::shared_ptr<request> req);
  asio::awaitable<error_code> connect();
  asio::awaitable<error_code> connect_via_sentinel();
  asio::awaitable<error_code> ask_sentinel(const config::sentinel_endpoint& sentinel,
                                           std::string& host, std::uint16_t& port);
  asio::awaitable<error_code> open_master(const std::string& host, std::uint16_t port,
                                          bool check_role);
  asio::awaitable<void> recheck_master();

  void start_runner(const std::shared_ptr<state>& self) {
    if (running) return;
    running = true;
    asio::co_spawn(ex, run(self), asio::detached);
  }

  void disconnect() {
    if (conn) conn->close();
    conn.reset();
    parser.reset();
    address.clear();
  }

  void abort_io() {
    if (conn) conn->close();
    if (connecting != nullptr) connecting->close();
  }

  // Fails what has not been written yet. `in_flight` belongs to the runner,
  // which fails it when its aborted read or write returns.
  void fail_queued(error_code ec) {
    for (auto& r : queued) r->finish(ec);
    queued.clear();
    outbox.clear();
  }

  // Whatever failed while close() was aborting I/O failed because of close().
  error_code unless_closing(error_code ec) const {
    return closing ? error_code(asio::error::operation_aborted) : ec;
  }

  asio::any_io_executor ex;
  config::redis_target target;
  client_options opts;

  std::unique_ptr<net::stream> conn;  // the master; null while disconnected
  std::unique_ptr<resp_parser> parser;
  std::string address;
  std::chrono::steady_clock::time_point resolved_at;  // when Sentinel last named `address`
  net::stream* connecting = nullptr;                  // master or sentinel stream during setup
  std::shared_ptr<asio::ssl::context> tls_ctx;
  std::vector<std::size_t> sentinel_order;  // the last sentinel that answered goes first

  // Encoded commands of `queued`, written in one go (one gathered write).
  // Small commands share a chunk; a pre-encoded command (a multi-megabyte
  // job) is its own chunk, moved in and never copied or reallocated.
  std::vector<std::string> outbox;

  void append_small(const std::vector<std::string>& args) {
    constexpr std::size_t chunk_limit = 16 * 1024;
    if (outbox.empty() || outbox.back().size() >= chunk_limit) outbox.emplace_back();
    append_command(outbox.back(), args);
  }
  std::deque<std::shared_ptr<request>> queued;
  std::deque<std::shared_ptr<request>> in_flight;  // written, replies awaited in order
  bool running = false;
  bool closing = false;
  asio::steady_timer idle;  // never expires; cancelled when the runner stops
  std::string last_error;
  std::vector<char> read_buf;
};

// The single coroutine that talks to the server. It runs while requests are
// queued: connect if needed, write everything queued in one write, read the
// replies in order, repeat. Commands queued during a round trip share the
// next one. Only this coroutine touches the connection, so callers never
// interleave bytes on the wire.
asio::awaitable<void> client::state::run(std::shared_ptr<state> self) {
  state& s = *self;
  try {
    while (!s.queued.empty()) {
      if (s.closing) {
        s.fail_queued(asio::error::operation_aborted);
        break;
      }
      if (s.conn && s.target.uses_sentinel()) co_await s.recheck_master();
      if (!s.conn) {
        if (error_code ec = co_await s.connect()) {
          // Everything queued meanwhile fails too: the server is unreachable
          // now, and the next call tries again.
          s.fail_queued(s.unless_closing(ec));
          continue;
        }
      }
      s.in_flight.swap(s.queued);
      error_code ec;
      {
        std::vector<std::string> out;
        out.swap(s.outbox);
        std::vector<asio::const_buffer> buffers;
        buffers.reserve(out.size());
        for (const auto& chunk : out) buffers.push_back(asio::buffer(chunk));
        ec = co_await s.conn->write_all(buffers, s.opts.command_timeout);
      }  // the written bytes (jobs of megabytes) are freed before the replies come
      if (ec) {
        s.last_error = fmt::format("writing to {}: {}", s.address, net_detail(*s.conn, ec));
        ec = from_net(ec);
      }
      bool demoted = false;
      while (!ec && !s.in_flight.empty()) {
        const std::shared_ptr<request> front = s.in_flight.front();
        request& req = *front;
        while (req.replies.size() < req.expected) {
          auto r = co_await read_reply(*s.conn, *s.parser, s.read_buf, s.opts.command_timeout,
                                       s.last_error);
          if (!r.has_value()) {
            ec = r.error();
            break;
          }
          // A demoted master answers writes with READONLY; Sentinel knows the
          // new one (dependencies-and-test-servers pitfall 9).
          if (r->error_code() == "READONLY") demoted = true;
          req.replies.push_back(std::move(*r));
        }
        if (ec) break;
        req.finish({});
        s.in_flight.pop_front();
      }
      if (ec) {
        for (auto& r : s.in_flight) r->finish(s.unless_closing(ec));
        s.in_flight.clear();
        s.disconnect();
      } else if (demoted) {
        s.last_error = fmt::format("{} is read-only (demoted master?)", s.address);
        s.disconnect();
      }
    }
  } catch (const std::exception& e) {
    // Not expected (allocation failure); never leave a caller waiting forever.
    s.last_error = e.what();
    for (auto& r : s.in_flight) r->finish(errc::connection_failed);
    s.in_flight.clear();
    s.fail_queued(errc::connection_failed);
    s.disconnect();
  }
  s.running = false;
  s.idle.cancel();
}

// Drops the connection when Sentinel now names another master. An
// unreachable sentinel changes nothing: the connection still works.
asio::awaitable<void> client::state::recheck_master() {
  const auto interval = opts.sentinel_recheck_interval;
  if (interval <= net::duration::zero() ||
      std::chrono::steady_clock::now() - resolved_at < interval) {
    co_return;
  }
  const std::string saved_error = last_error;
  for (const std::size_t idx : sentinel_order) {
    if (closing) break;
    std::string host;
    std::uint16_t port = 0;
    if (co_await ask_sentinel(target.sentinels[idx], host, port)) continue;
    if (closing || !conn) break;
    if (host_port(host, port) == address) {
      resolved_at = std::chrono::steady_clock::now();
      last_error = saved_error;
    } else {
      last_error = fmt::format("Sentinel moved master '{}' from {} to {}", target.host, address,
                               host_port(host, port));
      disconnect();
    }
    co_return;
  }
  // No sentinel answered: keep the working connection, ask again later.
  resolved_at = std::chrono::steady_clock::now();
  last_error = saved_error;
}

asio::awaitable<error_code> client::state::connect() {
  if (target.uses_sentinel()) co_return co_await connect_via_sentinel();
  co_return co_await open_master(target.host, target.port, false);
}

// redis-rb's sentinel connector: ask the sentinels in order, use the first
// answer whose ROLE confirms it, and remember which sentinel answered.
asio::awaitable<error_code> client::state::connect_via_sentinel() {
  std::string failures;
  for (std::size_t i = 0; i < sentinel_order.size(); ++i) {
    const std::size_t idx = sentinel_order[i];
    const auto& sentinel = target.sentinels[idx];
    std::string host;
    std::uint16_t port = 0;
    error_code ec = co_await ask_sentinel(sentinel, host, port);
    if (!ec) {
      ec = co_await open_master(host, port, true);
      if (!ec) {
        resolved_at = std::chrono::steady_clock::now();
        std::rotate(sentinel_order.begin(), sentinel_order.begin() + i,
                    sentinel_order.begin() + i + 1);
        co_return error_code{};
      }
      // The master rejected our credentials or db: asking again won't help.
      if (ec == errc::auth_failed || ec == errc::server_error) co_return ec;
    }
    if (closing) co_return error_code(asio::error::operation_aborted);
    if (!failures.empty()) failures += "; ";
    failures += last_error;
  }
  last_error = fmt::format("no master named '{}' from the sentinels: {}", target.host, failures);
  co_return error_code(errc::no_master);
}

asio::awaitable<error_code> client::state::ask_sentinel(const config::sentinel_endpoint& sentinel,
                                                        std::string& host, std::uint16_t& port) {
  const std::string where = "sentinel " + host_port(sentinel.host, sentinel.port);
  net::stream st(ex);
  connecting_guard guard(*this, &st);
  if (error_code ec = co_await st.connect(sentinel.host, sentinel.port, opts.connect_timeout)) {
    last_error = fmt::format("{}: {}", where, net_detail(st, ec));
    co_return from_net(ec);
  }
  resp_parser parser(opts.limits);
  // A sentinel entry's own credentials win over sentinel_username/password.
  const bool own = !sentinel.password.empty();
  const secret& password = own ? sentinel.password : target.sentinel_password;
  const std::string& username = own ? sentinel.username : target.sentinel_username;
  std::string detail;
  if (!password.empty()) {
    if (error_code ec = co_await authenticate(st, parser, read_buf, username, password,
                                              opts.connect_timeout, where, last_error))
      co_return ec;
  }
  const std::vector<std::string> query{"SENTINEL", "get-master-addr-by-name", target.host};
  auto r = co_await exchange(st, parser, read_buf, query, opts.connect_timeout, detail);
  st.close();
  if (!r.has_value()) {
    last_error = fmt::format("{}: {}", where, detail);
    co_return r.error();
  }
  if (r->is_null()) {
    last_error = fmt::format("{} does not know master '{}'", where, target.host);
    co_return error_code(errc::no_master);
  }
  if (r->is_error()) {
    last_error = fmt::format("{}: {}", where, r->str);
    co_return error_code(errc::no_master);
  }
  const bool shaped = r->k == reply::kind::array && r->elements.size() == 2 &&
                      r->elements[0].k == reply::kind::bulk &&
                      r->elements[1].k == reply::kind::bulk;
  unsigned value = 0;
  if (shaped) {
    const std::string& p = r->elements[1].str;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
    if (ec != std::errc{} || end != p.data() + p.size() || value == 0 || value > 65535) {
      value = 0;
    }
  }
  if (value == 0) {
    last_error = fmt::format("{} gave an unexpected answer: {}", where, to_string(*r));
    co_return error_code(errc::protocol_error);
  }
  host = r->elements[0].str;
  port = static_cast<std::uint16_t>(value);
  co_return error_code{};
}

asio::awaitable<error_code> client::state::open_master(const std::string& host, std::uint16_t port,
                                                       bool check_role) {
  const std::string where = host_port(host, port);
  auto st = std::make_unique<net::stream>(ex);
  connecting_guard guard(*this, st.get());
  if (error_code ec = co_await st->connect(host, port, opts.connect_timeout)) {
    last_error = fmt::format("connect to {}: {}", where, net_detail(*st, ec));
    co_return from_net(ec);
  }
  if (target.tls) {
    if (!tls_ctx) {
      error_code ec;
      tls_ctx = net::make_client_tls_context(target.tls_settings, ec);
      if (ec) {
        last_error = fmt::format("TLS setup for {}: {}", where, ec.message());
        co_return error_code(errc::connection_failed);
      }
    }
    if (error_code ec = co_await st->start_tls(tls_ctx, host, opts.connect_timeout)) {
      last_error = fmt::format("TLS handshake with {}: {}", where, net_detail(*st, ec));
      co_return from_net(ec);
    }
  }

  auto parser = std::make_unique<resp_parser>(opts.limits);
  std::string detail;
  auto setup = [&](std::vector<std::string> args) {
    return exchange(*st, *parser, read_buf, std::move(args), opts.connect_timeout, detail);
  };
  if (!target.password.empty()) {
    if (error_code ec =
            co_await authenticate(*st, *parser, read_buf, target.username, target.password,
                                  opts.connect_timeout, where, last_error))
      co_return ec;
  }
  if (target.db != 0) {
    // Built before co_await: g++ 12 rejects a braced list of literals there.
    std::vector<std::string> select{"SELECT", std::to_string(target.db)};
    auto r = co_await setup(std::move(select));
    if (!r.has_value()) {
      last_error = fmt::format("{}: {}", where, detail);
      co_return r.error();
    }
    if (r->is_error()) {
      last_error = fmt::format("{} rejected SELECT {}: {}", where, target.db, r->str);
      co_return error_code(errc::server_error);
    }
  }
  if (check_role) {
    std::vector<std::string> role{"ROLE"};
    auto r = co_await setup(std::move(role));
    if (!r.has_value()) {
      last_error = fmt::format("{}: {}", where, detail);
      co_return r.error();
    }
    // ROLE needs @admin; a user without it cannot verify, so Sentinel's
    // answer stands (an error reply). A wrong role means the answer is stale.
    if (!r->is_error()) {
      const bool master = r->k == reply::kind::array && !r->elements.empty() &&
                          r->elements[0].k == reply::kind::bulk && r->elements[0].str == "master";
      if (!master) {
        last_error = fmt::format("{} is not a master: ROLE {}", where, to_string(*r));
        co_return error_code(errc::no_master);
      }
    }
  }
  conn = std::move(st);
  this->parser = std::move(parser);
  address = where;
  co_return error_code{};
}

client::client(asio::any_io_executor ex, config::redis_target target, client_options opts)
    : state_(std::make_shared<state>(std::move(ex), std::move(target), opts)) {}

client::~client() {
  state_->closing = true;
  state_->abort_io();
  state_->fail_queued(asio::error::operation_aborted);
}

asio::awaitable<boost::system::result<std::vector<reply>>> client::pipeline(
    std::vector<std::vector<std::string>> commands) {
  // Keep the state alive even if the client is destroyed while we wait.
  std::shared_ptr<state> s = state_;
  if (commands.empty()) co_return std::vector<reply>{};
  for (const auto& c : commands) {
    // Redis answers nothing to an empty array: the reply would never come.
    if (c.empty())
      co_return error_code(boost::system::errc::invalid_argument,
                           boost::system::generic_category());
  }
  auto req = std::make_shared<request>(s->ex, commands.size());
  for (const auto& c : commands) s->append_small(c);
  commands.clear();  // a large job is now in the outbox; free the original
  co_return co_await s->submit(s, req);
}

asio::awaitable<boost::system::result<std::vector<reply>>> client::state::submit(
    std::shared_ptr<state> s, std::shared_ptr<request> req) {
  s->queued.push_back(req);
  s->start_runner(s);
  if (!req->done) {
    error_code ec;
    co_await req->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  // Woken without a result: our caller was cancelled. The command stays queued
  // (its bytes may be on the wire already) and its reply is dropped.
  if (!req->done) co_return error_code(asio::error::operation_aborted);
  if (req->ec) co_return req->ec;
  co_return std::move(req->replies);
}

asio::awaitable<boost::system::result<reply>> client::command_encoded(std::string encoded) {
  std::shared_ptr<state> s = state_;
  // No command, no reply: the caller would wait forever.
  if (encoded.empty())
    co_return error_code(boost::system::errc::invalid_argument, boost::system::generic_category());
  auto req = std::make_shared<request>(s->ex, 1);
  s->outbox.push_back(std::move(encoded));
  auto r = co_await s->submit(s, std::move(req));
  if (!r.has_value()) co_return r.error();
  co_return std::move(r->front());
}

asio::awaitable<boost::system::result<reply>> client::command(std::vector<std::string> args) {
  std::vector<std::vector<std::string>> one;
  one.push_back(std::move(args));
  auto r = co_await pipeline(std::move(one));
  if (!r.has_value()) co_return r.error();
  co_return std::move(r->front());
}

asio::awaitable<void> client::close() {
  std::shared_ptr<state> s = state_;
  s->closing = true;
  s->abort_io();
  while (s->running) {
    error_code ec;
    co_await s->idle.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  s->disconnect();
  s->fail_queued(asio::error::operation_aborted);
  s->closing = false;
}

std::string client::describe() const {
  const auto& t = state_->target;
  if (t.uses_sentinel()) return "sentinel master " + t.host;
  return fmt::format("{}://{}/{}", t.tls ? "rediss" : "redis", host_port(t.host, t.port), t.db);
}

std::string client::connected_address() const {
  return state_->address;
}

std::string client::last_error() const {
  return state_->last_error;
}

const config::redis_target& client::target() const {
  return state_->target;
}

}  // namespace mailroom::redis
