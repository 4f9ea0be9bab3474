// Reading single header fields out of a raw RFC 5322 message, without a full
// MIME parser and without I/O: the message bytes come from the IMAP FETCH and
// are untrusted, so every function here is bounded in time and memory however
// long a line is or whether the header section ever ends.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mailroom::mime {

// Bytes header_value() scans by default: real header sections are a few KiB,
// and a message without an empty line must not be scanned to its end.
inline constexpr std::size_t default_max_scan = std::size_t{1} << 20;

// Longest value header_value() returns; longer (unfolded) values are cut here.
// RFC 5322 §2.1.1 limits a line to 998 octets but a folded field may span many
// lines (long References or To lists); 64 KiB is far above any honest field and
// keeps a hostile one from costing more than that.
inline constexpr std::size_t max_header_value = 64 * 1024;

// Longest Message-ID message_id() accepts: one RFC 5322 §2.1.1 line. The ID
// becomes part of a job's identity, so a longer (hostile) one is refused
// rather than truncated into a collision.
inline constexpr std::size_t max_message_id = 998;

// The value of the first header field named `field_name` (compared
// case-insensitively, RFC 5322 §1.2.2), unfolded (§2.2.3: a line break
// followed by WSP is removed, the WSP kept) and trimmed of leading and
// trailing whitespace; at most max_header_value bytes.
//
// Only the header section is searched: it ends at the first empty line
// (§2.1). CRLF and bare LF both end a line; a bare CR is data. At most
// `max_scan` bytes of `raw_message` are looked at. Lines that are neither a
// field ("name:" with a printable-ASCII name, §2.2) nor a continuation (an
// mbox "From " line, garbage) are skipped. Bytes are returned as they are:
// no charset decoding, no RFC 2047 decoding; NUL and invalid UTF-8 pass
// through. nullopt when there is no such field.
std::optional<std::string> header_value(std::string_view raw_message, std::string_view field_name,
                                        std::size_t max_scan = default_max_scan);

// The Message-ID (RFC 5322 §3.6.4) as "<id-left@id-right>": comments and
// whitespace around and inside it are removed (§3.2.2 CFWS, and obs-id-left
// allows CFWS within). An ID without angle brackets that still contains '@'
// (some mailers write one) is wrapped in them. nullopt when the field is
// absent, empty, malformed (an unclosed bracket, control characters), or
// longer than max_message_id.
std::optional<std::string> message_id(std::string_view raw_message);

}  // namespace mailroom::mime
