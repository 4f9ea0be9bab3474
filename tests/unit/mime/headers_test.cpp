// header_value() and message_id() on the shapes real mail takes, and on the
// hostile ones an IMAP server may hand us.
#include "mime/headers.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mailroom::mime {
namespace {

using namespace std::string_literals;

const std::string simple =
    "Return-Path: <alice@example.com>\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: incoming+abc@example.com\r\n"
    "Subject: Hello\r\n"
    "Message-ID: <1234.5678@mail.example.com>\r\n"
    "\r\n"
    "Body line\r\n";

TEST(header_value, finds_a_field_and_trims_it) {
  EXPECT_EQ(header_value(simple, "Subject"), "Hello");
  EXPECT_EQ(header_value(simple, "From"), "Alice <alice@example.com>");
  EXPECT_EQ(header_value("Subject:   padded \t \r\n\r\n", "Subject"), "padded");
  EXPECT_EQ(header_value("Subject:\r\n\r\n", "Subject"), "");
}

TEST(header_value, names_are_case_insensitive) {
  EXPECT_EQ(header_value(simple, "subject"), "Hello");
  EXPECT_EQ(header_value(simple, "SUBJECT"), "Hello");
  EXPECT_EQ(header_value(simple, "message-id"), "<1234.5678@mail.example.com>");
  EXPECT_EQ(header_value("sUbJeCt: x\n\n", "Subject"), "x");
}

TEST(header_value, missing_field) {
  EXPECT_EQ(header_value(simple, "Cc"), std::nullopt);
  // A prefix or an extension of a name is another name.
  EXPECT_EQ(header_value(simple, "Subj"), std::nullopt);
  EXPECT_EQ(header_value(simple, "Subjects"), std::nullopt);
  EXPECT_EQ(header_value(simple, ""), std::nullopt);
}

TEST(header_value, unfolds_keeping_the_whitespace) {
  const std::string folded =
      "Subject: a long\r\n"
      "  subject\r\n"
      "\tline\r\n"
      "To: x@example.com\r\n"
      "\r\n";
  EXPECT_EQ(header_value(folded, "Subject"), "a long  subject\tline");
  EXPECT_EQ(header_value(folded, "To"), "x@example.com");
  // The value may start on the next line.
  EXPECT_EQ(header_value("Message-ID:\r\n <a@b>\r\n\r\n", "Message-ID"), "<a@b>");
  // A whitespace-only line is folding too (RFC 5322 §4.2), not the end.
  EXPECT_EQ(header_value("Subject: a\r\n \r\n b\r\n\r\n", "Subject"), "a  b");
}

TEST(header_value, first_field_wins) {
  EXPECT_EQ(header_value("Received: one\r\nReceived: two\r\n\r\n", "Received"), "one");
}

TEST(header_value, bare_lf_and_mixed_line_ends) {
  EXPECT_EQ(header_value("Subject: lf\nTo: t\n\nbody\n", "Subject"), "lf");
  EXPECT_EQ(header_value("Subject: a\n b\r\n\tc\nTo: t\n\n", "Subject"), "a b\tc");
  EXPECT_EQ(header_value("A: 1\n\nSubject: body\n", "Subject"), std::nullopt);
  // A bare CR is no line break (RFC 5322 §2.1): it stays in the value.
  EXPECT_EQ(header_value("Subject: a\rTo: b\r\n\r\n", "Subject"), "a\rTo: b");
}

TEST(header_value, only_the_header_section_is_searched) {
  EXPECT_EQ(header_value(simple, "Body line"), std::nullopt);
  EXPECT_EQ(header_value("From: a\r\n\r\nSubject: in the body\r\n", "Subject"), std::nullopt);
  // The section ends even when the empty line is the first line.
  EXPECT_EQ(header_value("\r\nSubject: x\r\n", "Subject"), std::nullopt);
  EXPECT_EQ(header_value("\nSubject: x\n", "Subject"), std::nullopt);
}

TEST(header_value, messages_without_body_or_blank_line) {
  EXPECT_EQ(header_value("Subject: no body\r\n", "Subject"), "no body");
  EXPECT_EQ(header_value("Subject: no line break", "Subject"), "no line break");
  EXPECT_EQ(header_value("From: a\r\nSubject: last\r\n", "Subject"), "last");
  EXPECT_EQ(header_value("Subject: folded at the end\r\n more", "Subject"),
            "folded at the end more");
}

TEST(header_value, empty_and_degenerate_messages) {
  EXPECT_EQ(header_value("", "Subject"), std::nullopt);
  EXPECT_EQ(header_value("\r\n", "Subject"), std::nullopt);
  EXPECT_EQ(header_value(":", "Subject"), std::nullopt);
  EXPECT_EQ(header_value(": empty name\r\n", ""), std::nullopt);
  EXPECT_EQ(header_value("   \r\n\t\r\n", "Subject"), std::nullopt);
}

TEST(header_value, skips_lines_that_are_not_fields) {
  // An mbox envelope line, a line without a colon, a name with a space.
  const std::string s =
      "From alice@example.com Mon Jan  1 00:00:00 2024\n"
      "garbage without colon\n"
      " continuation of nothing\n"
      "Bad Name: x\n"
      "Subject: found\n\n";
  EXPECT_EQ(header_value(s, "Subject"), "found");
  EXPECT_EQ(header_value(s, "Bad Name"), std::nullopt);
  // Such a line also ends the field before it.
  EXPECT_EQ(header_value("Subject: a\ngarbage\n b\n\n", "Subject"), "a");
}

TEST(header_value, whitespace_before_the_colon) {
  // RFC 5322 §4.5: obsolete, but still sent.
  EXPECT_EQ(header_value("Subject \t: old style\r\n\r\n", "Subject"), "old style");
}

TEST(header_value, bytes_pass_through) {
  EXPECT_EQ(header_value("Subject: a\0b\r\n\r\n"s, "Subject"), "a\0b"s);
  EXPECT_EQ(header_value("Subject: caf\xe9 \xff\xfe\r\n\r\n", "Subject"), "caf\xe9 \xff\xfe");
  EXPECT_EQ(header_value("X\0Y: 1\r\nSubject: s\r\n\r\n"s, "Subject"), "s");
  EXPECT_EQ(header_value("Subject: =?UTF-8?B?w6k=?=\r\n\r\n", "Subject"), "=?UTF-8?B?w6k=?=");
}

TEST(header_value, scans_at_most_max_scan_bytes) {
  const std::string s = "From: a\r\nSubject: far\r\n\r\n";
  EXPECT_EQ(header_value(s, "Subject", 9), std::nullopt);
  EXPECT_EQ(header_value(s, "Subject", 16), std::nullopt);  // cut before the colon
  EXPECT_EQ(header_value(s, "Subject", 19), "f");
  EXPECT_EQ(header_value(s, "Subject", 0), std::nullopt);
  EXPECT_EQ(header_value(s, "Subject"), "far");
}

TEST(header_value, a_megabyte_long_line) {
  // One 2 MiB field before the wanted one: the default scan stops inside it.
  const std::string huge = "X-Junk: " + std::string(2 << 20, 'a') + "\r\n";
  EXPECT_EQ(header_value(huge + "Subject: s\r\n\r\n", "Subject"), std::nullopt);
  EXPECT_EQ(header_value(huge + "Subject: s\r\n\r\n", "Subject", 4 << 20), "s");

  // The wanted field itself is huge: cut at max_header_value.
  const std::string big = "Subject: " + std::string(1 << 20, 'b') + "\r\n\r\n";
  auto v = header_value(big, "Subject");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->size(), max_header_value);
  EXPECT_EQ(*v, std::string(max_header_value, 'b'));

