// libFuzzer target for what mailroom reads out of a raw message: header
// fields (mime/headers.hpp) and the UTF-8 conversion of the whole message for
// Sidekiq jobs (delivery/charset.hpp). Both see bytes straight from the IMAP
// server.
//
// Input layout: byte 0 picks the field name and the scan limit; the rest is
// the message. Checks, beyond "no crash, no sanitizer report":
//   - header_value() is bounded and trimmed, and scanning with a limit equals
//     scanning the prefix of that length;
//   - message_id() is "<...>" without control characters, within its limit;
//   - the charset conversion always yields valid UTF-8, to_utf8() and
//     as_utf8() agree, and the ISO-8859-1 fallback loses no byte.
#include "delivery/charset.hpp"
#include "mime/headers.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using mailroom::delivery::as_utf8;
using mailroom::delivery::is_valid_utf8;
using mailroom::delivery::to_utf8;
using mailroom::delivery::utf8_result;
using mailroom::mime::header_value;
using mailroom::mime::max_header_value;
using mailroom::mime::max_message_id;
using mailroom::mime::message_id;

constexpr std::string_view names[] = {"Subject",  "message-id",   "From", "X",
                                      "Received", "Content-Type", "",     "To"};

// UTF-8 of U+0000..U+00FF back to the bytes (inverse of latin1_to_utf8).
bool latin1_round_trips(std::string_view utf8, std::string_view raw) {
  std::string back;
  for (std::size_t i = 0; i < utf8.size(); ++i) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      back += static_cast<char>(c);
    } else if ((c == 0xC2 || c == 0xC3) && i + 1 < utf8.size()) {
      back += static_cast<char>(((c & 0x03) << 6) | (static_cast<unsigned char>(utf8[++i]) & 0x3F));
    } else {
      return false;
    }
  }
  return back == raw;
}

void check_value(const std::optional<std::string>& v) {
  if (!v) return;
  if (v->size() > max_header_value) std::abort();
  if (v->find('\n') != std::string::npos) std::abort();
  if (!v->empty()) {
    const char f = v->front(), b = v->back();
    if (f == ' ' || f == '\t' || b == ' ' || b == '\t' || b == '\r') std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const std::string_view raw(reinterpret_cast<const char*>(data) + 1, size - 1);

  // Headers: a fixed name, then a scan limit cutting the message somewhere.
  const std::string_view name = names[control & 7];
  const auto whole = header_value(raw, name);
  check_value(whole);
  const std::size_t limit = (control >> 3) * raw.size() / 31;
  const auto cut = header_value(raw, name, limit);
  check_value(cut);
  if (cut != header_value(raw.substr(0, limit), name)) std::abort();
  if (limit >= raw.size() && cut != whole) std::abort();

  if (const auto id = message_id(raw)) {
    if (id->size() < 3 || id->size() > max_message_id || id->front() != '<' || id->back() != '>')
      std::abort();
    for (unsigned char c : *id) {
      if (c < 0x20 || c == 0x7f) std::abort();
    }
  }

  // The Sidekiq job's UTF-8 text of the whole message.
  const utf8_result converted = to_utf8(raw);
  if (!is_valid_utf8(converted.text)) std::abort();
  utf8_result storage;
  const std::string_view view = as_utf8(raw, storage);
  if (view != converted.text) std::abort();
  if (converted.detected_charset.empty() && converted.text != raw) std::abort();
  if (converted.fallback && !latin1_round_trips(converted.text, raw)) std::abort();
  return 0;
}
