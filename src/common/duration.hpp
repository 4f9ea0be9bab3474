// Durations as operators write them: "90s", "15m", "6h", "2d", "1w", or a
// combination such as "1d12h". Shared by the operator commands' filters
// (--older-than) and the configuration (max_message_age).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace mailroom {

// nullopt (and `error` set) when malformed or longer than 1,000 years.
std::optional<std::chrono::seconds> parse_duration(std::string_view s, std::string& error);

}  // namespace mailroom
