// Errors of the IMAP protocol core.
//
// Every one of them means the byte stream from the server can no longer be
// trusted (we may be out of step with its framing, or it is sending more than we
// agreed to hold): drop the connection and reconnect. None is retried in place.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace mailroom::imap {

enum class errc {
  /// Bytes that are not an IMAP response (RFC 3501 §9 / RFC 9051 §9 grammar).
  malformed_response = 1,
  /// A response line exceeded limits::max_line_length.
  line_too_long,
  /// A literal announcement exceeded limits::max_literal_size (or the literal
  /// bytes of one response exceeded limits::max_response_literal_bytes).
  literal_too_large,
  /// Parenthesised lists nested deeper than limits::max_depth.
  nesting_too_deep,
  /// One response carried more than limits::max_items values.
  too_many_items,
  /// A tagged response for a tag we never sent, or one already completed.
  unexpected_tag,
  /// A "+" continuation where the protocol state allows none. The session
  /// reports stray continuations as events; the client layer decides whether
  /// to raise this.
  unexpected_continuation,
};

const boost::system::error_category& imap_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), imap_category()};
}

}  // namespace mailroom::imap

namespace boost::system {
template <>
struct is_error_code_enum<mailroom::imap::errc> : std::true_type {};
}  // namespace boost::system
