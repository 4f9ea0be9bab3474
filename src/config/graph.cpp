// inbox_options of a Microsoft Graph inbox (mail_room's keys: tenant_id,
// client_id, client_secret, poll_interval, azure_ad_endpoint, graph_endpoint).
#include "config/parse.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>

namespace mailroom::config::detail {
namespace {

// The port of an http(s) URL: the one written, else the scheme's.
std::uint16_t url_port(std::string_view url) {
  const bool https = url.size() >= 5 && std::tolower(static_cast<unsigned char>(url[4])) == 's';
  const auto scheme_end = url.find("://");
  std::string_view rest = url.substr(scheme_end == std::string_view::npos ? 0 : scheme_end + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  if (const auto bracket = rest.rfind(']'); bracket != std::string_view::npos)
    rest = rest.substr(bracket + 1);
  if (const auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    unsigned p = 0;
    const auto digits = rest.substr(colon + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), p);
    if (ec == std::errc{} && end == digits.data() + digits.size() && p > 0 && p < 65536)
      return static_cast<std::uint16_t>(p);
  }
  return https ? 443 : 80;
}

// An endpoint as the calls append paths to it: without trailing slashes, and
// nothing after the authority but a path (a query or fragment would end up
// in the middle of every URL).
bool read_endpoint(map_view& o, std::string_view key, std::string& out, std::string_view receives) {
  if (!read_string(o, key, out, null_means::error)) return false;
  while (!out.empty() && out.back() == '/') out.pop_back();
  if (!check_endpoint(o, key, out, receives)) return false;
  if (out.find_first_of("?#") != std::string::npos) {
    o.ctx.error(o.get(key)->line, o.path_of(key),
                "must not have a query or fragment (the calls' paths are appended to it)");
    return false;
  }
  return true;
}

}  // namespace

void read_graph_options(map_view& m, const map_view::entry* e, mailbox& mb) {
  context& ctx = m.ctx;
  mb.inbox = inbox_method::microsoft_graph;
  if (e == nullptr || !e->value.IsMap()) {
    ctx.error(e != nullptr ? e->line : m.line(), "inbox_options",
              "is required with inbox_method microsoft_graph: a mapping with tenant_id, "
              "client_id and client_secret" +
                  (e != nullptr ? " (got " + describe_kind(e->value) + ")" : std::string{}));
    return;
  }
  graph_options& g = mb.graph;
  map_view o(ctx, e->value, "inbox_options", e->line);
  read_string(o, "tenant_id", g.tenant_id);
  read_string(o, "client_id", g.client_id);
  read_secret(o, "client_secret", g.client_secret);
  for (auto [key, empty] : {std::pair<const char*, bool>{"tenant_id", g.tenant_id.empty()},
                            {"client_id", g.client_id.empty()},
                            {"client_secret", g.client_secret.empty()}}) {
    if (empty)
      ctx.error(o.has(key) ? o.get(key)->line : o.line(), o.path_of(key),
                "is required with inbox_method microsoft_graph (the app registration's " +
                    std::string(key == std::string_view("tenant_id")   ? "directory (tenant) ID"
                                : key == std::string_view("client_id") ? "application (client) ID"
                                                                       : "client secret") +
                    ")");
  }
  long long poll = 0;
  if (read_int(o, "poll_interval", std::numeric_limits<long long>::min(), 86400, poll)) {
    if (poll <= 0) {
      // mail_room: "poll_interval.to_i > 0 ? poll_interval : 60".
      ctx.warning(o.get("poll_interval")->line, o.path_of("poll_interval"),
                  fmt::format("must be a positive number of seconds (got {}): using 60, as "
                              "mail_room does",
                              poll));
    } else {
      g.poll_interval = std::chrono::seconds(poll);
    }
  }
  const bool ad_ok =
      !o.has("azure_ad_endpoint") ||
      read_endpoint(o, "azure_ad_endpoint", g.azure_ad_endpoint, "the client secret");
  const bool graph_ok =
      !o.has("graph_endpoint") ||
      read_endpoint(o, "graph_endpoint", g.graph_endpoint, "the access token and the mail");
  o.warn_unknown();

  // The token: client credentials at the tenant's v2.0 endpoint, for the
  // application permissions granted on Graph (scope "<graph>/.default").
  oauth2_options& t = mb.oauth2;
  t.provider.clear();
  t.tenant_id = g.tenant_id;
  t.client_id = g.client_id;
  t.client_secret = g.client_secret;
  t.refresh_token = secret{};
  if (ad_ok) t.token_url = g.azure_ad_endpoint + "/" + g.tenant_id + "/oauth2/v2.0/token";
  if (graph_ok) {
    t.scope = g.graph_endpoint + "/.default";
    std::string host = url_host(g.graph_endpoint);
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    mb.host = host;
    mb.port = url_port(g.graph_endpoint);
  }
}

}  // namespace mailroom::config::detail
