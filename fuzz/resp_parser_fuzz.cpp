// libFuzzer target for the RESP2 reply parser.
//
// Input layout: byte 0 picks small limits (so the fuzzer reaches every limit
// check), byte 1 seeds the chunk sizes; the rest is the server's byte stream.
// Checks, beyond "no crash, no sanitizer report":
//   - the replies and the error are the same whether the stream arrives in one
//     piece or in chunks (the client reads whatever read_some returns);
//   - every reply re-serialized and parsed again is identical.
#include "redis/resp/parser.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using mailroom::redis::reply;
using mailroom::redis::resp_limits;
using mailroom::redis::resp_parser;

struct outcome {
  std::vector<reply> replies;
  boost::system::error_code ec;
};

outcome run(std::string_view input, const resp_limits& limits, std::uint8_t chunk_seed) {
  resp_parser p(limits);
  outcome out;
  std::size_t pos = 0;
  std::uint32_t state = chunk_seed;
  while (pos < input.size() || pos == 0) {
    std::size_t n = input.size();
    if (chunk_seed != 0) {
      state = state * 1103515245u + 12345u;
      n = 1 + (state >> 16) % 17;
    }
    n = std::min(n, input.size() - pos);
    p.feed(input.substr(pos, n));
    pos += n;
    for (;;) {
      auto r = p.next();
      if (!r.has_value()) {
        out.ec = r.error();
        return out;
      }
      if (!r->has_value()) break;
      out.replies.push_back(std::move(**r));
    }
    if (input.empty()) break;
  }
  return out;
}

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  resp_limits limits;
  const std::uint8_t l = data[0];
  if (l & 1) limits.max_bulk_length = 8;
  if (l & 2) limits.max_array_elements = 4;
  if (l & 4) limits.max_depth = 3;
  if (l & 8) limits.max_line_length = 8;
  const std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);

  const outcome whole = run(input, limits, 0);
  const outcome chunked = run(input, limits, static_cast<std::uint8_t>(data[1] | 1));
  if (whole.replies != chunked.replies || whole.ec != chunked.ec) std::abort();

  std::string again;
  for (const auto& r : whole.replies) serialize(r, again);
  const outcome reparsed = run(again, limits, 0);
  if (reparsed.ec || reparsed.replies != whole.replies) std::abort();
  return 0;
}
