// ASCII-only case helpers. IMAP keywords, status words and capability names are
// case-insensitive ASCII (RFC 3501 §9 "The ABNF is case-insensitive"); locale
// dependent std::toupper must not be used on protocol bytes.
#pragma once

#include <string>
#include <string_view>

namespace mailroom::imap::detail {

constexpr char ascii_upper(char c) noexcept {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

inline std::string ascii_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_upper(c);
  return out;
}

constexpr bool ascii_iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_upper(a[i]) != ascii_upper(b[i])) return false;
  }
  return true;
}

constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}

}  // namespace mailroom::imap::detail
