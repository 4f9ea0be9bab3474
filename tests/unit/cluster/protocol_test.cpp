// cluster/protocol: lease values and reply shapes, without Redis.
#include "cluster/protocol.hpp"

#include <gtest/gtest.h>

namespace mailroom::cluster {
namespace {

using redis::reply;

TEST(ClusterProtocolParse, LeaseValueRoundTrip) {
  const auto v = lease_value("host-1:4242:ab12", 1733400000123);
  EXPECT_EQ(v, "host-1:4242:ab12 1733400000123");
  const auto h = parse_lease_value(v);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->instance_id, "host-1:4242:ab12");
  EXPECT_EQ(h->taken_at_ms, 1733400000123);
  for (const char* bad : {"", "x", " 12", "id ", "id 12x", "id -"}) {
    EXPECT_FALSE(parse_lease_value(bad)) << bad;
  }
}

TEST(ClusterProtocolParse, LeaseRepliesOfTheWrongShapeAreUnavailable) {
  using R = std::vector<lease_reply>;
  EXPECT_EQ(parse_lease_replies(reply::array({reply::number(1), reply::number(0)}), 2),
            (R{lease_reply::done, lease_reply::not_ours}));
  EXPECT_EQ(parse_lease_replies(reply::array({reply::number(1)}), 2),
            (R{lease_reply::unavailable, lease_reply::unavailable}));
  EXPECT_EQ(parse_lease_replies(reply::error("ERR x"), 1), (R{lease_reply::unavailable}));
  EXPECT_EQ(parse_lease_replies(reply::array({reply::bulk("1")}), 1),
            (R{lease_reply::unavailable}));
}

TEST(ClusterProtocolParse, MembersAreBulkStrings) {
  EXPECT_EQ(parse_members(reply::array({reply::bulk("a"), reply::bulk("b")})),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(parse_members(reply::array({reply::number(1)})));
  EXPECT_FALSE(parse_members(reply::nil()));
}

TEST(ClusterProtocolParse, CommandsCarryKeysThenArguments) {
  const std::vector<lease_ref> l{{"k1", "v1"}, {"k2", "v2"}};
  const auto take = take_command(l, std::chrono::milliseconds(5000));
  ASSERT_EQ(take.size(), 8u);
  EXPECT_EQ(take[0], "EVAL");
  EXPECT_EQ(take[2], "2");
  EXPECT_EQ((std::vector<std::string>(take.begin() + 3, take.end())),
            (std::vector<std::string>{"k1", "k2", "5000", "v1", "v2"}));
  const auto rel = release_command(l);
  EXPECT_EQ((std::vector<std::string>(rel.begin() + 3, rel.end())),
            (std::vector<std::string>{"k1", "k2", "v1", "v2"}));
}

}  // namespace
}  // namespace mailroom::cluster
