#include "ops/graph_probe.hpp"

#include "auth/token_source.hpp"
#include "graph/client.hpp"
#include "ops/common.hpp"

#include <fmt/format.h>

#include <ctime>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

constexpr std::size_t max_counted = 10000;

// Seconds since the epoch of "2026-12-05T06:18:49Z" (fractions ignored).
std::optional<std::int64_t> parse_utc(const std::string& iso) {
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (std::sscanf(iso.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &s) != 6)
    return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace

std::string imap_only_error(const config::mailbox& mb) {
  return fmt::format(
      "mailbox {} is a Microsoft Graph inbox (inbox_method: microsoft_graph): this command works "
      "on IMAP mailboxes only; `mailroom status` shows its unread mail",
      mb.label());
}

asio::awaitable<graph_report> probe_graph(asio::any_io_executor ex, const config::mailbox& mb) {
  // An operator command makes a few requests: one token each run is fine.
  const auto http = ops_http_client();
  auto tokens = std::make_shared<auth::oauth2_token_source>(ex, mb.oauth2, http);
  graph::client_options o;
  o.graph_endpoint = mb.graph.graph_endpoint;
  o.user = mb.email;
  o.folder = mb.name;
  o.token_url = mb.oauth2.token_url;
  o.connect_timeout = mb.connect_timeout;
  o.request_timeout = mb.command_timeout;
  o.max_listed = max_counted;
  graph::client c(http, tokens, o);

  graph_report r;
  // The token on its own first, so that a refusal is named as the app's.
  std::string detail;
  const auto wait = std::make_shared<imap::token_source::wait_handle>();
  if (auto token = co_await tokens->get(detail, wait); !token) {
    r.failed_step = "token";
    r.error = "access token from " + mb.oauth2.token_url + ": " + detail;
    co_return r;
  }
  graph::failure f;
  auto listed = co_await c.list_unread(f);
  if (!listed) {
    r.failed_step = "folder";
    r.error = f.detail;
    co_return r;
  }
  r.unread = listed->size();
  r.unread_capped = listed->size() >= max_counted;
  if (!listed->empty()) {
    auto oldest = co_await c.oldest_unread(f);
    if (!oldest) {
      r.failed_step = "folder";
      r.error = f.detail;
      co_return r;
    }
    if (*oldest) {
      r.oldest_received = (*oldest)->received;
      r.oldest_subject = (*oldest)->subject;
      if (auto t = parse_utc((*oldest)->received)) r.oldest_age_seconds = now_seconds() - *t;
    }
  }
  r.ok = true;
  co_return r;
}

}  // namespace mailroom::ops
