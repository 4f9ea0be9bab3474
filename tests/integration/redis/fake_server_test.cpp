// The client against scripted fake servers on port 0: exact wire bytes, and
// failures a real Redis will not produce on demand (silence, garbage).
#include "redis/client.hpp"

#include "async_helpers.hpp"
#include "fake_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>
#include <string>

namespace mailroom::redis {
namespace {

namespace asio = boost::asio;
using test_support::fake_server;
using test_support::run_async;

config::redis_target target_for(std::uint16_t port) {
  config::redis_target t;
  t.host = "127.0.0.1";
  t.port = port;
  return t;
}

// Runs `args` on a client against `server`, then stops the server so that
// io_context::run() returns.
boost::system::result<reply> run_against(asio::io_context& ctx, fake_server& server, client& c,
                                         std::vector<std::string> args) {
  return run_async(ctx, [&]() -> asio::awaitable<boost::system::result<reply>> {
    auto r = co_await c.command(std::move(args));
    server.stop();
    co_return r;
  }());
}

TEST(RedisFakeServer, SetNxExWireBytesAreRedisRbOrder) {
  asio::io_context ctx;
  fake_server server(ctx, [](const std::string& got) {
    return got.ends_with("\r\n$2\r\nNX\r\n") ? "+OK\r\n" : "";
  });
  client c(ctx.get_executor(), target_for(server.port()));
  auto r = run_against(ctx, server, c, {"SET", "delivered:101", "1", "EX", "600", "NX"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_TRUE(r->is_simple("OK"));
  EXPECT_EQ(server.received(),
            "*6\r\n$3\r\nSET\r\n$13\r\ndelivered:101\r\n$1\r\n1\r\n$2\r\nEX\r\n$3\r\n600\r\n"
            "$2\r\nNX\r\n");
}

TEST(RedisFakeServer, AuthThenSelectBeforeTheFirstCommand) {
  asio::io_context ctx;
  int answered = 0;
  fake_server server(ctx, [&](const std::string& got) {
    std::string out;
    // One answer per complete command seen so far.
    std::size_t commands = 0;
    for (std::size_t p = got.find('*'); p != std::string::npos; p = got.find("\r\n*", p + 1)) {
      ++commands;
    }
    for (; static_cast<std::size_t>(answered) < commands; ++answered) {
      out += answered == 2 ? ":1\r\n" : "+OK\r\n";
    }
    return out;
  });
  auto t = target_for(server.port());
  t.username = "gitlab";
  t.password = secret("pw");
  t.db = 2;
  client c(ctx.get_executor(), t);
  auto r = run_against(ctx, server, c, {"LPUSH", "queue:q", "job"});
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_EQ(*r, reply::number(1));
  EXPECT_EQ(server.received(),
            "*3\r\n$4\r\nAUTH\r\n$6\r\ngitlab\r\n$2\r\npw\r\n"
            "*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
            "*3\r\n$5\r\nLPUSH\r\n$7\r\nqueue:q\r\n$3\r\njob\r\n");
}

TEST(RedisFakeServer, SilentServerTimesOut) {
  asio::io_context ctx;
  fake_server server(ctx, [](const std::string&) { return std::string(); });
  client_options o;
  o.command_timeout = std::chrono::milliseconds(200);
  client c(ctx.get_executor(), target_for(server.port()), o);
  const auto start = std::chrono::steady_clock::now();
  auto r = run_against(ctx, server, c, {"PING"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::timed_out);
  EXPECT_TRUE(is_retriable(r.error()));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(RedisFakeServer, GarbageIsAProtocolErrorAndDropsTheConnection) {
  asio::io_context ctx;
  fake_server server(
      ctx, [](const std::string&) { return std::string("HTTP/1.1 400 Bad Request\r\n\r\n"); });
  client c(ctx.get_executor(), target_for(server.port()));
  auto r = run_against(ctx, server, c, {"PING"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::protocol_error);
  EXPECT_EQ(c.connected_address(), "");
  EXPECT_NE(c.last_error().find("malformed"), std::string::npos) << c.last_error();
}

TEST(RedisFakeServer, OversizedReplyIsAProtocolError) {
  asio::io_context ctx;
  fake_server server(ctx, [](const std::string&) { return std::string("$100\r\n"); });
  client_options o;
  o.limits.max_bulk_length = 10;
  client c(ctx.get_executor(), target_for(server.port()), o);
  auto r = run_against(ctx, server, c, {"GET", "k"});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::protocol_error);
}

// The command is on the wire when the server has received it: close() then
// aborts it (the fake server never answers).
TEST(RedisFakeServer, CloseAbortsAPendingCommand) {
  asio::io_context ctx;
  client* cp = nullptr;
  fake_server* sp = nullptr;
  bool closing = false;
  fake_server server(ctx, [&](const std::string& got) {
    if (got.find("BLPOP") != std::string::npos && !closing) {
      closing = true;
      asio::co_spawn(
          ctx,
          [&]() -> asio::awaitable<void> {
            co_await cp->close();
            sp->stop();
          },
          asio::detached);
    }
    return std::string();
  });
  sp = &server;
  client c(ctx.get_executor(), target_for(server.port()));
  cp = &c;
  boost::system::error_code got;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        std::vector<std::string> args{"BLPOP", "q", "0"};
        auto r = co_await c.command(std::move(args));
        got = r.has_value() ? boost::system::error_code{} : r.error();
      },
      asio::detached);
  ctx.run();
  EXPECT_TRUE(closing) << "the command never reached the server";
  EXPECT_EQ(got, asio::error::operation_aborted);
}

TEST(RedisFakeServer, DestroyingTheClientAbortsWaitingCallers) {
  asio::io_context ctx;
  std::unique_ptr<client> c;
  fake_server* sp = nullptr;
  bool destroying = false;
  // Once the first command is on the wire (the others queued behind it),
  // the client goes away.
  fake_server server(ctx, [&](const std::string& got) {
    if (got.find("GET") != std::string::npos && !destroying) {
      destroying = true;
      asio::post(ctx, [&] {
        c.reset();
        sp->stop();
      });
    }
    return std::string();
  });
  sp = &server;
  c = std::make_unique<client>(ctx.get_executor(), target_for(server.port()));
  std::vector<boost::system::error_code> got;
  for (int i = 0; i < 3; ++i) {
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
          std::vector<std::string> args{"GET", "k"};
          auto r = co_await c->command(std::move(args));
          got.push_back(r.has_value() ? boost::system::error_code{} : r.error());
        },
        asio::detached);
  }
  ctx.run();
  EXPECT_TRUE(destroying);
  ASSERT_EQ(got.size(), 3u);
  for (const auto& ec : got) EXPECT_EQ(ec, asio::error::operation_aborted);
}

}  // namespace
}  // namespace mailroom::redis
