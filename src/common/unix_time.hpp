// The wall clock as /metrics and the arrival times (INTERNALDATE, Graph's
// receivedDateTime) count it: whole seconds since the Unix epoch.
#pragma once

#include <chrono>
#include <cstdint>

namespace mailroom {

inline std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace mailroom
