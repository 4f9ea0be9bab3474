// redis_url parsing and the Redis option block shared by the sidekiq delivery
// and the redis arbitration, following redis-rb 4.8's reading of the URL.
#include "config/parse.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace mailroom::config::detail {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// A scheme is echoed only when it is short and made of scheme characters, so
// a password pasted into the wrong place is never repeated.
bool printable_scheme(std::string_view s) {
  return !s.empty() && s.size() <= 16 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '+' || c == '-' || c == '.';
  });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A hostname as written may be a sentinel master name; an IP address or
// "localhost" almost certainly is not.
bool looks_like_address(std::string_view host) {
  if (host == "localhost" || host.find(':') != std::string_view::npos) return true;
  return !host.empty() && std::all_of(host.begin(), host.end(),
                                      [](unsigned char c) { return std::isdigit(c) || c == '.'; });
}

}  // namespace

std::string cgi_unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string redact_url(std::string_view url) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos) return "(not a URL)";
  std::string_view rest = url.substr(sep + 3);
  auto auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view tail = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);
  tail = tail.substr(0, tail.find_first_of("?#"));
  auto at = authority.rfind('@');
  std::string user;
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    user = std::string(userinfo.substr(0, userinfo.find(':')));
    authority = authority.substr(at + 1);
  }
  std::string out(url.substr(0, sep + 3));
  if (!user.empty()) out += user + "@";
  out += authority;
  out += tail;
  return out;
}

redis_url_result parse_redis_url(const std::string& url, redis_target& out) {
  redis_url_result r;
  // "unix:/path" and "unix:///path" both name a socket (Omnibus's default).
  if (lower(std::string_view(url).substr(0, 5)) == "unix:") {
    r.error = "unix sockets are not supported: use redis://host:port or rediss://host:port";
    return r;
  }
  auto sep = url.find("://");
  if (sep == std::string::npos) {
    r.error = "must be a URL like redis://host:6379/0";
    return r;
  }
  const std::string scheme = lower(std::string_view(url).substr(0, sep));
  if (scheme != "redis" && scheme != "rediss") {
    r.error = printable_scheme(scheme)
                  ? fmt::format("unsupported scheme `{}`: expected redis:// or rediss://", scheme)
                  : "unsupported scheme: expected redis:// or rediss://";
    return r;
  }
  std::string_view rest = std::string_view(url).substr(sep + 3);
  auto auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view tail = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);

  std::string username;
  std::string password;
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    auto colon = userinfo.find(':');
    username = cgi_unescape(userinfo.substr(0, colon));
    if (colon != std::string_view::npos) password = cgi_unescape(userinfo.substr(colon + 1));
    authority = authority.substr(at + 1);
  }

  std::string host;
  std::string_view port_text;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      r.error = "has an unterminated IPv6 address (missing `]`)";
      return r;
    }
    host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        r.error = "has text after the IPv6 address";
        return r;
      }
      port_text = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (host.empty()) {
    r.error = "has no host (expected redis://host:port/db)";
    return r;
  }
  std::uint16_t port = 6379;
  if (!port_text.empty()) {
    long long p = 0;
    if (!parse_integer(port_text, p) || port_text.front() == '+' || port_text.front() == '-' ||
        p < 1 || p > 65535) {
      r.error = "has an invalid port: expected a number between 1 and 65535";
      return r;
    }
    port = static_cast<std::uint16_t>(p);
  }

  std::string_view path = tail.substr(0, tail.find_first_of("?#"));
  if (tail.find('?') != std::string_view::npos) {
    r.warnings.push_back("query parameters in redis_url are ignored");
  }
  int db = 0;
  if (path.size() > 1) {
    std::string_view db_text = path.substr(1);
    if (db_text.ends_with('/')) db_text.remove_suffix(1);
    long long d = 0;
    if (!parse_integer(db_text, d) || d < 0 || d > 0x7fffffff || db_text.front() == '+') {
      r.error = "has an invalid database in its path: expected /0, /1, ...";
      return r;
    }
    db = static_cast<int>(d);
  }

  out.url = redact_url(url);
  out.host = host;
  out.port = port;
  out.tls = scheme == "rediss";
  out.username = username;
  out.password = secret(password);
  out.db = db;
  return r;
}

