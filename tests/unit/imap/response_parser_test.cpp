#include "imap/proto/response_parser.hpp"

#include "imap/proto/errc.hpp"
#include "unit/imap/transcripts.hpp"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>

namespace mailroom::imap {
namespace {

using test::parse_bytewise;
using test::parse_whole;

value atom(std::string s) {
  return {value::kind::atom, std::move(s), 0, {}};
}
value str(std::string s) {
  return {value::kind::string, std::move(s), 0, {}};
}
value num(std::uint64_t n) {
  return {value::kind::number, {}, n, {}};
}
value nil() {
  return {};
}
value list(std::vector<value> items) {
  return {value::kind::list, {}, 0, std::move(items)};
}

TEST(response_parser, greeting_with_capability_code) {
  const auto rs = parse_whole(test::greeting);
  ASSERT_EQ(rs.size(), 1u);
  const response& r = rs[0];
  EXPECT_EQ(r.k, response::kind::untagged);
  EXPECT_EQ(r.st, status::ok);
  EXPECT_EQ(r.keyword, "OK");
  ASSERT_TRUE(r.code);
  EXPECT_EQ(r.code->name, "CAPABILITY");
  EXPECT_EQ(r.code->args,
            "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN");
  EXPECT_EQ(r.text, "Dovecot (Debian) ready.");
  EXPECT_TRUE(r.data.empty());
}

TEST(response_parser, login_failed_is_tagged_no_with_code) {
  const auto rs = parse_whole(test::login_failed);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].k, response::kind::tagged);
  EXPECT_EQ(rs[0].tag, "A0001");
  EXPECT_EQ(rs[0].st, status::no);
  ASSERT_TRUE(rs[0].code);
  EXPECT_EQ(rs[0].code->name, "AUTHENTICATIONFAILED");
  EXPECT_EQ(rs[0].code->args, "");
  EXPECT_EQ(rs[0].text, "Authentication failed.");
}

TEST(response_parser, select_output) {
  const auto rs = parse_whole(test::select_inbox);
  ASSERT_EQ(rs.size(), 9u);
  EXPECT_EQ(rs[0].keyword, "FLAGS");
  EXPECT_FALSE(rs[0].st);
  ASSERT_EQ(rs[0].data.size(), 1u);
  EXPECT_EQ(rs[0].data[0], list({atom("\\Answered"), atom("\\Flagged"), atom("\\Deleted"),
                                 atom("\\Seen"), atom("\\Draft")}));
  ASSERT_TRUE(rs[1].code);
  EXPECT_EQ(rs[1].code->name, "PERMANENTFLAGS");
  EXPECT_EQ(rs[1].code->args, "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)");
  EXPECT_EQ(rs[2].number, 3u);
  EXPECT_EQ(rs[2].keyword, "EXISTS");
  EXPECT_TRUE(rs[2].data.empty());
  EXPECT_EQ(rs[3].number, 0u);
  EXPECT_EQ(rs[3].keyword, "RECENT");
  EXPECT_EQ(rs[5].code->name, "UIDVALIDITY");
  EXPECT_EQ(rs[5].code->args, "1732790000");
  EXPECT_EQ(rs[5].text, "UIDs valid");
  EXPECT_EQ(rs[6].code->name, "UIDNEXT");
  EXPECT_EQ(rs[7].code->name, "HIGHESTMODSEQ");
  EXPECT_EQ(rs[8].tag, "A0002");
  EXPECT_EQ(rs[8].code->name, "READ-WRITE");
  EXPECT_EQ(rs[8].text, "Select completed (0.002 + 0.000 + 0.001 secs).");
}

TEST(response_parser, fetch_with_literals_that_look_like_protocol) {
  const auto rs = parse_whole(test::uid_fetch);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[0].number, 1u);
  EXPECT_EQ(rs[0].keyword, "FETCH");
  ASSERT_EQ(rs[0].data.size(), 1u);
  EXPECT_EQ(rs[0].data[0], list({atom("UID"), num(1), atom("FLAGS"), list({atom("\\Seen")}),
                                 atom("BODY[]"), str(test::message1)}));
  EXPECT_EQ(rs[1].data[0],
            list({atom("UID"), num(2), atom("FLAGS"), list({atom("\\Seen"), atom("\\Deleted")})}));
  EXPECT_EQ(rs[2].data[0], list({atom("UID"), num(3), atom("BODY[HEADER.FIELDS (FROM TO)]"),
                                 str(test::header3), atom("BODY[]<0>"), str("abc")}));
  EXPECT_EQ(rs[3].tag, "A0004");
  EXPECT_EQ(rs[3].st, status::ok);
}

