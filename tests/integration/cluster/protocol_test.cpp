// The cluster mode's scripts (cluster/protocol.hpp) run by a real Redis:
// take is SET NX, renewal and release are compare-and-set on the caller's
// value, and a heartbeat lists the live members only.
#include "cluster/protocol.hpp"

#include "support/redis_server.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace mailroom::cluster {
namespace {

using redis::reply;
using std::chrono::milliseconds;
using test_support::redis_server;

const keys k{"mr:cluster:"};
const milliseconds ttl{10000};

std::vector<lease_reply> run(const redis_server& s, const std::vector<std::string>& cmd,
                             std::size_t n) {
  const auto r = s.cmd(cmd);
  if (!r) return std::vector<lease_reply>(n, lease_reply::unavailable);
  return parse_lease_replies(*r, n);
}

std::vector<lease_ref> refs(const std::vector<std::string>& mailboxes, const std::string& id) {
  std::vector<lease_ref> out;
  for (const auto& m : mailboxes) out.push_back({k.lease(m), lease_value(id, 1000)});
  return out;
}

using R = std::vector<lease_reply>;
constexpr auto done = lease_reply::done;
constexpr auto not_ours = lease_reply::not_ours;

TEST(ClusterProtocol, TakeIsFirstComeAndSetsTheTtl) {
  redis_server s;
  const auto a = refs({"m1", "m2"}, "inst-a");
  EXPECT_EQ(run(s, take_command(a, ttl), 2), (R{done, done}));
  const auto b = refs({"m2", "m3"}, "inst-b");
  EXPECT_EQ(run(s, take_command(b, ttl), 2), (R{not_ours, done}));
  EXPECT_EQ(s.cmd({"GET", k.lease("m2")}), reply::bulk("inst-a 1000"));
  const auto pttl = s.cmd({"PTTL", k.lease("m1")});
  ASSERT_TRUE(pttl);
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, ttl.count());
}

TEST(ClusterProtocol, RenewalExtendsOnlyTheCallersLeases) {
  redis_server s;
  const auto a = refs({"m1"}, "inst-a");
  ASSERT_EQ(run(s, take_command(a, ttl), 1), (R{done}));
  ASSERT_TRUE(s.cmd({"PEXPIRE", k.lease("m1"), "500"}));
  EXPECT_EQ(run(s, renew_command(refs({"m1"}, "inst-b"), ttl), 1), (R{not_ours}));
  EXPECT_LE(s.cmd({"PTTL", k.lease("m1")})->integer, 500);
  EXPECT_EQ(run(s, renew_command(a, ttl), 1), (R{done}));
  EXPECT_GT(s.cmd({"PTTL", k.lease("m1")})->integer, 500);
}

TEST(ClusterProtocol, AnExpiredLeaseIsNotRenewedBackToLife) {
  redis_server s;
  const auto a = refs({"m1"}, "inst-a");
  ASSERT_EQ(run(s, take_command(a, ttl), 1), (R{done}));
  ASSERT_TRUE(s.cmd({"DEL", k.lease("m1")}));  // as if it had expired
  EXPECT_EQ(run(s, renew_command(a, ttl), 1), (R{not_ours}));
  EXPECT_TRUE(s.cmd({"GET", k.lease("m1")})->is_null());
  // Taken by another meanwhile: still not ours, and theirs untouched.
  ASSERT_EQ(run(s, take_command(refs({"m1"}, "inst-b"), ttl), 1), (R{done}));
  EXPECT_EQ(run(s, renew_command(a, ttl), 1), (R{not_ours}));
  EXPECT_EQ(s.cmd({"GET", k.lease("m1")}), reply::bulk("inst-b 1000"));
}

TEST(ClusterProtocol, ReleaseRemovesOnlyTheCallersLeases) {
  redis_server s;
  ASSERT_EQ(run(s, take_command(refs({"m1"}, "inst-a"), ttl), 1), (R{done}));
  ASSERT_EQ(run(s, take_command(refs({"m2"}, "inst-b"), ttl), 1), (R{done}));
  EXPECT_EQ(run(s, release_command(refs({"m1", "m2"}, "inst-a")), 2), (R{done, not_ours}));
  EXPECT_TRUE(s.cmd({"GET", k.lease("m1")})->is_null());
  EXPECT_EQ(s.cmd({"GET", k.lease("m2")}), reply::bulk("inst-b 1000"));
  // The same instance id with another take time is another lease.
  const std::vector<lease_ref> older{{k.lease("m2"), lease_value("inst-b", 999)}};
  EXPECT_EQ(run(s, release_command(older), 1), (R{not_ours}));
}

TEST(ClusterProtocol, HeartbeatListsLiveMembersAndDropsExpiredOnes) {
  redis_server s;
  // Redis lists them by membership expiry; compared as sets here.
  auto members = [&](const std::string& id) {
    const auto r = s.cmd(heartbeat_command(k, id, ttl, "{\"id\":\"" + id + "\"}"));
    EXPECT_TRUE(r);
    auto m = r ? parse_members(*r) : std::nullopt;
    if (m) std::sort(m->begin(), m->end());
    return m;
  };
  EXPECT_EQ(members("inst-b"), (std::vector<std::string>{"inst-b"}));
  EXPECT_EQ(members("inst-a"), (std::vector<std::string>{"inst-a", "inst-b"}));
  EXPECT_EQ(s.cmd({"GET", k.instance("inst-a")}), reply::bulk("{\"id\":\"inst-a\"}"));
  EXPECT_GT(s.cmd({"PTTL", k.instance("inst-a")})->integer, 0);
  // inst-b's membership ran out (score in the past): the next heartbeat of
  // anyone drops it.
  ASSERT_TRUE(s.cmd({"ZADD", k.members(), "1", "inst-b"}));
  EXPECT_EQ(members("inst-a"), (std::vector<std::string>{"inst-a"}));
  EXPECT_EQ(s.cmd({"ZCARD", k.members()}), reply::number(1));
}

TEST(ClusterProtocol, AnErrorReplyMakesEveryLeaseUnavailable) {
  redis_server s;
  ASSERT_TRUE(s.cmd({"LPUSH", k.lease("m1"), "x"}));  // a key of the wrong type
  const auto r = run(s, renew_command(refs({"m1", "m2"}, "inst-a"), ttl), 2);
  EXPECT_EQ(r, (R{lease_reply::unavailable, lease_reply::unavailable}));
}

}  // namespace
}  // namespace mailroom::cluster
