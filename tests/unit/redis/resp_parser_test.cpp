#include "redis/resp/parser.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace mailroom::redis {
namespace {

// Feeds `input` in one piece and returns every reply; fails the test on error.
std::vector<reply> parse_all(std::string_view input, resp_limits limits = {}) {
  resp_parser p(limits);
  p.feed(input);
  std::vector<reply> out;
  for (;;) {
    auto r = p.next();
    EXPECT_TRUE(r.has_value()) << r.error().message();
    if (!r.has_value() || !r->has_value()) break;
    out.push_back(std::move(**r));
  }
  EXPECT_TRUE(p.idle());
  return out;
}

reply parse_one(std::string_view input) {
  auto all = parse_all(input);
  EXPECT_EQ(all.size(), 1u) << input;
  return all.empty() ? reply::error("none") : all.front();
}

// The error the parser reports for `input` fed in one piece.
boost::system::error_code parse_error(std::string_view input, resp_limits limits = {}) {
  resp_parser p(limits);
  p.feed(input);
  for (;;) {
    auto r = p.next();
    if (!r.has_value()) return r.error();
    if (!r->has_value()) return {};
  }
}

TEST(RespParser, SimpleString) {
  EXPECT_EQ(parse_one("+OK\r\n"), reply::simple("OK"));
}
TEST(RespParser, EmptySimpleString) {
  EXPECT_EQ(parse_one("+\r\n"), reply::simple(""));
}

TEST(RespParser, ErrorReply) {
  const reply r = parse_one("-READONLY You can't write against a read only replica.\r\n");
  EXPECT_TRUE(r.is_error());
  EXPECT_EQ(r.error_code(), "READONLY");
  EXPECT_EQ(r.str, "READONLY You can't write against a read only replica.");
}

TEST(RespParser, Integers) {
  EXPECT_EQ(parse_one(":0\r\n"), reply::number(0));
  EXPECT_EQ(parse_one(":-42\r\n"), reply::number(-42));
  EXPECT_EQ(parse_one(":9223372036854775807\r\n"),
            reply::number(std::numeric_limits<std::int64_t>::max()));
  EXPECT_EQ(parse_one(":-9223372036854775808\r\n"),
            reply::number(std::numeric_limits<std::int64_t>::min()));
}

TEST(RespParser, BulkStrings) {
  EXPECT_EQ(parse_one("$5\r\nhello\r\n"), reply::bulk("hello"));
  EXPECT_EQ(parse_one("$0\r\n\r\n"), reply::bulk(""));
  // A bulk payload is binary: CR, LF and NUL are data, not delimiters.
  EXPECT_EQ(parse_one(std::string("$6\r\na\r\n\0\rb\r\n", 12)),
            reply::bulk(std::string("a\r\n\0\rb", 6)));
}

TEST(RespParser, NullBulkAndNullArray) {
  EXPECT_EQ(parse_one("$-1\r\n"), reply::nil());
  EXPECT_EQ(parse_one("*-1\r\n"), reply::nil());
}

TEST(RespParser, Arrays) {
  EXPECT_EQ(parse_one("*0\r\n"), reply::array({}));
  EXPECT_EQ(parse_one("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n"),
            reply::array({reply::bulk("127.0.0.1"), reply::bulk("6379")}));
  // ROLE on a master: ["master", offset, [[ip, port, offset], ...]]
  EXPECT_EQ(parse_one("*3\r\n$6\r\nmaster\r\n:3129659\r\n*2\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n9001"
                      "\r\n$7\r\n3129242\r\n*0\r\n"),
            reply::array({reply::bulk("master"), reply::number(3129659),
                          reply::array({reply::array({reply::bulk("127.0.0.1"), reply::bulk("9001"),
                                                      reply::bulk("3129242")}),
                                        reply::array({})})}));
  EXPECT_EQ(parse_one("*3\r\n$-1\r\n*-1\r\n-ERR x\r\n"),
            reply::array({reply::nil(), reply::nil(), reply::error("ERR x")}));
}

TEST(RespParser, SeveralRepliesInOneFeed) {
  const auto all = parse_all("+OK\r\n:1\r\n$-1\r\n*1\r\n+a\r\n");
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0], reply::simple("OK"));
  EXPECT_EQ(all[1], reply::number(1));
  EXPECT_EQ(all[2], reply::nil());
  EXPECT_EQ(all[3], reply::array({reply::simple("a")}));
}

