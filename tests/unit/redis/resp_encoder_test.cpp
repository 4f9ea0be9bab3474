#include "redis/resp/encoder.hpp"
#include "redis/resp/parser.hpp"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

namespace mailroom::redis {
namespace {

TEST(RespEncoder, EncodesArrayOfBulkStrings) {
  EXPECT_EQ(encode_command({"SET", "delivered:101", "1", "EX", "600", "NX"}),
            "*6\r\n$3\r\nSET\r\n$13\r\ndelivered:101\r\n$1\r\n1\r\n$2\r\nEX\r\n$3\r\n600\r\n"
            "$2\r\nNX\r\n");
}

TEST(RespEncoder, EmptyArgumentAndBinaryBytes) {
  const std::string binary("a\r\n\0b", 5);
  EXPECT_EQ(encode_command({"ECHO", "", binary}),
            std::string("*3\r\n$4\r\nECHO\r\n$0\r\n\r\n$5\r\na\r\n\0b\r\n", 31));
}

TEST(RespEncoder, AppendKeepsExistingContentAndAcceptsStrings) {
  std::string out = "prefix";
  const std::vector<std::string> args{"PING"};
  append_command(out, args);
  EXPECT_EQ(out, "prefix*1\r\n$4\r\nPING\r\n");
}

TEST(RespEncoder, LargeArgumentIsCarriedIntact) {
  const std::string big(3 * 1024 * 1024 + 7, 'x');
  const std::vector<std::string> args{"LPUSH", "queue:default", big};
  std::string out;
  append_command(out, args);
  EXPECT_EQ(out.size(), 4 + 4 + 5 + 2 + 5 + 13 + 2 + 10 + big.size() + 2);
  EXPECT_EQ(out.substr(0, 4), "*3\r\n");
  EXPECT_NE(out.find("$3145735\r\n"), std::string::npos);
}

// A server sees a command as an array of bulk strings; our own parser must read
// the encoding back to exactly the arguments.
TEST(RespEncoder, RoundTripsThroughParser) {
  const std::vector<std::string_view> args{"LPUSH", "ns:queue:q", "{\"args\":[\"\\r\\n\"]}"};
  resp_parser p;
  p.feed(encode_command(args));
  auto r = p.next();
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->has_value());
  ASSERT_EQ((*r)->k, reply::kind::array);
  ASSERT_EQ((*r)->elements.size(), 3u);
  for (std::size_t i = 0; i < args.size(); ++i) {
    EXPECT_EQ((*r)->elements[i], reply::bulk(std::string(args[i])));
  }
}

// The delivery writes the job into the slot; the bytes must be those of the
// ordinary encoding of the same arguments.
TEST(RespEncoder, SlotFormMatchesTheOrdinaryEncoding) {
  for (const std::string& last : {std::string(), std::string("x"), std::string(100000, '\r')}) {
    const std::array<std::string_view, 2> leading{"LPUSH", "resque:gitlab:queue:q"};
    command_with_slot c = encode_command_with_slot(leading, last.size());
    ASSERT_EQ(c.bytes.size(), c.slot + last.size() + 2);
    std::copy(last.begin(), last.end(), c.bytes.begin() + static_cast<std::ptrdiff_t>(c.slot));
    const std::vector<std::string_view> all{"LPUSH", "resque:gitlab:queue:q", last};
    EXPECT_EQ(c.bytes, encode_command(all)) << last.size();
  }
}

}  // namespace
}  // namespace mailroom::redis
