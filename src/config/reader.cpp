#include "config/reader.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>

namespace mailroom::config::detail {
namespace {

constexpr const char* hidden = "(value not shown)";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool is_quoted(const YAML::Node& n) {
  return n.Tag() == "!";
}

std::optional<bool> plain_bool(const YAML::Node& n) {
  if (!n.IsScalar() || is_quoted(n)) return std::nullopt;
  auto s = lower(n.Scalar());
  // YAML 1.1 booleans as Psych reads them (not y/n).
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  return std::nullopt;
}

bool parse_decimal(std::string_view s, double& out) {
  double d = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(d)) return false;
  out = d;
  return true;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// Handles null and non-scalar values shared by all scalar readers. Returns the
// entry when a scalar is there to read.
map_view::entry* scalar_entry(map_view& m, std::string_view key, null_means nm,
                              const char* expected) {
  auto* e = m.get(key);
  if (e == nullptr) return nullptr;
  if (e->value.IsNull()) {
    if (nm == null_means::error) {
      m.ctx.error(e->line, m.path_of(key), "must not be null (remove the key to use the default)");
    }
    return nullptr;
  }
  if (!e->value.IsScalar()) {
    m.ctx.error(e->line, m.path_of(key),
                fmt::format("must be {} (got {})", expected, describe_kind(e->value)));
    return nullptr;
  }
  return e;
}

}  // namespace

int context::line_of(const YAML::Node& n) const {
  auto mark = n.Mark();
  if (mark.line < 0) return 0;
  return erb_.original_line(mark.line);
}

bool context::from_erb(const YAML::Node& n) const {
  auto mark = n.Mark();
  if (mark.line < 0) return !erb_.inserted.empty();
  return erb_.line_has_insert(mark.line);
}

bool context::key_from_erb(const YAML::Node& k) const {
  auto mark = k.Mark();
  if (mark.pos < 0) return !erb_.inserted.empty();
  // Only the key's own text counts (+2 for quotes), not the value after it.
  if (erb_.overlaps_insert(static_cast<std::size_t>(mark.pos), k.Scalar().size() + 2)) return true;
  const std::string& text = k.Scalar();
  return std::any_of(erb_.inserted_values.begin(), erb_.inserted_values.end(),
                     [&](const std::string& s) { return text.find(s) != std::string::npos; });
}

std::string context::shown(const YAML::Node& n) const {
  if (!n.IsScalar()) return describe_kind(n);
  const std::string& text = n.Scalar();
  if (from_erb(n)) return "(a value from ERB, not shown)";
  if (text.size() > 64) return hidden;
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20) return hidden;
  }
  auto related = [&](const std::string& s) {
    return !s.empty() && (text.find(s) != std::string::npos ||
                          (!text.empty() && s.find(text) != std::string::npos));
  };
  if (std::any_of(secrets_.begin(), secrets_.end(), related)) return hidden;
  if (std::any_of(erb_.inserted_values.begin(), erb_.inserted_values.end(), related)) {
    return hidden;
  }
  // Numbers read better bare: "(got 1800)".
  long long i = 0;
  double d = 0;
  if (parse_integer(text, i) || parse_decimal(text, d)) return text;
  return "`" + text + "`";
}

void context::add_secret(const std::string& s) {
  if (!s.empty() && std::find(secrets_.begin(), secrets_.end(), s) == secrets_.end()) {
    secrets_.push_back(s);
  }
}

void context::error(int line, std::string key, std::string message) {
  add(diagnostic::level::error, line, std::move(key), std::move(message));
}

void context::warning(int line, std::string key, std::string message) {
  add(diagnostic::level::warning, line, std::move(key), std::move(message));
}

void context::report_erb_warnings(const YAML::Node& value, const std::string& key) {
  if (erb_.warnings.empty() || !value.IsScalar()) return;
  const auto mark = value.Mark();
  if (mark.pos < 0) return;
  // The scalar's text starts at its mark; +2 covers the quotes around it.
  // Escapes or block-scalar indentation can make the written text longer,
  // but a tag's output always starts inside this span.
  const auto begin = static_cast<std::size_t>(mark.pos);
  const std::size_t end = begin + value.Scalar().size() + 2;
  for (std::size_t i = 0; i < erb_.warnings.size(); ++i) {
    const auto& w = erb_.warnings[i];
    if (erb_reported_[i] || w.insert >= erb_.inserted.size()) continue;
    const std::size_t first = erb_.inserted[w.insert].first;
    if (first < begin || first > end) continue;
    erb_reported_[i] = true;
    warning(w.line, key, w.message);
  }
}

void context::report_remaining_erb_warnings() {
  const std::string saved = std::move(mailbox);
  mailbox.clear();
  for (std::size_t i = 0; i < erb_.warnings.size(); ++i) {
    if (erb_reported_[i]) continue;
    erb_reported_[i] = true;
    warning(erb_.warnings[i].line, "", erb_.warnings[i].message);
  }
  mailbox = saved;
}

