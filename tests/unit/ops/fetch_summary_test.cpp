#include "imap/proto/fetch_summary.hpp"
#include "imap/proto/response_parser.hpp"

#include <gtest/gtest.h>

using namespace mailroom::imap;

namespace {
response parse_one(std::string_view bytes) {
  response_parser p;
  p.feed(bytes);
  auto r = p.next();
  EXPECT_TRUE(r && *r);
  return std::move(**r);
}
}  // namespace

TEST(InternalDate, Parses) {
  EXPECT_EQ(parse_internal_date("17-Jul-1996 02:44:25 -0700"), 837596665);
  EXPECT_EQ(parse_internal_date(" 7-Jul-1996 02:44:25 +0000"), 836707465);
  EXPECT_EQ(parse_internal_date("24-Nov-2026 10:00:00 +0000"), 1795514400);
  EXPECT_EQ(parse_internal_date("24-nov-2026 12:00:00 +0200"), 1795514400);
}

TEST(InternalDate, Rejects) {
  for (const char* bad : {"", "x", "24-Foo-2026 10:00:00 +0000", "24-Nov-2026 10:00:00",
                          "24-Nov-2026 25:00:00 +0000", "124-Nov-2026 10:00:00 +0000"}) {
    EXPECT_FALSE(parse_internal_date(bad)) << bad;
  }
}

TEST(FetchSummary, AllAttributes) {
  auto r = parse_one(
      "* 3 FETCH (UID 42 FLAGS (\\Seen $Forwarded) INTERNALDATE \"24-Nov-2026 10:00:00 +0000\" "
      "RFC822.SIZE 1234 BODY[HEADER.FIELDS (DATE FROM)] {21}\r\nFrom: a@b.c\r\n\r\n......)\r\n");
  auto s = decode_message_summary(std::move(r));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->seq, 3u);
  EXPECT_EQ(s->uid, 42u);
  ASSERT_TRUE(s->flags);
  EXPECT_EQ(s->flags->size(), 2u);
  EXPECT_EQ(s->internal_date, 1795514400);
  EXPECT_EQ(s->size, 1234u);
  EXPECT_EQ(s->header.substr(0, 11), "From: a@b.c");
  EXPECT_FALSE(s->body);
}

TEST(FetchSummary, BodyAndMissingUid) {
  auto r = parse_one("* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\n");
  auto s = decode_message_summary(std::move(r));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->body, "hello");
  auto flags_only = decode_message_summary(parse_one("* 2 FETCH (FLAGS (\\Seen))\r\n"));
  ASSERT_TRUE(flags_only);
  EXPECT_FALSE(flags_only->uid);
}

TEST(FetchSummary, RejectsNonFetch) {
  EXPECT_FALSE(decode_message_summary(parse_one("* 3 EXISTS\r\n")));
}
