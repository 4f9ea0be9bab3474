// Loading a mail_room configuration file: ERB subset, then YAML, then the
// model in model.hpp, with every problem reported as a diagnostic.
//
// A diagnostic never contains a secret: values of secret keys, URL passwords
// and anything inserted by ERB are never echoed.
#pragma once

#include "config/model.hpp"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::config {

struct diagnostic {
  enum class level { error, warning } lvl = level::error;
  source_location where;  // file + 1-based line of the original file (0: whole file)
  std::string mailbox;    // "alice@example.com/inbox", "mailboxes[1]", or "" for top level
  std::string key;        // "delivery_options.redis_url", "idle_timeout", ...
  std::string message;    // never contains a secret value

  // "config.yml:12: mailbox alice@example.com/inbox: idle_timeout: must be at most 1740 (got 1800)"
  // Warnings carry "warning: " after the location.
  std::string to_string() const;
};

struct load_result {
  // Set only when there is no error (warnings allowed), so a caller cannot run
  // with a half-read configuration.
  std::optional<config> cfg;
  std::vector<diagnostic> diagnostics;

  bool ok() const;  // no error diagnostics
  std::size_t error_count() const;
  std::size_t warning_count() const;
};

// Environment lookup for ERB's ENV[...]; an empty function means getenv.
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads `path`; relative File.read(...) and jwt_secret_path are resolved
// against the directory holding `path`.
load_result load_file(const std::string& path, env_lookup env = {});

// `file_name` only names the text in diagnostics and config::path.
load_result load_string(std::string_view text, const std::string& file_name, env_lookup env = {},
                        const std::string& base_dir = ".");

// A URL as it may be shown to people: the password, the query and the
// fragment (either may carry a token) removed; the user name kept.
std::string redact_url(std::string_view url);

}  // namespace mailroom::config
