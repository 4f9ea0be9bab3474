#include "imap/proto/decode.hpp"

#include "imap/proto/errc.hpp"
#include "unit/imap/transcripts.hpp"

#include <gtest/gtest.h>

namespace mailroom::imap {
namespace {

response one(std::string_view wire) {
  auto rs = test::parse_whole(wire);
  EXPECT_EQ(rs.size(), 1u);
  return rs.empty() ? response{} : std::move(rs.front());
}

TEST(decode_fetch, body_uid_flags_and_sections_from_dovecot) {
  auto rs = test::parse_whole(test::uid_fetch);
  ASSERT_EQ(rs.size(), 4u);

  auto a = decode_fetch(std::move(rs[0]));
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->seq, 1u);
  EXPECT_EQ(a->uid, 1u);
  EXPECT_EQ(a->flags, std::vector<std::string>{"\\Seen"});
  EXPECT_EQ(a->body, test::message1);
  EXPECT_TRUE(a->sections.empty());

  auto b = decode_fetch(std::move(rs[1]));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->uid, 2u);
  EXPECT_EQ(b->flags, (std::vector<std::string>{"\\Seen", "\\Deleted"}));
  EXPECT_FALSE(b->body);

  auto c = decode_fetch(std::move(rs[2]));
  ASSERT_TRUE(c);
  EXPECT_FALSE(c->body);  // BODY[]<0> is a partial fetch, not the message
  using section = std::pair<std::string, std::string>;
  EXPECT_EQ(c->sections, (std::vector<section>{{"BODY[HEADER.FIELDS (FROM TO)]", test::header3},
                                               {"BODY[]<0>", "abc"}}));

  EXPECT_FALSE(decode_fetch(std::move(rs[3])));  // the tagged OK
}

TEST(decode_fetch, moves_the_body_without_copying) {
  const std::string big(1 << 20, 'm');
  auto r = one("* 9 FETCH (UID 77 RFC822 {" + std::to_string(big.size()) + "}\r\n" + big + ")\r\n");
  const char* bytes = r.data.at(0).items.at(3).text.data();
  auto f = decode_fetch(std::move(r));
  ASSERT_TRUE(f);
  ASSERT_TRUE(f->body);
  EXPECT_EQ(f->body->data(), bytes);
  EXPECT_EQ(*f->body, big);
}

TEST(decode_fetch, skips_unused_attributes_and_nil_sections) {
  auto f = decode_fetch(
      one("* 3 FETCH (INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 "
          "ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) MODSEQ (12) "
          "BODY (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 3 1) BODY[TEXT] NIL body.peek[] \"x\" "
          "rfc822.header \"H: v\\r\" uid 5)\r\n"));
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->seq, 3u);
  EXPECT_EQ(f->uid, 5u);
  EXPECT_EQ(f->body, "x");
  ASSERT_EQ(f->sections.size(), 1u);
  EXPECT_EQ(f->sections[0].first, "rfc822.header");
}

TEST(decode_fetch, rejects_shapes_it_cannot_trust) {
  for (const char* wire : {
           "* 1 FETCH (UID)\r\n",             // odd count
           "* 1 FETCH (UID \"7\")\r\n",       // UID not a number
           "* 1 FETCH (UID 4294967296)\r\n",  // UID wider than 32 bits
           "* 1 FETCH (FLAGS \\Seen)\r\n",    // FLAGS not a list
           "* 1 FETCH (FLAGS (\"x\"))\r\n",   // flag not an atom
           "* 1 FETCH (BODY[] (a))\r\n",      // body not a string
           "* 1 FETCH (\"UID\" 1)\r\n",       // name not an atom
           "* 1 FETCH UID 1\r\n",             // not one list
           "* 1 EXISTS\r\n",                  // not FETCH
       }) {
    auto f = decode_fetch(one(wire));
    ASSERT_FALSE(f) << wire;
    EXPECT_EQ(f.error(), errc::malformed_response);
  }
}

TEST(decode_search, numbers_empty_and_modseq) {
  EXPECT_EQ(decode_search(one("* SEARCH 1 2 3\r\n")).value(),
            (std::vector<std::uint32_t>{1, 2, 3}));
  EXPECT_EQ(decode_search(one("* SEARCH\r\n")).value(), std::vector<std::uint32_t>{});
  EXPECT_EQ(decode_search(one("* SEARCH 5 3 (MODSEQ 917162500)\r\n")).value(),
            (std::vector<std::uint32_t>{5, 3}));
  EXPECT_EQ(decode_search(one("* search 4294967295\r\n")).value(),
            std::vector<std::uint32_t>{4294967295u});
}

TEST(decode_search, rejects_other_shapes) {
  for (const char* wire :
       {"* SEARCH 1 x\r\n", "* SEARCH (MODSEQ 1) 2\r\n", "* SEARCH 1 (FOO 1)\r\n",
        "* SEARCH 4294967296\r\n", "* 3 EXISTS\r\n", "A1 OK SEARCH\r\n"}) {
    EXPECT_EQ(decode_search(one(wire)).error(), errc::malformed_response) << wire;
  }
}

TEST(decode_capabilities, from_code_and_from_untagged_response) {
  const auto from_code = decode_capabilities(one(test::greeting));
  EXPECT_EQ(from_code,
            (std::vector<std::string>{"IMAP4REV1", "SASL-IR", "LOGIN-REFERRALS", "ID", "ENABLE",
                                      "IDLE", "LITERAL+", "STARTTLS", "AUTH=PLAIN"}));
  EXPECT_TRUE(has_capability(from_code, "LITERAL+"));
  EXPECT_TRUE(has_capability(from_code, "idle"));
  EXPECT_FALSE(has_capability(from_code, "UIDPLUS"));

  const auto untagged = decode_capabilities(one("* CAPABILITY IMAP4rev1 idle UIDPLUS\r\n"));
  EXPECT_EQ(untagged, (std::vector<std::string>{"IMAP4REV1", "IDLE", "UIDPLUS"}));

  auto logged_in = test::parse_whole(test::login_ok);
  EXPECT_TRUE(has_capability(decode_capabilities(logged_in.at(0)), "UIDPLUS"));

  EXPECT_TRUE(decode_capabilities(one("* OK [ALERT] hi\r\n")).empty());
  EXPECT_TRUE(decode_capabilities(one("* 3 EXISTS\r\n")).empty());
}

TEST(decode_uidvalidity, from_select_output) {
  const auto rs = test::parse_whole(test::select_inbox);
  std::optional<std::uint32_t> validity;
  std::optional<std::uint32_t> next;
  for (const auto& r : rs) {
    if (auto v = decode_uidvalidity(r)) validity = v;
    if (auto n = decode_uidnext(r)) next = n;
  }
  EXPECT_EQ(validity, 1732790000u);
  EXPECT_EQ(next, 4u);
  EXPECT_FALSE(decode_uidvalidity(one("* OK [UIDVALIDITY 0] x\r\n")));
  EXPECT_FALSE(decode_uidvalidity(one("* OK [UIDVALIDITY 4294967296] x\r\n")));
  EXPECT_FALSE(decode_uidvalidity(one("* OK [UIDVALIDITY -1] x\r\n")));
  EXPECT_FALSE(decode_uidvalidity(one("* OK [UIDNEXT 5] x\r\n")));
}

}  // namespace
}  // namespace mailroom::imap
