// Entry points: ERB, then YAML, then the top level (mailboxes, health_check,
// cluster).
#include "config/load.hpp"

#include "config/erb.hpp"
#include "config/parse.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mailroom::config {
namespace {

// Larger inputs are not configuration files; refusing them keeps yaml-cpp's
// memory use bounded. A mailbox entry with TLS options takes ~430 bytes, so
// 10,000 mailboxes are 4.3 MB; this leaves room for ~70,000.
constexpr std::size_t max_config_size = 32 * 1024 * 1024;
// yaml-cpp recurses once per nesting level (its own guard stops at 2000,
// which can exhaust a small thread stack first). Real configs nest 5 deep.
constexpr int max_flow_depth = 64;

// Deepest nesting of flow collections ([ and {) outside quotes and comments;
// block nesting is bounded by indentation and checked by yaml-cpp.
int flow_depth(std::string_view text, int& line_of_max) {
  int depth = 0;
  int max = 0;
  int line = 0;
  char quote = 0;
  bool comment = false;
  for (char c : text) {
    if (c == '\n') {
      ++line;
      comment = false;
      continue;
    }
    if (comment) continue;
    if (quote != 0) {
      if (c == quote) quote = 0;
      continue;
    }
    switch (c) {
      case '#':
        comment = true;
        break;
      case '"':
      case '\'':
        quote = c;
        break;
      case '[':
      case '{':
        if (++depth > max) {
          max = depth;
          line_of_max = line;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return max;
}

void read_health_check(detail::map_view& top, health_check& hc) {
  auto& ctx = top.ctx;
  auto* e = top.get("health_check");
  if (e == nullptr) return;
  if (!e->value.IsMap()) {
    ctx.error(e->line, "health_check",
              "must be a mapping like {address: 127.0.0.1, port: 8080} (got " +
                  detail::describe_kind(e->value) + ")");
    return;
  }
  detail::map_view m(ctx, e->value, "health_check", e->line);
  std::string type = "http";
  if (detail::read_symbol(m, "type", type) && type != "http") {
    // The fork's factory builds a no-op check for any other type.
    ctx.warning(m.get("type")->line, "health_check.type",
                "unsupported type " + ctx.shown(m.get("type")->value) +
                    ": only http is supported; health check disabled");
    m.ignore("address");
    m.ignore("port");
    m.warn_unknown();
    return;
  }
  hc.enabled = true;
  if (detail::read_string(m, "address", hc.address) && hc.address.empty()) {
    ctx.error(m.get("address")->line, "health_check.address", "must not be empty");
  }
  auto* port = m.get("port");
  if (port == nullptr || port->value.IsNull()) {
    ctx.error(port != nullptr ? port->line : m.line(), "health_check.port",
              "is required when health_check is present");
  } else {
    detail::read_port(m, "port", hc.port);
  }
  long long stuck = 0;
  if (detail::read_int(m, "stuck_after", 10, 86400, stuck))
    hc.stuck_after = std::chrono::seconds(stuck);
  m.warn_unknown();
}

void read_cluster(detail::map_view& top, cluster_options& c) {
  auto& ctx = top.ctx;
  auto* e = top.get("cluster");
  if (e == nullptr || e->value.IsNull()) return;
  if (!e->value.IsMap()) {
    ctx.error(e->line, "cluster",
              "must be a mapping like {redis_url: redis://redis:6379, lease_ttl: 10} (got " +
                  detail::describe_kind(e->value) + ")");
    return;
  }
  detail::map_view m(ctx, e->value, "cluster", e->line);
  c.enabled = true;
  c.redis.namespace_prefix = "mailroom";
  if (!m.has("redis_url") && !m.has("sentinels")) {
    ctx.error(m.line(), "cluster.redis_url",
              "is required: the Redis where the instances keep their mailbox leases");
  }
  detail::read_redis_target(m, c.redis, /*with_db=*/true);
  if (c.redis.namespace_prefix.empty()) {
    ctx.error(m.get("namespace")->line, "cluster.namespace", "must not be empty");
  }
  long long ttl = 0;
  // Renewed every third of it; below 3 s a short network hiccup would move
  // mailboxes around, above 5 minutes a crash strands them that long.
  if (detail::read_int(m, "lease_ttl", 3, 300, ttl)) c.lease_ttl = std::chrono::seconds(ttl);
  m.warn_unknown();
}

void read_top_level(detail::context& ctx, const YAML::Node& root, config& cfg) {
  if (root.IsNull() || !root.IsDefined()) {
    ctx.error(0, "mailboxes", "no mailboxes configured (the file is empty)");
    return;
  }
  if (!root.IsMap()) {
    ctx.error(ctx.line_of(root), "",
              "the top level must be a mapping with a `mailboxes:` list (got " +
                  detail::describe_kind(root) + ")");
    return;
  }
  detail::map_view top(ctx, root, "", 1);
  auto* mbs = top.get("mailboxes");
  if (mbs == nullptr) {
    ctx.error(1, "mailboxes", "no mailboxes configured");
  } else if (mbs->value.IsNull()) {
    ctx.error(mbs->line, "mailboxes", "no mailboxes configured (`mailboxes` is null)");
  } else if (!mbs->value.IsSequence()) {
    ctx.error(mbs->line, "mailboxes",
              "must be a list of mailboxes (got " + detail::describe_kind(mbs->value) + ")");
  } else if (mbs->value.size() == 0) {
    ctx.warning(mbs->line, "mailboxes", "the list is empty: there is nothing to watch");
  } else {
    std::size_t i = 0;
    for (const auto& item : mbs->value) {
      if (!item.IsMap()) {
        ctx.mailbox = fmt::format("mailboxes[{}]", i);
        ctx.error(
            ctx.line_of(item), "",
            "each mailbox must be a mapping of keys (got " + detail::describe_kind(item) + ")");
        ctx.mailbox.clear();
      } else {
        cfg.mailboxes.push_back(detail::read_mailbox(ctx, item, i));
      }
      ++i;
    }
    detail::check_mailboxes(ctx, cfg.mailboxes);
  }
  read_cluster(top, cfg.cluster);
  read_health_check(top, cfg.health);
  if (cfg.health.enabled) {
    // A mailbox legitimately silent for longer than stuck_after (a long IDLE
    // plus a slow answer to DONE) would fail /liveness and be restarted.
    for (const auto& mb : cfg.mailboxes) {
      const auto quiet = mb.idle_check_interval + mb.command_timeout;
      if (quiet >= cfg.health.stuck_after) {
        auto* e = top.get("health_check");
        ctx.warning(e != nullptr ? e->line : 0, "health_check.stuck_after",
                    fmt::format("{} s is not above idle_check_interval + command_timeout of "
                                "mailbox {} ({} s): /liveness may fail while it idles",
                                cfg.health.stuck_after.count(), mb.config_label(), quiet.count()));
        break;
      }
    }
  }
  top.warn_unknown();
}

void replace_all(std::string& s, const std::string& what, const std::string& with) {
  if (what.empty()) return;
  for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + with.size())) {
    s.replace(pos, what.size(), with);
  }
}

// Last line of defence: no secret (and no longer ERB output) may survive in a
// diagnostic even if a message above echoed it by mistake. Short values are
// skipped because replacing them would mangle ordinary words.
void scrub(std::vector<diagnostic>& diags, const std::vector<std::string>& secrets,
           const std::vector<std::string>& erb_values) {
  std::vector<std::string> all;
  for (const auto& s : secrets) {
    if (s.size() >= 4) all.push_back(s);
  }
  for (const auto& s : erb_values) {
    if (s.size() >= 6) all.push_back(s);
  }
  // Longest first, so a secret containing another is removed whole.
  std::sort(all.begin(), all.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (auto& d : diags) {
    for (const auto& s : all) {
      // Key paths are not scrubbed: they are names from the file's structure,
      // and a short password such as "secret" would mangle `jwt_secret_path`.
      replace_all(d.message, s, secret::redacted);
    }
    for (const auto& s : secrets) {
      if (s.size() >= 4) replace_all(d.mailbox, s, secret::redacted);
    }
  }
}

// ERB warnings when the YAML is not read: no mailbox or key can be named.
void add_erb_warnings(std::vector<diagnostic>& out, const erb_output& erb,
                      const std::string& file_name) {
  for (const auto& w : erb.warnings) {
    diagnostic d;
    d.lvl = diagnostic::level::warning;
    d.where = {file_name, w.line};
    d.message = w.message;
    out.push_back(std::move(d));
  }
}

std::optional<std::string> getenv_lookup(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

}  // namespace

std::string diagnostic::to_string() const {
  std::string out = where.file;
  if (where.line > 0) out += fmt::format(":{}", where.line);
  out += ": ";
  if (lvl == level::warning) out += "warning: ";
  if (!mailbox.empty()) out += "mailbox " + mailbox + ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

bool load_result::ok() const {
  return error_count() == 0;
}

std::size_t load_result::error_count() const {
  return static_cast<std::size_t>(
      std::count_if(diagnostics.begin(), diagnostics.end(),
                    [](const diagnostic& d) { return d.lvl == diagnostic::level::error; }));
}

std::size_t load_result::warning_count() const {
  return diagnostics.size() - error_count();
}

load_result load_string(std::string_view text, const std::string& file_name, env_lookup env,
                        const std::string& base_dir) {
  load_result result;
  auto fail = [&](int line, std::string message) {
    diagnostic d;
    d.where = {file_name, line};
    d.message = std::move(message);
    result.diagnostics.push_back(std::move(d));
  };
  if (!env) env = getenv_lookup;
  if (text.size() > max_config_size) {
    fail(0, fmt::format("the file is larger than {} bytes", max_config_size));
    return result;
  }

  erb_output erb;
  try {
    erb = render_erb(text, env, base_dir);
  } catch (const std::exception&) {
    fail(0, "cannot evaluate ERB (out of memory?)");
    return result;
  }
  for (const auto& e : erb.errors) fail(e.line, e.message);
  if (!erb.errors.empty()) {
    add_erb_warnings(result.diagnostics, erb, file_name);
    // The YAML would hold holes where the failed expressions were; its
    // errors would only be echoes of these.
    return result;
  }

  int deep_line = 0;
  if (flow_depth(erb.text, deep_line) > max_flow_depth) {
    fail(erb.original_line(deep_line),
         fmt::format("YAML nesting deeper than {} levels is not supported", max_flow_depth));
    return result;
  }

  std::vector<std::string> secrets;
  config cfg;
  cfg.path = file_name;
  try {
    YAML::Node root;
    try {
      root = YAML::Load(erb.text);
    } catch (const YAML::ParserException& e) {
      std::string msg = "YAML syntax error: " + e.msg;
      if (e.mark.line >= 0 && erb.line_has_insert(e.mark.line)) {
        msg +=
            " (this line holds ERB output: a value with quotes, colons or line breaks needs "
            ".to_json)";
      }
      fail(e.mark.line >= 0 ? erb.original_line(e.mark.line) : 0, msg);
      add_erb_warnings(result.diagnostics, erb, file_name);
      scrub(result.diagnostics, {}, erb.inserted_values);
      return result;
    }
    detail::context ctx(file_name, erb, result.diagnostics);
    ctx.base_dir = base_dir;
    read_top_level(ctx, root, cfg);
    ctx.report_remaining_erb_warnings();
    secrets = ctx.secrets();
  } catch (const std::exception& e) {
    // yaml-cpp reports some limits (nesting, conversions) by throwing.
    fail(0, std::string("cannot read the configuration: ") + e.what());
  }
  scrub(result.diagnostics, secrets, erb.inserted_values);
  // File order reads best; problems of the whole file (line 0) come first.
  std::stable_sort(
      result.diagnostics.begin(), result.diagnostics.end(),
      [](const diagnostic& a, const diagnostic& b) { return a.where.line < b.where.line; });
  if (result.ok()) result.cfg = std::move(cfg);
  return result;
}

load_result load_file(const std::string& path, env_lookup env) {
  namespace fs = std::filesystem;
  load_result result;
  auto fail = [&](std::string message) {
    diagnostic d;
    d.where = {path, 0};
    d.message = std::move(message);
    result.diagnostics.push_back(std::move(d));
    return result;
  };
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return fail("cannot read the configuration: " +
                (ec ? ec.message() : std::string("no such file or directory")));
  }
  if (!fs::is_regular_file(st)) return fail("cannot read the configuration: not a regular file");
  if (fs::file_size(path, ec) > max_config_size) {
    return fail(fmt::format("the file is larger than {} bytes", max_config_size));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(std::string("cannot read the configuration: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  auto dir = fs::path(path).parent_path();
  return load_string(ss.str(), path, std::move(env), dir.empty() ? "." : dir.string());
}

}  // namespace mailroom::config
