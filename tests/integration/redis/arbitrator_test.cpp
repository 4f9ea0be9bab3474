// Redis arbitration (mail_room-behaviour §4.2) against a real redis-server.
#include "arbitration/noop_arbitrator.hpp"
#include "arbitration/redis_arbitrator.hpp"

#include "async_helpers.hpp"
#include "fake_server.hpp"
#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

namespace mailroom::arbitration {
namespace {

namespace asio = boost::asio;
using redis::reply;
using test_support::redis_server;
using test_support::run_async;

claim_request req(std::uint32_t uid, std::string mailbox = "inbox", std::uint32_t uidvalidity = 7,
                  std::string server = "imap.example.com:993") {
  return claim_request{.mailbox_email = "incoming@example.com",
                       .mailbox_name = std::move(mailbox),
                       .server = std::move(server),
                       .uidvalidity = uidvalidity,
                       .uid = uid,
                       .message_id = {}};
}

const std::string scoped_key_7_101 =
    "delivered:incoming@example.com/INBOX@imap.example.com:993:7:101";

class RedisArbitration : public testing::Test {
 protected:
  redis_arbitrator make(config::arbitration_key_format format, std::string ns = {},
                        bool honour_unscoped_keys = true) {
    config::arbitration_options o;
    o.redis.host = "127.0.0.1";
    o.redis.port = server.port();
    o.redis.namespace_prefix = std::move(ns);
    o.key_format = format;
    auto c = std::make_shared<redis::client>(ctx.get_executor(), o.redis);
    return redis_arbitrator(o, c, honour_unscoped_keys);
  }

  claim_result claim(redis_arbitrator& a, const claim_request& r) {
    std::string detail;
    auto result = run_async(ctx, a.claim(r, detail));
    EXPECT_TRUE(detail.empty()) << detail;
    return result;
  }
  write_result record(redis_arbitrator& a, const claim_request& r, const std::string& jid) {
    std::string detail;
    return run_async(ctx, a.mark_delivered(r, jid, detail));
  }
  write_result release(redis_arbitrator& a, const claim_request& r) {
    std::string detail;
    return run_async(ctx, a.release(r, detail));
  }

