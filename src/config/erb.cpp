#include "config/erb.hpp"

#include "common/json_string.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>
#include <variant>

namespace mailroom::config {
namespace {

constexpr const char* unsupported_hint =
    "mailroom evaluates only ENV[...], ENV.fetch(...) and File.read(...) with "
    ".strip/.chomp/.to_json/.dump and [a..b], optionally inside ERB::Util.url_encode(...); render "
    "a "
    "template that "
    "needs Ruby (GitLab Omnibus's "
    "config/mail_room.yml) to plain YAML first, see README, "
    "'Rendering GitLab's ERB config'";

// A Ruby value as far as the subset needs: nil, String or Integer (kept as
// decimal text so that to_i never overflows).
struct value {
  enum class kind { nil, string, integer } k = kind::nil;
  std::string s;
};

struct method_call {
  std::string name;  // "slice" for [first..last]
  long first = 0, last = 0;
  bool exclusive = false;  // [first...last]
};

struct expression {
  enum class kind {
    env_index,   // ENV['X']
    env_fetch,   // ENV.fetch('X'[, default])
    file_read,   // File.read('path')
    url_encode,  // ERB::Util.url_encode(expr): the Helm chart's Redis password
    uri_escape,  // URI.escape(expr): older Helm charts
  } k = kind::env_index;
  std::string arg;                     // variable name or path
  std::optional<value> fetch_default;  // ENV.fetch's second argument
  std::unique_ptr<expression> inner;   // the wrapped expression
  std::vector<method_call> methods;
};

// Wrappers nest at most this deep; the input is untrusted.
constexpr int max_nesting = 4;

bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Recursive-descent parser over one tag's content. Any deviation from the
// grammar makes the whole expression unsupported.
class parser {
 public:
  explicit parser(std::string_view src) : src_(src) {}

  std::optional<expression> parse() {
    auto e = parse_expression(0);
    skip_ws();
    if (!e || !at_end()) return std::nullopt;
    return e;
  }

 private:
  // primary ('.' method)*
  std::optional<expression> parse_expression(int depth) {
    if (depth > max_nesting) return std::nullopt;
    expression e;
    skip_ws();
    match("::");
    if (match_word("ENV")) {
      skip_ws();
      if (match("[")) {
        skip_ws();
        auto name = parse_string();
        skip_ws();
        if (!name || !match("]")) return std::nullopt;
        e.k = expression::kind::env_index;
        e.arg = *name;
      } else if (match(".")) {
        skip_ws();
        if (!match_word("fetch")) return std::nullopt;
        skip_ws();
        if (!match("(")) return std::nullopt;
        skip_ws();
        auto name = parse_string();
        if (!name) return std::nullopt;
        skip_ws();
        if (match(",")) {
          skip_ws();
          e.fetch_default = parse_literal();
          if (!e.fetch_default) return std::nullopt;
          skip_ws();
        }
        if (!match(")")) return std::nullopt;
        e.k = expression::kind::env_fetch;
        e.arg = *name;
      } else {
        return std::nullopt;
      }
    } else if (match_word("File")) {
      skip_ws();
      if (!match(".")) return std::nullopt;
      skip_ws();
      if (!match_word("read")) return std::nullopt;
      skip_ws();
      if (!match("(")) return std::nullopt;
      skip_ws();
      auto path = parse_string();
      skip_ws();
      if (!path || !match(")")) return std::nullopt;
      e.k = expression::kind::file_read;
      e.arg = *path;
    } else if (match_word("ERB")) {
      // ERB::Util.url_encode or ERB::Util::url_encode
      if (!match("::") || !match_word("Util") || !(match("::") || match(".")) ||
          !match_word("url_encode")) {
        return std::nullopt;
      }
      e.k = expression::kind::url_encode;
      if (!parse_wrapped(e, depth)) return std::nullopt;
    } else if (match_word("URI")) {
      skip_ws();
      if (!match(".") || !(match_word("escape") || match_word("encode"))) return std::nullopt;
      e.k = expression::kind::uri_escape;
      if (!parse_wrapped(e, depth)) return std::nullopt;
    } else {
      return std::nullopt;
    }
    for (;;) {
      std::size_t before = pos_;
      skip_ws();
      // A range index: the Helm chart's File.read(...).strip.dump[1..-2]
      // (the dumped string without its quotes).
      if (match("[")) {
        method_call slice{"slice"};
        skip_ws();
        auto first = parse_small_int();
        if (!first) return std::nullopt;
        skip_ws();
        if (match("...")) {
          slice.exclusive = true;
        } else if (!match("..")) {
          return std::nullopt;
        }
        skip_ws();
        auto last = parse_small_int();
        skip_ws();
        if (!last || !match("]")) return std::nullopt;
        slice.first = *first;
        slice.last = *last;
        e.methods.push_back(slice);
        continue;
      }
      if (!match(".")) {
        pos_ = before;
        break;
      }
      skip_ws();
      std::string name;
      while (!at_end() && is_ident_char(src_[pos_])) name += src_[pos_++];
      static constexpr std::string_view known[] = {"strip", "chomp", "to_json",
                                                   "to_s",  "to_i",  "dump"};
      if (std::find(std::begin(known), std::end(known), name) == std::end(known)) {
        return std::nullopt;
      }
      std::size_t after_name = pos_;
      skip_ws();
      if (match("(")) {
        skip_ws();
        if (!match(")")) return std::nullopt;  // no arguments (chomp("x") is not supported)
      } else {
        pos_ = after_name;
      }
      e.methods.push_back({name});
    }
    return e;
  }

