#include "delivery/job.hpp"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <nlohmann/json.hpp>

#include <regex>
#include <set>
#include <string>

namespace mailroom::delivery {
namespace {

using namespace std::string_literals;

// A message with CRLF, quotes, backslash, tab, control characters, DEL,
// non-ASCII (2-, 3- and 4-byte UTF-8) and "/".
const std::string message =
    "From: \"A\" <a@b.example>\r\n"
    "Subject: caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80\r\n"
    "\r\n"
    "back\\slash\ttab\x01"
    "ctl\x7F path/to \"q\"\b\f\x1F\n";

// Produced once by Ruby 3.1 (json 2.6.1), as mail_room builds the job:
//   ruby -rjson -e 'print JSON.generate({"class"=>"EmailReceiverWorker",
//     "args"=>[STDIN.read.force_encoding("UTF-8")],"queue"=>"email_receiver",
//     "jid"=>"0123456789abcdef01234567","retry"=>false,"enqueued_at"=>1795864094.3228915})'
const std::string ruby_job =
    R"({"class":"EmailReceiverWorker","args":["From: \"A\" <a@b.example>\r\nSubject: )"
    "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80"
    R"(\r\n\r\nback\\slash\ttab\u0001ctl)"
    "\x7F"
    R"( path/to \"q\"\b\f\u001f\n"],"queue":"email_receiver","jid":"0123456789abcdef01234567","retry":false,"enqueued_at":1795864094.3228915})";

TEST(SidekiqJob, MatchesRubyJsonGenerateByteForByte) {
  const std::string job = make_sidekiq_job("EmailReceiverWorker", "email_receiver", message,
                                           "0123456789abcdef01234567", 1795864094.3228915);
  EXPECT_EQ(job, ruby_job);
}

TEST(SidekiqJob, ParsesBackToTheSameMessage) {
  const std::string job = make_sidekiq_job("W", "q", message, "x", 1.5);
  const auto parsed = nlohmann::ordered_json::parse(job);
  EXPECT_EQ(parsed["args"][0].get<std::string>(), message);
  std::vector<std::string> keys;
  for (auto it = parsed.begin(); it != parsed.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys,
            (std::vector<std::string>{"class", "args", "queue", "jid", "retry", "enqueued_at"}));
  EXPECT_EQ(parsed["retry"], false);
}

TEST(SidekiqJob, EmptyBodyAndEscapedWorkerAndQueue) {
  EXPECT_EQ(
      make_sidekiq_job("A\"B", "q\\1", "", "j", 1.0),
      R"({"class":"A\"B","args":[""],"queue":"q\\1","jid":"j","retry":false,"enqueued_at":1.0})");
}

TEST(SidekiqJob, EveryControlCharacterEscapedLikeRuby) {
  std::string all;
  for (int c = 0; c < 0x20; ++c) all.push_back(static_cast<char>(c));
  std::string out;
  append_json_string(out, all);
  // Ruby: JSON.generate((0...32).map(&:chr).join)
  EXPECT_EQ(
      out,
      R"("\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f)"
      R"(\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f")");
}

TEST(SidekiqJob, LineSeparatorsAndSlashStayRaw) {
  std::string out;
  append_json_string(out, "a/b\xE2\x80\xA8\xE2\x80\xA9</script>");
  EXPECT_EQ(out, "\"a/b\xE2\x80\xA8\xE2\x80\xA9</script>\"");
}

TEST(SidekiqJob, LargeBodyHasNoPrefixOrSuffixSurprises) {
  std::string body(3 * 1024 * 1024, 'x');
  body[17] = '\n';
  body.back() = '"';
  const std::string job = make_sidekiq_job("W", "q", body, "j", 2.0);
  EXPECT_EQ(
      job.size(),
      body.size() + 2 +
          std::string(
              R"({"class":"W","args":[""],"queue":"q","jid":"j","retry":false,"enqueued_at":2.0})")
              .size());
}

// Float#to_s values checked against Ruby 3.1 (JSON.generate([f])).
TEST(RubyFloat, FormatsLikeFloatToS) {
  EXPECT_EQ(ruby_float_to_s(1795864094.3228915), "1795864094.3228915");
  EXPECT_EQ(ruby_float_to_s(1795864094.0), "1795864094.0");
  EXPECT_EQ(ruby_float_to_s(1.0), "1.0");
  EXPECT_EQ(ruby_float_to_s(0.1), "0.1");
  EXPECT_EQ(ruby_float_to_s(100.0), "100.0");
  EXPECT_EQ(ruby_float_to_s(-2.5), "-2.5");
  EXPECT_EQ(ruby_float_to_s(123456789.125), "123456789.125");
  EXPECT_EQ(ruby_float_to_s(0.0), "0.0");
  EXPECT_EQ(ruby_float_to_s(-0.0), "-0.0");
  EXPECT_EQ(ruby_float_to_s(0.0001), "0.0001");
  EXPECT_EQ(ruby_float_to_s(0.001234), "0.001234");
  EXPECT_EQ(ruby_float_to_s(0.00001), "1.0e-05");
  EXPECT_EQ(ruby_float_to_s(1.5e-7), "1.5e-07");
  EXPECT_EQ(ruby_float_to_s(1e15), "1.0e+15");
  EXPECT_EQ(ruby_float_to_s(1e16), "1.0e+16");
  EXPECT_EQ(ruby_float_to_s(1e17), "1.0e+17");
  EXPECT_EQ(ruby_float_to_s(1234567890123456.0), "1.234567890123456e+15");
  EXPECT_EQ(ruby_float_to_s(12345678901234567.0), "1.2345678901234568e+16");
  EXPECT_EQ(ruby_float_to_s(1e100), "1.0e+100");
  EXPECT_EQ(ruby_float_to_s(5e-324), "5.0e-324");
  EXPECT_EQ(ruby_float_to_s(1.7976931348623157e308), "1.7976931348623157e+308");
}

