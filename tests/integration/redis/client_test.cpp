#include "redis/client.hpp"
#include "redis/resp/encoder.hpp"

#include "async_helpers.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <numeric>
#include <set>
#include <string>
#include <vector>

namespace mailroom::redis {
namespace {

namespace asio = boost::asio;
using test_support::redis_server;
using test_support::redis_server_options;
using test_support::run_async;

config::redis_target local_target(std::uint16_t port) {
  config::redis_target t;
  t.url = "redis://127.0.0.1:" + std::to_string(port);
  t.host = "127.0.0.1";
  t.port = port;
  return t;
}

client_options fast_options() {
  client_options o;
  o.connect_timeout = std::chrono::seconds(2);
  o.command_timeout = std::chrono::seconds(2);
  return o;
}

boost::system::result<reply> run_command(asio::io_context& ctx, client& c,
                                         std::vector<std::string> args) {
  return run_async(ctx, c.command(std::move(args)));
}

class RedisClient : public testing::Test {
 protected:
  asio::io_context ctx;
};

TEST_F(RedisClient, LpushRoundTrip) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  auto r = run_command(ctx, c, {"LPUSH", "queue:default", "job-1"});
  ASSERT_TRUE(r.has_value()) << r.error().message() << " " << c.last_error();
  EXPECT_EQ(*r, reply::number(1));
  r = run_command(ctx, c, {"LPUSH", "queue:default", "job-2"});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, reply::number(2));
  auto list = server.cmd({"LRANGE", "queue:default", "0", "-1"});
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(*list, reply::array({reply::bulk("job-2"), reply::bulk("job-1")}));
  EXPECT_EQ(c.connected_address(), "127.0.0.1:" + std::to_string(server.port()));
}

TEST_F(RedisClient, SetNxExRoundTrip) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  auto r = run_command(ctx, c, {"SET", "delivered:101", "1", "EX", "600", "NX"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_TRUE(r->is_simple("OK")) << to_string(*r);
  r = run_command(ctx, c, {"SET", "delivered:101", "1", "EX", "600", "NX"});
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->is_null()) << to_string(*r);
  auto ttl = server.cmd({"TTL", "delivered:101"});
  ASSERT_TRUE(ttl.has_value());
  EXPECT_GT(ttl->integer, 590);
  EXPECT_LE(ttl->integer, 600);
}

TEST_F(RedisClient, ErrorReplyIsAValueAndKeepsTheConnection) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  auto id = run_command(ctx, c, {"CLIENT", "ID"});
  ASSERT_TRUE(id.has_value());
  ASSERT_EQ(id->k, reply::kind::integer);
  auto r = run_command(ctx, c, {"NOSUCHCOMMAND", "x"});
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_TRUE(r->is_error());
  EXPECT_EQ(r->error_code(), "ERR");
  auto again = run_command(ctx, c, {"CLIENT", "ID"});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *id) << "the connection was replaced";
}

TEST_F(RedisClient, PipelineRepliesInOrder) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  std::vector<std::vector<std::string>> cmds{
      {"SET", "a", "1"}, {"INCR", "a"}, {"LPUSH", "a", "x"}, {"GET", "a"}, {"GET", "missing"}};
  auto r = run_async(ctx, c.pipeline(std::move(cmds)));
  ASSERT_TRUE(r.has_value()) << c.last_error();
  ASSERT_EQ(r->size(), 5u);
  EXPECT_TRUE((*r)[0].is_simple("OK"));
  EXPECT_EQ((*r)[1], reply::number(2));
  EXPECT_EQ((*r)[2].error_code(), "WRONGTYPE");
  EXPECT_EQ((*r)[3], reply::bulk("2"));
  EXPECT_TRUE((*r)[4].is_null());
}

TEST_F(RedisClient, EmptyCommandIsRejectedWithoutHanging) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  auto r = run_command(ctx, c, {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), boost::system::errc::invalid_argument);
}

