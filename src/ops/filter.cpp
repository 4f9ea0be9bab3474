#include "ops/filter.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace mailroom::ops {
namespace {

std::optional<std::uint64_t> number(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

std::optional<std::uint32_t> uid_number(std::string_view s) {
  auto n = number(s);
  // nz-number (RFC 3501 §9): UID 0 does not exist.
  if (!n || *n == 0 || *n > std::numeric_limits<std::uint32_t>::max()) return std::nullopt;
  return static_cast<std::uint32_t>(*n);
}

std::optional<std::regex> compile_regex(const std::string& pattern, const char* option,
                                        std::string& error) {
  if (pattern.empty()) return std::nullopt;
  try {
    // Case-insensitive: addresses and subjects are matched the way a person
    // reads them ("Alice" finds "alice@example.com").
    return std::regex(pattern, std::regex::ECMAScript | std::regex::icase);
  } catch (const std::regex_error& e) {
    error = fmt::format("{} {}: invalid regular expression ({})", option, pattern, e.what());
    return std::nullopt;
  }
}

}  // namespace

bool uid_ranges::contains(std::uint32_t uid) const {
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const auto& r) { return uid >= r.first && uid <= r.second; });
}

std::optional<uid_ranges> parse_uid_list(std::string_view s, std::string& error) {
  uid_ranges out;
  auto bad = [&] {
    error = fmt::format("invalid UID list \"{}\" (use e.g. 1,5,10:20 or 100:*)", s);
    return std::nullopt;
  };
  if (s.empty()) return bad();
  while (!s.empty()) {
    const std::size_t comma = s.find(',');
    const std::string_view item = s.substr(0, comma);
    const std::size_t colon = item.find(':');
    if (colon == std::string_view::npos) {
      auto n = uid_number(item);
      if (!n) return bad();
      out.ranges.emplace_back(*n, *n);
    } else {
      auto lo = uid_number(item.substr(0, colon));
      const std::string_view hi_text = item.substr(colon + 1);
      auto hi = hi_text == "*"
                    ? std::optional<std::uint32_t>(std::numeric_limits<std::uint32_t>::max())
                    : uid_number(hi_text);
      if (!lo || !hi) return bad();
      // RFC 3501 §9: "2:4" and "4:2" are the same set.
      out.ranges.emplace_back(std::min(*lo, *hi), std::max(*lo, *hi));
    }
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
    if (s.empty()) return bad();
  }
  return out;
}

std::string format_age(std::chrono::seconds age) {
  std::int64_t s = age.count();
  const char* sign = s < 0 ? "-" : "";
  if (s < 0) s = -s;
  if (s < 60) return fmt::format("{}{}s", sign, s);
  if (s < 3600) return fmt::format("{}{}m", sign, s / 60);
  if (s < 86400) return fmt::format("{}{}h{}m", sign, s / 3600, s % 3600 / 60);
  return fmt::format("{}{}d{}h", sign, s / 86400, s % 86400 / 3600);
}

std::optional<message_filter> message_filter::compile(const filter_spec& spec, std::string& error) {
  message_filter f;
  if (!spec.older_than.empty()) {
    f.older_than_ = parse_duration(spec.older_than, error);
    if (!f.older_than_) {
      error = "--older-than: " + error;
      return std::nullopt;
    }
  }
  if (!spec.newer_than.empty()) {
    f.newer_than_ = parse_duration(spec.newer_than, error);
    if (!f.newer_than_) {
      error = "--newer-than: " + error;
      return std::nullopt;
    }
  }
  f.from_ = compile_regex(spec.from, "--from", error);
  f.to_ = compile_regex(spec.to, "--to", error);
  f.subject_ = compile_regex(spec.subject, "--subject", error);
  if (!error.empty()) return std::nullopt;
  if (!spec.uid.empty()) {
    f.uids_ = parse_uid_list(spec.uid, error);
    if (!f.uids_) {
      error = "--uid: " + error;
      return std::nullopt;
    }
  }
  f.needs_headers_ = f.older_than_ || f.newer_than_ || f.from_ || f.to_ || f.subject_;
  f.any_ = f.needs_headers_ || f.uids_;
  return f;
}

bool message_filter::matches(const message_view& m, std::int64_t now) const {
  if (!uid_matches(m.uid)) return false;
  if (older_than_ || newer_than_) {
    // A message without any date cannot be said to be older or newer than
    // anything: it matches neither filter.
    const auto when = m.when();
    if (!when) return false;
    const std::int64_t age = now - *when;
    if (older_than_ && age <= older_than_->count()) return false;
    if (newer_than_ && age >= newer_than_->count()) return false;
  }
  if (from_ && !std::regex_search(m.headers.from, *from_)) return false;
  // --to also looks at Cc: the address that routed the mail to the mailbox
  // (GitLab's incoming+<project>@ address) may be in either.
  if (to_ && !std::regex_search(m.headers.to, *to_) && !std::regex_search(m.headers.cc, *to_))
    return false;
  if (subject_ && !std::regex_search(m.headers.subject, *subject_)) return false;
  return true;
}

}  // namespace mailroom::ops