TEST(RubyFloat, RoundTripsCurrentTimes) {
  for (double t : {1700000000.123456, 1795864094.3228915, 1795864094.5, 1800000000.0000002}) {
    EXPECT_EQ(std::stod(ruby_float_to_s(t)), t);
  }
}

TEST(RubyFloat, EpochSecondsNowLooksLikeTimeNowToF) {
  const double now = epoch_seconds_now();
  EXPECT_GT(now, 1.6e9);
  EXPECT_TRUE(std::regex_match(ruby_float_to_s(now), std::regex(R"(\d{10}\.\d{1,7})")))
      << ruby_float_to_s(now);
}

TEST(Jid, Is24LowercaseHexAndRandom) {
  const std::regex hex24("^[0-9a-f]{24}$");
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string jid = make_jid();
    EXPECT_TRUE(std::regex_match(jid, hex24)) << jid;
    seen.insert(jid);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(StableJid, NamesOneMessageOnOneServer) {
  const std::regex hex24("^[0-9a-f]{24}$");
  const std::string a = stable_jid("imap.example.com:993", "bob@example.com", "INBOX", 7, 9);
  EXPECT_TRUE(std::regex_match(a, hex24)) << a;
  EXPECT_EQ(a, stable_jid("imap.example.com:993", "bob@example.com", "INBOX", 7, 9));
  // Two servers may give the same account and folder the same UIDVALIDITY
  // and UID: two messages.
  EXPECT_NE(a, stable_jid("imap2.example.com:993", "bob@example.com", "INBOX", 7, 9));
  EXPECT_NE(a, stable_jid("imap.example.com:143", "bob@example.com", "INBOX", 7, 9));
  EXPECT_NE(a, stable_jid("imap.example.com:993", "bob@example.com", "INBOX", 8, 9));
  EXPECT_NE(a, stable_jid("imap.example.com:993", "bob@example.com", "INBOX", 7, 10));
  EXPECT_NE(a, stable_jid("imap.example.com:993", "bob@example.com", "Archive", 7, 9));
  // The separator keeps the fields apart.
  EXPECT_NE(stable_jid("h:1", "ab", "c", 1, 1), stable_jid("h:1", "a", "bc", 1, 1));
}

TEST(StableJid, NamesAGraphMessageByItsId) {
  const std::regex hex24("^[0-9a-f]{24}$");
  const std::string a = stable_jid("graph.microsoft.com:443", "bob@example.com", "inbox", "AAk=");
  EXPECT_TRUE(std::regex_match(a, hex24)) << a;
  EXPECT_EQ(a, stable_jid("graph.microsoft.com:443", "bob@example.com", "inbox", "AAk="));
  EXPECT_NE(a, stable_jid("graph.microsoft.com:443", "bob@example.com", "inbox", "AAl="));
  EXPECT_NE(a, stable_jid("graph.microsoft.com:443", "eve@example.com", "inbox", "AAk="));
  // Never the jid of an IMAP message whose numbers print like the id.
  EXPECT_NE(stable_jid("h:1", "a", "INBOX", "7"), stable_jid("h:1", "a", "INBOX", 0, 7));
}

// The block-at-a-time escaper against the plain byte-by-byte definition, on
// strings dense in the bytes that matter, at every alignment and length
// (including the tails shorter than a block).
std::string escape_reference(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  out += "\"";
  return out;
}

RC_GTEST_PROP(JsonEscape, MatchesTheByteByByteDefinition, ()) {
  const auto interesting = rc::gen::element<char>('"', '\\', '\r', '\n', '\t', '\x01', '\x1f', ' ',
                                                  '\x7f', '\x80', '\xff', 'a', '/');
  const auto s = *rc::gen::container<std::string>(
      rc::gen::oneOf(interesting, rc::gen::arbitrary<char>(), rc::gen::just('x')));
  const auto offset = *rc::gen::inRange<std::size_t>(0, 17);
  const std::string padded = std::string(offset, 'p') + s;
  const std::string_view view = std::string_view(padded).substr(offset);
  const std::string want = escape_reference(view);
  RC_ASSERT(json_string_size(view) == want.size());
  std::string got;
  append_json_string(got, view);
  RC_ASSERT(got == want);
}

TEST(SidekiqJob, SizeIsExactAndWriteFillsIt) {
  const std::string body = std::string(100000, 'x') + "\r\n\"\\\x01" + std::string(33, 'y');
  const sidekiq_job job("W", "q", body, "j", 2.5);
  std::string out(job.size() + 1, '#');
  char* end = job.write(out.data());
  EXPECT_EQ(end, out.data() + job.size());
  EXPECT_EQ(out.back(), '#');  // nothing written past size()
  out.pop_back();
  EXPECT_EQ(out, make_sidekiq_job("W", "q", body, "j", 2.5));
  EXPECT_EQ(nlohmann::json::parse(out)["args"][0].get<std::string>(), body);
}

}  // namespace
}  // namespace mailroom::delivery
