// The value layer of the response parser: turns the pieces of one response into
// a value tree. A piece is one line without its terminator; a literal
// announcement ends a piece, and the literal bytes themselves are appended by
// the caller (response_parser does the framing, this class the grammar).
#pragma once

#include "imap/proto/limits.hpp"
#include "imap/proto/types.hpp"

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::imap::detail {

// RFC 3501 §9: ATOM-CHAR = <any CHAR except atom-specials>, where
// atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials
// / resp-specials. Used for what we *send*; see is_value_atom_char for what we accept.
bool is_atom_char(char c) noexcept;

// What we accept inside atoms from a server: anything but SP, CTL, "(", ")",
// "{", DQUOTE and "[" (which opens a section, see value_reader). Servers put
// "\", "*", "%" and "]" in flags and mailbox names, and 8-bit bytes in UTF-8
// names (RFC 9051), so the strict ATOM-CHAR would reject real traffic.
bool is_value_atom_char(char c) noexcept;

class value_reader {
 public:
  explicit value_reader(const limits& l) : limits_(l) { reset(); }

  /// Parses one piece. Afterwards, if literal_pending(), the piece ended in a
  /// literal announcement: the caller appends literal_size() bytes to
  /// literal_target(), calls literal_done(), and feeds the next piece.
  boost::system::error_code read(std::string_view piece);

  bool literal_pending() const noexcept { return literal_pending_; }
  std::size_t literal_size() const noexcept { return literal_size_; }
  std::string& literal_target() { return stack_.back().items.back().text; }
  void literal_done() noexcept { literal_pending_ = false; }

  /// Ends the response; fails if a list is still open. Leaves the reader reset.
  boost::system::result<std::vector<value>> finish();
  void reset();

 private:
  boost::system::error_code push(value v);
  boost::system::error_code read_atom(std::string_view piece, std::size_t& i);
  boost::system::error_code read_quoted(std::string_view piece, std::size_t& i);
  boost::system::error_code read_literal_header(std::string_view piece, std::size_t& i);

  limits limits_;
  // Reset per response. stack_[0] collects the top-level values; every further
  // element is a list still open.
  std::vector<value> stack_;
  std::size_t items_ = 0;
  std::size_t literal_bytes_ = 0;
  std::size_t literal_size_ = 0;
  bool literal_pending_ = false;
};

}  // namespace mailroom::imap::detail
