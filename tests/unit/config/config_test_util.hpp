// Helpers for the config loader tests: temp files and diagnostic lookups.
#pragma once

#include "config/load.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace mailroom::config::test {

// A file under the system temp directory, removed when the test ends. Names
// are unique per process and call so parallel test runs never collide.
class temp_file {
 public:
  explicit temp_file(const std::string& content,
                     std::filesystem::perms mode = std::filesystem::perms::owner_read |
                                                   std::filesystem::perms::owner_write) {
    static std::atomic<int> counter{0};
    path_ =
        std::filesystem::temp_directory_path() /
        ("mailroom-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::ofstream(path_, std::ios::binary) << content;
    std::filesystem::permissions(path_, mode);
  }
  ~temp_file() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;

  std::string path() const { return path_.string(); }
  std::string dir() const { return path_.parent_path().string(); }
  std::string name() const { return path_.filename().string(); }

 private:
  std::filesystem::path path_;
};

inline env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// No environment at all: tests never depend on the runner's variables.
inline env_lookup no_env() {
  return env_of({});
}

inline load_result load(const std::string& yaml, env_lookup env = no_env(),
                        const std::string& base_dir = ".") {
  return load_string(yaml, "config.yml", std::move(env), base_dir);
}

inline std::vector<std::string> lines_of(const load_result& r) {
  std::vector<std::string> out;
  for (const auto& d : r.diagnostics) out.push_back(d.to_string());
  return out;
}

inline std::string dump(const load_result& r) {
  std::string out;
  for (const auto& l : lines_of(r)) out += "  " + l + "\n";
  return out;
}

// The first diagnostic whose to_string() contains `needle`, or nullptr.
inline const diagnostic* find_diag(const load_result& r, const std::string& needle) {
  for (const auto& d : r.diagnostics) {
    if (d.to_string().find(needle) != std::string::npos) return &d;
  }
  return nullptr;
}

// Asserts a diagnostic with exactly this to_string() exists.
#define EXPECT_DIAG(result, text)                                           \
  EXPECT_NE(::mailroom::config::test::find_diag((result), (text)), nullptr) \
      << "expected a diagnostic containing: " << (text) << "\ngot:\n"       \
      << ::mailroom::config::test::dump(result)

// A minimal valid mailbox, for tests that change one thing.
inline const char* minimal_mailbox =
    "mailboxes:\n"
    "  - email: alice@example.com\n"
    "    password: pw\n"
    "    name: inbox\n"
    "    delivery_method: noop\n";

}  // namespace mailroom::config::test
