#include "ops/headers.hpp"

#include <gtest/gtest.h>

using mailroom::ops::decode_headers;

TEST(DecodeHeaders, PlainFields) {
  const auto h = decode_headers(
      "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
      "From: Alice Example <alice@example.com>\r\n"
      "To: incoming+group-project-1-issue-@example.com\r\n"
      "Subject: Build failed\r\n"
      "Message-ID: <abc@example.com>\r\n\r\n");
  ASSERT_TRUE(h.date);
  EXPECT_EQ(*h.date, 1795514400);  // 2026-11-24T10:00:00Z
  EXPECT_EQ(h.from, "Alice Example <alice@example.com>");
  EXPECT_EQ(h.to, "incoming+group-project-1-issue-@example.com");
  EXPECT_EQ(h.subject, "Build failed");
  EXPECT_EQ(h.message_id, "abc@example.com");
}

TEST(DecodeHeaders, DateWithZone) {
  const auto h = decode_headers("Date: Tue, 24 Nov 2026 12:00:00 +0200\r\n\r\n");
  ASSERT_TRUE(h.date);
  EXPECT_EQ(*h.date, 1795514400);
}

TEST(DecodeHeaders, Rfc2047QAndB) {
  const auto h = decode_headers(
      "From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>\r\n"
      "Subject: =?UTF-8?B?w4lsw6h2ZSDigJQg4pyT?=\r\n\r\n");
  EXPECT_EQ(h.from, "Jörg Müller <joerg@example.de>");
  EXPECT_EQ(h.subject, "Élève — ✓");
}

TEST(DecodeHeaders, FoldedSubjectAndAdjacentEncodedWords) {
  const auto h = decode_headers(
      "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
      " =?UTF-8?Q?_aus_K=C3=B6ln?= and\r\n"
      "\tmore\r\n\r\n");
  // RFC 2047 §6.2: whitespace between adjacent encoded words is dropped;
  // RFC 5322 §2.2.3: unfolding removes the CRLF only, the tab stays.
  EXPECT_EQ(h.subject, "Grüße aus Köln and\tmore");
}

TEST(DecodeHeaders, Raw8BitUtf8AndLatin1) {
  EXPECT_EQ(decode_headers("Subject: Grüße\r\n\r\n").subject, "Grüße");
  EXPECT_EQ(decode_headers("Subject: Gr\xfc\xdf"
                           "e\r\n\r\n")
                .subject,
            "Grüße");
}

TEST(DecodeHeaders, AddressLists) {
  const auto h = decode_headers(
      "To: \"Doe, Jane\" <jane@example.com>, bob@example.com,\r\n"
      "  =?UTF-8?Q?Z=C3=B6e?= <zoe@example.com>\r\n\r\n");
  EXPECT_EQ(h.to, "\"Doe, Jane\" <jane@example.com>, bob@example.com, Zöe <zoe@example.com>");
}

TEST(DecodeHeaders, MissingOrBadDate) {
  EXPECT_FALSE(decode_headers("Subject: x\r\n\r\n").date);
  const auto bad = decode_headers("Date: not a date\r\nSubject: x\r\n\r\n");
  EXPECT_EQ(bad.subject, "x");
}

TEST(DecodeHeaders, NoBlankLineAndLfOnly) {
  const auto h = decode_headers("Subject: hello\nFrom: a@b.c");
  EXPECT_EQ(h.subject, "hello");
  EXPECT_EQ(h.from, "a@b.c");
}

TEST(DecodeHeaders, EmptyInput) {
  const auto h = decode_headers("");
  EXPECT_TRUE(h.subject.empty());
  EXPECT_FALSE(h.date);
}
