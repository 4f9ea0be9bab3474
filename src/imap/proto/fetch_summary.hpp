// The per-message facts the operator commands (src/ops) list: UID, flags,
// INTERNALDATE, RFC822.SIZE and a header section, decoded from one FETCH
// response. Separate from decode_fetch(), which serves the delivery path and
// skips these attributes.
#pragma once

#include "imap/proto/types.hpp"

#include <boost/system/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::imap {

struct message_summary {
  std::uint32_t seq = 0;
  std::optional<std::uint32_t> uid;
  std::optional<std::vector<std::string>> flags;  // absent when FLAGS was not sent
  std::optional<std::int64_t> internal_date;      // seconds since the epoch, UTC
  std::optional<std::uint64_t> size;              // RFC822.SIZE
  std::string header;                             // BODY[HEADER...] bytes, empty if absent
  std::optional<std::string> body;                // BODY[] when fetched
};

/// Decodes "* n FETCH (...)" (RFC 3501 §7.4.2); unknown attributes are skipped.
boost::system::result<message_summary> decode_message_summary(response&& r);

/// RFC 3501 §9 date-time: "17-Jul-1996 02:44:25 -0700" (day may be " 7") ->
/// seconds since the epoch; nullopt when malformed.
std::optional<std::int64_t> parse_internal_date(std::string_view s);

}  // namespace mailroom::imap