TEST(response_parser, idle_and_bye) {
  const auto rs = parse_whole(test::idle + test::logout);
  ASSERT_EQ(rs.size(), 6u);
  EXPECT_EQ(rs[0].k, response::kind::continuation);
  EXPECT_EQ(rs[0].text, "idling");
  EXPECT_EQ(rs[1].number, 4u);
  EXPECT_EQ(rs[1].keyword, "EXISTS");
  EXPECT_EQ(rs[4].st, status::bye);
  EXPECT_EQ(rs[4].keyword, "BYE");
  EXPECT_EQ(rs[4].text, "Logging out");
}

TEST(response_parser, whole_equals_bytewise_for_every_transcript) {
  for (const std::string& t :
       {test::greeting, test::login_ok, test::login_failed, test::select_inbox, test::uid_search,
        test::uid_fetch, test::idle, test::logout, test::full_transcript()}) {
    const auto whole = parse_whole(t);
    EXPECT_FALSE(whole.empty());
    EXPECT_EQ(parse_bytewise(t), whole) << t;
  }
}

RC_GTEST_PROP(response_parser, any_split_yields_the_same_responses, ()) {
  const std::string wire = test::full_transcript();
  static const auto expected = parse_whole(wire);
  auto cuts = *rc::gen::container<std::vector<std::size_t>>(
      rc::gen::inRange<std::size_t>(0, wire.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  RC_ASSERT(test::parse_split(wire, cuts) == expected);
}

TEST(response_parser, continuation_forms) {
  const auto rs = parse_whole("+\r\n+ \r\n+ Ready for literal data\r\n+ dGVzdA==\r\n");
  ASSERT_EQ(rs.size(), 4u);
  for (const auto& r : rs) EXPECT_EQ(r.k, response::kind::continuation);
  EXPECT_EQ(rs[0].text, "");
  EXPECT_EQ(rs[1].text, "");
  EXPECT_EQ(rs[2].text, "Ready for literal data");
  EXPECT_EQ(rs[3].text, "dGVzdA==");
}

TEST(response_parser, status_text_may_contain_anything_including_braces) {
  // resp-text is text to end of line: "{5}" here is not a literal.
  const auto rs = parse_whole("* OK see {5}\r\nA1 OK\r\n* NO [ALERT] \"quoted\" (x\r\n");
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].text, "see {5}");
  EXPECT_EQ(rs[1].tag, "A1");
  EXPECT_EQ(rs[1].text, "");
  EXPECT_FALSE(rs[1].code);
  EXPECT_EQ(rs[2].code->name, "ALERT");
  EXPECT_EQ(rs[2].text, "\"quoted\" (x");
}

TEST(response_parser, response_code_names_upper_cased_and_args_raw) {
  const auto rs = parse_whole("a1 ok [uidnext 5] x\r\n* OK [BADCHARSET (\"a]b\" UTF-8)] no\r\n");
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].tag, "a1");
  EXPECT_EQ(rs[0].keyword, "OK");
  EXPECT_EQ(rs[0].code->name, "UIDNEXT");
  EXPECT_EQ(rs[0].code->args, "5");
  EXPECT_EQ(rs[1].code->args, "(\"a]b\" UTF-8)");
  EXPECT_EQ(rs[1].text, "no");
}

TEST(response_parser, quoted_strings_nil_and_nesting) {
  const auto rs = parse_whole(
      "* LIST (\\HasNoChildren) \"/\" \"a \\\"b\\\" \\\\c\"\r\n"
      "* 7 FETCH (ENVELOPE (NIL \"s\" ((NIL NIL \"u\" \"h\")) nil) X ())\r\n");
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].keyword, "LIST");
  EXPECT_EQ(rs[0].data,
            (std::vector<value>{list({atom("\\HasNoChildren")}), str("/"), str("a \"b\" \\c")}));
  EXPECT_EQ(rs[1].data[0],
            list({atom("ENVELOPE"),
                  list({nil(), str("s"), list({list({nil(), nil(), str("u"), str("h")})}), nil()}),
                  atom("X"), list({})}));
}

