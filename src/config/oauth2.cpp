// auth_method and oauth2: how a mailbox authenticates (ours; mail_room only
// knows LOGIN with a password, which Microsoft 365 and Google Workspace no
// longer accept).
#include "config/parse.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>

namespace mailroom::config::detail {

namespace {

// The token endpoints and IMAP scopes of the two providers (Google: "Using
// OAuth 2.0 to Access Google APIs" and "IMAP, POP, and SMTP"; Microsoft:
// "Authenticate an IMAP, POP or SMTP connection using OAuth").
constexpr const char* google_token_url = "https://oauth2.googleapis.com/token";
constexpr const char* google_scope = "https://mail.google.com/";
constexpr const char* microsoft_delegated_scope =
    "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access";
constexpr const char* microsoft_app_scope = "https://outlook.office365.com/.default";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

void read_oauth2(map_view& o, mailbox& mb) {
  context& ctx = o.ctx;
  oauth2_options& out = mb.oauth2;
  std::string provider;
  if (read_symbol(o, "provider", provider)) {
    provider = lower(provider);
    if (provider != "google" && provider != "microsoft") {
      ctx.error(o.get("provider")->line, o.path_of("provider"),
                "unknown provider " + ctx.shown(o.get("provider")->value) +
                    ": expected google or microsoft (or leave it out and give token_url)");
      provider.clear();
    }
  }
  out.provider = provider;
  read_string(o, "tenant_id", out.tenant_id);
  read_string(o, "token_url", out.token_url);
  read_string(o, "client_id", out.client_id);
  read_secret(o, "client_secret", out.client_secret);
  read_secret(o, "refresh_token", out.refresh_token);
  read_string(o, "scope", out.scope);
  o.warn_unknown();

  if (out.client_id.empty()) ctx.error(o.line(), o.path_of("client_id"), "is required");
  if (out.client_credentials() && out.client_secret.empty()) {
    ctx.error(o.line(), o.path_of("client_secret"),
              "is required without a refresh_token (the client-credentials grant)");
  }
  if (provider == "microsoft") {
    if (out.tenant_id.empty()) {
      ctx.error(o.line(), o.path_of("tenant_id"),
                "is required with provider microsoft (the directory (tenant) ID of the app "
                "registration)");
    } else if (out.token_url.empty()) {
      out.token_url =
          fmt::format("https://login.microsoftonline.com/{}/oauth2/v2.0/token", out.tenant_id);
    }
    if (out.scope.empty())
      out.scope = out.client_credentials() ? microsoft_app_scope : microsoft_delegated_scope;
  } else if (provider == "google") {
    if (!out.tenant_id.empty())
      ctx.warning(o.get("tenant_id")->line, o.path_of("tenant_id"),
                  "is only used with provider microsoft (ignored)");
    if (out.client_credentials())
      ctx.error(o.line(), o.path_of("refresh_token"),
                "is required with provider google: Google offers no client-credentials grant "
                "for IMAP (a service account's delegated token is not supported yet)");
    if (out.token_url.empty()) out.token_url = google_token_url;
    if (out.scope.empty()) out.scope = google_scope;
  } else if (out.token_url.empty() && !o.has("provider")) {
    ctx.error(o.line(), o.path_of("token_url"), "is required without a provider");
  }
  if (!out.token_url.empty())
    check_endpoint(o, "token_url", out.token_url, "the client secret and the refresh token");
}

}  // namespace

bool is_loopback_host(std::string_view host) {
  const std::string h = lower(std::string(host));
  if (h == "localhost") return true;
  // An address, not a name: "127.evil.example" is a DNS name anyone can own.
  in_addr v4{};
  if (::inet_pton(AF_INET, h.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, h.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

std::string url_host(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {};
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    return close == std::string_view::npos ? std::string{} : std::string(rest.substr(1, close - 1));
  }
  return std::string(rest.substr(0, rest.find(':')));
}

bool check_endpoint(map_view& m, std::string_view key, const std::string& url,
                    std::string_view receives) {
  const auto* e = m.get(key);
  const int line = e != nullptr ? e->line : m.line();
  const std::string l = lower(url);
  const std::string host = url_host(url);
  if (host.empty() || (!l.starts_with("https://") && !l.starts_with("http://"))) {
    m.ctx.error(line, m.path_of(key), "must be an https:// URL");
    return false;
  }
  if (l.starts_with("http://") && !is_loopback_host(host)) {
    m.ctx.error(line, m.path_of(key),
                fmt::format("http:// is accepted only for a loopback host (got host {}): the "
                            "endpoint receives {}; use https://",
                            host, receives));
    return false;
  }
  return true;
}

void read_auth(map_view& m, mailbox& mb) {
  context& ctx = m.ctx;
  std::string method;
  if (read_symbol(m, "auth_method", method, null_means::error)) {
    method = lower(method);
    if (method == "login") {
      mb.auth = auth_method::login;
    } else if (method == "xoauth2") {
      mb.auth = auth_method::xoauth2;
    } else if (method == "oauthbearer") {
      mb.auth = auth_method::oauthbearer;
    } else {
      ctx.error(m.get("auth_method")->line, "auth_method",
                "unknown value " + ctx.shown(m.get("auth_method")->value) +
                    ": expected login, xoauth2 or oauthbearer");
    }
  }
  auto* e = m.get("oauth2");
  const bool has_oauth2 = e != nullptr && !e->value.IsNull();
  if (mb.auth == auth_method::login) {
    if (has_oauth2)
      ctx.error(e->line, "oauth2",
                "is set, but auth_method is login (the default): set auth_method: xoauth2 or "
                "oauthbearer, or remove oauth2");
    return;
  }
  if (auto* p = m.get("password"); p != nullptr && !p->value.IsNull()) {
    ctx.error(p->line, "password",
              "must not be set together with auth_method " + method +
                  ": the mailbox logs in with an OAuth2 access token (oauth2)");
  }
  if (!has_oauth2) {
    const auto* a = m.get("auth_method");
    ctx.error(a != nullptr ? a->line : m.line(), "oauth2",
              "is required with auth_method " + method +
                  " (provider, client_id, client_secret, refresh_token, ...)");
    return;
  }
  if (!e->value.IsMap()) {
    ctx.error(e->line, "oauth2", "must be a mapping (got " + describe_kind(e->value) + ")");
    return;
  }
  map_view o(ctx, e->value, "oauth2", e->line);
  read_oauth2(o, mb);
}

}  // namespace mailroom::config::detail
