// Decoding the few header fields the operator commands show (Date, From, To,
// Cc, Subject, Message-ID) with GMime: RFC 2047 encoded words, RFC 5322 dates
// and address lists, folded lines, and raw 8-bit text (UTF-8, else
// ISO-8859-1). A hand-written decoder would have to relearn every quirk GMime
// already handles.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailroom::ops {

struct message_headers {
  std::optional<std::int64_t> date;  // seconds since the epoch; absent or unparseable: nullopt
  std::string date_text;             // the Date field as written (unfolded)
  std::string from;                  // decoded, UTF-8: "Name <addr>, ..."
  std::string to;
  std::string cc;
  std::string subject;
  std::string message_id;
};

// `raw`: header lines as the server sent them (CRLF or LF, the blank line
// optional). Never fails: what cannot be decoded is left as written.
message_headers decode_headers(std::string_view raw);

}  // namespace mailroom::ops