  asio::io_context ctx;
  redis_server server;
};

TEST_F(RedisArbitration, FirstClaimGrantedSecondTakenOtherUidGranted) {
  auto a = make(config::arbitration_key_format::scoped);
  auto b = make(config::arbitration_key_format::scoped);  // another instance
  EXPECT_EQ(claim(a, req(101)), claim_result::granted);
  EXPECT_EQ(claim(b, req(101)), claim_result::taken);
  EXPECT_EQ(claim(a, req(101)), claim_result::taken);
  EXPECT_EQ(claim(b, req(102)), claim_result::granted);
}

TEST_F(RedisArbitration, ScopedKeyIncludesMailboxServerAndUidvalidity) {
  auto a = make(config::arbitration_key_format::scoped, "mail_room:gitlab");
  EXPECT_EQ(claim(a, req(101)), claim_result::granted);
  auto exists = server.cmd({"EXISTS", "mail_room:gitlab:" + scoped_key_7_101});
  ASSERT_TRUE(exists.has_value());
  EXPECT_EQ(*exists, reply::number(1));
  auto value = server.cmd({"GET", "mail_room:gitlab:" + scoped_key_7_101});
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, reply::bulk(a.claim_value()));
  EXPECT_TRUE(a.claim_value().starts_with("claimed:")) << a.claim_value();
  // Two mailboxes with equal UIDs, or a new UIDVALIDITY, do not block each other.
  EXPECT_EQ(claim(a, req(101, "service_desk")), claim_result::granted);
  EXPECT_EQ(claim(a, req(101, "inbox", 8)), claim_result::granted);
}

// Two servers may give the same account and folder the same UIDVALIDITY (Cyrus
// gives folders created in the same second the same value): the same UID there
// names two messages, and neither may be taken for the other.
TEST_F(RedisArbitration, SameFolderAndUidOnTwoServersAreTwoMessages) {
  auto a = make(config::arbitration_key_format::scoped);
  EXPECT_EQ(claim(a, req(9, "INBOX", 7, "imap1.example.com:143")), claim_result::granted);
  EXPECT_EQ(record(a, req(9, "INBOX", 7, "imap1.example.com:143"), "j1"), write_result::done);
  EXPECT_EQ(claim(a, req(9, "INBOX", 7, "imap2.example.com:143")), claim_result::granted);
  EXPECT_EQ(claim(a, req(9, "INBOX", 7, "imap1.example.com:144")), claim_result::granted);
  EXPECT_EQ(claim(a, req(9, "INBOX", 7, "imap1.example.com:143")), claim_result::delivered);
}

// Keys the previous version wrote (without the server) are honoured: an
// upgrade neither delivers again what it delivered nor competes with a claim it
// holds; a key it does not know of leaves the claim granted.
TEST_F(RedisArbitration, PreviousVersionsKeysAreHonoured) {
  auto a = make(config::arbitration_key_format::scoped, "ns");
  ASSERT_TRUE(server
                  .cmd({"SET", "ns:delivered:incoming@example.com:inbox:7:101",
                        "delivered:0123456789abcdef01234567", "EX", "600"})
                  .has_value());
  ASSERT_TRUE(server
                  .cmd({"SET", "ns:delivered:incoming@example.com:inbox:7:102",
                        "claimed:old-host:42:deadbeef", "EX", "120"})
                  .has_value());
  EXPECT_EQ(claim(a, req(101)), claim_result::delivered);
  EXPECT_EQ(claim(a, req(102)), claim_result::taken);
  EXPECT_EQ(claim(a, req(103)), claim_result::granted);
  // A claim that turned out not to be ours leaves no new key behind.
  auto exists = server.cmd({"EXISTS", "ns:" + scoped_key_7_101});
  ASSERT_TRUE(exists.has_value());
  EXPECT_EQ(*exists, reply::number(0));
  // Once those keys are gone, the message is ours.
  ASSERT_TRUE(server.cmd({"DEL", "ns:delivered:incoming@example.com:inbox:7:102"}).has_value());
  EXPECT_EQ(claim(a, req(102)), claim_result::granted);
}

TEST_F(RedisArbitration, PreviousVersionsKeysAreIgnoredWhenAmbiguous) {
  // The same account and folder configured on two servers: the old key could
  // be either's, so it is not consulted.
  auto a = make(config::arbitration_key_format::scoped, "", false);
  ASSERT_TRUE(server
                  .cmd({"SET", "delivered:incoming@example.com:inbox:7:101",
                        "delivered:0123456789abcdef01234567", "EX", "600"})
                  .has_value());
  EXPECT_EQ(claim(a, req(101)), claim_result::granted);
}

TEST_F(RedisArbitration, MailRoomFormatCollidesAcrossMailboxesLikeMailRoom) {
  auto a = make(config::arbitration_key_format::mail_room, "mail_room:gitlab");
  EXPECT_EQ(claim(a, req(101, "inbox")), claim_result::granted);
  EXPECT_EQ(claim(a, req(101, "service_desk")), claim_result::taken);
  auto exists = server.cmd({"EXISTS", "mail_room:gitlab:delivered:101"});
  ASSERT_TRUE(exists.has_value());
  EXPECT_EQ(*exists, reply::number(1));
}

TEST_F(RedisArbitration, ClaimLivesClaimTtlThenDeliveredRecordTenMinutes) {
  auto a = make(config::arbitration_key_format::mail_room);
  auto b = make(config::arbitration_key_format::mail_room);  // another instance
  EXPECT_EQ(claim(a, req(5)), claim_result::granted);
  auto ttl = server.cmd({"TTL", "delivered:5"});
  ASSERT_TRUE(ttl.has_value());
  ASSERT_EQ(ttl->k, reply::kind::integer);
  EXPECT_GT(ttl->integer, 5);
  EXPECT_LE(ttl->integer, 10);
  // While the claim is held the message is someone else's.
  EXPECT_EQ(claim(b, req(5)), claim_result::taken);

  const std::string jid = "0123456789abcdef01234567";
  EXPECT_EQ(record(a, req(5), jid), write_result::done);
  auto value = server.cmd({"GET", "delivered:5"});
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, reply::bulk("delivered:" + jid));
  ttl = server.cmd({"TTL", "delivered:5"});
  ASSERT_TRUE(ttl.has_value());
  EXPECT_GT(ttl->integer, 595);
  EXPECT_LE(ttl->integer, 600);
  // Found unflagged after delivery: flag it, do not deliver it again.
  EXPECT_EQ(claim(b, req(5)), claim_result::delivered);
}