void context::add(diagnostic::level lvl, int line, std::string key, std::string message) {
  diagnostic d;
  d.lvl = lvl;
  d.where = {file_, line};
  d.mailbox = mailbox;
  d.key = std::move(key);
  d.message = std::move(message);
  out_.push_back(std::move(d));
}

std::string describe_kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Undefined:
      return "nothing";
    case YAML::NodeType::Scalar:
      break;
  }
  if (is_quoted(n)) return "a quoted string";
  if (plain_bool(n)) return "a boolean";
  long long i = 0;
  if (parse_integer(n.Scalar(), i)) return "an integer";
  double d = 0;
  if (parse_decimal(n.Scalar(), d)) return "a decimal number";
  return "a string";
}

bool parse_integer(std::string_view s, long long& out) {
  std::size_t i = 0;
  bool negative = false;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) negative = s[i++] == '-';
  if (i >= s.size()) return false;
  std::string digits;
  for (; i < s.size(); ++i) {
    if (s[i] >= '0' && s[i] <= '9') {
      digits += s[i];
    } else if (s[i] == '_' && !digits.empty()) {
      continue;
    } else {
      return false;
    }
  }
  if (digits.empty()) return false;
  auto first = digits.find_first_not_of('0');
  if (first != std::string::npos && digits.size() - first > 18) return false;  // no overflow
  long long v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  out = negative ? -v : v;
  return true;
}

map_view::map_view(context& c, const YAML::Node& node, std::string path, int line)
    : ctx(c), path_(std::move(path)), line_(line >= 0 ? line : c.line_of(node)) {
  for (auto it = node.begin(); it != node.end(); ++it) {
    YAML::Node k = it->first;
    const int line = ctx.line_of(k);
    if (!k.IsScalar()) {
      ctx.error(line, path_, "keys must be plain words (got " + describe_kind(k) + ")");
      continue;
    }
    entry e;
    e.written = k.Scalar();
    e.key = e.written.size() > 1 && e.written.front() == ':' ? e.written.substr(1) : e.written;
    e.key_node = k;
    e.value = it->second;
    e.line = line;
    // Key names are echoed unless ERB wrote them.
    const std::string key_text = ctx.key_from_erb(k) ? "" : e.written;
    if (e.key == "<<") {
      ctx.error(line, path_, "YAML merge keys (`<<`) are not supported: write the keys out");
      continue;
    }
    auto dup = std::find_if(entries_.begin(), entries_.end(),
                            [&](const entry& x) { return x.key == e.key; });
    if (dup != entries_.end()) {
      if (key_text.empty() || dup->written.empty()) {
        ctx.error(line, path_, fmt::format("duplicate key (first at line {})", dup->line));
      } else if (dup->written == e.written) {
        ctx.error(line, path_of(e.key),
                  fmt::format("duplicate key `{}` (first at line {})", e.written, dup->line));
      } else {
        ctx.error(line, path_of(e.key),
                  fmt::format("both `{}` (line {}) and `{}` are given: write the key once",
                              dup->written, dup->line, e.written));
      }
      dup->used = true;  // do not also warn that it is unknown
      continue;
    }
    if (key_text.empty()) e.written.clear();  // marks an ERB-written key
    entries_.push_back(std::move(e));
  }
}

map_view::entry* map_view::get(std::string_view key) {
  if (std::find(asked_.begin(), asked_.end(), key) == asked_.end()) asked_.emplace_back(key);
  for (auto& e : entries_) {
    if (e.key == key) {
      e.used = true;
      ctx.report_erb_warnings(e.value, path_of(key));
      return &e;
    }
  }
  return nullptr;
}

bool map_view::has(std::string_view key) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const entry& e) { return e.key == key; });
}