TEST(response_parser, literal_forms_are_binary_safe) {
  const std::string bytes("a\0b\r\n{3}\r\n\"", 11);
  const std::string wire = "* 1 FETCH (BODY[] {11}\r\n" + bytes + " BINARY[1] ~{11}\r\n" + bytes +
                           " X {11+}\r\n" + bytes + " E {0}\r\n)\r\n";
  const auto rs = parse_whole(wire);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].data[0], list({atom("BODY[]"), str(bytes), atom("BINARY[1]"), str(bytes),
                                 atom("X"), str(bytes), atom("E"), str("")}));
  EXPECT_EQ(parse_bytewise(wire), rs);
}

TEST(response_parser, bare_lf_line_endings_are_tolerated) {
  const auto rs = parse_whole("* 2 EXISTS\n* 1 FETCH (BODY[] {2}\nxy)\nA1 OK done\n");
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].number, 2u);
  EXPECT_EQ(rs[1].data[0], list({atom("BODY[]"), str("xy")}));
  EXPECT_EQ(rs[2].text, "done");
}

TEST(response_parser, search_long_and_empty_with_trailing_space) {
  std::string wire = "* SEARCH";
  for (int i = 1; i <= 20000; ++i) wire += " " + std::to_string(i);
  wire += "\r\n* SEARCH\r\n* SEARCH \r\n";
  const auto rs = parse_whole(wire);
  ASSERT_EQ(rs.size(), 3u);
  ASSERT_EQ(rs[0].data.size(), 20000u);
  EXPECT_EQ(rs[0].data.back(), num(20000));
  EXPECT_TRUE(rs[1].data.empty());
  EXPECT_TRUE(rs[2].data.empty());
}

TEST(response_parser, numbers_up_to_number64) {
  const auto rs = parse_whole("* 4294967295 EXPUNGE\r\n* OK x\r\n* X 18446744073709551615 1:5\r\n");
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].number, 4294967295u);
  EXPECT_EQ(rs[2].data, (std::vector<value>{num(18446744073709551615u), atom("1:5")}));
}

TEST(response_parser, consumed_bytes_are_released) {
  response_parser p;
  for (int i = 0; i < 10000; ++i) {
    p.feed("* " + std::to_string(i) + " EXISTS\r\n* 1 FETCH (BODY[] {3}\r\n");
    EXPECT_GT(p.buffered(), 0u);
    auto a = p.next();
    ASSERT_TRUE(a && *a);
    EXPECT_EQ((*a)->number, static_cast<std::uint32_t>(i));
    auto b = p.next();
    ASSERT_TRUE(b);
    ASSERT_FALSE(*b);
    p.feed("abc)\r\n");
    b = p.next();
    ASSERT_TRUE(b && *b);
    EXPECT_EQ(p.buffered(), 0u);
  }
}

TEST(response_parser, buffered_counts_the_partial_response) {
  response_parser p;
  p.feed("* 1 FETCH (BODY[] {10}\r\nabcd");
  ASSERT_FALSE(p.next().value());
  EXPECT_EQ(p.buffered(), 28u);
  p.feed("efghij)\r\n");
  ASSERT_TRUE(p.next().value());
  EXPECT_EQ(p.buffered(), 0u);
}

// 50 MB in 64 KiB chunks: a parser that re-scanned its buffer on every feed
// would do ~800 x 50 MB of work and time out; this one copies each byte once.
TEST(response_parser, large_literal_in_chunks) {
  constexpr std::size_t size = 50 * 1024 * 1024;
  constexpr std::size_t chunk = 64 * 1024;
  response_parser p;
  p.feed("* 1 FETCH (UID 9 BODY[] {" + std::to_string(size) + "}\r\n");
  ASSERT_FALSE(p.next().value());
  const std::string block(chunk, 'x');
  std::size_t sent = 0;
  while (sent < size) {
    const std::size_t n = std::min(chunk, size - sent);
    p.feed(std::string_view(block).substr(0, n));
    sent += n;
    ASSERT_FALSE(p.next().value());
    ASSERT_LE(p.buffered(), sent + 64);
  }
  p.feed(")\r\n");
  auto r = p.next();
  ASSERT_TRUE(r && *r);
  EXPECT_EQ((*r)->data[0].items[3].text.size(), size);
  EXPECT_EQ(p.buffered(), 0u);
}

