#include "common/duration.hpp"

#include <fmt/format.h>

#include <cstdint>

namespace mailroom {

std::optional<std::chrono::seconds> parse_duration(std::string_view s, std::string& error) {
  std::int64_t total = 0;
  std::size_t i = 0;
  if (s.empty()) {
    error = "empty duration";
    return std::nullopt;
  }
  while (i < s.size()) {
    std::size_t j = i;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    const std::string_view digits = s.substr(i, j - i);
    if (digits.empty() || digits.size() > 10 || j == s.size()) {
      error = fmt::format("invalid duration \"{}\" (use e.g. 90s, 15m, 6h, 2d, 1w, 1d12h)", s);
      return std::nullopt;
    }
    std::int64_t unit = 0;
    switch (s[j]) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = 60;
        break;
      case 'h':
        unit = 3600;
        break;
      case 'd':
        unit = 86400;
        break;
      case 'w':
        unit = 7 * 86400;
        break;
      default:
        error = fmt::format("invalid duration \"{}\": unknown unit '{}' (s, m, h, d, w)", s, s[j]);
        return std::nullopt;
    }
    std::int64_t n = 0;
    for (const char c : digits) n = n * 10 + (c - '0');
    total += n * unit;
    // A bound far beyond any mailbox's age keeps the sum from overflowing.
    if (total > 1000LL * 365 * 86400) {
      error = fmt::format("duration \"{}\" is too long", s);
      return std::nullopt;
    }
    i = j + 1;
  }
  return std::chrono::seconds(total);
}

}  // namespace mailroom