TEST_F(RedisArbitration, MailRoomValueReadsAsTaken) {
  auto a = make(config::arbitration_key_format::mail_room);
  ASSERT_TRUE(server.cmd({"SET", "delivered:6", "1", "EX", "600"}).has_value());
  EXPECT_EQ(claim(a, req(6)), claim_result::taken);
}

TEST_F(RedisArbitration, ClaimTtlSetsTheLifetimeOfAClaim) {
  // A crashed instance's claim frees its message after claim_ttl, not 600 s.
  config::arbitration_options o;
  o.redis.host = "127.0.0.1";
  o.redis.port = server.port();
  o.claim_ttl = std::chrono::seconds(30);  // neither the 10 s default nor the 600 s record
  redis_arbitrator dead(o, std::make_shared<redis::client>(ctx.get_executor(), o.redis));
  EXPECT_EQ(claim(dead, req(7)), claim_result::granted);
  auto pttl = server.cmd({"PTTL", "delivered:incoming@example.com/INBOX@imap.example.com:993:7:7"});
  ASSERT_TRUE(pttl.has_value());
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, 30000);
}

TEST_F(RedisArbitration, ReleaseMakesTheMessageClaimableAgain) {
  auto a = make(config::arbitration_key_format::scoped);
  EXPECT_EQ(claim(a, req(9)), claim_result::granted);
  EXPECT_EQ(release(a, req(9)), write_result::done);
  auto exists =
      server.cmd({"EXISTS", "delivered:incoming@example.com/INBOX@imap.example.com:993:7:9"});
  ASSERT_TRUE(exists.has_value());
  EXPECT_EQ(*exists, reply::number(0));
  EXPECT_EQ(claim(a, req(9)), claim_result::granted);
}

TEST_F(RedisArbitration, AnExpiredClaimTakenByAnotherInstanceIsLeftAlone) {
  auto a = make(config::arbitration_key_format::scoped);
  auto b = make(config::arbitration_key_format::scoped);
  const std::string key = "delivered:incoming@example.com/INBOX@imap.example.com:993:7:11";
  EXPECT_EQ(claim(a, req(11)), claim_result::granted);
  // a's claim expires (it outlived claim_ttl); b claims the message.
  ASSERT_TRUE(server.cmd({"DEL", key}).has_value());
  EXPECT_EQ(claim(b, req(11)), claim_result::granted);
  // a's late release and record change nothing: b's claim stays.
  EXPECT_EQ(release(a, req(11)), write_result::claim_lost);
  EXPECT_EQ(record(a, req(11), "jid-a"), write_result::claim_lost);
  auto value = server.cmd({"GET", key});
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, reply::bulk(b.claim_value()));
  // b records its own delivery; a record never replaces another's record.
  EXPECT_EQ(record(b, req(11), "jid-b"), write_result::done);
  EXPECT_EQ(record(a, req(11), "jid-a"), write_result::claim_lost);
  EXPECT_EQ(release(a, req(11)), write_result::claim_lost);
  value = server.cmd({"GET", key});
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, reply::bulk("delivered:jid-b"));
}

TEST_F(RedisArbitration, ARenewalExtendsOnlyTheInstancesOwnClaim) {
  auto a = make(config::arbitration_key_format::scoped);
  auto b = make(config::arbitration_key_format::scoped);
  const std::string key = "delivered:incoming@example.com/INBOX@imap.example.com:993:7:14";
  EXPECT_EQ(claim(a, req(14)), claim_result::granted);
  ASSERT_TRUE(server.cmd({"EXPIRE", key, "2"}).has_value());  // about to run out
  std::string detail;
  EXPECT_EQ(run_async(ctx, a.renew(req(14), detail)), write_result::done) << detail;
  auto ttl = server.cmd({"TTL", key});
  ASSERT_TRUE(ttl.has_value());
  EXPECT_GT(ttl->integer, 2);
  EXPECT_LE(ttl->integer, a.claim_ttl().count());
  // b cannot keep a's claim alive, and a cannot keep a record alive.
  EXPECT_EQ(run_async(ctx, b.renew(req(14), detail)), write_result::claim_lost);
  EXPECT_EQ(record(a, req(14), "jid-a"), write_result::done);
  EXPECT_EQ(run_async(ctx, a.renew(req(14), detail)), write_result::claim_lost);
}