  // Folded into many lines, the cap applies to the unfolded value.
  std::string many = "References:";
  for (int i = 0; i < 20000; ++i) many += "\r\n <id" + std::to_string(i) + "@example.com>";
  v = header_value(many + "\r\n\r\n", "References");
  ASSERT_TRUE(v.has_value());
  EXPECT_LE(v->size(), max_header_value);
  EXPECT_TRUE(v->starts_with("<id0@example.com> <id1@"));

  // Leading whitespace does not count against the cap.
  const std::string padded = "Subject:" + std::string(max_header_value * 2, ' ') + "x\r\n\r\n";
  EXPECT_EQ(header_value(padded, "Subject", padded.size()), "x");
}

TEST(header_value, no_blank_line_in_a_large_message) {
  std::string s = "Subject: s\n";
  for (int i = 0; i < 100000; ++i) s += "X-Line-" + std::to_string(i) + ": v\n";
  EXPECT_EQ(header_value(s, "Subject"), "s");
  EXPECT_EQ(header_value(s, "X-Line-99999"), std::nullopt);  // beyond 1 MiB
  EXPECT_EQ(header_value(s, "X-Line-99999", s.size()), "v");
}

TEST(message_id, plain) {
  EXPECT_EQ(message_id(simple), "<1234.5678@mail.example.com>");
  EXPECT_EQ(message_id("Message-Id: <a@b>\n\n"), "<a@b>");
  EXPECT_EQ(message_id("MESSAGE-ID:<a@b>"), "<a@b>");
}

