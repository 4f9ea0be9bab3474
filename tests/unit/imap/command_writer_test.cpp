#include "imap/proto/command_writer.hpp"

#include "imap/proto/mailbox_name.hpp"
#include "imap/proto/response_parser.hpp"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <map>

namespace mailroom::imap {
namespace {

using segments = std::vector<std::string>;

segments login(std::string_view user, std::string_view pass, bool literal_plus = false) {
  return command_builder("LOGIN").astring(user).astring(pass).build("A1", literal_plus).segments;
}

TEST(command_builder, plain_atoms) {
  EXPECT_EQ(login("git", "s3cret"), segments{"A1 LOGIN git s3cret\r\n"});
  EXPECT_EQ(command_builder("UID SEARCH").atom("UNSEEN").build("A7", false).segments,
            segments{"A7 UID SEARCH UNSEEN\r\n"});
  EXPECT_EQ(command_builder("NOOP").build("A2", false).segments, segments{"A2 NOOP\r\n"});
}

TEST(command_builder, quoting) {
  EXPECT_EQ(login("john smith", "p w"), segments{"A1 LOGIN \"john smith\" \"p w\"\r\n"});
  EXPECT_EQ(login("a\"b", "c\\d"), segments{"A1 LOGIN \"a\\\"b\" \"c\\\\d\"\r\n"});
  EXPECT_EQ(login("", "x"), segments{"A1 LOGIN \"\" x\r\n"});
  // Not ATOM-CHAR: list-wildcards, resp-specials, parentheses, braces, tabs.
  EXPECT_EQ(login("a*b%c]", "(x){1}\t"), segments{"A1 LOGIN \"a*b%c]\" \"(x){1}\t\"\r\n"});
  // NIL as an atom would read as nil to some servers.
  EXPECT_EQ(login("nil", "NIL"), segments{"A1 LOGIN \"nil\" \"NIL\"\r\n"});
}

TEST(command_builder, non_ascii_and_line_breaks_become_literals) {
  EXPECT_EQ(login("jürgen", "pw"), (segments{"A1 LOGIN {7}\r\n", "jürgen pw\r\n"}));
  EXPECT_EQ(login("u", "a\r\nA2 LOGOUT"), (segments{"A1 LOGIN u {12}\r\n", "a\r\nA2 LOGOUT\r\n"}));
  EXPECT_EQ(login("u", std::string_view("a\0b", 3)),
            (segments{"A1 LOGIN u {3}\r\n", std::string("a\0b\r\n", 5)}));
  EXPECT_EQ(login("ü\n", "ö"), (segments{"A1 LOGIN {3}\r\n", "ü\n {2}\r\n", "ö\r\n"}));
}

TEST(command_builder, literal_plus_uses_non_synchronizing_literals) {
  EXPECT_EQ(login("ü\n", "ö", true), (segments{"A1 LOGIN {3+}\r\n", "ü\n {2+}\r\n", "ö\r\n"}));
}

TEST(command_builder, classify_astring) {
  EXPECT_EQ(classify_astring("abc.DEF-1_2@x+y"), astring_form::atom);
  EXPECT_EQ(classify_astring(""), astring_form::quoted);
  EXPECT_EQ(classify_astring("a b"), astring_form::quoted);
  EXPECT_EQ(classify_astring("\x01"), astring_form::quoted);
  EXPECT_EQ(classify_astring("\x7f"), astring_form::quoted);
  EXPECT_EQ(classify_astring("\x80"), astring_form::literal);
  EXPECT_EQ(classify_astring("\r"), astring_form::literal);
  EXPECT_EQ(classify_astring("\n"), astring_form::literal);
  EXPECT_EQ(classify_astring(std::string_view("\0", 1)), astring_form::literal);
}

TEST(command_builder, mailbox_names) {
  auto select = [](std::string_view name) {
    return command_builder("SELECT").mailbox(name).build("A3", false).segments;
  };
  EXPECT_EQ(select("inbox"), segments{"A3 SELECT INBOX\r\n"});
  EXPECT_EQ(select("InBoX"), segments{"A3 SELECT INBOX\r\n"});
  EXPECT_EQ(select("INBOX.Sent"), segments{"A3 SELECT INBOX.Sent\r\n"});
  EXPECT_EQ(select("Sent Items"), segments{"A3 SELECT \"Sent Items\"\r\n"});
  // RFC 3501 §5.1.3's example.
  EXPECT_EQ(select("~peter/mail/台北/日本語"),
            segments{"A3 SELECT ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n"});
  EXPECT_EQ(select("Entwürfe & Co"), segments{"A3 SELECT \"Entw&APw-rfe &- Co\"\r\n"});
  // ASCII names are sent as configured (mail_room compatibility).
  EXPECT_EQ(select("A&B"), segments{"A3 SELECT A&B\r\n"});
  // Invalid UTF-8 is sent as it is, in a literal.
  EXPECT_EQ(select("\xff"), (segments{"A3 SELECT {1}\r\n", "\xff\r\n"}));
}

TEST(mailbox_utf7, known_vectors) {
  EXPECT_EQ(encode_mailbox_utf7("&"), "&-");
  EXPECT_EQ(encode_mailbox_utf7("\t"), "&AAk-");
  EXPECT_EQ(encode_mailbox_utf7("😀"), "&2D3eAA-");  // surrogate pair
  EXPECT_EQ(decode_mailbox_utf7("&2D3eAA-"), "😀");
  EXPECT_EQ(decode_mailbox_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-"), "~peter/mail/台北/日本語");
  EXPECT_FALSE(encode_mailbox_utf7("\xc3"));          // truncated
  EXPECT_FALSE(encode_mailbox_utf7("\xc0\xaf"));      // overlong
  EXPECT_FALSE(encode_mailbox_utf7("\xed\xa0\x80"));  // surrogate
  EXPECT_FALSE(decode_mailbox_utf7("&U,BTFw"));       // no "-"
  EXPECT_FALSE(decode_mailbox_utf7("&2D0-"));         // lone high surrogate
  EXPECT_FALSE(decode_mailbox_utf7("&U/A-"));         // "/" is not modified BASE64
  EXPECT_FALSE(decode_mailbox_utf7("\xc3\xbc"));      // 8-bit
}

RC_GTEST_PROP(mailbox_utf7, round_trip, (const std::vector<std::uint32_t>& raw)) {
  std::string utf8;
  for (std::uint32_t r : raw) {
    std::uint32_t cp = r % 0x110000;
    if (cp >= 0xD800 && cp <= 0xDFFF) cp -= 0x800;
    if (cp < 0x80) {
      utf8 += static_cast<char>(cp);
    } else if (cp < 0x800) {
      utf8 += static_cast<char>(0xC0 | (cp >> 6));
      utf8 += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      utf8 += static_cast<char>(0xE0 | (cp >> 12));
      utf8 += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      utf8 += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      utf8 += static_cast<char>(0xF0 | (cp >> 18));
      utf8 += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      utf8 += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      utf8 += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  const auto encoded = encode_mailbox_utf7(utf8);
  RC_ASSERT(encoded.has_value());
  RC_ASSERT(
      std::all_of(encoded->begin(), encoded->end(), [](char c) { return c >= 0x20 && c <= 0x7e; }));
  RC_ASSERT(decode_mailbox_utf7(*encoded) == std::optional<std::string>(utf8));
}

// Whatever the user data, the server sees exactly one command with exactly our
// arguments: parse the segments back with the response grammar, which shares
// astring's quoting and literal rules.
RC_GTEST_PROP(command_builder, any_astring_survives_the_wire, (const std::string& s)) {
  const auto segs = command_builder("X").astring(s).build("*", false).segments;
  std::string wire;
  for (const auto& seg : segs) wire += seg;
  response_parser p;
  p.feed(wire);
  auto r = p.next();
  RC_ASSERT(r.has_value());
  RC_ASSERT(r->has_value());
  RC_ASSERT((*r)->data.size() == 1u);
  const value& v = (*r)->data[0];
  if (v.k == value::kind::nil) {
    RC_FAIL("astring came out as NIL");
  } else if (v.k == value::kind::number) {
    RC_ASSERT(std::to_string(v.number) == s);
  } else {
    RC_ASSERT(v.text == s);
  }
  RC_ASSERT(p.buffered() == 0u);
  RC_ASSERT(segs.size() == (classify_astring(s) == astring_form::literal ? 2u : 1u));
}

TEST(format_uid_sets, compresses_ranges) {
  EXPECT_EQ(format_uid_sets({1, 2, 3, 4, 5, 7, 9, 10, 11, 12}),
            std::vector<std::string>{"1:5,7,9:12"});
  EXPECT_EQ(format_uid_sets({12, 3, 1, 2, 3, 3, 9, 0}), std::vector<std::string>{"1:3,9,12"});
  EXPECT_EQ(format_uid_sets({}), std::vector<std::string>{});
  EXPECT_EQ(format_uid_sets({0}), std::vector<std::string>{});
  EXPECT_EQ(format_uid_sets({4294967295u, 4294967294u}),
            std::vector<std::string>{"4294967294:4294967295"});
}

TEST(format_uid_sets, splits_at_max_chars) {
  std::vector<std::uint32_t> odd;
  for (std::uint32_t u = 1; u < 20000; u += 2) odd.push_back(u);
  const auto sets = format_uid_sets(odd, 100);
  EXPECT_GT(sets.size(), 100u);
  for (const auto& s : sets) {
    EXPECT_LE(s.size(), 100u);
    EXPECT_NE(s.front(), ',');
    EXPECT_NE(s.back(), ',');
  }
  EXPECT_EQ(sets.front().substr(0, 6), "1,3,5,");
  // Tiny bounds are raised to fit the longest range.
  EXPECT_EQ(format_uid_sets({1, 2, 4294967294u, 4294967295u}, 1),
            (std::vector<std::string>{"1:2", "4294967294:4294967295"}));
}

RC_GTEST_PROP(format_uid_sets, every_uid_once_and_bounded,
              (const std::vector<std::uint32_t>& uids)) {
  const std::size_t max_chars = *rc::gen::inRange<std::size_t>(21, 300);
  std::vector<std::uint32_t> input = uids;
  // Dense runs as well as scattered values.
  const auto base = *rc::gen::inRange<std::uint32_t>(1, 1000);
  const auto run = *rc::gen::inRange<std::uint32_t>(0, 200);
  for (std::uint32_t i = 0; i < run; ++i) input.push_back(base + i);

  std::map<std::uint32_t, int> seen;
  for (const auto& set : format_uid_sets(input, max_chars)) {
    RC_ASSERT(!set.empty());
    RC_ASSERT(set.size() <= max_chars);
    std::size_t i = 0;
    while (i <= set.size()) {
      std::size_t comma = set.find(',', i);
      if (comma == std::string::npos) comma = set.size();
      const std::string piece = set.substr(i, comma - i);
      const std::size_t colon = piece.find(':');
      const auto lo = static_cast<std::uint32_t>(std::stoul(piece.substr(0, colon)));
      const auto hi = colon == std::string::npos
                          ? lo
                          : static_cast<std::uint32_t>(std::stoul(piece.substr(colon + 1)));
      RC_ASSERT(lo <= hi);
      for (std::uint64_t u = lo; u <= hi; ++u) ++seen[static_cast<std::uint32_t>(u)];
      i = comma + 1;
    }
  }
  std::map<std::uint32_t, int> expected;
  for (std::uint32_t u : input) {
    if (u != 0) expected[u] = 1;
  }
  RC_ASSERT(seen == expected);
}

}  // namespace
}  // namespace mailroom::imap