std::string map_view::path_of(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void map_view::warn_unknown() {
  for (auto& e : entries_) {
    if (e.used) continue;
    e.used = true;
    if (e.written.empty()) {
      ctx.warning(e.line, path_, "unknown key (written by ERB, not shown) (ignored)");
      continue;
    }
    // Suggest the closest key this map understands, for typos like `emial`.
    std::string hint;
    std::size_t best = 3;
    for (const auto& k : asked_) {
      auto d = edit_distance(e.key, k);
      if (d < best && d * 3 <= k.size()) {
        best = d;
        hint = fmt::format("; did you mean `{}`?", k);
      }
    }
    ctx.warning(e.line, path_, fmt::format("unknown key `{}` (ignored){}", e.written, hint));
  }
}

void map_view::warn_unused(std::span<const std::string_view> keys, const std::string& why) {
  for (auto k : keys) {
    auto* e = get(k);
    if (e != nullptr) ctx.warning(e->line, path_of(k), why + " (ignored)");
  }
}

bool read_string(map_view& m, std::string_view key, std::string& out, null_means nm) {
  auto* e = scalar_entry(m, key, nm, "a string");
  if (e == nullptr) return false;
  out = e->value.Scalar();
  return true;
}

bool read_secret(map_view& m, std::string_view key, secret& out, null_means nm) {
  auto* e = m.get(key);
  if (e != nullptr && e->value.IsScalar()) m.ctx.add_secret(e->value.Scalar());
  std::string s;
  if (!read_string(m, key, s, nm)) return false;
  out = secret(std::move(s));
  return true;
}

bool read_symbol(map_view& m, std::string_view key, std::string& out, null_means nm) {
  if (!read_string(m, key, out, nm)) return false;
  if (out.size() > 1 && out.front() == ':') out.erase(0, 1);
  return true;
}

bool read_bool(map_view& m, std::string_view key, bool& out, null_means nm) {
  auto* e = scalar_entry(m, key, nm, "true or false");
  if (e == nullptr) return false;
  if (auto b = plain_bool(e->value)) {
    out = *b;
    return true;
  }
  if (is_quoted(e->value)) {
    m.ctx.error(e->line, m.path_of(key),
                "must be true or false (got a quoted string, which mail_room treats as true)");
  } else {
    m.ctx.error(e->line, m.path_of(key),
                "must be true or false (got " + describe_kind(e->value) + ")");
  }
  return false;
}

bool read_int(map_view& m, std::string_view key, long long lo, long long hi, long long& out,
              null_means nm) {
  auto* e = scalar_entry(m, key, nm, "an integer");
  if (e == nullptr) return false;
  long long v = 0;
  // A quoted "993" is accepted: mail_room hands such values to Ruby code that
  // mostly copes with strings of digits.
  if (!parse_integer(e->value.Scalar(), v)) {
    m.ctx.error(e->line, m.path_of(key),
                "must be an integer (got " + describe_kind(e->value) + ")");
    return false;
  }
  if (v < lo || v > hi) {
    m.ctx.error(e->line, m.path_of(key),
                fmt::format("must be between {} and {} (got {})", lo, hi, m.ctx.shown(e->value)));
    return false;
  }
  out = v;
  return true;
}

bool read_port(map_view& m, std::string_view key, std::uint16_t& out, null_means nm) {
  long long v = 0;
  if (!read_int(m, key, 1, 65535, v, nm)) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

bool read_seconds(map_view& m, std::string_view key, double lo, double hi, double& out,
                  null_means nm) {
  auto* e = scalar_entry(m, key, nm, "a number of seconds");
  if (e == nullptr) return false;
  const std::string& s = e->value.Scalar();
  double v = 0;
  long long i = 0;
  if (parse_integer(s, i)) {
    v = static_cast<double>(i);
  } else if (!parse_decimal(s, v)) {
    m.ctx.error(e->line, m.path_of(key),
                "must be a number of seconds (got " + describe_kind(e->value) + ")");
    return false;
  }
  if (v < lo || v > hi) {
    m.ctx.error(
        e->line, m.path_of(key),
        fmt::format("must be between {} and {} seconds (got {})", lo, hi, m.ctx.shown(e->value)));
    return false;
  }
  out = v;
  return true;
}

void read_tls_params(map_view& m, tls_options& out) {
  std::string mode;
  if (read_symbol(m, "verify_mode", mode)) {
    auto l = lower(mode);
    long long n = 0;
    if (l == "none" || (parse_integer(l, n) && n == 0)) {
      out.verify_peer = false;
      m.ctx.warning(m.get("verify_mode")->line, m.path_of("verify_mode"),
                    "certificate verification is off: a machine in the network path can "
                    "impersonate the server and read the credentials and the mail");
    } else if (l == "peer" || l == "client_once" || l == "fail_if_no_peer_cert" ||
               (parse_integer(l, n) && n > 0)) {
      // client_once and fail_if_no_peer_cert only matter to servers; as a
      // client they verify the peer.
      out.verify_peer = true;
    } else {
      auto* e = m.get("verify_mode");
      m.ctx.error(e->line, m.path_of("verify_mode"),
                  "unknown verify_mode " + m.ctx.shown(e->value) + ": expected none or peer");
    }
  }
  read_string(m, "ca_file", out.ca_file);
  read_string(m, "ca_path", out.ca_path);
  m.warn_unknown();
}

bool read_tls(map_view& m, std::string_view key, tls_options& out, null_means nm) {
  auto* e = m.get(key);
  if (e == nullptr) return false;
  if (e->value.IsMap()) {
    out.enabled = true;
    map_view sub(m.ctx, e->value, m.path_of(key));
    read_tls_params(sub, out);
    return true;
  }
  if (e->value.IsScalar() && !plain_bool(e->value)) {
    m.ctx.error(e->line, m.path_of(key),
                "must be true, false or a mapping with verify_mode, ca_file, ca_path (got " +
                    describe_kind(e->value) + ")");
    return false;
  }
  bool enabled = true;
  if (!read_bool(m, key, enabled, nm)) return false;
  out.enabled = enabled;
  return true;
}

}  // namespace mailroom::config::detail
