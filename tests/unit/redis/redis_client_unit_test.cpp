// Client-side pieces that need no server: error taxonomy, arbitration keys.
#include "arbitration/redis_arbitrator.hpp"
#include "redis/error.hpp"

#include <gtest/gtest.h>
#include <boost/asio/error.hpp>

namespace mailroom {
namespace {

TEST(RedisErrc, RetriableClassification) {
  using redis::errc;
  EXPECT_TRUE(redis::is_retriable(errc::connection_failed));
  EXPECT_TRUE(redis::is_retriable(errc::timed_out));
  EXPECT_TRUE(redis::is_retriable(errc::protocol_error));
  EXPECT_TRUE(redis::is_retriable(errc::no_master));
  EXPECT_FALSE(redis::is_retriable(errc::auth_failed));
  EXPECT_FALSE(redis::is_retriable(errc::server_error));
  EXPECT_FALSE(redis::is_retriable(boost::asio::error::operation_aborted));
  const boost::system::error_code ec = errc::no_master;
  EXPECT_STREQ(ec.category().name(), "mailroom.redis");
  EXPECT_EQ(ec.message(), "no Redis master found through the sentinels");
}

arbitration::claim_request request() {
  arbitration::claim_request r;
  r.mailbox_email = "incoming@gitlab.example.com";
  r.mailbox_name = "inbox";
  r.server = "imap.example.com:993";
  r.uidvalidity = 1712345678;
  r.uid = 101;
  return r;
}

TEST(ArbitrationKey, MailRoomFormatIsMailRoomsKey) {
  config::arbitration_options o;
  o.key_format = config::arbitration_key_format::mail_room;
  EXPECT_EQ(arbitration::arbitration_key(o, request()), "delivered:101");
  o.redis.namespace_prefix = "mail_room:gitlab";
  EXPECT_EQ(arbitration::arbitration_key(o, request()), "mail_room:gitlab:delivered:101");
}

TEST(ArbitrationKey, ScopedIsTheDefaultAndNamesTheMailboxAndItsServer) {
  config::arbitration_options o;
  EXPECT_EQ(arbitration::arbitration_key(o, request()),
            "delivered:incoming@gitlab.example.com/INBOX@imap.example.com:993:1712345678:101");
  o.redis.namespace_prefix = "mail_room:gitlab";
  EXPECT_EQ(arbitration::arbitration_key(o, request()),
            "mail_room:gitlab:delivered:incoming@gitlab.example.com/INBOX@imap.example.com:993:"
            "1712345678:101");
}

TEST(ArbitrationKey, TheSameFolderOnAnotherServerHasAnotherKey) {
  config::arbitration_options o;
  auto other = request();
  other.server = "imap2.example.com:993";
  EXPECT_NE(arbitration::arbitration_key(o, request()), arbitration::arbitration_key(o, other));
  other.server = "imap.example.com:143";
  EXPECT_NE(arbitration::arbitration_key(o, request()), arbitration::arbitration_key(o, other));
  // mail_room's format knows nothing but the UID, as mail_room.
  o.key_format = config::arbitration_key_format::mail_room;
  EXPECT_EQ(arbitration::arbitration_key(o, request()), arbitration::arbitration_key(o, other));
}

TEST(ArbitrationKey, UnscopedKeyIsThePreviousVersionsKey) {
  config::arbitration_options o;
  o.redis.namespace_prefix = "mail_room:gitlab";
  EXPECT_EQ(arbitration::unscoped_arbitration_key(o, request()),
            "mail_room:gitlab:delivered:incoming@gitlab.example.com:inbox:1712345678:101");
}

}  // namespace
}  // namespace mailroom
