// Typed views of the few responses the mailbox cycle acts on. Each decoder
// checks the shape it relies on and reports anything else as
// errc::malformed_response (or an empty result where the brief allows absence).
#pragma once

#include "imap/proto/types.hpp"

#include <boost/system/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailroom::imap {

/// One "* n FETCH (...)" response (RFC 3501 §7.4.2).
struct fetch_item {
  std::uint32_t seq = 0;
  std::optional<std::uint32_t> uid;
  /// As sent, e.g. "\Seen", "$Forwarded".
  std::vector<std::string> flags;
  /// RFC822.SIZE: the message's size in octets (RFC 3501 §7.4.2).
  std::optional<std::uint64_t> size;
  /// INTERNALDATE (RFC 3501 §2.3.3), seconds since the epoch; absent when not
  /// sent or malformed (a bad date does not spoil the rest of the response).
  std::optional<std::int64_t> internal_date;
  /// The whole message: the answer to BODY[] / BODY.PEEK[] (which the server
  /// labels "BODY[]") or RFC822. Absent when not fetched or NIL.
  std::optional<std::string> body;
  /// Other sections, e.g. {"BODY[HEADER.FIELDS (FROM TO)]", bytes},
  /// {"RFC822.HEADER", bytes}, {"BODY[]<0>", bytes} for a partial fetch.
  /// NIL sections are left out.
  std::vector<std::pair<std::string, std::string>> sections;
};

/// Decodes a FETCH response, moving literal bytes out of `r` (no copy of a
/// large body). Attributes we do not use (ENVELOPE, BODYSTRUCTURE, ...) are
/// skipped.
boost::system::result<fetch_item> decode_fetch(response&& r);

/// "* SEARCH 1 2 3", also an empty "* SEARCH" and a trailing "(MODSEQ n)"
/// (RFC 7162 §3.1.5). Numbers are returned in server order.
boost::system::result<std::vector<std::uint32_t>> decode_search(const response& r);

/// Capability names, upper-cased, from "* CAPABILITY ..." or from a
/// "[CAPABILITY ...]" response code (RFC 3501 §7.1). Empty for anything else.
std::vector<std::string> decode_capabilities(const response& r);

/// True when `caps` (as returned by decode_capabilities) contains `name`
/// (given upper-case, e.g. "LITERAL+", "IDLE").
bool has_capability(const std::vector<std::string>& caps, std::string_view name);

/// From "* OK [UIDVALIDITY n]" (RFC 3501 §7.1); nullopt if absent or not a
/// valid nz-number.
std::optional<std::uint32_t> decode_uidvalidity(const response& r);

/// From "* OK [UIDNEXT n]" (RFC 3501 §7.1); nullopt if absent or invalid.
std::optional<std::uint32_t> decode_uidnext(const response& r);

}  // namespace mailroom::imap
