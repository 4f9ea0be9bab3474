#include "imap/proto/value_reader.hpp"

#include "imap/proto/ascii.hpp"
#include "imap/proto/errc.hpp"

#include <limits>
#include <utility>

namespace mailroom::imap::detail {
namespace {

bool is_ctl(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

}  // namespace

bool is_atom_char(char c) noexcept {
  // atom-specials minus CTL, which is checked separately: "(" ")" "{" SP,
  // list-wildcards "%" "*", quoted-specials DQUOTE and "\", resp-specials "]".
  constexpr std::string_view specials = "(){ %*\"\\]";
  return static_cast<unsigned char>(c) < 0x80 && !is_ctl(c) &&
         specials.find(c) == std::string_view::npos;
}

bool is_value_atom_char(char c) noexcept {
  constexpr std::string_view stops = "(){ \"[";
  return !is_ctl(c) && stops.find(c) == std::string_view::npos;
}

void value_reader::reset() {
  stack_.clear();
  stack_.emplace_back().k = value::kind::list;
  items_ = 0;
  literal_bytes_ = 0;
  literal_size_ = 0;
  literal_pending_ = false;
}

boost::system::error_code value_reader::push(value v) {
  if (++items_ > limits_.max_items) return errc::too_many_items;
  stack_.back().items.push_back(std::move(v));
  return {};
}

boost::system::error_code value_reader::read(std::string_view piece) {
  std::size_t i = 0;
  while (i < piece.size()) {
    const char c = piece[i];
    boost::system::error_code ec;
    if (c == ' ') {
      // RFC 3501 wants exactly one SP between values; extra spaces are harmless.
      ++i;
      continue;
    } else if (c == '(') {
      if (stack_.size() > limits_.max_depth) return errc::nesting_too_deep;
      if (++items_ > limits_.max_items) return errc::too_many_items;
      stack_.emplace_back().k = value::kind::list;
      ++i;
    } else if (c == ')') {
      if (stack_.size() < 2) return errc::malformed_response;
      value done = std::move(stack_.back());
      stack_.pop_back();
      stack_.back().items.push_back(std::move(done));
      ++i;
    } else if (c == '"') {
      ec = read_quoted(piece, i);
    } else if (c == '{' || (c == '~' && i + 1 < piece.size() && piece[i + 1] == '{')) {
      return read_literal_header(piece, i);
    } else {
      ec = read_atom(piece, i);
    }
    if (ec) return ec;
  }
  return {};
}

// quoted = DQUOTE *QUOTED-CHAR DQUOTE, with "\" escaping "\" and DQUOTE
// (RFC 3501 §4.3). A quoted string cannot span lines.
boost::system::error_code value_reader::read_quoted(std::string_view piece, std::size_t& i) {
  value v;
  v.k = value::kind::string;
  for (std::size_t j = i + 1; j < piece.size(); ++j) {
    char c = piece[j];
    if (c == '"') {
      i = j + 1;
      return push(std::move(v));
    }
    if (c == '\\') {
      if (++j == piece.size()) break;
      c = piece[j];
    }
    if (c == '\r' || c == '\0') return errc::malformed_response;
    v.text.push_back(c);
  }
  return errc::malformed_response;  // unterminated
}

// literal = "{" number ["+"] "}" CRLF *CHAR8 (RFC 3501 §9, RFC 7888), and
// literal8 = "~{" number "}" CRLF *OCTET (RFC 3516). The announcement must end
// the piece. The size is checked against the limits here, before the caller
// buffers a single literal byte.
boost::system::error_code value_reader::read_literal_header(std::string_view piece,
                                                            std::size_t& i) {
  std::size_t j = i + (piece[i] == '~' ? 2 : 1);
  const std::size_t digits_begin = j;
  std::size_t size = 0;
  bool overflow = false;
  while (j < piece.size() && is_digit(piece[j])) {
    const auto d = static_cast<std::size_t>(piece[j] - '0');
    if (size > (std::numeric_limits<std::size_t>::max() - d) / 10) overflow = true;
    if (!overflow) size = size * 10 + d;
    ++j;
  }
  if (j == digits_begin) return errc::malformed_response;
  if (j < piece.size() && piece[j] == '+') ++j;
  if (j >= piece.size() || piece[j] != '}' || j + 1 != piece.size()) {
    return errc::malformed_response;
  }
  if (overflow || size > limits_.max_literal_size ||
      size > limits_.max_response_literal_bytes - literal_bytes_) {
    return errc::literal_too_large;
  }
  value v;
  v.k = value::kind::string;
  if (auto ec = push(std::move(v))) return ec;
  literal_bytes_ += size;
  literal_size_ = size;
  literal_pending_ = true;
  i = piece.size();
  return {};
}

// Atoms, numbers and NIL. An atom may carry a bracketed section whose contents
// include spaces, parentheses and quoted strings, as in
// "BODY[HEADER.FIELDS (FROM TO)]<0>" (RFC 3501 §9 msg-att-static / section),
// or "BINARY[1.2]"; the whole thing comes out as one atom.
boost::system::error_code value_reader::read_atom(std::string_view piece, std::size_t& i) {
  const std::size_t begin = i;
  std::size_t j = i;
  while (j < piece.size()) {
    const char c = piece[j];
    if (c == '[') {
      std::size_t depth = 0;
      bool quoted = false;
      for (; j < piece.size(); ++j) {
        const char s = piece[j];
        if (s == '\0' || s == '\r') return errc::malformed_response;
        if (quoted) {
          if (s == '\\') {
            ++j;
          } else if (s == '"') {
            quoted = false;
          }
        } else if (s == '"') {
          quoted = true;
        } else if (s == '[') {
          ++depth;
        } else if (s == ']' && --depth == 0) {
          break;
        }
      }
      if (j >= piece.size()) return errc::malformed_response;  // unterminated section
      ++j;
    } else if (is_value_atom_char(c)) {
      ++j;
    } else {
      break;
    }
  }
  if (j == begin) return errc::malformed_response;  // a byte no value starts with
  const std::string_view word = piece.substr(begin, j - begin);
  i = j;

  value v;
  bool all_digits = true;
  for (char c : word) all_digits = all_digits && is_digit(c);
  if (all_digits) {
    std::uint64_t n = 0;
    for (char c : word) {
      const auto d = static_cast<std::uint64_t>(c - '0');
      if (n > (std::numeric_limits<std::uint64_t>::max() - d) / 10) {
        return errc::malformed_response;  // wider than RFC 9051 number64
      }
      n = n * 10 + d;
    }
    v.k = value::kind::number;
    v.number = n;
  } else if (ascii_iequals(word, "NIL")) {
    v.k = value::kind::nil;
  } else {
    v.k = value::kind::atom;
    v.text.assign(word);
  }
  return push(std::move(v));
}

boost::system::result<std::vector<value>> value_reader::finish() {
  if (stack_.size() != 1 || literal_pending_) {
    reset();
    return boost::system::error_code(errc::malformed_response);
  }
  std::vector<value> out = std::move(stack_.front().items);
  reset();
  return out;
}

}  // namespace mailroom::imap::detail