TEST_F(RedisClient, LargeValueIsCarriedIntact) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  std::string big(5 * 1024 * 1024, 'j');
  big[12345] = '\r';
  big[12346] = '\n';
  auto r = run_command(ctx, c, {"LPUSH", "queue:big", big});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  auto back = run_command(ctx, c, {"LINDEX", "queue:big", "0"});
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->str == big);
}

TEST_F(RedisClient, AuthWithPassword) {
  redis_server server(redis_server_options::with_password("hunter2-sesame"));
  {
    auto t = local_target(server.port());
    t.password = secret("hunter2-sesame");
    client c(ctx.get_executor(), t, fast_options());
    auto r = run_command(ctx, c, {"SET", "k", "v"});
    ASSERT_TRUE(r.has_value()) << c.last_error();
    EXPECT_TRUE(r->is_simple("OK")) << to_string(*r);
  }
  {
    // No password: the server answers the command itself with NOAUTH.
    client c(ctx.get_executor(), local_target(server.port()), fast_options());
    auto r = run_command(ctx, c, {"GET", "k"});
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->error_code(), "NOAUTH") << to_string(*r);
  }
  {
    auto t = local_target(server.port());
    t.password = secret("wrong-horse-battery");
    client c(ctx.get_executor(), t, fast_options());
    auto r = run_command(ctx, c, {"GET", "k"});
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error(), errc::auth_failed);
    EXPECT_FALSE(is_retriable(r.error()));
    EXPECT_NE(c.last_error().find("WRONGPASS"), std::string::npos) << c.last_error();
    EXPECT_EQ(c.last_error().find("wrong-horse-battery"), std::string::npos) << c.last_error();
  }
}