  // An optionally negative integer of at most 6 digits (a string index).
  std::optional<long> parse_small_int() {
    const bool negative = match("-");
    long n = 0;
    int digits = 0;
    while (!at_end() && src_[pos_] >= '0' && src_[pos_] <= '9' && digits < 7) {
      n = n * 10 + (src_[pos_++] - '0');
      ++digits;
    }
    if (digits == 0 || digits > 6) return std::nullopt;
    return negative ? -n : n;
  }

  // "(" expression ")" after a wrapper's name.
  bool parse_wrapped(expression& e, int depth) {
    skip_ws();
    if (!match("(")) return false;
    auto inner = parse_expression(depth + 1);
    skip_ws();
    if (!inner || !match(")")) return false;
    e.inner = std::make_unique<expression>(std::move(*inner));
    return true;
  }

  bool at_end() const { return pos_ >= src_.size(); }
  void skip_ws() {
    while (!at_end() &&
           (src_[pos_] == ' ' || src_[pos_] == '\t' || src_[pos_] == '\n' || src_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool match(std::string_view s) {
    if (src_.substr(pos_, s.size()) != s) return false;
    pos_ += s.size();
    return true;
  }
  // A whole identifier: "ENV" must not match "ENVX".
  bool match_word(std::string_view w) {
    if (src_.substr(pos_, w.size()) != w) return false;
    if (pos_ + w.size() < src_.size() && is_ident_char(src_[pos_ + w.size()])) return false;
    pos_ += w.size();
    return true;
  }

  std::optional<value> parse_literal() {
    if (match_word("nil")) return value{};
    if (!at_end() && (src_[pos_] == '\'' || src_[pos_] == '"')) {
      auto s = parse_string();
      if (!s) return std::nullopt;
      return value{value::kind::string, *s};
    }
    std::string digits;
    if (!at_end() && src_[pos_] == '-') digits += src_[pos_++];
    while (!at_end() && src_[pos_] >= '0' && src_[pos_] <= '9') digits += src_[pos_++];
    if (digits.empty() || digits == "-") return std::nullopt;
    return value{value::kind::integer, digits};
  }

  // Ruby string literals without interpolation.
  std::optional<std::string> parse_string() {
    if (at_end()) return std::nullopt;
    const char quote = src_[pos_];
    if (quote != '\'' && quote != '"') return std::nullopt;
    ++pos_;
    std::string out;
    while (!at_end()) {
      char c = src_[pos_++];
      if (c == quote) return out;
      if (quote == '"' && c == '#' && !at_end() && src_[pos_] == '{') return std::nullopt;
      if (c != '\\' || at_end()) {
        out += c;
        continue;
      }
      char n = src_[pos_++];
      if (quote == '\'') {
        // Single quotes only unescape \\ and \'.
        if (n != '\\' && n != '\'') out += '\\';
        out += n;
        continue;
      }
      switch (n) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 's':
          out += ' ';
          break;
        case 'e':
          out += '\x1b';
          break;
        default:
          out += n;
          break;
      }
    }
    return std::nullopt;
  }

  std::string_view src_;
  std::size_t pos_ = 0;
};

std::string quote_for_message(const std::string& s) {
  // Names and paths written in the file, shown as the operator wrote them.
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string describe(const expression& e) {
  switch (e.k) {
    case expression::kind::env_index:
      return "ENV[" + quote_for_message(e.arg) + "]";
    case expression::kind::env_fetch:
      return "ENV.fetch(" + quote_for_message(e.arg) + ")";
    case expression::kind::file_read:
      return "File.read(" + quote_for_message(e.arg) + ")";
    case expression::kind::url_encode:
      return "ERB::Util.url_encode(" + describe(*e.inner) + ")";
    case expression::kind::uri_escape:
      return "URI.escape(" + describe(*e.inner) + ")";
  }
  return {};
}

// ERB::Util.url_encode keeps only unreserved characters; URI.escape also
// keeps the reserved ones (it was meant for whole URLs).
std::string percent_encode(std::string_view s, bool keep_reserved) {
  static constexpr std::string_view unreserved = "-_.~";
  static constexpr std::string_view reserved = "!*'();/?:@&=+$,[]";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || unreserved.find(c) != std::string_view::npos ||
        (keep_reserved && reserved.find(c) != std::string_view::npos)) {
      out += c;
    } else {
      out += fmt::format("%{:02X}", u);
    }
  }
  return out;
}

// The tag's source for the "unsupported" message: one line, bounded.
std::string excerpt(std::string_view content) {
  std::string out;
  bool space = false;
  for (char c : content) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  if (out.size() > 80) out = out.substr(0, 77) + "...";
  return out;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// Ruby's String#to_i: optional whitespace and sign, digits with single
// underscores between them, everything after ignored; no digits gives 0.
std::string ruby_to_i(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
  bool negative = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
  std::string digits;
  while (i < s.size()) {
    if (s[i] >= '0' && s[i] <= '9') {
      digits += s[i++];
    } else if (s[i] == '_' && !digits.empty() && i + 1 < s.size() && s[i + 1] >= '0' &&
               s[i + 1] <= '9') {
      ++i;
    } else {
      break;
    }
  }
  auto first = digits.find_first_not_of('0');
  if (first == std::string::npos) return "0";
  return (negative ? "-" : "") + digits.substr(first);
}

struct eval_error {
  std::string message;
};

// `mode` receives the file's permission bits (of the target, when `path` is
// a symlink, as Kubernetes mounts secrets).
std::optional<std::string> read_small_file(const std::string& path, std::string& error,
                                           std::filesystem::perms& mode) {
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (ec) {
    error = ec.message();
    return std::nullopt;
  }
  mode = st.permissions();
  if (!std::filesystem::is_regular_file(st)) {
    // Devices and FIFOs could block or never end.
    error = "not a regular file";
    return std::nullopt;
  }
  auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    error = ec.message();
    return std::nullopt;
  }
  if (size > erb_max_file_size) {
    error = fmt::format("larger than {} bytes", erb_max_file_size);
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    error = "read error";
    return std::nullopt;
  }
  return ss.str();
}

// File.read(...) inserts secrets (passwords, tokens): a file any local user
// can read (S_IROTH) leaks them to every account and service on the host.
std::optional<std::string> readable_by_others(const std::string& what,
                                              const std::filesystem::path& written,
                                              const std::filesystem::path& resolved,
                                              std::filesystem::perms mode) {
  using std::filesystem::perms;
  if ((mode & perms::others_read) == perms::none) return std::nullopt;
  // A relative path is shown resolved too: chmod needs the real file.
  const std::string file =
      written.is_relative() ? "the file " + quote_for_message(resolved.string()) : "the file";
  return fmt::format("{}: {} is readable by other users (mode {:04o}); chmod o-r it", what, file,
                     static_cast<unsigned>(mode) & 07777);
}

// `notes` collects warnings about expressions that evaluated fine.
std::variant<value, eval_error> evaluate(const expression& e, const env_lookup& env,
                                         const std::string& base_dir,
                                         std::vector<std::string>& notes) {
  // Wrapped expressions recurse at most max_nesting deep.
  value v;
  const std::string what = describe(e);
  switch (e.k) {
    case expression::kind::env_index: {
      auto found = env(e.arg);
      if (found) v = {value::kind::string, *found};
      break;
    }
    case expression::kind::env_fetch: {
      auto found = env(e.arg);
      if (found) {
        v = {value::kind::string, *found};
      } else if (e.fetch_default) {
        v = *e.fetch_default;
      } else {
        return eval_error{what + ": environment variable " + e.arg +
                          " is not set and no default is given (Ruby: KeyError)"};
      }
      break;
    }
    case expression::kind::url_encode:
    case expression::kind::uri_escape: {
      auto inner = evaluate(*e.inner, env, base_dir, notes);
      if (std::holds_alternative<eval_error>(inner)) return inner;
      const auto& in = std::get<value>(inner);
      v = {value::kind::string,
           percent_encode(in.s, e.k == expression::kind::uri_escape)};  // nil.to_s is ""
      break;
    }
    case expression::kind::file_read: {
      std::filesystem::path p(e.arg);
      if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
      std::string error;
      auto mode = std::filesystem::perms::none;
      auto content = read_small_file(p.string(), error, mode);
      if (!content) {
        return eval_error{what + ": cannot read " + quote_for_message(p.string()) + ": " + error};
      }
      if (auto note = readable_by_others(what, e.arg, p, mode)) notes.push_back(std::move(*note));
      v = {value::kind::string, std::move(*content)};
      break;
    }
  }
  for (const auto& m : e.methods) {
    if (m.name == "to_s") {
      if (v.k == value::kind::nil) v = {value::kind::string, ""};
      v.k = value::kind::string;
    } else if (m.name == "to_i") {
      v = {value::kind::integer, v.k == value::kind::nil ? "0" : ruby_to_i(v.s)};
    } else if (m.name == "to_json") {
      if (v.k == value::kind::nil) {
        v = {value::kind::string, "null"};
      } else if (v.k == value::kind::integer) {
        v.k = value::kind::string;
      } else {
        if (!valid_utf8(v.s)) {
          return eval_error{what + ": the value is not valid UTF-8, so ." + m.name +
                            " fails (Ruby: JSON::GeneratorError)"};
        }
        v.s = ruby_to_json(v.s);
      }
    } else {  // strip, chomp, dump, [a..b]: String only
      if (v.k != value::kind::string) {
        std::string why = v.k == value::kind::nil ? " is not set" : " is an Integer here";
        return eval_error{what + why + ", so ." + m.name + " fails (Ruby: undefined method `" +
                          m.name + "'); use ENV.fetch(name, \"\") or .to_s first"};
      }
      if (m.name == "dump") {
        v.s = ruby_dump(v.s);
      } else if (m.name == "slice") {
        auto sliced = ruby_slice(v.s, m.first, m.last, m.exclusive);
        if (!sliced) {
          v = value{};  // Ruby: nil when the range starts beyond the string
        } else {
          v.s = std::move(*sliced);
        }
      } else if (m.name == "strip") {
        static constexpr std::string_view ws(" \t\n\v\f\r\0", 7);
        auto first = v.s.find_first_not_of(ws);
        if (first == std::string::npos) {
          v.s.clear();
        } else {
          v.s = v.s.substr(first, v.s.find_last_not_of(ws) - first + 1);
        }
      } else {
        if (v.s.ends_with("\r\n")) {
          v.s.resize(v.s.size() - 2);
        } else if (v.s.ends_with('\n') || v.s.ends_with('\r')) {
          v.s.pop_back();
        }
      }
    }
  }
  return v;
}

}  // namespace

std::string ruby_dump(std::string_view s) {
  // Ruby's String#dump of a UTF-8 string: printable ASCII as it is, the
  // usual backslash escapes, "#" escaped before {, $ and @ (interpolation),
  // other characters as \uXXXX (\u{X...} beyond the BMP), and the bytes of
  // invalid sequences as \xHH.
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      case '\v':
        out += "\\v";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\a':
        out += "\\a";
        ++i;
        continue;
      case 0x1b:
        out += "\\e";
        ++i;
        continue;
      case '#':
        out += (i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '$' || s[i + 1] == '@')) ? "\\#"
                                                                                             : "#";
        ++i;
        continue;
      default:
        break;
    }
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // A multi-byte UTF-8 sequence, checked as valid_utf8 would.
    std::size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (c >= 0xf5) len = 0;
    if (len > 0 && i + len <= s.size() && valid_utf8(s.substr(i, len))) {
      std::uint32_t cp = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
      for (std::size_t k = 1; k < len; ++k)
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
      out += cp > 0xffff ? fmt::format("\\u{{{:X}}}", cp) : fmt::format("\\u{:04X}", cp);
      i += len;
      continue;
    }
    out += fmt::format("\\x{:02X}", c);
    ++i;
  }
  out += '"';
  return out;
}