TEST(RespParser, ByteAtATime) {
  const std::string input =
      "+OK\r\n-ERR "
      "bad\r\n:-7\r\n$12\r\nhello\r\nworld\r\n$-1\r\n*-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n";
  const auto expected = parse_all(input);
  ASSERT_EQ(expected.size(), 7u);
  resp_parser p;
  std::vector<reply> got;
  for (char c : input) {
    p.feed(std::string_view(&c, 1));
    for (;;) {
      auto r = p.next();
      ASSERT_TRUE(r.has_value()) << r.error().message();
      if (!r->has_value()) break;
      got.push_back(std::move(**r));
    }
  }
  EXPECT_EQ(got, expected);
  EXPECT_TRUE(p.idle());
}

TEST(RespParser, NeedsMoreUntilComplete) {
  resp_parser p;
  p.feed("*2\r\n$3\r\nab");
  auto r = p.next();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
  EXPECT_FALSE(p.idle());
  p.feed("c\r");
  r = p.next();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_value());
  p.feed("\n:5\r\n");
  r = p.next();
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, reply::array({reply::bulk("abc"), reply::number(5)}));
  EXPECT_TRUE(p.idle());
}

struct malformed_case {
  const char* name;
  std::string input;
};

class RespMalformed : public testing::TestWithParam<malformed_case> {};

TEST_P(RespMalformed, IsRejected) {
  EXPECT_EQ(parse_error(GetParam().input), resp_errc::malformed) << GetParam().name;
}

INSTANTIATE_TEST_SUITE_P(
    Inputs, RespMalformed,
    testing::Values(malformed_case{"unknown_type", "?x\r\n"}, malformed_case{"resp3_null", "_\r\n"},
                    malformed_case{"resp3_map", "%1\r\n+a\r\n+b\r\n"},
                    malformed_case{"inline_text", "OK\r\n"}, malformed_case{"bare_lf", "+OK\n"},
                    malformed_case{"cr_without_lf", "+O\rK\r\n"},
                    malformed_case{"lf_inside_line", "+O\nK\r\n"},
                    malformed_case{"empty_integer", ":\r\n"},
                    malformed_case{"integer_with_text", ":12a\r\n"},
                    malformed_case{"integer_plus_sign", ":+1\r\n"},
                    malformed_case{"integer_overflow", ":9223372036854775808\r\n"},
                    malformed_case{"integer_space", ": 1\r\n"},
                    malformed_case{"bulk_length_text", "$x\r\nabc\r\n"},
                    malformed_case{"bulk_length_minus_two", "$-2\r\n"},
                    malformed_case{"bulk_missing_crlf", "$3\r\nabcX\r\n"},
                    malformed_case{"bulk_too_short", "$3\r\nab\r\n\r\n"},
                    malformed_case{"array_length_minus_two", "*-2\r\n"},
                    malformed_case{"array_length_empty", "*\r\n"},
                    malformed_case{"bad_element", "*2\r\n:1\r\n!\r\n"},
                    malformed_case{"nul_after_reply", std::string("+OK\r\n\0", 6)}),
    [](const testing::TestParamInfo<malformed_case>& info) { return info.param.name; });

TEST(RespParser, ErrorIsSticky) {
  resp_parser p;
  p.feed("!oops\r\n");
  auto r = p.next();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), resp_errc::malformed);
  p.feed("+OK\r\n");
  r = p.next();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), resp_errc::malformed);
}

TEST(RespParser, ErrorMessagesAndCategory) {
  const boost::system::error_code ec = resp_errc::too_deep;
  EXPECT_STREQ(ec.category().name(), "mailroom.resp");
  EXPECT_EQ(ec.message(), "RESP arrays nested deeper than the limit");
}

TEST(RespLimits, BulkLength) {
  resp_limits l;
  l.max_bulk_length = 4;
  EXPECT_EQ(parse_all("$4\r\nabcd\r\n", l), std::vector<reply>{reply::bulk("abcd")});
  // Rejected from the header alone, before any payload is buffered.
  EXPECT_EQ(parse_error("$5\r\n", l), resp_errc::bulk_too_long);
  EXPECT_EQ(parse_error("$9223372036854775807\r\n"), resp_errc::bulk_too_long);
}

TEST(RespLimits, ArrayElements) {
  resp_limits l;
  l.max_array_elements = 2;
  EXPECT_EQ(parse_all("*2\r\n:1\r\n:2\r\n", l).size(), 1u);
  EXPECT_EQ(parse_error("*3\r\n", l), resp_errc::too_many_elements);
  EXPECT_EQ(parse_error("*9223372036854775807\r\n"), resp_errc::too_many_elements);
}

