#include "ops/common.hpp"
#include "ops/graph_probe.hpp"

#include "auth/token_source.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

namespace mailroom::ops {

namespace asio = boost::asio;

const char* const header_section = "BODY.PEEK[HEADER.FIELDS (DATE FROM TO CC SUBJECT MESSAGE-ID)]";

std::vector<const config::mailbox*> select_mailboxes(const config::config& cfg,
                                                     const std::string& name, std::string& error) {
  std::vector<const config::mailbox*> all;
  for (const auto& mb : cfg.mailboxes) all.push_back(&mb);
  if (name.empty()) return all;
  // The most precise spelling that matches decides: the whole label
  // ("email/folder@host:port", unique), then "email/folder", then the email
  // or the folder alone. A name matching several mailboxes is an error,
  // never the first of them.
  using match = std::function<bool(const config::mailbox&)>;
  const match levels[] = {
      [&](const config::mailbox& mb) { return mb.label() == name; },
      [&](const config::mailbox& mb) { return mb.config_label() == name; },
      [&](const config::mailbox& mb) { return mb.email == name || mb.name == name; },
  };
  std::vector<const config::mailbox*> hits;
  for (const auto& matches : levels) {
    for (const auto* mb : all)
      if (matches(*mb)) hits.push_back(mb);
    if (!hits.empty()) break;
  }
  if (hits.size() == 1) return hits;
  std::string labels;
  for (const auto* mb : (hits.empty() ? all : hits))
    labels += (labels.empty() ? "" : ", ") + mb->label();
  error = hits.empty()
              ? fmt::format("--mailbox {}: no such mailbox (configured: {})", name, labels)
              : fmt::format("--mailbox {} is ambiguous ({}); use one of these names", name, labels);
  return {};
}

const config::mailbox* select_one_mailbox(const config::config& cfg, const std::string& name,
                                          std::string& error) {
  auto hits = select_mailboxes(cfg, name, error);
  if (hits.empty()) {
    if (error.empty()) error = "no mailboxes configured";
    return nullptr;
  }
  if (hits.size() > 1) {
    std::string labels;
    for (const auto* mb : hits) labels += (labels.empty() ? "" : ", ") + mb->label();
    error =
        fmt::format("{} mailboxes configured; choose one with --mailbox ({})", hits.size(), labels);
    return nullptr;
  }
  if (hits.front()->is_graph()) {
    error = imap_only_error(*hits.front());
    return nullptr;
  }
  return hits.front();
}

std::shared_ptr<delivery::http_client> ops_http_client() {
  static const auto http = std::make_shared<delivery::http_client>(2);
  return http;
}

imap::client_options client_options_for(asio::any_io_executor ex, const config::mailbox& mb) {
  imap::client_options o;
  o.connect_timeout = mb.connect_timeout;
  o.command_timeout = mb.command_timeout;
  if (mb.auth == config::auth_method::login) return o;
  // An operator command opens a session or two: a token each is fine.
  o.tokens = std::make_shared<auth::oauth2_token_source>(ex, mb.oauth2, ops_http_client());
  return o;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string imap_failure(const config::mailbox& mb, const imap::client& c, const char* what,
                         const boost::system::error_code& ec) {
  // last_error() carries server text or the TLS reason; never the password.
  const std::string& detail = c.last_error();
  return fmt::format("mailbox {}: {}: {}{}", mb.label(), what, ec.message(),
                     detail.empty() ? "" : " (" + detail + ")");
}

asio::awaitable<bool> open_mailbox(imap::client& c, const config::mailbox& mb, bool read_only,
                                   std::string& detail) {
  const std::function<void(const char*)> no_steps = [](const char*) {};
  if (auto ec = co_await c.connect_and_login(no_steps)) {
    detail = imap_failure(mb, c, "connect and log in", ec);
    co_return false;
  }
  const std::string& folder = mb.name;
  boost::system::error_code ec;
  if (read_only) {
    ec = co_await c.examine(folder);
  } else {
    ec = co_await c.select(folder);
  }
  if (ec) {
    detail = imap_failure(mb, c, read_only ? "EXAMINE" : "SELECT", ec);
    co_return false;
  }
  co_return true;
}

asio::awaitable<std::optional<std::vector<std::uint32_t>>> search(imap::client& c,
                                                                  const config::mailbox& mb,
                                                                  const std::string& criteria,
                                                                  std::string& detail) {
  auto found = co_await c.uid_search(criteria);
  if (!found) {
    detail = imap_failure(mb, c, "UID SEARCH", found.error());
    co_return std::nullopt;
  }
  auto uids = std::move(*found);
  std::sort(uids.begin(), uids.end());
  co_return uids;
}

asio::awaitable<bool> fetch_messages(imap::client& c, const config::mailbox& mb,
                                     const std::vector<std::uint32_t>& uids,
                                     const std::function<void(listed_message&&)>& on_message,
                                     std::string& detail) {
  const imap::client::summary_handler handle = [&](imap::message_summary&& s) {
    listed_message m;
    m.view.uid = *s.uid;
    m.view.internal_date = s.internal_date;
    m.view.headers = decode_headers(s.header);
    if (s.flags) m.flags = std::move(*s.flags);
    m.size = s.size.value_or(0);
    on_message(std::move(m));
  };
  const std::string section = header_section;
  if (auto ec = co_await c.uid_fetch_summaries(uids, section, handle)) {
    detail = imap_failure(mb, c, "UID FETCH", ec);
    co_return false;
  }
  co_return true;
}

asio::awaitable<std::optional<std::vector<listed_message>>> select_messages(
    imap::client& c, const config::mailbox& mb, const std::vector<std::uint32_t>& found,
    const message_filter& filter, bool want_headers, std::string& detail) {
  std::vector<std::uint32_t> uids;
  for (auto uid : found) {
    if (filter.uid_matches(uid)) uids.push_back(uid);
  }
  std::vector<listed_message> out;
  if (!want_headers && !filter.needs_headers()) {
    out.reserve(uids.size());
    for (auto uid : uids) out.push_back(listed_message{message_view{uid, std::nullopt, {}}, {}, 0});
    co_return out;
  }
  const std::int64_t now = now_seconds();
  // Servers answer in their own order; keep UID order for the listing.
  std::unordered_map<std::uint32_t, listed_message> by_uid;
  const std::function<void(listed_message &&)> keep = [&](listed_message&& m) {
    if (filter.matches(m.view, now)) by_uid.emplace(m.view.uid, std::move(m));
  };
  if (!co_await fetch_messages(c, mb, uids, keep, detail)) co_return std::nullopt;
  for (auto uid : uids) {
    auto it = by_uid.find(uid);
    if (it != by_uid.end()) out.push_back(std::move(it->second));
  }
  co_return out;
}

std::optional<destructive_target> choose_destructive_target(const config::config& cfg,
                                                            const invocation& inv,
                                                            const char* command) {
  std::string error;
  const auto* mb = select_one_mailbox(cfg, inv.mailbox, error);
  auto filter = message_filter::compile(inv.filter, error);
  // Destructive commands never act on "everything" by omission.
  // --interactive chooses message by message, so it is a selection itself.
  if (mb && filter && !filter->any() && !inv.all && !inv.interactive)
    error = "choose the messages: a filter (--older-than, --from, ...), --uid LIST, or --all";
  if (inv.interactive && inv.dry_run) error = "--interactive and --dry-run exclude each other";
  if (!error.empty() || !mb || !filter) {
    *inv.err << "mailroom " << command << ": " << error << "\n";
    return std::nullopt;
  }
  return destructive_target{mb, std::move(*filter)};
}

}  // namespace mailroom::ops