TEST_F(RedisClient, AuthWithAclUser) {
  redis_server server(redis_server_options::with_acl_user("mailroom on >acl-pass ~* &* +@all"));
  auto t = local_target(server.port());
  t.username = "mailroom";
  t.password = secret("acl-pass");
  client c(ctx.get_executor(), t, fast_options());
  auto r = run_command(ctx, c, {"ACL", "WHOAMI"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_EQ(*r, reply::bulk("mailroom"));

  auto bad = local_target(server.port());
  bad.username = "mailroom";
  bad.password = secret("not-it");
  client c2(ctx.get_executor(), bad, fast_options());
  auto r2 = run_command(ctx, c2, {"PING"});
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error(), errc::auth_failed);
}

TEST_F(RedisClient, SelectsDatabase) {
  redis_server server;
  auto t = local_target(server.port());
  t.db = 3;
  client c(ctx.get_executor(), t, fast_options());
  auto r = run_command(ctx, c, {"SET", "in-db-3", "yes"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  auto there = server.cmd_in_db(3, {"GET", "in-db-3"});
  ASSERT_TRUE(there.has_value());
  EXPECT_EQ(*there, reply::bulk("yes"));
  auto not_in_0 = server.cmd({"GET", "in-db-3"});
  ASSERT_TRUE(not_in_0.has_value());
  EXPECT_TRUE(not_in_0->is_null());
}

TEST_F(RedisClient, SelectOutOfRangeIsAServerError) {
  redis_server server;
  auto t = local_target(server.port());
  t.db = 99;  // redis-server has 16 databases by default
  client c(ctx.get_executor(), t, fast_options());
  auto r = run_command(ctx, c, {"PING"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::server_error);
  EXPECT_NE(c.last_error().find("SELECT 99"), std::string::npos) << c.last_error();
}

TEST_F(RedisClient, ReconnectsAfterServerRestart) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  auto r = run_command(ctx, c, {"SET", "k", "before"});
  ASSERT_TRUE(r.has_value()) << c.last_error();

  server.stop();
  // The open connection breaks: the write may still succeed, the read cannot.
  r = run_command(ctx, c, {"GET", "k"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::connection_failed);
  EXPECT_TRUE(is_retriable(r.error()));
  EXPECT_EQ(c.connected_address(), "");
  // Nobody listens now: connect is refused.
  r = run_command(ctx, c, {"GET", "k"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::connection_failed);
  EXPECT_NE(c.last_error().find("connect to 127.0.0.1:"), std::string::npos) << c.last_error();

  server.start();  // same port, empty data set (--save "")
  r = run_command(ctx, c, {"SET", "k", "after"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_TRUE(r->is_simple("OK"));
  auto v = server.cmd({"GET", "k"});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, reply::bulk("after"));
}

TEST_F(RedisClient, ConnectionRefusedFailsEveryWaitingCaller) {
  const auto port = test_support::free_port();
  client c(ctx.get_executor(), local_target(port), fast_options());
  std::vector<boost::system::error_code> errors;
  for (int i = 0; i < 5; ++i) {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          std::vector<std::string> args{"PING"};
          auto r = co_await c.command(std::move(args));
          errors.push_back(r.has_value() ? boost::system::error_code{} : r.error());
        },
        asio::detached);
  }
  ctx.run();
  ASSERT_EQ(errors.size(), 5u);
  for (const auto& ec : errors) EXPECT_EQ(ec, errc::connection_failed);
}

// Pre-encoded commands (a Sidekiq job written straight into its LPUSH) share
// the write queue and the reply order with ordinary ones.
TEST_F(RedisClient, EncodedCommandsInterleaveWithOrdinaryOnes) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  constexpr int n = 40;
  int failures = 0;
  std::set<std::string> pushed;
  for (int i = 0; i < n; ++i) {
    // Values from 10 bytes to ~1 MB, with CR LF and NUL inside.
    std::string value(static_cast<std::size_t>(10 + i * i * 700), static_cast<char>('a' + i % 26));
    value += std::string("\r\n\0", 3) + std::to_string(i);
    pushed.insert(value);
    asio::co_spawn(
        ctx,
        [&, i, value]() -> asio::awaitable<void> {
          const std::array<std::string_view, 2> leading{"LPUSH", "queue:mixed"};
          command_with_slot cmd = encode_command_with_slot(leading, value.size());
          std::copy(value.begin(), value.end(),
                    cmd.bytes.begin() + static_cast<std::ptrdiff_t>(cmd.slot));
          auto r = co_await c.command_encoded(std::move(cmd.bytes));
          if (!r.has_value() || r->k != reply::kind::integer) ++failures;
          std::vector<std::string> incr{"INCR", "counter:" + std::to_string(i)};
          auto x = co_await c.command(std::move(incr));
          if (!x.has_value() || x->k != reply::kind::integer || x->integer != 1) ++failures;
        },
        asio::detached);
  }
  ctx.run();
  ctx.restart();
  EXPECT_EQ(failures, 0) << c.last_error();
  auto all = run_command(ctx, c, {"LRANGE", "queue:mixed", "0", "-1"});
  ASSERT_TRUE(all.has_value()) << c.last_error();
  ASSERT_EQ(all->k, reply::kind::array);
  std::set<std::string> stored;
  for (const auto& e : all->elements) stored.insert(e.str);
  EXPECT_EQ(stored.size(), static_cast<std::size_t>(n));
  EXPECT_TRUE(stored == pushed) << "a value was cut, merged or altered";
}

TEST_F(RedisClient, ConcurrentCallersGetTheirOwnReplies) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  constexpr int n = 200;
  std::vector<std::int64_t> incr_results;
  int mismatches = 0;
  int failures = 0;
  for (int i = 0; i < n; ++i) {
    asio::co_spawn(
        ctx,
        [&, i]() -> asio::awaitable<void> {
          std::vector<std::string> incr{"INCR", "counter"};
          auto r = co_await c.command(std::move(incr));
          if (!r.has_value() || r->k != reply::kind::integer) {
            ++failures;
            co_return;
          }
          incr_results.push_back(r->integer);
          // Then a SET/GET pair per caller, interleaved with everyone else's.
          const std::string key = "key:" + std::to_string(i);
          const std::string value = "value-" + std::to_string(i * 7919);
          std::vector<std::string> set{"SET", key, value};
          auto s = co_await c.command(std::move(set));
          if (!s.has_value() || !s->is_simple("OK")) ++failures;
          std::vector<std::string> get{"GET", key};
          auto g = co_await c.command(std::move(get));
          if (!g.has_value()) {
            ++failures;
          } else if (*g != reply::bulk(value)) {
            ++mismatches;
          }
        },
        asio::detached);
  }
  ctx.run();
  EXPECT_EQ(failures, 0) << c.last_error();
  EXPECT_EQ(mismatches, 0);
  std::sort(incr_results.begin(), incr_results.end());
  std::vector<std::int64_t> expected(n);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(incr_results, expected);
}

TEST_F(RedisClient, ReadonlyReplyDropsTheConnection) {
  redis_server primary;
  redis_server replica(redis_server_options::replica(primary.port()));
  ASSERT_TRUE(replica.wait_replica_synced());
  client c(ctx.get_executor(), local_target(replica.port()), fast_options());
  auto r = run_command(ctx, c, {"SET", "k", "v"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_EQ(r->error_code(), "READONLY") << to_string(*r);
  EXPECT_EQ(c.connected_address(), "") << "a READONLY reply must force re-resolution";
  // Reads still work on the next (new) connection.
  r = run_command(ctx, c, {"PING"});
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->is_simple("PONG"));
}

TEST_F(RedisClient, CloseFailsNothingWhenIdleAndAllowsReuse) {
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  ASSERT_TRUE(run_command(ctx, c, {"PING"}).has_value());
  EXPECT_NE(c.connected_address(), "");
  run_async(ctx, c.close());
  EXPECT_EQ(c.connected_address(), "");
  auto r = run_command(ctx, c, {"PING"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_TRUE(r->is_simple("PONG"));
}

// A caller that gives up (cancellation) must not shift replies: the
// abandoned command's reply is read and dropped, the next caller gets its own.
TEST_F(RedisClient, CancelledCallerDoesNotShiftReplies) {
  using namespace asio::experimental::awaitable_operators;
  redis_server server;
  client c(ctx.get_executor(), local_target(server.port()), fast_options());
  ASSERT_TRUE(run_command(ctx, c, {"PING"}).has_value());
  bool cancelled = false;
  boost::system::result<reply> after = reply::nil();
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        // Blocks until something is pushed: the timer always wins.
        std::vector<std::string> slow{"BLPOP", "nothing-here", "0"};
        asio::steady_timer t(ctx, std::chrono::milliseconds(50));
        auto which = co_await (c.command(std::move(slow)) || t.async_wait(asio::use_awaitable));
        cancelled = which.index() == 1;
        // Now the abandoned BLPOP gets its reply, ahead of the ECHO's.
        server.cmd({"LPUSH", "nothing-here", "x"});
        std::vector<std::string> echo{"ECHO", "mine"};
        after = co_await c.command(std::move(echo));
      },
      asio::detached);
  ctx.restart();
  ctx.run();
  EXPECT_TRUE(cancelled);
  ASSERT_TRUE(after.has_value()) << c.last_error();
  EXPECT_EQ(*after, reply::bulk("mine"));
}

TEST(RedisClientDescribe, NeverShowsThePassword) {
  asio::io_context ctx;
  auto t = local_target(6380);
  t.password = secret("p4ss");
  t.db = 2;
  client c(ctx.get_executor(), t);
  EXPECT_EQ(c.describe(), "redis://127.0.0.1:6380/2");
  t.tls = true;
  client tls(ctx.get_executor(), t);
  EXPECT_EQ(tls.describe(), "rediss://127.0.0.1:6380/2");
  t.host = "mymaster";
  config::sentinel_endpoint e;
  e.host = "127.0.0.1";
  t.sentinels.push_back(e);
  client s(ctx.get_executor(), t);
  EXPECT_EQ(s.describe(), "sentinel master mymaster");
}

}  // namespace
}  // namespace mailroom::redis
