// `status`: one report per mailbox, read-only (EXAMINE, UID SEARCH, one
// INTERNALDATE fetch, LLEN, SCAN; for Graph: the unread listing and the
// oldest unread message).
#include "config/load.hpp"
#include "ops/cluster_view.hpp"
#include "ops/common.hpp"
#include "ops/graph_probe.hpp"
#include "ops/output.hpp"
#include "ops/targets.hpp"

#include <fmt/format.h>

#include <array>
#include <map>
#include <optional>
#include <ostream>
#include <set>

namespace mailroom::ops {

namespace asio = boost::asio;
using json = nlohmann::ordered_json;

namespace {

asio::awaitable<bool> imap_part(asio::any_io_executor ex, const config::mailbox& mb, json& j) {
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  if (!co_await open_mailbox(c, mb, true, detail)) {
    j["imap"] = {{"reachable", false}, {"error", detail}};
    co_return false;
  }
  j["imap"] = {{"reachable", true}, {"host", mb.host}, {"port", mb.port}};
  j["uidvalidity"] = c.uidvalidity();
  std::vector<std::uint32_t> unseen;
  // A named array: g++ 12 mishandles temporaries (a braced list) that live
  // across a co_await.
  static constexpr std::array<const char*, 3> kinds{"ALL", "UNSEEN", "DELETED"};
  for (const char* what : kinds) {
    const std::string criteria = what;
    auto found = co_await search(c, mb, criteria, detail);
    if (!found) {
      j["imap"] = {{"reachable", false}, {"error", detail}};
      co_return false;
    }
    const std::string key = criteria == "ALL"      ? "total"
                            : criteria == "UNSEEN" ? "unseen"
                                                   : "deleted";
    j[key] = found->size();
    if (criteria == "UNSEEN") unseen = std::move(*found);
  }
  j["oldest_unseen"] = nullptr;
  if (!unseen.empty()) {
    // UIDs ascend in arrival order (RFC 3501 §2.3.1.1), so the lowest unseen
    // UID has waited longest; its INTERNALDATE is its arrival time.
    const std::vector<std::uint32_t> first{unseen.front()};
    std::optional<listed_message> oldest;
    const std::function<void(listed_message &&)> keep = [&](listed_message&& m) {
      oldest = std::move(m);
    };
    if (!co_await fetch_messages(c, mb, first, keep, detail)) {
      // The counts above stand; the age is unknown, which is not "none".
      j["oldest_unseen"] = {{"error", detail}};
      c.close();
      co_return false;
    }
    if (oldest) {  // absent: expunged between the search and the fetch
      const auto arrived = oldest->view.internal_date;
      j["oldest_unseen"] = {
          {"uid", oldest->view.uid},
          {"arrived", json_time(arrived)},
          {"age_seconds", arrived ? json(now_seconds() - *arrived) : json(nullptr)},
          {"subject", oldest->view.headers.subject}};
    }
  }
  co_await c.logout();
  co_return true;
}

asio::awaitable<bool> graph_part(asio::any_io_executor ex, const config::mailbox& mb, json& j) {
  const graph_report r = co_await probe_graph(ex, mb);
  if (!r.ok) {
    j["graph"] = {{"reachable", false}, {"error", r.error}};
    co_return false;
  }
  j["graph"] = {{"reachable", true}, {"endpoint", mb.graph.graph_endpoint}};
  j["unseen"] = r.unread;
  if (r.unread_capped) j["unseen_at_least"] = true;
  j["oldest_unseen"] = nullptr;
  if (r.oldest_received)
    j["oldest_unseen"] = {
        {"arrived", *r.oldest_received},
        {"age_seconds", r.oldest_age_seconds ? json(*r.oldest_age_seconds) : json(nullptr)},
        {"subject", r.oldest_subject}};
  co_return true;
}

asio::awaitable<bool> target_part(asio::any_io_executor ex, const config::mailbox& mb, json& j) {
  bool ok = true;
  switch (mb.delivery) {
    case config::delivery_method::sidekiq: {
      redis::client r(ex, mb.sidekiq.redis);
      std::optional<std::int64_t> len;
      const auto p = co_await sidekiq_queue_length(r, mb.sidekiq, len);
      j["sidekiq"] = {{"queue", mb.sidekiq.queue},
                      {"redis", r.describe()},
                      {"length", len ? json(*len) : json(nullptr)}};
      if (!p.ok) j["sidekiq"]["error"] = p.text;
      ok = p.ok;
      co_await r.close();
      break;
    }
    case config::delivery_method::postback: {
      const auto p = co_await reach_webhook(mb.postback);
      j["webhook"] = {
          {"url", config::redact_url(mb.postback.url)}, {"reachable", p.ok}, {"detail", p.text}};
      ok = p.ok;
      break;
    }
    case config::delivery_method::logger:
      j["delivery"] = "logger";
      break;
    case config::delivery_method::noop:
      j["delivery"] = "noop";
      break;
    case config::delivery_method::que:
      j["que"] = {{"host", mb.que.host},
                  {"port", mb.que.port},
                  {"database", mb.que.database},
                  {"queue", mb.que.queue}};
      break;
    case config::delivery_method::letter_opener:
      j["letter_opener"] = {{"location", mb.letter_opener.location}};
      break;
  }
  co_return ok;
}

asio::awaitable<bool> arbitration_part(asio::any_io_executor ex, const config::mailbox& mb,
                                       json& j) {
  if (mb.arbitration != config::arbitration_method::redis) {
    j["arbitration"] = {{"method", "noop"}};
    co_return true;
  }
  redis::client r(ex, mb.arbitration_opts.redis);
  const std::uint32_t uidvalidity = j.value("uidvalidity", 0u);
  const std::string pattern = arbitration_pattern(mb, uidvalidity);
  std::optional<std::int64_t> n;
  const auto p = co_await count_keys(r, pattern, n);
  j["arbitration"] = {{"method", "redis"},
                      {"redis", r.describe()},
                      {"pattern", pattern},
                      {"keys", n ? json(*n) : json(nullptr)}};
  if (!p.ok) j["arbitration"]["error"] = p.text;
  co_await r.close();
  co_return p.ok;
}

void print_owner(std::ostream& out, const json& o) {
  if (o.is_null()) {
    out << "  owner:         none (no live instance holds its lease)\n";
  } else if (o.contains("error")) {
    out << "  owner:         UNKNOWN: " << o["error"].get<std::string>() << "\n";
  } else {
    out << fmt::format("  owner:         {} since {} ({})\n", o["instance"].get<std::string>(),
                       o["since"].get<std::string>(),
                       format_age(std::chrono::seconds(o["for_seconds"].get<std::int64_t>())));
  }
}

void print_human(std::ostream& out, const json& j) {
  out << j["mailbox"].get<std::string>() << "\n";
  if (j.contains("owner")) print_owner(out, j["owner"]);
  if (j.contains("graph")) {
    const auto& g = j["graph"];
    if (!g["reachable"].get<bool>()) {
      out << "  graph:         UNREACHABLE: " << g["error"].get<std::string>() << "\n";
    } else {
      out << fmt::format("  graph:         reachable ({})\n", g["endpoint"].get<std::string>());
      out << fmt::format("  messages:      {}{} unread\n",
                         j.contains("unseen_at_least") ? "at least " : "",
                         j["unseen"].get<std::size_t>());
      const auto& o = j["oldest_unseen"];
      if (o.is_null()) {
        out << "  oldest unread: -\n";
      } else {
        const std::string age =
            o["age_seconds"].is_null()
                ? "-"
                : format_age(std::chrono::seconds(o["age_seconds"].get<std::int64_t>()));
        out << fmt::format("  oldest unread: {} (arrived {})\n", age,
                           o["arrived"].get<std::string>());
      }
    }
  }
  if (j.contains("graph")) {
    // The Graph lines are above.
  } else if (!j["imap"]["reachable"].get<bool>()) {
    out << "  imap:          UNREACHABLE: " << j["imap"]["error"].get<std::string>() << "\n";
  } else {
    out << fmt::format("  imap:          reachable ({}:{})\n", j["imap"]["host"].get<std::string>(),
                       j["imap"]["port"].get<int>());
    out << fmt::format("  uidvalidity:   {}\n", j["uidvalidity"].get<std::uint32_t>());
    out << fmt::format(
        "  messages:      {} total, {} unseen, {} flagged \\Deleted (not expunged)\n",
        j["total"].get<std::size_t>(), j["unseen"].get<std::size_t>(),
        j["deleted"].get<std::size_t>());
    const auto& o = j["oldest_unseen"];
    if (o.is_null()) {
      out << "  oldest unseen: -\n";
    } else if (o.contains("error")) {
      out << "  oldest unseen: ERROR: " << o["error"].get<std::string>() << "\n";
    } else {
      const std::string age =
          o["age_seconds"].is_null()
              ? "-"
              : format_age(std::chrono::seconds(o["age_seconds"].get<std::int64_t>()));
      out << fmt::format("  oldest unseen: {} (UID {}, arrived {})\n", age,
                         o["uid"].get<std::uint32_t>(),
                         o["arrived"].is_null() ? "-" : o["arrived"].get<std::string>());
    }
  }
  if (j.contains("sidekiq")) {
    const auto& s = j["sidekiq"];
    if (s.contains("error")) {
      out << "  sidekiq:       UNREACHABLE: " << s["error"].get<std::string>() << "\n";
    } else {
      out << fmt::format("  sidekiq:       queue {} length {} ({})\n",
                         s["queue"].get<std::string>(), s["length"].get<std::int64_t>(),
                         s["redis"].get<std::string>());
    }
  }
  if (j.contains("webhook")) {
    const auto& w = j["webhook"];
    out << fmt::format("  webhook:       {}: {}\n",
                       w["reachable"].get<bool>() ? "reachable" : "UNREACHABLE",
                       w["detail"].get<std::string>());
  }
  if (j.contains("delivery"))
    out << "  delivery:      " << j["delivery"].get<std::string>() << "\n";
  const auto& a = j["arbitration"];
  if (a["method"] == "noop") {
    out << "  arbitration:   noop\n";
  } else if (a.contains("error")) {
    out << "  arbitration:   UNREACHABLE: " << a["error"].get<std::string>() << "\n";
  } else {
    out << fmt::format("  arbitration:   {} key(s) held ({}, {})\n", a["keys"].get<std::int64_t>(),
                       a["pattern"].get<std::string>(), a["redis"].get<std::string>());
  }
}

// `status --cluster`: the live instances and the mailboxes each holds.
asio::awaitable<int> cluster_status(asio::any_io_executor ex, const config::config& cfg,
                                    const invocation& inv) {
  const cluster_view v = co_await read_cluster(ex, cfg.cluster);
  if (!v.ok) {
    *inv.err << "mailroom status: cluster: " << v.error << "\n";
    co_return exit_failure;
  }
  json members = json::array();
  std::map<std::string, json> held;
  std::vector<std::string> unowned;
  std::set<std::string> live;
  for (const auto& m : v.members) live.insert(m.id);
  for (const auto& mb : cfg.mailboxes) {
    const auto label = mb.label();
    json o = owner_json(v, label);
    if (o.is_null() || !live.count(o["instance"].get<std::string>())) {
      unowned.push_back(label);
      continue;
    }
    const std::string id = o["instance"].get<std::string>();
    o.erase("instance");
    o["mailbox"] = label;
    held[id].push_back(std::move(o));
  }
  for (const auto& m : v.members) {
    json e;
    e["id"] = m.id;
    e["version"] = m.record.is_object() ? m.record.value("version", json(nullptr)) : json(nullptr);
    e["started"] = nullptr;
    if (m.record.is_object() && m.record.contains("started_at_ms"))
      e["started"] = json_time(m.record["started_at_ms"].get<std::int64_t>() / 1000);
    e["mailboxes"] = held.count(m.id) ? held[m.id] : json::array();
    members.push_back(std::move(e));
  }
  if (inv.json) {
    json j;
    j["cluster"] = {{"redis", v.redis},
                    {"namespace", cfg.cluster.redis.namespace_prefix},
                    {"lease_ttl", cfg.cluster.lease_ttl.count()},
                    {"members", members},
                    {"unowned", unowned}};
    *inv.out << dump(j, 2) << "\n";
    co_return exit_ok;
  }
  auto& out = *inv.out;
  out << fmt::format("cluster {} ({}), lease_ttl {} s: {} live instance(s)\n",
                     cfg.cluster.redis.namespace_prefix, v.redis, cfg.cluster.lease_ttl.count(),
                     members.size());
  for (const auto& e : members) {
    out << fmt::format("  {}  version {}, started {}, {} mailbox(es)\n", e["id"].get<std::string>(),
                       e["version"].is_string() ? e["version"].get<std::string>() : "-",
                       e["started"].is_string() ? e["started"].get<std::string>() : "-",
                       e["mailboxes"].size());
    for (const auto& o : e["mailboxes"])
      out << fmt::format("    {}  since {} ({})\n", o["mailbox"].get<std::string>(),
                         o["since"].get<std::string>(),
                         format_age(std::chrono::seconds(o["for_seconds"].get<std::int64_t>())));
  }
  out << fmt::format("  without a live owner: {}\n", unowned.size());
  for (const auto& l : unowned) out << "    " << l << "\n";
  co_return exit_ok;
}

asio::awaitable<int> status(asio::any_io_executor ex, const config::config& cfg,
                            const std::vector<const config::mailbox*>& mailboxes,
                            const invocation& inv) {
  bool all_ok = true;
  json reports = json::array();
  std::optional<cluster_view> cluster;
  if (cfg.cluster.enabled) cluster = co_await read_cluster(ex, cfg.cluster);
  for (const auto* mb : mailboxes) {
    json j;
    j["mailbox"] = mb->label();
    if (cluster) {
      j["owner"] =
          cluster->ok ? owner_json(*cluster, mb->label()) : json{{"error", cluster->error}};
      all_ok = all_ok && cluster->ok;
    }
    bool imap_ok = false;
    if (mb->is_graph()) {
      imap_ok = co_await graph_part(ex, *mb, j);
    } else {
      imap_ok = co_await imap_part(ex, *mb, j);
    }
    const bool target_ok = co_await target_part(ex, *mb, j);
    const bool arbitration_ok = co_await arbitration_part(ex, *mb, j);
    all_ok = all_ok && imap_ok && target_ok && arbitration_ok;
    if (inv.json) {
      reports.push_back(std::move(j));
    } else {
      print_human(*inv.out, j);
      inv.out->flush();
    }
  }
  if (inv.json) *inv.out << dump(reports, 2) << "\n";
  co_return all_ok ? exit_ok : exit_failure;
}

}  // namespace

int run_status(const config::config& cfg, const invocation& inv) {
  std::string error;
  const auto mailboxes = select_mailboxes(cfg, inv.mailbox, error);
  if (!error.empty()) {
    *inv.err << "mailroom status: " << error << "\n";
    return exit_usage;
  }
  if (inv.cluster) {
    if (!cfg.cluster.enabled) {
      *inv.err << "mailroom status: --cluster: the configuration has no cluster section\n";
      return exit_usage;
    }
    return run_on_loop([&](asio::any_io_executor ex) { return cluster_status(ex, cfg, inv); },
                       *inv.err);
  }
  return run_on_loop([&](asio::any_io_executor ex) { return status(ex, cfg, mailboxes, inv); },
                     *inv.err);
}

}  // namespace mailroom::ops
