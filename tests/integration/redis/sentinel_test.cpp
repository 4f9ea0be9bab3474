// Sentinel resolution and failover against real redis-server + redis-sentinel.
#include "redis/client.hpp"

#include "async_helpers.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include <string>
#include <thread>

namespace mailroom::redis {
namespace {

namespace asio = boost::asio;
using test_support::redis_sentinel;
using test_support::redis_server;
using test_support::redis_server_options;
using test_support::run_async;

// As the config loader builds it from `redis_url: redis://mymaster` plus
// `sentinels:` (dependencies-and-test-servers pitfall 10).
config::redis_target sentinel_target(std::vector<std::uint16_t> sentinel_ports,
                                     std::string master_name = "mymaster") {
  config::redis_target t;
  t.url = "redis://" + master_name;
  t.host = std::move(master_name);
  t.port = 6379;
  for (auto p : sentinel_ports) {
    config::sentinel_endpoint e;
    e.host = "127.0.0.1";
    e.port = p;
    t.sentinels.push_back(e);
  }
  return t;
}

client_options fast_options() {
  client_options o;
  o.connect_timeout = std::chrono::seconds(2);
  o.command_timeout = std::chrono::seconds(2);
  return o;
}

std::string local(std::uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

// One primary, one synced replica, one sentinel that knows both.
class RedisSentinel : public testing::Test {
 protected:
  void SetUp() override {
    primary.emplace(primary_options());
    replica.emplace(redis_server_options::replica(primary->port()));
    ASSERT_TRUE(replica->wait_replica_synced());
    sentinel.emplace(primary->port());
  }

  virtual redis_server_options primary_options() { return {}; }

  asio::io_context ctx;
  std::optional<redis_server> primary;
  std::optional<redis_server> replica;
  std::optional<redis_sentinel> sentinel;
};

TEST_F(RedisSentinel, ResolvesTheMasterByName) {
  client c(ctx.get_executor(), sentinel_target({sentinel->port()}), fast_options());
  std::vector<std::string> args{"SET", "via-sentinel", "1"};
  auto r = run_async(ctx, c.command(std::move(args)));
  ASSERT_TRUE(r.has_value()) << r.error().message() << ": " << c.last_error();
  EXPECT_TRUE(r->is_simple("OK"));
  EXPECT_EQ(c.connected_address(), local(primary->port()));
  auto v = primary->cmd({"GET", "via-sentinel"});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, reply::bulk("1"));
}

TEST_F(RedisSentinel, SkipsAnUnreachableSentinel) {
  const auto nobody = test_support::free_port();
  client c(ctx.get_executor(), sentinel_target({nobody, sentinel->port()}), fast_options());
  std::vector<std::string> args{"PING"};
  auto r = run_async(ctx, c.command(std::move(args)));
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_EQ(c.connected_address(), local(primary->port()));
}

TEST_F(RedisSentinel, UnknownMasterNameIsNoMaster) {
  client c(ctx.get_executor(), sentinel_target({sentinel->port()}, "othermaster"), fast_options());
  std::vector<std::string> args{"PING"};
  auto r = run_async(ctx, c.command(std::move(args)));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::no_master);
  EXPECT_TRUE(is_retriable(r.error()));
  EXPECT_NE(c.last_error().find("othermaster"), std::string::npos) << c.last_error();
}

TEST_F(RedisSentinel, NoReachableSentinelIsNoMaster) {
  client c(ctx.get_executor(),
           sentinel_target({test_support::free_port(), test_support::free_port()}), fast_options());
  std::vector<std::string> args{"PING"};
  auto r = run_async(ctx, c.command(std::move(args)));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::no_master);
}

// The old master cannot be demoted (REPLICAOF and SLAVEOF are renamed away):
// it keeps accepting writes, so a client that stays on it never notices the
// failover by itself. Only re-asking Sentinel (every
// sentinel_recheck_interval) moves it.
class RedisSentinelUndemotable : public RedisSentinel {
 protected:
  redis_server_options primary_options() override {
    redis_server_options o;
    o.extra_args = {"--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""};
    return o;
  }
};

TEST_F(RedisSentinelUndemotable, FollowsAFailover) {
  client c(ctx.get_executor(), sentinel_target({sentinel->port()}), fast_options());
  {
    std::vector<std::string> args{"SET", "before-failover", "1"};
    auto r = run_async(ctx, c.command(std::move(args)));
    ASSERT_TRUE(r.has_value()) << c.last_error();
    ASSERT_EQ(c.connected_address(), local(primary->port()));
  }

  // Sentinel answers NOGOODSLAVE until it has seen the replica as healthy.
  ASSERT_TRUE(sentinel->wait_replicas(1));
  ASSERT_TRUE(test_support::wait_until(
      [&] {
        auto r = sentinel->cmd({"SENTINEL", "FAILOVER", "mymaster"});
        return r && r->is_simple("OK");
      },
      100, std::chrono::milliseconds(100)));
  ASSERT_TRUE(
      test_support::wait_until([&] { return sentinel->master_address() == replica->port(); }, 200,
                               std::chrono::milliseconds(50)));

  // The client was connected to the old master, which keeps accepting
  // writes. It re-asks Sentinel every sentinel_recheck_interval, so its
  // writes must move (within the 30 s of attempts below).
  int attempts = 0;
  bool on_new_master = false;
  for (; attempts < 300 && !on_new_master; ++attempts) {
    std::vector<std::string> args{"SET", "after-failover", std::to_string(attempts)};
    auto r = run_async(ctx, c.command(std::move(args)));
    if (r.has_value() && r->is_simple("OK") && c.connected_address() == local(replica->port())) {
      on_new_master = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(on_new_master) << "last error: " << c.last_error();
  auto old_role = primary->cmd({"ROLE"});
  ASSERT_TRUE(old_role.has_value());
  EXPECT_EQ(old_role->elements.at(0), reply::bulk("master")) << "the old master was demoted";
  auto v = replica->cmd({"GET", "after-failover"});
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, reply::bulk(std::to_string(attempts)));
  auto role = replica->cmd({"ROLE"});
  ASSERT_TRUE(role.has_value());
  EXPECT_EQ(role->elements.at(0), reply::bulk("master"));
}

TEST_F(RedisSentinel, StaleAnswerFromSentinelIsRejectedByRole) {
  // A second sentinel setup that believes the REPLICA is the master: its
  // answer fails the ROLE check and the client moves on to the next sentinel.
  redis_sentinel confused(replica->port(), "mymaster");
  client c(ctx.get_executor(), sentinel_target({confused.port(), sentinel->port()}),
           fast_options());
  std::vector<std::string> args{"SET", "k", "v"};
  auto r = run_async(ctx, c.command(std::move(args)));
  ASSERT_TRUE(r.has_value()) << c.last_error();
  EXPECT_TRUE(r->is_simple("OK")) << to_string(*r);
  EXPECT_EQ(c.connected_address(), local(primary->port()));
}

}  // namespace
}  // namespace mailroom::redis
