// `reingest`: make chosen messages eligible for delivery again while the
// service keeps running, replacing the runbook's "stop every instance for more
// than 10 minutes so the Redis keys expire".
//
// Why this is safe with instances running:
//  * an instance delivers only messages its UID SEARCH finds unseen, and only
//    after winning `SET key NX`: of all instances, one wins;
//  * a key is deleted only if it still holds the value read a moment before
//    (compare-and-delete in one Lua script, atomic in Redis), so a claim taken
//    meanwhile by an instance is never removed;
//  * the claim of an UNSEEN message that an instance holds right now
//    ("claimed:<instance>", or mail_room's "1") is left alone unless --force:
//    that instance may be delivering it this very moment;
//  * with --unseen, \Seen is cleared only after the keys are gone, so the
//    message shows up to instances at a moment when nothing blocks it, and
//    the first instance's SET NX makes it delivered once;
//  * with the scoped key format, the key the previous version wrote (without
//    the server; instances honour it for a while after they start) is
//    treated the same way, so it cannot make an instance take the message
//    for delivered.
#include "arbitration/redis_arbitrator.hpp"
#include "mailbox/set_aside.hpp"
#include "ops/common.hpp"
#include "ops/output.hpp"
#include "redis/client.hpp"

#include <fmt/format.h>
#include <boost/algorithm/string/predicate.hpp>

#include <functional>
#include <memory>

#include <algorithm>
#include <ostream>
#include <unordered_set>

