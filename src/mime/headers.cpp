#include "mime/headers.hpp"

#include <algorithm>

namespace mailroom::mime {
namespace {

constexpr bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

// RFC 5322 §2.2: field-name = 1*ftext, ftext = printable US-ASCII except ':'.
constexpr bool is_ftext(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 33 && u <= 126 && c != ':';
}

constexpr char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

// Splits the scanned bytes into lines without their line break. A line ends
// at LF; a CR right before it belongs to the break (§2.1 says CRLF, but mail
// that passed through Unix tools often has bare LF). The last line may lack a
// break (the scan limit or the message ended).
class line_reader {
 public:
  explicit line_reader(std::string_view text) : text_(text) {}

  bool next(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    const auto nl = text_.find('\n', pos_);
    if (nl == std::string_view::npos) {
      line = text_.substr(pos_);
      pos_ = text_.size();
      return true;
    }
    line = text_.substr(pos_, nl - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = nl + 1;
    return true;
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

// Appends one physical line's part of the value. Leading whitespace of the
// value is never stored, so the cap counts only bytes that can survive the
// final trim. Returns false once the cap is reached.
bool append_capped(std::string& value, std::string_view piece) {
  if (value.empty()) {
    const auto first = std::find_if_not(piece.begin(), piece.end(), is_wsp);
    piece.remove_prefix(static_cast<std::size_t>(first - piece.begin()));
  }
  const std::size_t room = max_header_value - value.size();
  value.append(piece.substr(0, room));
  return value.size() < max_header_value;
}

void trim_trailing(std::string& s) {
  while (!s.empty() && (is_wsp(s.back()) || s.back() == '\r')) s.pop_back();
}

// Removes comments (§3.2.2, nested, with quoted-pairs) and whitespace outside
// quoted strings: what is left of "(x) <a@b> (y)" is "<a@b>". False for an
// unterminated quoted string.
bool strip_cfws(std::string_view in, std::string& out) {
  int depth = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (depth > 0) {
      if (c == '\\') {
        ++i;  // quoted-pair: the next byte is literal
      } else if (c == '(') {
        ++depth;
      } else if (c == ')') {
        --depth;
      }
      continue;
    }
    if (quoted) {
      out += c;
      if (c == '\\' && i + 1 < in.size()) {
        out += in[++i];
      } else if (c == '"') {
        quoted = false;
      }
      continue;
    }
    if (c == '(') {
      depth = 1;
    } else if (is_wsp(c) || c == '\r' || c == '\n') {
      // folding whitespace between tokens
    } else {
      if (c == '"') quoted = true;
      out += c;
    }
  }
  // An unclosed comment simply swallows the rest; an unclosed quote would
  // leave an ID whose end is unknown.
  return !quoted;
}

}  // namespace

std::optional<std::string> header_value(std::string_view raw_message, std::string_view field_name,
                                        std::size_t max_scan) {
  line_reader lines(raw_message.substr(0, std::min(max_scan, raw_message.size())));
  std::optional<std::string> value;
  std::string_view line;
  while (lines.next(line)) {
    if (line.empty()) break;  // §2.1: the empty line ends the header section
    if (is_wsp(line.front())) {
      // §2.2.3: a continuation of the previous field. Unfolding removes only
      // the line break, so the WSP that starts this line stays.
      if (value && !append_capped(*value, line)) break;
      continue;
    }
    if (value) break;  // the matched field ended; only the first one counts
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // not a field (mbox "From " line, junk)
    std::string_view name = line.substr(0, colon);
    // §4.5 (obsolete syntax) allows WSP between the field name and the colon.
    while (!name.empty() && is_wsp(name.back())) name.remove_suffix(1);
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_ftext)) continue;
    if (!iequals(name, field_name)) continue;
    value.emplace();
    if (!append_capped(*value, line.substr(colon + 1))) break;
  }
  if (value) trim_trailing(*value);
  return value;
}

std::optional<std::string> message_id(std::string_view raw_message) {
  const auto field = header_value(raw_message, "Message-ID");
  if (!field) return std::nullopt;
  std::string compact;
  if (!strip_cfws(*field, compact)) return std::nullopt;

  std::string_view id;
  const auto open = compact.find('<');
  if (open == std::string::npos) {
    // No brackets: accept only something that looks like id-left@id-right.
    if (compact.find('>') != std::string::npos || compact.find('@') == std::string::npos) {
      return std::nullopt;
    }
    id = compact;
  } else {
    // §3.6.4: msg-id = [CFWS] "<" id-left "@" id-right ">" [CFWS]. Junk
    // around the first bracketed ID is ignored; the ID itself must close.
    const auto close = compact.find('>', open + 1);
    if (close == std::string::npos) return std::nullopt;
    id = std::string_view(compact).substr(open + 1, close - open - 1);
    if (id.find('<') != std::string_view::npos) return std::nullopt;
  }
  if (id.empty()) return std::nullopt;
  // Control characters (NUL included) have no place in an ID (§3.2.3 atext,
  // §3.2.4 qtext); 8-bit bytes are let through (RFC 6532 allows UTF-8).
  const bool has_control = std::any_of(id.begin(), id.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
  if (has_control || id.size() + 2 > max_message_id) return std::nullopt;
  std::string out;
  out.reserve(id.size() + 2);
  out += '<';
  out += id;
  out += '>';
  return out;
}

}  // namespace mailroom::mime
