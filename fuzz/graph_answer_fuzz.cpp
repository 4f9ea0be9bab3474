// libFuzzer target for what mailroom reads out of Microsoft Graph's answers:
// a page of messages (graph/api.hpp parse_message_page), the oldest unread
// message (parse_oldest_unread, for status) and an error answer
// with its Retry-After header (classify). Both come from the network.
//
// Input layout: byte 0 is the HTTP status (400 + byte, so 400..655) for
// classify; up to the first NUL after it is the Retry-After value; the rest
// is the body. Checks, beyond "no crash, no sanitizer report":
//   - a page either parses or is bad_answer with a reason;
//   - a next link always points at the configured endpoint;
//   - an error answer's wait is bounded (at most an hour) and its detail is
//     short and free of control characters.
#include "graph/api.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  using namespace mailroom::graph;
  constexpr std::string_view endpoint = "https://graph.example";
  const long status = 400 + data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto nul = rest.find('\0');
  const std::string_view retry_after = nul == std::string_view::npos ? "" : rest.substr(0, nul);
  const std::string_view body = nul == std::string_view::npos ? rest : rest.substr(nul + 1);

  std::string detail;
  const auto page = parse_message_page(body, endpoint, detail);
  if (page) {
    if (!page->next_link.empty() && page->next_link.rfind("https://graph.example/", 0) != 0)
      std::abort();
    for (const auto& m : page->messages)
      if (m.id.empty()) std::abort();
  } else if (page.error() != graph_errc::bad_answer || detail.empty()) {
    std::abort();
  }

  std::string oldest_detail;
  const auto oldest = parse_oldest_unread(body, oldest_detail);
  if (oldest) {
    if (*oldest && (*oldest)->id.empty()) std::abort();
  } else if (oldest.error() != graph_errc::bad_answer || oldest_detail.empty()) {
    std::abort();
  }

  const failure f = classify(status, body, retry_after);
  if (!f.ec || f.retry_after > std::chrono::seconds(3600)) std::abort();
  if (f.detail.size() > 500) std::abort();
  for (const char c : f.detail)
    if (static_cast<unsigned char>(c) < 0x20) std::abort();
  return 0;
}