TEST(message_id, comments_and_whitespace_are_removed) {
  EXPECT_EQ(message_id("Message-ID: (sent by x) <a@b> (trailing)\r\n\r\n"), "<a@b>");
  EXPECT_EQ(message_id("Message-ID: ((nested) \\) comment) <a@b>\r\n\r\n"), "<a@b>");
  EXPECT_EQ(message_id("Message-ID:\r\n <a.very.long.id@\r\n example.com>\r\n\r\n"),
            "<a.very.long.id@example.com>");
  EXPECT_EQ(message_id("Message-ID: < a @ b >\r\n\r\n"), "<a@b>");
  // Quoted strings keep their content (obs-id-left = local-part).
  EXPECT_EQ(message_id("Message-ID: <\"a b(c)\"@d>\r\n\r\n"), "<\"a b(c)\"@d>");
}

TEST(message_id, without_brackets) {
  EXPECT_EQ(message_id("Message-ID: a@b\r\n\r\n"), "<a@b>");
  EXPECT_EQ(message_id("Message-ID: no-at-sign\r\n\r\n"), std::nullopt);
  // Brackets without '@' are accepted: servers generate such IDs.
  EXPECT_EQ(message_id("Message-ID: <20240101.abc>\r\n\r\n"), "<20240101.abc>");
}

TEST(message_id, absent_empty_or_malformed) {
  EXPECT_EQ(message_id("Subject: x\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id(""), std::nullopt);
  EXPECT_EQ(message_id("Message-ID:\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: (only a comment)\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <>\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <a@b\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: a@b>\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <<a@b>>\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <\"a@b>\r\n\r\n"), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <a\0@b>\r\n\r\n"s), std::nullopt);
  EXPECT_EQ(message_id("Message-ID: <a\x7f@b>\r\n\r\n"), std::nullopt);
  // In the body it does not count.
  EXPECT_EQ(message_id("Subject: x\r\n\r\nMessage-ID: <a@b>\r\n"), std::nullopt);
}

TEST(message_id, eight_bit_bytes_pass_through) {
  EXPECT_EQ(message_id("Message-ID: <caf\xc3\xa9@b>\r\n\r\n"), "<caf\xc3\xa9@b>");
  EXPECT_EQ(message_id("Message-ID: <\xff@b>\r\n\r\n"), "<\xff@b>");
}

TEST(message_id, length_limit) {
  const std::string ok(max_message_id - 4, 'x');
  EXPECT_EQ(message_id("Message-ID: <" + ok + "@b>\r\n\r\n"), "<" + ok + "@b>");
  const std::string too_long(max_message_id - 3, 'x');
  EXPECT_EQ(message_id("Message-ID: <" + too_long + "@b>\r\n\r\n"), std::nullopt);
}

TEST(message_id, the_first_field_counts) {
  EXPECT_EQ(message_id("Message-ID: <one@x>\r\nMessage-ID: <two@x>\r\n\r\n"), "<one@x>");
  // A broken first one is not replaced by a later one.
  EXPECT_EQ(message_id("Message-ID: broken\r\nMessage-ID: <two@x>\r\n\r\n"), std::nullopt);
}

}  // namespace
}  // namespace mailroom::mime
