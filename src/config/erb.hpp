// The ERB subset mailroom evaluates before YAML: <%= ENV[...] %>,
// <%= ENV.fetch(...) %> and <%= File.read(...) %> with a chain of
// .strip/.chomp/.to_json/.to_s/.to_i/.dump and a range index [a..b] (the
// Helm chart's .strip.dump[1..-2]), optionally wrapped in
// ERB::Util.url_encode(...) or URI.escape(...) (GitLab's Helm chart builds
// redis_url that way). Everything else is rejected, because GitLab's
// Rails-dependent template must be rendered once by Ruby instead.
#pragma once

#include "config/load.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailroom::config {

struct erb_error {
  int line = 0;  // 1-based line of the original text
  std::string message;
};

// Something worth telling the operator about an expression that did evaluate.
struct erb_warning {
  int line = 0;  // 1-based line of the tag in the original text
  // Index into erb_output::inserted of the tag's output, so the YAML reader
  // can name the mailbox and key the value went to; no_insert when the tag
  // produced none (its evaluation failed).
  std::size_t insert = no_insert;
  std::string message;  // never contains the inserted value
  static constexpr std::size_t no_insert = static_cast<std::size_t>(-1);
};

struct erb_output {
  std::string text;
  // line_map[i]: original 1-based line where output line i (0-based) starts.
  // Inserted values and trimmed newlines change the line count; diagnostics
  // always name lines of the file the operator wrote.
  std::vector<int> line_map;
  // Byte ranges [first, second) of `text` produced by ERB. Their content may
  // be a secret and is never echoed.
  std::vector<std::pair<std::size_t, std::size_t>> inserted;
  std::vector<std::string> inserted_values;
  std::vector<erb_error> errors;
  // File.read(...) of a secret file that other users can read (mode o+r).
  std::vector<erb_warning> warnings;

  // 1-based original line of the 0-based output line (clamped).
  int original_line(int output_line) const;
  // True when any ERB output lies on the 0-based output line.
  bool line_has_insert(int output_line) const;
  // True when ERB output overlaps [pos, pos + len) of `text`.
  bool overlaps_insert(std::size_t pos, std::size_t len) const;
};

// Largest file File.read(...) will insert: secrets and certificates, not data.
inline constexpr std::size_t erb_max_file_size = 1 << 20;

// `base_dir` resolves relative File.read paths. `env` must be callable.
erb_output render_erb(std::string_view text, const env_lookup& env, const std::string& base_dir);

// Ruby's String#to_json for a UTF-8 string: a JSON string literal with quotes.
std::string ruby_to_json(std::string_view s);
// Ruby's String#dump (a double-quoted literal), and s[first..last]
// (first...last when `exclusive`) by character; nothing where Ruby gives nil.
std::string ruby_dump(std::string_view s);
std::optional<std::string> ruby_slice(std::string_view s, long first, long last, bool exclusive);

}  // namespace mailroom::config