TEST_F(RedisArbitration, AClaimThatExpiredUnclaimedIsStillRecorded) {
  // Nobody took the message after our claim expired: the record prevents a
  // second delivery by whoever looks next.
  auto a = make(config::arbitration_key_format::scoped);
  const std::string key = "delivered:incoming@example.com/INBOX@imap.example.com:993:7:12";
  EXPECT_EQ(claim(a, req(12)), claim_result::granted);
  ASSERT_TRUE(server.cmd({"DEL", key}).has_value());
  EXPECT_EQ(record(a, req(12), "jid-a"), write_result::done);
  auto value = server.cmd({"GET", key});
  ASSERT_TRUE(value.has_value());
  EXPECT_EQ(*value, reply::bulk("delivered:jid-a"));
  // A release of a claim that is gone has nothing to do.
  EXPECT_EQ(release(a, req(13)), write_result::claim_lost);
}

TEST_F(RedisArbitration, UnreachableRedisIsUnavailableWithDetail) {
  auto a = make(config::arbitration_key_format::scoped);
  server.stop();
  std::string detail;
  EXPECT_EQ(run_async(ctx, a.claim(req(1), detail)), claim_result::unavailable);
  EXPECT_NE(detail.find("delivered:"), std::string::npos) << detail;
  EXPECT_NE(detail.find("connect"), std::string::npos) << detail;
  detail.clear();
  EXPECT_EQ(run_async(ctx, a.release(req(1), detail)), write_result::unavailable);  // no hang
  EXPECT_NE(detail.find("releasing the claim"), std::string::npos) << detail;
  detail.clear();
  EXPECT_EQ(run_async(ctx, a.mark_delivered(req(1), "j", detail)), write_result::unavailable);
  EXPECT_NE(detail.find("recording the delivery"), std::string::npos) << detail;
}

TEST_F(RedisArbitration, ErrorReplyIsUnavailable) {
  auto a = make(config::arbitration_key_format::mail_room);
  // Make the server refuse writes: an error reply, not a connection failure.
  ASSERT_TRUE(server.cmd({"CONFIG", "SET", "maxmemory", "1"}).has_value());
  ASSERT_TRUE(server.cmd({"CONFIG", "SET", "maxmemory-policy", "noeviction"}).has_value());
  std::string detail;
  EXPECT_EQ(run_async(ctx, a.claim(req(1), detail)), claim_result::unavailable);
  EXPECT_NE(detail.find("OOM"), std::string::npos) << detail;
}

// mail_room's command shape (SET key value EX n NX) with our claim value and
// TTL; a refused claim asks what the key holds.
TEST(RedisArbitrationWire, SetNxExInRedisRbOrder) {
  asio::io_context ctx;
  test_support::fake_server server(ctx, [](const std::string& got) {
    if (got.ends_with("NX\r\n")) return std::string("$-1\r\n");
    if (got.find("GET") != std::string::npos) return std::string("$-1\r\n");
    return std::string();
  });
  config::arbitration_options o;
  o.redis.host = "127.0.0.1";
  o.redis.port = server.port();
  o.key_format = config::arbitration_key_format::mail_room;
  redis_arbitrator a(o, std::make_shared<redis::client>(ctx.get_executor(), o.redis));
  std::string detail;
  const auto result = run_async(ctx, [&]() -> asio::awaitable<claim_result> {
    auto r = co_await a.claim(req(101), detail);
    server.stop();
    co_return r;
  }());
  EXPECT_EQ(result, claim_result::taken) << detail;
  const std::string v = a.claim_value();
  EXPECT_EQ(server.received(), "*6\r\n$3\r\nSET\r\n$13\r\ndelivered:101\r\n$" +
                                   std::to_string(v.size()) + "\r\n" + v +
                                   "\r\n$2\r\nEX\r\n$2\r\n10\r\n$2\r\nNX\r\n"
                                   "*2\r\n$3\r\nGET\r\n$13\r\ndelivered:101\r\n");
}

TEST(NoopArbitration, AlwaysGranted) {
  asio::io_context ctx;
  noop_arbitrator a;
  EXPECT_STREQ(a.class_name(), "MailRoom::Arbitration::Noop");
  std::string detail;
  EXPECT_EQ(run_async(ctx, a.claim(req(1), detail)), claim_result::granted);
  EXPECT_EQ(run_async(ctx, a.claim(req(1), detail)), claim_result::granted);
}

}  // namespace
}  // namespace mailroom::arbitration
