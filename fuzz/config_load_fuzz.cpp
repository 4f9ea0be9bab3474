// libFuzzer entry point: any bytes through the config loader (ERB + YAML +
// model). The loader must never crash, hang or throw, and every diagnostic
// must format.
#include "config/load.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // A fixed environment: results must not depend on the fuzzing host.
  auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "MAILROOM_FUZZ") return std::string("value: \"with\" quotes\n");
    return std::nullopt;
  };
  // Relative File.read paths resolve under a directory that does not exist.
  auto result = mailroom::config::load_string(text, "fuzz.yml", env, "/nonexistent-mailroom-fuzz");
  std::size_t total = 0;
  for (const auto& d : result.diagnostics) total += d.to_string().size();
  if (result.ok() != result.cfg.has_value()) __builtin_trap();
  return total == static_cast<std::size_t>(-1) ? 1 : 0;
}