// A long SEARCH line arriving in 64 KiB reads: each feed scans only the new bytes.
TEST(response_parser, long_line_in_chunks) {
  std::string wire = "* SEARCH";
  for (std::uint32_t i = 1; i <= 200000; ++i) wire += " " + std::to_string(i);
  wire += "\r\n";
  response_parser p;
  std::optional<response> got;
  for (std::size_t at = 0; at < wire.size(); at += 64 * 1024) {
    p.feed(std::string_view(wire).substr(at, 64 * 1024));
    auto r = p.next();
    ASSERT_TRUE(r);
    if (*r) got = std::move(**r);
  }
  ASSERT_TRUE(got);
  ASSERT_EQ(got->data.size(), 200000u);
  EXPECT_EQ(got->data.back(), num(200000));
  EXPECT_EQ(p.buffered(), 0u);
}

// Serialises a value tree in any of its legal wire forms.
value random_value(int depth);

std::string random_atom() {
  static const std::string chars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_$\\:,<>*%]";
  auto tail = *rc::gen::container<std::string>(rc::gen::elementOf(chars));
  // Starts with a letter so it is neither a number nor NIL.
  return std::string(1, *rc::gen::elementOf(std::string("XYZxyz"))) + tail;
}

value random_value(int depth) {
  switch (*rc::gen::inRange(0, depth > 0 ? 6 : 5)) {
    case 0:
      return atom(random_atom());
    case 1:
      return num(*rc::gen::arbitrary<std::uint64_t>());
    case 2:
      return str(*rc::gen::arbitrary<std::string>());
    case 3:
      return str(*rc::gen::container<std::string>(rc::gen::inRange<char>(0x20, 0x7f)));
    case 4:
      return nil();
    default: {
      const auto n = *rc::gen::inRange(0, 5);
      std::vector<value> items;
      for (int i = 0; i < n; ++i) items.push_back(random_value(depth - 1));
      return list(std::move(items));
    }
  }
}

void serialise(const value& v, std::string& out) {
  switch (v.k) {
    case value::kind::atom:
      out += v.text;
      break;
    case value::kind::number:
      out += std::to_string(v.number);
      break;
    case value::kind::nil:
      out += *rc::gen::element<std::string>("NIL", "nil", "Nil");
      break;
    case value::kind::string: {
      const bool quotable =
          std::all_of(v.text.begin(), v.text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
      if (quotable && *rc::gen::arbitrary<bool>()) {
        out += '"';
        for (char c : v.text) {
          if (c == '"' || c == '\\') out += '\\';
          out += c;
        }
        out += '"';
      } else {
        out += *rc::gen::element<std::string>("{", "~{") + std::to_string(v.text.size()) +
               *rc::gen::element<std::string>("}", "+}") +
               *rc::gen::element<std::string>("\r\n", "\n") + v.text;
      }
      break;
    }
    case value::kind::list:
      out += '(';
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i > 0) out += ' ';
        serialise(v.items[i], out);
      }
      out += ')';
      break;
  }
}

RC_GTEST_PROP(response_parser, values_round_trip, ()) {
  std::vector<value> values;
  const auto n = *rc::gen::inRange(0, 6);
  for (int i = 0; i < n; ++i) values.push_back(random_value(4));
  std::string wire = "* 12 FETCH";
  for (const value& v : values) {
    wire += ' ';
    serialise(v, wire);
  }
  wire += "\r\n";
  response_parser p;
  const std::size_t cut = *rc::gen::inRange<std::size_t>(0, wire.size() + 1);
  p.feed(std::string_view(wire).substr(0, cut));
  auto first = p.next();
  RC_ASSERT(first.has_value());
  if (!*first) {
    p.feed(std::string_view(wire).substr(cut));
    first = p.next();
  }
  RC_ASSERT(first.has_value());
  RC_ASSERT(first->has_value());
  RC_ASSERT((*first)->number == std::optional<std::uint32_t>(12));
  RC_ASSERT((*first)->data == values);
  RC_ASSERT(p.buffered() == 0u);
}

}  // namespace
}  // namespace mailroom::imap