TEST(RespLimits, Depth) {
  resp_limits l;
  l.max_depth = 3;
  EXPECT_EQ(parse_all("*1\r\n*1\r\n*1\r\n:1\r\n", l).size(), 1u);
  EXPECT_EQ(parse_error("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", l), resp_errc::too_deep);
  // An empty array still counts as a level.
  EXPECT_EQ(parse_error("*1\r\n*1\r\n*1\r\n*0\r\n", l), resp_errc::too_deep);
  // Siblings do not add depth.
  EXPECT_EQ(parse_all("*2\r\n*1\r\n*0\r\n*1\r\n*0\r\n", l).size(), 1u);
}

TEST(RespLimits, DefaultDepthIsSixteen) {
  std::string ok, deep;
  for (int i = 0; i < 16; ++i) ok += "*1\r\n";
  ok += ":1\r\n";
  deep = "*1\r\n" + ok;
  EXPECT_EQ(parse_all(ok).size(), 1u);
  EXPECT_EQ(parse_error(deep), resp_errc::too_deep);
}

TEST(RespLimits, LineLength) {
  resp_limits l;
  l.max_line_length = 8;
  EXPECT_EQ(parse_all("+12345678\r\n", l), std::vector<reply>{reply::simple("12345678")});
  EXPECT_EQ(parse_error("+123456789\r\n", l), resp_errc::line_too_long);
  EXPECT_EQ(parse_error("-123456789\r\n", l), resp_errc::line_too_long);
}

TEST(RespLimits, EndlessLineIsRejectedWithoutItsEnd) {
  // A server that never sends CRLF must not make us buffer without bound.
  resp_limits l;
  l.max_line_length = 16;
  resp_parser p(l);
  p.feed("+");
  boost::system::error_code ec;
  for (int i = 0; i < 100 && !ec; ++i) {
    p.feed("x");
    auto r = p.next();
    if (!r.has_value()) ec = r.error();
  }
  EXPECT_EQ(ec, resp_errc::line_too_long);
}

// Found by the fuzzer: a line both too long and ended by a bare LF must give
// the same error however it is split (the first offending byte decides).
TEST(RespLimits, LineErrorDoesNotDependOnReadBoundaries) {
  resp_limits l;
  l.max_line_length = 8;
  const std::string input = "*1" + std::string(10, '\xff') + "\n";
  EXPECT_EQ(parse_error(input, l), resp_errc::line_too_long);
  resp_parser p(l);
  boost::system::error_code ec;
  for (char c : input) {
    p.feed(std::string_view(&c, 1));
    auto r = p.next();
    if (!r.has_value()) {
      ec = r.error();
      break;
    }
  }
  EXPECT_EQ(ec, resp_errc::line_too_long);
}

TEST(RespParser, LargeBulkFedInSmallChunks) {
  const std::string payload(2 * 1024 * 1024 + 3, 'z');
  const std::string input = "$" + std::to_string(payload.size()) + "\r\n" + payload + "\r\n";
  resp_parser p;
  std::optional<reply> got;
  for (std::size_t i = 0; i < input.size(); i += 1000) {
    p.feed(std::string_view(input).substr(i, 1000));
    auto r = p.next();
    ASSERT_TRUE(r.has_value());
    if (r->has_value()) got = std::move(*r);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->str.size(), payload.size());
  EXPECT_EQ(got->str, payload);
  EXPECT_EQ(p.buffered(), 0u);
}

// Rescanning the buffer or re-parsing finished elements would make this
// quadratic (hours); linear parsing takes well under a second.
TEST(RespParser, ByteAtATimeIsLinear) {
  constexpr int n = 100000;
  std::string input = "*" + std::to_string(n) + "\r\n";
  for (int i = 0; i < n; ++i) input += ":" + std::to_string(i) + "\r\n";
  input += "+" + std::string(60000, 'l') + "\r\n";
  const auto start = std::chrono::steady_clock::now();
  resp_parser p;
  std::vector<reply> got;
  for (char c : input) {
    p.feed(std::string_view(&c, 1));
    auto r = p.next();
    ASSERT_TRUE(r.has_value());
    if (r->has_value()) got.push_back(std::move(**r));
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(got.size(), 2u);
  ASSERT_EQ(got[0].elements.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(got[0].elements[n - 1], reply::number(n - 1));
  EXPECT_EQ(got[1].str.size(), 60000u);
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST(RespReply, ToString) {
  EXPECT_EQ(to_string(reply::array({reply::simple("OK"), reply::error("ERR x"), reply::number(3),
                                    reply::bulk("hello"), reply::nil()})),
            "[+OK, -ERR x, :3, $5:hello, (nil)]");
  EXPECT_EQ(to_string(reply::bulk("abcdef"), 2), "$6:ab...");
}

}  // namespace
}  // namespace mailroom::redis
