// Bounds on what an IMAP server may make us hold. Every size the server controls
// has a named limit with a finite default; exceeding one is a protocol error
// (see errc.hpp), never an unbounded allocation.
#pragma once

#include <cstddef>

namespace mailroom::imap {

struct limits {
  /// Bytes of one response excluding literal contents and line terminators, summed
  /// over the pieces of the response that are separated by literals. A UID SEARCH
  /// over a large backlog returns one long line, hence the generous default.
  std::size_t max_line_length = 8 * 1024 * 1024;
  /// Bytes of one literal ({N} or ~{N}). Checked when the announcement is read,
  /// before any literal byte is buffered. Should match the delivery size limit.
  std::size_t max_literal_size = 64 * 1024 * 1024;
  /// Parenthesised list nesting (BODYSTRUCTURE of a deep multipart is the
  /// deepest thing a well-behaved server sends).
  std::size_t max_depth = 16;
  /// Values (atoms, numbers, strings, NILs and lists) in one response.
  std::size_t max_items = 1'000'000;
  /// Literal bytes summed over one response, e.g. BODY[] plus RFC822.HEADER of
  /// the same message. Does not bound anything across responses.
  std::size_t max_response_literal_bytes = 2 * max_literal_size;
};

}  // namespace mailroom::imap
