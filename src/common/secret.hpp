// A value that must never reach a log line, an error message or a crash line.
// The only way to read it is reveal(), so every use is greppable.
#pragma once

#include <fmt/format.h>

#include <ostream>
#include <string>
#include <utility>

namespace mailroom {

class secret {
 public:
  secret() = default;
  explicit secret(std::string value) : value_(std::move(value)) {}

  const std::string& reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  bool operator==(const secret&) const = default;

  static constexpr const char* redacted = "[REDACTED]";

 private:
  std::string value_;
};

inline std::ostream& operator<<(std::ostream& os, const secret&) {
  return os << secret::redacted;
}

}  // namespace mailroom

template <>
struct fmt::formatter<mailroom::secret> : fmt::formatter<const char*> {
  template <typename Ctx>
  auto format(const mailroom::secret&, Ctx& ctx) const {
    return fmt::formatter<const char*>::format(mailroom::secret::redacted, ctx);
  }
};
