#include "ops/filter.hpp"

#include <gtest/gtest.h>

using namespace mailroom::ops;
using std::chrono::seconds;

TEST(ParseDuration, Units) {
  std::string err;
  EXPECT_EQ(parse_duration("90s", err), seconds(90));
  EXPECT_EQ(parse_duration("15m", err), seconds(900));
  EXPECT_EQ(parse_duration("6h", err), seconds(6 * 3600));
  EXPECT_EQ(parse_duration("2d", err), seconds(2 * 86400));
  EXPECT_EQ(parse_duration("1w", err), seconds(7 * 86400));
  EXPECT_EQ(parse_duration("1d12h", err), seconds(86400 + 12 * 3600));
  EXPECT_EQ(parse_duration("0s", err), seconds(0));
}

TEST(ParseDuration, Rejects) {
  for (const char* bad :
       {"", "2", "d", "2x", "-2d", "2d ", " 2d", "1.5h", "2dd", "99999999999d", "9999999999w"}) {
    std::string err;
    EXPECT_FALSE(parse_duration(bad, err)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
}

TEST(ParseUidList, SinglesRangesAndStar) {
  std::string err;
  auto l = parse_uid_list("1,5,10:20", err);
  ASSERT_TRUE(l) << err;
  ASSERT_EQ(l->ranges.size(), 3u);
  EXPECT_TRUE(l->contains(1));
  EXPECT_FALSE(l->contains(2));
  EXPECT_TRUE(l->contains(5));
  EXPECT_TRUE(l->contains(10));
  EXPECT_TRUE(l->contains(15));
  EXPECT_TRUE(l->contains(20));
  EXPECT_FALSE(l->contains(21));

  auto reversed = parse_uid_list("20:10", err);
  ASSERT_TRUE(reversed);
  EXPECT_TRUE(reversed->contains(12));

  auto open = parse_uid_list("100:*", err);
  ASSERT_TRUE(open);
  EXPECT_FALSE(open->contains(99));
  EXPECT_TRUE(open->contains(4294967295u));
}

TEST(ParseUidList, Rejects) {
  for (const char* bad :
       {"", "0", "1,", ",1", "1,,2", "a", "1:", ":5", "1-5", "*:5", "4294967296", "1 2", "1;2"}) {
    std::string err;
    EXPECT_FALSE(parse_uid_list(bad, err)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
}

TEST(FormatAge, Units) {
  EXPECT_EQ(format_age(seconds(5)), "5s");
  EXPECT_EQ(format_age(seconds(125)), "2m");
  EXPECT_EQ(format_age(seconds(3 * 3600 + 120)), "3h2m");
  EXPECT_EQ(format_age(seconds(2 * 86400 + 5 * 3600)), "2d5h");
  EXPECT_EQ(format_age(seconds(-30)), "-30s");
}

namespace {
message_view msg(std::uint32_t uid, std::optional<std::int64_t> date, std::string from,
                 std::string to, std::string subject) {
  message_view m;
  m.uid = uid;
  m.headers.date = date;
  m.headers.from = std::move(from);
  m.headers.to = std::move(to);
  m.headers.subject = std::move(subject);
  return m;
}
}  // namespace

TEST(MessageFilter, NothingGivenMatchesAll) {
  std::string err;
  auto f = message_filter::compile({}, err);
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->any());
  EXPECT_FALSE(f->needs_headers());
  EXPECT_TRUE(f->matches(msg(1, std::nullopt, "", "", ""), 0));
}

TEST(MessageFilter, AgeBounds) {
  const std::int64_t now = 1'000'000;
  std::string err;
  filter_spec spec;
  spec.older_than = "2d";
  auto older = message_filter::compile(spec, err);
  ASSERT_TRUE(older);
  EXPECT_TRUE(older->any());
  EXPECT_TRUE(older->needs_headers());
  EXPECT_TRUE(older->matches(msg(1, now - 3 * 86400, "", "", ""), now));
  EXPECT_FALSE(older->matches(msg(1, now - 86400, "", "", ""), now));
  EXPECT_FALSE(older->matches(msg(1, std::nullopt, "", "", ""), now)) << "no date: no age";

  // Without a Date header the arrival time counts.
  auto m = msg(1, std::nullopt, "", "", "");
  m.internal_date = now - 3 * 86400;
  EXPECT_TRUE(older->matches(m, now));

  filter_spec window;
  window.older_than = "1h";
  window.newer_than = "6h";
  auto w = message_filter::compile(window, err);
  ASSERT_TRUE(w);
  EXPECT_TRUE(w->matches(msg(1, now - 2 * 3600, "", "", ""), now));
  EXPECT_FALSE(w->matches(msg(1, now - 7 * 3600, "", "", ""), now));
  EXPECT_FALSE(w->matches(msg(1, now - 600, "", "", ""), now));
}

TEST(MessageFilter, RegexesAreCaseInsensitiveSearches) {
  std::string err;
  filter_spec spec;
  spec.from = "alice@";
  spec.subject = "^Re: .*build";
  auto f = message_filter::compile(spec, err);
  ASSERT_TRUE(f) << err;
  EXPECT_TRUE(f->matches(msg(1, 0, "Alice <ALICE@example.com>", "", "RE: the Build failed"), 0));
  EXPECT_FALSE(f->matches(msg(1, 0, "Bob <bob@example.com>", "", "Re: build"), 0));
  EXPECT_FALSE(f->matches(msg(1, 0, "alice@example.com", "", "Fwd: build"), 0));
}

TEST(MessageFilter, ToAlsoMatchesCc) {
  std::string err;
  filter_spec spec;
  spec.to = "incoming\\+group";
  auto f = message_filter::compile(spec, err);
  ASSERT_TRUE(f) << err;
  auto m = msg(1, 0, "", "someone@example.com", "");
  EXPECT_FALSE(f->matches(m, 0));
  m.headers.cc = "incoming+group-project@example.com";
  EXPECT_TRUE(f->matches(m, 0));
}

TEST(MessageFilter, UidOnlyNeedsNoHeaders) {
  std::string err;
  filter_spec spec;
  spec.uid = "3:5";
  auto f = message_filter::compile(spec, err);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->any());
  EXPECT_FALSE(f->needs_headers());
  EXPECT_TRUE(f->uid_matches(4));
  EXPECT_FALSE(f->uid_matches(6));
}

TEST(MessageFilter, UsageErrorsNameTheOption) {
  struct bad_case {
    filter_spec spec;
    const char* option;
  };
  filter_spec a, b, c, d;
  a.older_than = "2 days";
  b.newer_than = "x";
  c.from = "(unclosed";
  d.uid = "1,x";
  for (const auto& [spec, option] : {bad_case{a, "--older-than"}, bad_case{b, "--newer-than"},
                                     bad_case{c, "--from"}, bad_case{d, "--uid"}}) {
    std::string err;
    EXPECT_FALSE(message_filter::compile(spec, err));
    EXPECT_NE(err.find(option), std::string::npos) << err;
  }
}
