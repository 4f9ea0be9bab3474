// The message filters shared by the operator commands: --older-than,
// --newer-than, --from, --to, --subject, --uid. Parsing reports usage errors
// as text (exit code 2); matching is pure, so both are unit-tested.
#pragma once

#include "common/duration.hpp"
#include "ops/headers.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailroom::ops {

using mailroom::parse_duration;  // common/duration.hpp

// "1,5,10:20" (RFC 3501 sequence-set syntax without "*" on the left; "10:*"
// means 10 and above). Ranges may be written high:low.
struct uid_ranges {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges;  // inclusive, low <= high
  bool contains(std::uint32_t uid) const;
};
std::optional<uid_ranges> parse_uid_list(std::string_view s, std::string& error);

// "3d4h", "5m", "12s": a short human age (two units at most).
std::string format_age(std::chrono::seconds age);

// What the operator typed; empty strings mean "not given".
struct filter_spec {
  std::string older_than;
  std::string newer_than;
  std::string from;
  std::string to;
  std::string subject;
  std::string uid;
};

// One message as the filters see it.
struct message_view {
  std::uint32_t uid = 0;
  std::optional<std::int64_t> internal_date;
  message_headers headers;

  // The Date header, else INTERNALDATE (a message without Date still has an age).
  std::optional<std::int64_t> when() const { return headers.date ? headers.date : internal_date; }
};

class message_filter {
 public:
  // Compiles `spec`; nullopt with `error` set for a usage error.
  static std::optional<message_filter> compile(const filter_spec& spec, std::string& error);

  // True when some filter was given (destructive commands require one, a
  // --uid list, or --all).
  bool any() const { return any_; }
  // True when matching needs the header fields (anything but --uid).
  bool needs_headers() const { return needs_headers_; }
  // The --uid filter alone; no --uid: every UID passes.
  bool uid_matches(std::uint32_t uid) const { return !uids_ || uids_->contains(uid); }
  // All filters; `now` in seconds since the epoch.
  bool matches(const message_view& m, std::int64_t now) const;

 private:
  bool any_ = false;
  bool needs_headers_ = false;
  std::optional<std::chrono::seconds> older_than_;
  std::optional<std::chrono::seconds> newer_than_;
  std::optional<std::regex> from_, to_, subject_;
  std::optional<uid_ranges> uids_;
};

}  // namespace mailroom::ops