namespace mailroom::ops {

namespace asio = boost::asio;

namespace {

// DEL only if the value is unchanged (atomic: Redis runs a script alone).
constexpr const char* compare_and_delete =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

constexpr std::size_t redis_batch = 1000;

enum class key_state { none, deleted, changed, in_flight, would_delete };

struct plan_item {
  std::uint32_t uid = 0;
  bool unseen = false;
  std::string key;
  std::optional<std::string> value;
  key_state state = key_state::none;
  // The previous version's key for the same message (scoped format only);
  // not shown, but deleted and kept by the same rules.
  std::unique_ptr<plan_item> unscoped;
};

bool in_flight_claim(const std::string& v) {
  return v == "1" || v.rfind("claimed:", 0) == 0;
}

// Sends `make(k)` for k in [0, n) as pipelines of redis_batch commands and
// hands each reply to `take(k, reply)`; false with `detail` on a connection
// failure or an error reply (named by `what(k)`).
asio::awaitable<bool> pipelined(redis::client& r, std::size_t n,
                                const std::function<std::vector<std::string>(std::size_t)>& make,
                                const std::function<std::string(std::size_t)>& what,
                                const std::function<void(std::size_t, const redis::reply&)>& take,
                                std::string& detail) {
  for (std::size_t i = 0; i < n; i += redis_batch) {
    const std::size_t end = std::min(n, i + redis_batch);
    std::vector<std::vector<std::string>> cmds;
    for (std::size_t k = i; k < end; ++k) cmds.push_back(make(k));
    auto replies = co_await r.pipeline(std::move(cmds));
    if (!replies) {
      detail = fmt::format("{}: {} ({})", r.describe(), replies.error().message(), r.last_error());
      co_return false;
    }
    for (std::size_t k = i; k < end; ++k) {
      const auto& rep = (*replies)[k - i];
      if (rep.is_error()) {
        detail = fmt::format("{}: {}: {}", r.describe(), what(k), rep.str);
        co_return false;
      }
      take(k, rep);
    }
  }
  co_return true;
}

asio::awaitable<bool> read_keys(redis::client& r, std::vector<plan_item*>& items,
                                std::string& detail) {
  const std::function<std::vector<std::string>(std::size_t)> make = [&](std::size_t k) {
    return std::vector<std::string>{"GET", items[k]->key};
  };
  const std::function<std::string(std::size_t)> what = [&](std::size_t k) {
    return "GET " + items[k]->key;
  };
  const std::function<void(std::size_t, const redis::reply&)> take = [&](std::size_t k,
                                                                         const redis::reply& rep) {
    if (!rep.is_null()) items[k]->value = rep.str;
  };
  co_return co_await pipelined(r, items.size(), make, what, take, detail);
}

asio::awaitable<bool> delete_keys(redis::client& r, std::vector<plan_item*>& doomed,
                                  std::string& detail) {
  const std::function<std::vector<std::string>(std::size_t)> make = [&](std::size_t k) {
    return std::vector<std::string>{"EVAL", compare_and_delete, "1", doomed[k]->key,
                                    *doomed[k]->value};
  };
  const std::function<std::string(std::size_t)> what = [&](std::size_t k) {
    return "EVAL on " + doomed[k]->key;
  };
  const std::function<void(std::size_t, const redis::reply&)> take = [&](std::size_t k,
                                                                         const redis::reply& rep) {
    doomed[k]->state = rep.integer == 1 ? key_state::deleted : key_state::changed;
  };
  co_return co_await pipelined(r, doomed.size(), make, what, take, detail);
}

const char* state_name(key_state s) {
  switch (s) {
    case key_state::none:
      return "no key";
    case key_state::deleted:
      return "deleted";
    case key_state::changed:
      return "changed meanwhile, kept";
    case key_state::in_flight:
      return "in-flight claim, kept (--force clears it)";
    case key_state::would_delete:
      return "would delete";
  }
  return "?";
}

asio::awaitable<int> reingest(asio::any_io_executor ex, const config::mailbox& mb,
                              const message_filter& filter, const invocation& inv) {
  auto& out = *inv.out;
  auto& err = *inv.err;
  imap::client c(ex, mb, client_options_for(ex, mb));
  std::string detail;
  if (!co_await open_mailbox(c, mb, inv.dry_run, detail)) {
    err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const std::string all_criteria = "UNDELETED";
  const std::string unseen_criteria = "UNSEEN";
  auto found = co_await search(c, mb, all_criteria, detail);
  std::optional<std::vector<std::uint32_t>> unseen;
  std::optional<std::vector<listed_message>> chosen;
  if (found) unseen = co_await search(c, mb, unseen_criteria, detail);
  if (unseen) chosen = co_await select_messages(c, mb, *found, filter, inv.dry_run, detail);
  if (!chosen) {
    err << "mailroom: " << detail << "\n";
    co_return exit_failure;
  }
  const std::unordered_set<std::uint32_t> unseen_set(unseen->begin(), unseen->end());
  std::vector<plan_item> items;
  for (const auto& m : *chosen) {
    plan_item it;
    it.uid = m.view.uid;
    it.unseen = unseen_set.count(it.uid) != 0;
    if (mb.arbitration == config::arbitration_method::redis) {
      const arbitration::claim_request req{mb.email,        mb.name, mb.server(),
                                           c.uidvalidity(), it.uid,  {}};
      it.key = arbitration::arbitration_key(mb.arbitration_opts, req);
      if (mb.arbitration_opts.key_format == config::arbitration_key_format::scoped) {
        it.unscoped = std::make_unique<plan_item>();
        it.unscoped->uid = it.uid;
        it.unscoped->unseen = it.unseen;
        it.unscoped->key = arbitration::unscoped_arbitration_key(mb.arbitration_opts, req);
      }
    }
    items.push_back(std::move(it));
  }

  std::size_t deleted = 0, changed = 0, in_flight = 0, no_key = 0;
  int rc = exit_ok;
  if (mb.arbitration == config::arbitration_method::redis && !items.empty()) {
    redis::client r(ex, mb.arbitration_opts.redis);
    std::vector<plan_item*> keyed;
    for (auto& it : items) {
      keyed.push_back(&it);
      if (it.unscoped) keyed.push_back(it.unscoped.get());
    }
    bool ok = co_await read_keys(r, keyed, detail);
    std::vector<plan_item*> doomed;
    for (auto* p : keyed) {
      auto& it = *p;
      if (!it.value) continue;
      // mail_room's key format is shared by every mailbox of the namespace:
      // a claim there may be another folder's delivery in progress, whatever
      // this folder's message looks like.
      const bool shared_key =
          mb.arbitration_opts.key_format == config::arbitration_key_format::mail_room;
      if ((it.unseen || shared_key) && in_flight_claim(*it.value) && !inv.force) {
        it.state = key_state::in_flight;
      } else {
        it.state = key_state::would_delete;
        doomed.push_back(&it);
      }
    }
    if (ok && !inv.dry_run) ok = co_await delete_keys(r, doomed, detail);
    co_await r.close();
    if (!ok) {
      err << fmt::format("mailroom: mailbox {}: arbitration redis: {}\n", mb.label(), detail);
      co_await c.logout();
      co_return exit_failure;
    }
  }
  for (auto& it : items) {
    // A message counts once, by its key, unless only the old key exists.
    if (it.unscoped && it.unscoped->state != key_state::none &&
        (it.state == key_state::none || it.unscoped->state == key_state::in_flight ||
         it.unscoped->state == key_state::changed)) {
      if (it.state == key_state::none) it.value = it.unscoped->value;
      it.state = it.unscoped->state;
      it.key = it.unscoped->key;
    }
    deleted += it.state == key_state::deleted || it.state == key_state::would_delete;
    changed += it.state == key_state::changed;
    in_flight += it.state == key_state::in_flight;
    no_key += it.state == key_state::none;
  }
  // Only messages whose key is gone (or never existed) become unseen: a kept
  // claim means an instance is on it.
  std::vector<std::uint32_t> to_unseen;
  if (inv.unseen) {
    for (const auto& it : items) {
      const bool free = it.state != key_state::in_flight && it.state != key_state::changed;
      if (!it.unseen && free) to_unseen.push_back(it.uid);
    }
  }

  if (inv.dry_run) {
    const std::int64_t now = now_seconds();
    for (std::size_t i = 0; i < items.size(); ++i) {
      const auto& it = items[i];
      if (inv.json) continue;
      out << fmt::format(
          "{}\n    {}, key {}: {}{}\n", runbook_line((*chosen)[i], now),
          it.unseen ? "unseen" : "seen", it.key.empty() ? "-" : it.key, state_name(it.state),
          inv.unseen && !it.unseen && it.state != key_state::in_flight ? "; would clear \\Seen"
                                                                       : "");
    }
    if (inv.json) {
      auto arr = nlohmann::ordered_json::array();
      for (std::size_t i = 0; i < items.size(); ++i) {
        auto j = message_json((*chosen)[i], now);
        j["unseen"] = items[i].unseen;
        j["key"] = items[i].key;
        j["key_value"] = items[i].value ? nlohmann::ordered_json(*items[i].value) : nullptr;
        j["action"] = state_name(items[i].state);
        arr.push_back(std::move(j));
      }
      out << dump(arr, 2) << "\n";
    }
    err << fmt::format(
        "{}: dry run: {} message(s) chosen; would delete {} key(s), keep {} in-flight claim(s), "
        "{} without key; would clear \\Seen on {}\n",
        mb.label(), items.size(), deleted, in_flight, no_key, to_unseen.size());
  } else {
    // Messages the service set aside for their age or because the target
    // refused them carry a keyword that keeps them out of its passes: the
    // operator's decision lifts it. The age limit no longer applies to
    // them ($MailroomReingested is set first, so that no pass sees one
    // without either keyword and sets it aside again).
    std::vector<std::uint32_t> free;
    for (const auto& it : items)
      if (it.state != key_state::in_flight && it.state != key_state::changed)
        free.push_back(it.uid);
    std::vector<std::uint32_t> marked;
    if (!free.empty()) {
      auto metas = co_await c.uid_fetch_meta(free);
      if (!metas) {
        err << "mailroom: " << imap_failure(mb, c, "UID FETCH", metas.error()) << "\n";
        co_await c.logout();
        co_return exit_failure;
      }
      for (const auto& m : *metas) {
        const auto has = [&](const std::string& k) {
          return std::any_of(m.flags.begin(), m.flags.end(),
                             [&](const std::string& f) { return boost::iequals(f, k); });
        };
        if (has(mb.too_old_keyword) || has(mb.rejected_keyword)) marked.push_back(m.uid);
      }
    }
    if (!marked.empty()) {
      const std::string exempt = mailbox::reingested_keyword;
      const std::string keywords = mb.too_old_keyword + " " + mb.rejected_keyword;
      auto ec = co_await c.uid_store_add_flags(marked, exempt);
      if (!ec) ec = co_await c.uid_store_remove_flags(marked, keywords);
      if (ec) {
        err << "mailroom: " << imap_failure(mb, c, "UID STORE", ec) << "\n";
        rc = exit_failure;
      }
    }
    if (!to_unseen.empty()) {
      const std::string seen = "\\Seen";
      if (auto ec = co_await c.uid_store_remove_flags(to_unseen, seen)) {
        err << "mailroom: " << imap_failure(mb, c, "UID STORE -FLAGS", ec) << "\n";
        rc = exit_failure;
      }
    }
    out << fmt::format(
        "{}: {} message(s) chosen; deleted {} arbitration key(s), kept {} in-flight claim(s){}{}, "
        "{} had no key; cleared \\Seen on {} message(s){}\n",
        mb.label(), items.size(), deleted, in_flight, in_flight ? " (--force clears them)" : "",
        changed ? fmt::format(", {} changed meanwhile and kept", changed) : "", no_key,
        rc == exit_ok ? to_unseen.size() : 0,
        marked.empty() ? ""
                       : fmt::format("; {} set aside (too old or refused) made eligible again",
                                     marked.size()));
    if (mb.arbitration != config::arbitration_method::redis)
      out << "(arbitration is noop: there are no keys to delete)\n";
  }
  co_await c.logout();
  co_return rc;
}

}  // namespace

int run_reingest(const config::config& cfg, const invocation& inv) {
  auto target = choose_destructive_target(cfg, inv, "reingest");
  if (!target) return exit_usage;
  return run_on_loop(
      [&](asio::any_io_executor ex) { return reingest(ex, *target->mailbox, target->filter, inv); },
      *inv.err);
}

}  // namespace mailroom::ops
