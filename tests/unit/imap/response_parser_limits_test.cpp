// Every limit and every class of malformed input ends in its own errc, and the
// error is final.
#include "imap/proto/errc.hpp"
#include "imap/proto/response_parser.hpp"
#include "unit/imap/transcripts.hpp"

#include <gtest/gtest.h>

namespace mailroom::imap {
namespace {

using test::parse_error;

struct bad_case {
  std::string wire;
  errc expected;
};

TEST(response_parser_errors, malformed_inputs) {
  const std::vector<bad_case> cases = {
      {"garbage\r\n", errc::malformed_response},
      {"\r\n", errc::malformed_response},
      {"*\r\n", errc::malformed_response},
      {"* \r\n", errc::malformed_response},
      {"*OK x\r\n", errc::malformed_response},
      {"* 1\r\n", errc::malformed_response},
      {"* 1 \r\n", errc::malformed_response},
      {"* (x)\r\n", errc::malformed_response},
      {"* 4294967296 EXISTS\r\n", errc::malformed_response},
      {"* 99999999999999999999 EXISTS\r\n", errc::malformed_response},
      {"A1 FOO bar\r\n", errc::malformed_response},
      {"A1 BYE tagged bye\r\n", errc::malformed_response},
      {"A1\r\n", errc::malformed_response},
      {"A(1 OK x\r\n", errc::malformed_response},
      {"* OK [ALERT unterminated\r\n", errc::malformed_response},
      {"* OK []\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] \"unterminated)\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] \"ends in escape\\\r\n", errc::malformed_response},
      {"* 1 FETCH (UID 1))\r\n", errc::malformed_response},
      {"* 1 FETCH (UID 1\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[HEADER.FIELDS (FROM)\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] {-5}\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] {}\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] {5x}\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] {5} trailing\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] {5\r\n", errc::malformed_response},
      {"* 1 FETCH (BODY[] ~5}\r\n", errc::malformed_response},
      {"* SEARCH 99999999999999999999999\r\n", errc::malformed_response},
      {"* LIST () \"/\" foo\x01"
       "bar\r\n",
       errc::malformed_response},
      {"* LIST () \"/\" foo\rbar\r\n", errc::malformed_response},
      {std::string("* X \"nul\0\"\r\n", 12), errc::malformed_response},
      {"* 1 FETCH (BODY[] {99999999999999999999}\r\n", errc::literal_too_large},
      {"* 1 FETCH (BODY[] {18446744073709551616}\r\n", errc::literal_too_large},
      {"* 1 FETCH (BODY[] {67108865}\r\n", errc::literal_too_large},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parse_error(c.wire), make_error_code(c.expected)) << testing::PrintToString(c.wire);
  }
}

TEST(response_parser_errors, error_is_final) {
  response_parser p;
  p.feed("* OK fine\r\n* 1 FETCH (UID 1))\r\n* OK more\r\n");
  auto first = p.next();
  ASSERT_TRUE(first && *first);
  EXPECT_EQ(p.next().error(), errc::malformed_response);
  p.feed("* OK still fine\r\n");
  EXPECT_EQ(p.next().error(), errc::malformed_response);
  EXPECT_EQ(p.next().error(), errc::malformed_response);
  EXPECT_EQ(p.buffered(), 0u);  // nothing is held for a dead connection
}

TEST(response_parser_errors, line_length_limit) {
  limits l;
  l.max_line_length = 64;
  const std::string ok = "* OK " + std::string(59, 'x');  // exactly 64
  EXPECT_EQ(test::parse_whole(ok + "\r\n", l).size(), 1u);
  EXPECT_EQ(parse_error(ok + "y\r\n", l), errc::line_too_long);

  // Fails while the line is still arriving, long before any LF.
  response_parser p(l);
  p.feed(std::string(65, 'x'));
  EXPECT_FALSE(p.next().value());  // 65 bytes: might still be 64 + CR
  p.feed("x");
  EXPECT_EQ(p.next().error(), errc::line_too_long);
}

TEST(response_parser_errors, line_length_counts_pieces_around_literals_but_not_literals) {
  limits l;
  l.max_line_length = 40;
  const std::string big(1000, 'z');
  // 31 bytes outside the literal: fine although the literal is big.
  EXPECT_EQ(test::parse_whole("* 1 FETCH (UID 1 BODY[] {1000}\r\n" + big + ")\r\n", l).size(), 1u);
  // The pieces together exceed 40.
  EXPECT_EQ(parse_error("* 1 FETCH (UID 1 BODY[] {1}\r\nz X1234567890 Y1234567890)\r\n", l),
            errc::line_too_long);
}

TEST(response_parser_errors, literal_size_limit_checked_at_the_announcement) {
  limits l;
  l.max_literal_size = 10;
  EXPECT_EQ(test::parse_whole("* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n", l).size(), 1u);
  // Only the announcement is fed: the error comes before any literal byte.
  EXPECT_EQ(parse_error("* 1 FETCH (BODY[] {11}\r\n", l), errc::literal_too_large);
  EXPECT_EQ(parse_error("* 1 FETCH (BINARY[] ~{11}\r\n", l), errc::literal_too_large);
}

TEST(response_parser_errors, literal_bytes_per_response_limit) {
  limits l;
  l.max_literal_size = 10;
  l.max_response_literal_bytes = 15;
  EXPECT_EQ(parse_error("* 1 FETCH (A {8}\r\n01234567 B {8}\r\n", l), errc::literal_too_large);
  // The total is per response.
  EXPECT_EQ(
      test::parse_whole("* 1 FETCH (A {8}\r\n01234567)\r\n* 2 FETCH (B {8}\r\n01234567)\r\n", l)
          .size(),
      2u);
}

TEST(response_parser_errors, depth_limit) {
  limits l;
  l.max_depth = 3;
  EXPECT_EQ(test::parse_whole("* X (((a)))\r\n", l).size(), 1u);
  EXPECT_EQ(parse_error("* X ((((a))))\r\n", l), errc::nesting_too_deep);
  EXPECT_EQ(parse_error("* X " + std::string(100000, '(') + "\r\n"), errc::nesting_too_deep);
}

TEST(response_parser_errors, items_limit) {
  limits l;
  l.max_items = 5;
  EXPECT_EQ(test::parse_whole("* SEARCH 1 2 3 4 5\r\n", l).size(), 1u);
  EXPECT_EQ(parse_error("* SEARCH 1 2 3 4 5 6\r\n", l), errc::too_many_items);
  // Lists count too.
  EXPECT_EQ(parse_error("* X (1 2) (3 4)\r\n", l), errc::too_many_items);
  // The count is per response.
  EXPECT_EQ(test::parse_whole("* SEARCH 1 2 3\r\n* SEARCH 4 5 6\r\n", l).size(), 2u);
}

TEST(response_parser_errors, category_and_messages) {
  const boost::system::error_code ec = errc::literal_too_large;
  EXPECT_STREQ(ec.category().name(), "mailroom.imap");
  EXPECT_EQ(ec.category(), imap_category());
  for (int v = 1; v <= static_cast<int>(errc::unexpected_continuation); ++v) {
    EXPECT_NE(make_error_code(static_cast<errc>(v)).message().find("IMAP"), std::string::npos) << v;
  }
}

}  // namespace
}  // namespace mailroom::imap
