// Helpers that read the YAML tree into the model and record diagnostics.
// Internal to the config library.
#pragma once

#include "config/erb.hpp"
#include "config/load.hpp"

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mailroom::config::detail {

// Shared state of one load: where diagnostics go and what must never be echoed.
class context {
 public:
  context(std::string file, const erb_output& erb, std::vector<diagnostic>& out)
      : file_(std::move(file)), erb_(erb), out_(out), erb_reported_(erb.warnings.size(), false) {}

  const std::string& file() const { return file_; }

  // 1-based line of the original file, 0 when yaml-cpp has no position.
  int line_of(const YAML::Node& n) const;
  // True when the node's text was produced (even partly) by ERB.
  bool from_erb(const YAML::Node& n) const;
  // True when ERB wrote (part of) a mapping key; narrower than from_erb so that
  // `passwrod: <%= ... %>` still names the misspelt key.
  bool key_from_erb(const YAML::Node& k) const;

  void error(int line, std::string key, std::string message);
  void warning(int line, std::string key, std::string message);

  // Reports, as warnings of the current mailbox and `key`, the ERB warnings
  // (erb_output::warnings) of tags whose output is part of the scalar
  // `value`. Each ERB warning is reported once.
  void report_erb_warnings(const YAML::Node& value, const std::string& key);
  // Reports the ERB warnings no key claimed (an ERB-written key, a value
  // nobody read) with their line only.
  void report_remaining_erb_warnings();

  // A scalar's text quoted for a message, or a placeholder when it may be a
  // secret: it came from ERB, it is long or multi-line, or it holds a known
  // secret.
  std::string shown(const YAML::Node& n) const;

  // Values that must never appear in a diagnostic; scrubbed at the end.
  void add_secret(const std::string& s);
  const std::vector<std::string>& secrets() const { return secrets_; }

  // Label of the mailbox being read ("" at top level).
  std::string mailbox;
  // Directory of the config file: relative file paths are resolved against it.
  std::string base_dir = ".";

 private:
  void add(diagnostic::level lvl, int line, std::string key, std::string message);

  std::string file_;
  const erb_output& erb_;
  std::vector<diagnostic>& out_;
  std::vector<std::string> secrets_;
  std::vector<bool> erb_reported_;  // parallel to erb_.warnings
};

// "a mapping", "a list", "null", "a quoted string", "a boolean", ...
std::string describe_kind(const YAML::Node& n);

// A YAML mapping whose keys may be written `:key` (Ruby symbol) or `key`.
// Duplicates and both spellings of one key are errors; keys nobody asked for
// become "unknown key" warnings.
class map_view {
 public:
  struct entry {
    std::string key;      // without the leading ':'
    std::string written;  // as written: ":email" or "email"
    YAML::Node key_node;
    YAML::Node value;
    int line = 0;
    bool used = false;
  };

  // `node` must be a map. `path` prefixes keys in diagnostics ("delivery_options").
  // `line` (default: the map's own position) is where missing keys are reported.
  map_view(context& ctx, const YAML::Node& node, std::string path, int line = -1);

  // Marks the key as known. nullptr when absent.
  entry* get(std::string_view key);
  bool has(std::string_view key) const;
  // Accepts the key without reading it.
  void ignore(std::string_view key) { get(key); }

  // "delivery_options.redis_url" for "redis_url".
  std::string path_of(std::string_view key) const;
  const std::string& path() const { return path_; }
  int line() const { return line_; }

  // Warns once for every key never asked for.
  void warn_unknown();
  // Warns for each present key in `keys`: known elsewhere, not used here.
  void warn_unused(std::span<const std::string_view> keys, const std::string& why);
  void warn_unused(std::initializer_list<std::string_view> keys, const std::string& why) {
    warn_unused(std::span<const std::string_view>(keys.begin(), keys.size()), why);
  }

  context& ctx;

 private:
  std::string path_;
  int line_ = 0;
  std::vector<entry> entries_;
  std::vector<std::string> asked_;  // every key looked up, for "did you mean"
};

// What an explicit `key: null` means.
enum class null_means {
  absent,  // the option's nil default (mail_room reads `options[:x] || default`)
  error,   // a mailbox field with a default: mail_room would crash on nil
};

// Each reader returns true when it stored a value; absent keys, null-as-absent
// and errors return false (errors are recorded).
bool read_string(map_view& m, std::string_view key, std::string& out,
                 null_means nm = null_means::absent);
bool read_secret(map_view& m, std::string_view key, secret& out,
                 null_means nm = null_means::absent);
// A string or :symbol with the leading ':' removed (delivery_method: :sidekiq).
bool read_symbol(map_view& m, std::string_view key, std::string& out,
                 null_means nm = null_means::absent);
bool read_bool(map_view& m, std::string_view key, bool& out, null_means nm = null_means::absent);
bool read_int(map_view& m, std::string_view key, long long lo, long long hi, long long& out,
              null_means nm = null_means::absent);
bool read_port(map_view& m, std::string_view key, std::uint16_t& out,
               null_means nm = null_means::absent);
// Seconds, integer or decimal, in [lo, hi].
bool read_seconds(map_view& m, std::string_view key, double lo, double hi, double& out,
                  null_means nm = null_means::absent);

// `ssl:` true|false|{verify_mode:, ca_file:, ca_path:}. A hash enables TLS.
bool read_tls(map_view& m, std::string_view key, tls_options& out,
              null_means nm = null_means::absent);
// A hash of TLS parameters only (redis_ssl_params): never toggles `enabled`.
void read_tls_params(map_view& m, tls_options& out);

// Parses "123", "-5", "1_000" as written in YAML 1.1. False for anything else.
bool parse_integer(std::string_view s, long long& out);

}  // namespace mailroom::config::detail