void read_redis_target(map_view& m, redis_target& out, bool with_db) {
  context& ctx = m.ctx;
  std::string url;
  const map_view::entry* url_entry = nullptr;
  bool url_ok = false;
  if (read_string(m, "redis_url", url)) {
    url_entry = m.get("redis_url");
    // The whole URL is treated as a secret: it may hold a password anywhere.
    redis_target probe;
    auto r = parse_redis_url(url, probe);
    ctx.add_secret(probe.password.reveal());
    if (auto at = url.rfind('@'); at != std::string::npos) {
      auto sep = url.find("://");
      std::size_t from = sep == std::string::npos ? 0 : sep + 3;
      if (at > from) {
        auto userinfo = url.substr(from, at - from);
        auto colon = userinfo.find(':');
        if (colon != std::string::npos) ctx.add_secret(userinfo.substr(colon + 1));
      }
    }
    if (!r.error.empty()) {
      ctx.error(url_entry->line, m.path_of("redis_url"), r.error);
    } else {
      probe.namespace_prefix = out.namespace_prefix;
      probe.tls_settings = out.tls_settings;
      out = std::move(probe);
      url_ok = true;
    }
    for (const auto& w : r.warnings) ctx.warning(url_entry->line, m.path_of("redis_url"), w);
  }

  if (with_db) {
    long long db = 0;
    if (read_int(m, "redis_db", 0, 0x7fffffff, db)) out.db = static_cast<int>(db);
  } else if (m.has("redis_db")) {
    // mail_room's arbitration has no redis_db: the database comes from the URL.
    m.warn_unused({"redis_db"},
                  "arbitration takes the database from redis_url's path (redis://host:6379/2), "
                  "as mail_room does");
  }

  read_string(m, "namespace", out.namespace_prefix);
  read_string(m, "sentinel_username", out.sentinel_username);
  read_secret(m, "sentinel_password", out.sentinel_password);

  if (auto* e = m.get("sentinels"); e != nullptr && !e->value.IsNull()) {
    if (!e->value.IsSequence()) {
      ctx.error(e->line, m.path_of("sentinels"),
                "must be a list of {host:, port:} mappings (got " + describe_kind(e->value) + ")");
    } else {
      std::size_t i = 0;
      for (const auto& item : e->value) {
        const std::string path = fmt::format("{}[{}]", m.path_of("sentinels"), i++);
        if (!item.IsMap()) {
          ctx.error(ctx.line_of(item), path,
                    "must be a mapping with host and port (got " + describe_kind(item) + ")");
          continue;
        }
        map_view s(ctx, item, path);
        sentinel_endpoint ep;
        if (auto* h = s.get("host"); h == nullptr || h->value.IsNull()) {
          ctx.error(h == nullptr ? s.line() : h->line, s.path_of("host"), "is required");
        } else if (read_string(s, "host", ep.host) && ep.host.empty()) {
          ctx.error(h->line, s.path_of("host"), "must not be empty");
        }
        read_port(s, "port", ep.port);
        read_string(s, "username", ep.username);
        read_secret(s, "password", ep.password);
        bool tls = false;
        if (read_bool(s, "ssl", tls) && tls) {
          ctx.error(s.get("ssl")->line, s.path_of("ssl"),
                    "TLS connections to Sentinels are not supported");
        }
        s.warn_unused({"ssl_params"}, "TLS connections to Sentinels are not supported");
        s.warn_unknown();
        out.sentinels.push_back(std::move(ep));
      }
    }
  }

  if (auto* e = m.get("redis_ssl_params"); e != nullptr && !e->value.IsNull()) {
    if (!e->value.IsMap()) {
      ctx.error(e->line, m.path_of("redis_ssl_params"),
                "must be a mapping with verify_mode, ca_file, ca_path (got " +
                    describe_kind(e->value) + ")");
    } else {
      map_view p(ctx, e->value, m.path_of("redis_ssl_params"));
      read_tls_params(p, out.tls_settings);
      if (!out.tls && (url_ok || url_entry == nullptr)) {
        ctx.warning(e->line, m.path_of("redis_ssl_params"),
                    "has no effect: redis_url does not use rediss://");
      }
    }
  }

  if (out.uses_sentinel() && url_ok && looks_like_address(out.host)) {
    // redis-rb takes the URL's host as the master name (redis://mymaster);
    // an address there only fails later with "No sentinels available".
    ctx.warning(url_entry->line, m.path_of("redis_url"),
                "with sentinels the host of redis_url names the Sentinel master "
                "(redis://mymaster), but it looks like an address");
  }
}

}  // namespace mailroom::config::detail

namespace mailroom::config {

std::string redact_url(std::string_view url) {
  return detail::redact_url(url);
}

}  // namespace mailroom::config
