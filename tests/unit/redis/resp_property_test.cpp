// Property tests: however the server's bytes are split across reads, the parser
// yields the same replies, and arbitrary bytes never crash it.
#include "redis/resp/parser.hpp"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace mailroom::redis {
namespace {

// Reference serializer for the tests (the client only ever encodes commands).
void serialize(const reply& r, std::string& out) {
  switch (r.k) {
    case reply::kind::simple:
      out += "+" + r.str + "\r\n";
      break;
    case reply::kind::error:
      out += "-" + r.str + "\r\n";
      break;
    case reply::kind::integer:
      out += ":" + std::to_string(r.integer) + "\r\n";
      break;
    case reply::kind::bulk:
      out += "$" + std::to_string(r.str.size()) + "\r\n" + r.str + "\r\n";
      break;
    case reply::kind::null:
      out += "$-1\r\n";
      break;
    case reply::kind::array:
      out += "*" + std::to_string(r.elements.size()) + "\r\n";
      for (const auto& e : r.elements) serialize(e, out);
      break;
  }
}

// Simple strings and errors cannot contain CR or LF.
rc::Gen<std::string> gen_line() {
  return rc::gen::container<std::string>(
      rc::gen::suchThat(rc::gen::arbitrary<char>(), [](char c) { return c != '\r' && c != '\n'; }));
}

rc::Gen<reply> gen_reply(int depth) {
  auto simple = rc::gen::map(gen_line(), [](std::string s) { return reply::simple(std::move(s)); });
  auto error = rc::gen::map(gen_line(), [](std::string s) { return reply::error(std::move(s)); });
  auto number = rc::gen::map(rc::gen::arbitrary<std::int64_t>(),
                             [](std::int64_t i) { return reply::number(i); });
  auto bulk = rc::gen::map(rc::gen::arbitrary<std::string>(),
                           [](std::string s) { return reply::bulk(std::move(s)); });
  auto nil = rc::gen::just(reply::nil());
  if (depth == 0) {
    return rc::gen::weightedOneOf<reply>(
        {{3, simple}, {1, error}, {3, number}, {3, bulk}, {1, nil}});
  }
  auto array = rc::gen::map(rc::gen::resize(6, rc::gen::container<std::vector<reply>>(rc::gen::lazy(
                                                   [depth] { return gen_reply(depth - 1); }))),
                            [](std::vector<reply> e) { return reply::array(std::move(e)); });
  return rc::gen::weightedOneOf<reply>(
      {{3, simple}, {1, error}, {3, number}, {3, bulk}, {1, nil}, {2, array}});
}

// Parses `input` cut at `cuts` (positions, any order, may repeat).
std::vector<reply> parse_split(const std::string& input, std::vector<std::size_t> cuts,
                               boost::system::error_code& ec) {
  for (auto& c : cuts) c = input.empty() ? 0 : c % (input.size() + 1);
  cuts.push_back(0);
  cuts.push_back(input.size());
  std::sort(cuts.begin(), cuts.end());
  resp_parser p;
  std::vector<reply> out;
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    p.feed(std::string_view(input).substr(cuts[i], cuts[i + 1] - cuts[i]));
    for (;;) {
      auto r = p.next();
      if (!r.has_value()) {
        ec = r.error();
        return out;
      }
      if (!r->has_value()) break;
      out.push_back(std::move(**r));
    }
  }
  return out;
}

RC_GTEST_PROP(RespProperty, RandomSplitsYieldTheSameReplies, ()) {
  const auto replies = *rc::gen::container<std::vector<reply>>(gen_reply(3));
  std::string wire;
  for (const auto& r : replies) serialize(r, wire);
  const auto cuts =
      *rc::gen::container<std::vector<std::size_t>>(rc::gen::arbitrary<std::size_t>());
  boost::system::error_code ec;
  const auto got = parse_split(wire, cuts, ec);
  RC_ASSERT(!ec);
  RC_ASSERT(got == replies);
}

RC_GTEST_PROP(RespProperty, ArbitraryBytesParseTheSameHoweverSplit, ()) {
  // Bias towards RESP-looking bytes so that inputs get past the first byte.
  const auto pieces = *rc::gen::container<std::vector<std::string>>(
      rc::gen::oneOf(rc::gen::element<std::string>("+", "-", ":", "$", "*", "\r\n", "\r", "\n",
                                                   "-1", "0", "1", "2", "3", "OK"),
                     rc::gen::arbitrary<std::string>()));
  std::string input;
  for (const auto& p : pieces) input += p;
  boost::system::error_code whole_ec;
  const auto whole = parse_split(input, {}, whole_ec);
  const auto cuts =
      *rc::gen::container<std::vector<std::size_t>>(rc::gen::arbitrary<std::size_t>());
  boost::system::error_code split_ec;
  const auto split = parse_split(input, cuts, split_ec);
  RC_ASSERT(whole == split);
  RC_ASSERT(whole_ec == split_ec);
}

}  // namespace
}  // namespace mailroom::redis