std::optional<std::string> ruby_slice(std::string_view s, long first, long last, bool exclusive) {
  // Ruby indexes a (valid UTF-8) string by character: find where each starts.
  std::vector<std::size_t> starts;
  const bool chars = valid_utf8(s);
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!chars || (static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) starts.push_back(i);
  const long n = static_cast<long>(starts.size());
  if (first < 0) first += n;
  if (last < 0) last += n;
  if (first < 0 || first > n) return std::nullopt;
  long end = exclusive ? last : last + 1;  // one past the last character
  end = std::min(end, n);
  if (end <= first) return std::string();
  const std::size_t from = starts[static_cast<std::size_t>(first)];
  const std::size_t to = end == n ? s.size() : starts[static_cast<std::size_t>(end)];
  return std::string(s.substr(from, to - from));
}

std::string ruby_to_json(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

int erb_output::original_line(int output_line) const {
  if (line_map.empty()) return output_line + 1;
  if (output_line < 0) return line_map.front();
  if (static_cast<std::size_t>(output_line) >= line_map.size()) return line_map.back();
  return line_map[static_cast<std::size_t>(output_line)];
}

bool erb_output::line_has_insert(int output_line) const {
  if (inserted.empty() || output_line < 0) return false;
  // Output line boundaries are recomputed from the text; configs are small.
  std::size_t begin = 0;
  for (int l = 0; l < output_line; ++l) {
    begin = text.find('\n', begin);
    if (begin == std::string::npos) return false;
    ++begin;
  }
  std::size_t end = text.find('\n', begin);
  if (end == std::string::npos) end = text.size();
  return overlaps_insert(begin, end - begin + 1);
}

bool erb_output::overlaps_insert(std::size_t pos, std::size_t len) const {
  for (const auto& [first, last] : inserted) {
    if (first < pos + len && last > pos) return true;
    // An empty insertion (unset ENV) still marks its position.
    if (first == last && first >= pos && first < pos + len) return true;
  }
  return false;
}

erb_output render_erb(std::string_view text, const env_lookup& env, const std::string& base_dir) {
  erb_output out;
  out.line_map.push_back(1);
  int line = 1;  // original line at the read position

  // Copies original text, starting a new output line at each newline.
  auto copy_original = [&](std::string_view chunk) {
    for (char c : chunk) {
      out.text += c;
      if (c == '\n') {
        ++line;
        out.line_map.push_back(line);
      }
    }
  };

  // A Ruby template has dozens of tags: the first one carries the advice,
  // a few more are listed, the rest only counted.
  int unsupported_count = 0;
  int first_unsupported_line = 0;
  constexpr int max_listed = 5;
  auto unsupported = [&](int at, std::string_view content) {
    ++unsupported_count;
    if (unsupported_count == 1) {
      first_unsupported_line = at;
      out.errors.push_back(
          {at, "unsupported ERB expression `" + excerpt(content) + "`: " + unsupported_hint});
    } else if (unsupported_count <= max_listed) {
      out.errors.push_back({at, "unsupported ERB expression `" + excerpt(content) +
                                    fmt::format("` (see line {})", first_unsupported_line)});
    }
  };

  std::size_t i = 0;
  while (i < text.size()) {
    auto open = text.find("<%", i);
    if (open == std::string_view::npos) {
      copy_original(text.substr(i));
      break;
    }
    copy_original(text.substr(i, open - i));
    if (text.substr(open, 3) == "<%%") {  // ERB's escape for a literal "<%"
      out.text += "<%";
      i = open + 3;
      continue;
    }
    const int tag_line = line;
    auto close = text.find("%>", open + 2);
    if (close == std::string_view::npos) {
      out.errors.push_back({tag_line, "unterminated ERB tag: `<%` without a closing `%>`"});
      break;
    }
    std::string_view content = text.substr(open + 2, close - open - 2);
    line += static_cast<int>(std::count(content.begin(), content.end(), '\n'));
    i = close + 2;
    const bool trim_newline = content.ends_with('-');
    if (trim_newline) content.remove_suffix(1);

    if (content.starts_with('#')) {
      // A comment produces nothing.
    } else if (content.starts_with('=')) {
      content.remove_prefix(1);
      auto expr = parser(content).parse();
      if (!expr) {
        unsupported(tag_line, content);
      } else {
        std::vector<std::string> notes;
        auto result = evaluate(*expr, env, base_dir, notes);
        std::size_t insert = erb_warning::no_insert;
        if (auto* err = std::get_if<eval_error>(&result)) {
          out.errors.push_back({tag_line, err->message});
        } else {
          const auto& v = std::get<value>(result);
          std::size_t begin = out.text.size();
          for (char c : v.s) {
            out.text += c;
            // Inserted lines belong to the tag's line.
            if (c == '\n') out.line_map.push_back(tag_line);
          }
          out.inserted.emplace_back(begin, out.text.size());
          insert = out.inserted.size() - 1;
          if (!v.s.empty()) out.inserted_values.push_back(v.s);
        }
        for (auto& note : notes) out.warnings.push_back({tag_line, insert, std::move(note)});
      }
    } else {
      if (content.starts_with('-')) content.remove_prefix(1);  // "<%-" in trim mode
      if (!excerpt(content).empty()) unsupported(tag_line, content);
    }

    if (trim_newline) {
      if (text.substr(i, 2) == "\r\n") {
        i += 2;
        ++line;
      } else if (text.substr(i, 1) == "\n") {
        i += 1;
        ++line;
      }
      // The next output line now continues the trimmed one; lines after the
      // next newline map to their true original line via `line`.
    }
  }
  if (unsupported_count > max_listed) {
    out.errors.push_back(
        {first_unsupported_line, fmt::format("{} more unsupported ERB expressions not listed",
                                             unsupported_count - max_listed)});
  }
  return out;
}

}  // namespace mailroom::config
