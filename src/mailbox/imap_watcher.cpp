#include "mailbox/imap_watcher.hpp"

#include "common/allocator.hpp"
#include "common/unix_time.hpp"
#include "delivery/errc.hpp"
#include "delivery/job.hpp"
#include "mailbox/set_aside.hpp"
#include "mime/headers.hpp"

#include <boost/algorithm/string/predicate.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <utility>

namespace mailroom::mailbox {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace std::chrono_literals;

// The IMAP folder of the session, as the pass runner sees it. Keys are UIDs.
class imap_watcher::imap_inbox final : public inbox {
 public:
  imap_inbox(imap_watcher& w, imap::client& c) : w_(w), c_(c), uidvalidity_(c.uidvalidity()) {}

  asio::awaitable<error_code> sizes(const std::vector<std::uint32_t>& keys,
                                    std::vector<message_size>& out) override {
    const auto& mb = w_.mb_;
    // INTERNALDATE always: the delivery latency starts there.
    auto m = co_await c_.uid_fetch_meta(keys, /*with_date=*/true);
    if (!m) co_return m.error();
    meta_.clear();
    out.reserve(m->size());
    for (auto& x : *m) {
      const auto has = [&](const std::string& keyword) {
        return std::any_of(x.flags.begin(), x.flags.end(),
                           [&](const auto& f) { return boost::algorithm::iequals(f, keyword); });
      };
      const auto reported = [&](aside_reason r) {
        return w_.reported_[static_cast<std::size_t>(r)].count(x.uid) > 0;
      };
      message_size s;
      s.uid = x.uid;
      s.size = x.size;
      s.flagged_oversize = has(mb.oversize_keyword) || reported(aside_reason::oversize);
      s.arrived = x.internal_date;
      s.flagged_too_old = has(mb.too_old_keyword) || reported(aside_reason::too_old);
      s.age_exempt = has(reingested_keyword);
      s.rejected = has(mb.rejected_keyword) || reported(aside_reason::refused);
      out.push_back(s);
      const std::uint32_t uid = x.uid;
      meta_[uid] = std::move(x);
    }
    co_return error_code{};
  }

  asio::awaitable<std::pair<error_code, bool>> set_aside(const std::vector<std::uint32_t>& keys,
                                                         aside_reason reason) override {
    std::vector<imap::message_meta> metas;
    for (const auto uid : keys) {
      auto it = meta_.find(uid);
      metas.push_back(it != meta_.end() ? it->second : imap::message_meta{uid, 0, {}, 0});
    }
    co_return co_await w_.set_aside(c_, metas, reason);
  }

  asio::awaitable<error_code> fetch_bodies(const std::vector<std::uint32_t>& keys,
                                           const body_sink& on_body) override {
    co_return co_await c_.uid_fetch_bodies(keys, on_body);
  }

  asio::awaitable<error_code> mark_delivered(const std::vector<std::uint32_t>& keys,
                                             bool remove) override {
    if (remove && w_.mb_.after_delivery == config::after_delivery_action::move)
      co_return co_await w_.move_delivered(c_, keys);
    const std::string flags = remove ? "\\Seen \\Deleted" : "\\Seen";
    co_return co_await c_.uid_store_add_flags(keys, flags);
  }

  asio::awaitable<error_code> expunge(const std::vector<std::uint32_t>& keys) override {
    co_return co_await c_.expunge(keys);
  }

  mail_message message(std::uint32_t key, std::string&& body) const override {
    const auto& mb = w_.mb_;
    return {mb.email,
            mb.name,
            uidvalidity_,
            key,
            std::move(body),
            delivery::stable_jid(mb.server(), mb.email, config::canonical_folder(mb.name),
                                 uidvalidity_, key)};
  }

  arbitration::claim_request claim_request(std::uint32_t key) const override {
    return {w_.mb_.email, w_.mb_.name, w_.mb_.server(), uidvalidity_, key, {}};
  }

 private:
  imap_watcher& w_;
  imap::client& c_;
  const std::uint32_t uidvalidity_;
  // The sizes (and flags) of the chunk being planned, for the oversize log.
  std::map<std::uint32_t, imap::message_meta> meta_;
};

imap_watcher::imap_watcher(asio::any_io_executor ex, const config::mailbox& mb,
                           std::shared_ptr<delivery::deliverer> deliverer,
                           std::shared_ptr<arbitration::arbitrator> arbitrator,
                           std::shared_ptr<log::logger> log, watcher_options opts)
    : watcher(mb),
      executor_(ex),
      deliverer_(std::move(deliverer)),
      arbitrator_(std::move(arbitrator)),
      log_(std::move(log)),
      opts_(opts),
      retry_(opts.retry_min, opts.retry_max),
      runner_(
          ex, deliverer_, arbitrator_, log_,
          [this](const char* action) { return context_line(action); }, health_) {}

void imap_watcher::stop() {
  stopping_ = true;
  // Deliveries waiting for a slot are not sent; those running finish.
  runner_.stop();
  if (current_) {
    // Nothing is in flight before SELECT: a login (or the wait for its OAuth2
    // token) is abandoned rather than waited for.
    if (state_ == watcher_state::connecting) {
      current_->close();
    } else {
      current_->interrupt_idle();
    }
  }
  if (sleep_timer_) sleep_timer_->cancel();
}

void imap_watcher::restart() {
  stopping_ = false;
  runner_.resume();
  state_ = watcher_state::connecting;
  health_.progress();
}

watcher::token_counts imap_watcher::tokens() const {
  if (!opts_.imap.tokens) return {};
  return {opts_.imap.tokens->renewals(), opts_.imap.tokens->failures()};
}

void imap_watcher::abort() {
  stopping_ = true;
  runner_.stop();
  if (current_) current_->close();
  if (sleep_timer_) sleep_timer_->cancel();
}

asio::awaitable<void> imap_watcher::sleep(std::chrono::milliseconds d) {
  sleep_timer_ = std::make_shared<asio::steady_timer>(executor_, d);
  error_code ec;
  co_await sleep_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> imap_watcher::run(std::function<void(const fatal_error&)> on_fatal) {
  log_->info(context_line("Setting up watcher"));
  bool ever_logged_in = false;
  auto backoff = opts_.reconnect_min;
  while (!stopping_) {
    health_.progress();
    imap::client c(executor_, mb_, opts_.imap);
    current_ = &c;
    bool logged_in = false;
    const error_code ec = co_await session(c, logged_in);
    state_ = watcher_state::connecting;
    health_.progress();
    if (logged_in) {
      ever_logged_in = true;
      backoff = opts_.reconnect_min;
    }
    if (stopping_) {
      log_->info(context_line("Quitting connection..."));
      co_await c.logout();
      current_ = nullptr;
      break;
    }
    current_ = nullptr;
    c.close();
    const std::string error =
        ec ? ec.message() + (c.last_error().empty() ? "" : ": " + c.last_error())
           : "connection ended";
    health_.last_error = error;
    ++health_.counters.connection_errors;
    if (ec == imap::client_errc::auth_failed || ec == imap::client_errc::login_deferred)
      ++health_.counters.login_failures;
    // Permanent errors (login or certificate rejected, missing folder) need an
    // operator. mail_room exits on them at start-up; once the mailbox has
    // worked, the cause is more likely passing (a password rotation in
    // progress, a server restore), so by default we keep trying.
    const auto policy = mb_.on_permanent_error;
    if (imap::is_permanent(ec) &&
        (policy == config::permanent_error_policy::exit ||
         (policy == config::permanent_error_policy::exit_at_startup && !ever_logged_in))) {
      auto f = context_line("Giving up");
      f["error"] = error;
      log_->error(f);
      state_ = watcher_state::stopped;
      on_fatal({mb_.label(), error});
      co_return;
    }
    const auto delay = jittered(backoff);
    auto f = context_line("Disconnected. Resetting...");
    f["error"] = error;
    f["permanent"] = imap::is_permanent(ec);
    f["retry_in_ms"] = delay.count();
    log_->warn(f);
    state_ = watcher_state::backing_off;
    co_await sleep(delay);
    state_ = watcher_state::connecting;
    backoff = std::min(backoff * 2, opts_.reconnect_max);
  }
  state_ = watcher_state::stopped;
}

asio::awaitable<error_code> imap_watcher::session(imap::client& c, bool& logged_in) {
  const std::function<void(const char*)> on_step = [this](const char* step) {
    health_.progress();
    log_->info(context_line(step));
  };
  auto ec = co_await c.connect_and_login(on_step);
  if (ec) co_return ec;
  log_->info(context_line("Setting mailbox"));
  if (auto e = co_await c.select(mb_.name)) co_return e;
  // Only a session that got this far proves the settings work; until then a
  // permanent error (login, certificate, missing folder) ends the process.
  logged_in = true;
  state_ = watcher_state::connected;
  ++health_.counters.connects;
  if (c.tls_resumed()) ++health_.counters.tls_resumed;
  health_.certificate_expiry = c.certificate_expiry();
  health_.progress();
  if (last_uidvalidity_ != 0 && c.uidvalidity() != last_uidvalidity_) {
    // Every UID was renumbered (RFC 3501 §2.3.1.1). Delivered messages are
    // \Seen (or gone), so the search below still finds only undelivered ones;
    // claims and records under the old UIDVALIDITY simply expire.
    auto f = context_line("UIDVALIDITY changed");
    f["old_uidvalidity"] = last_uidvalidity_;
    f["new_uidvalidity"] = c.uidvalidity();
    log_->warn(f);
    ++health_.counters.uidvalidity_changes;
    for (auto& r : reported_) r.clear();
  }
  last_uidvalidity_ = c.uidvalidity();
  if (auto e = co_await expunge_leftovers(c)) co_return e;

  while (!stopping_) {
    // A failed delivery target gets its backoff, also across reconnects and
    // whatever mail arrives meanwhile.
    if (retry_.backing_off(std::chrono::steady_clock::now())) {
      if (auto e = co_await wait_to_retry(c)) co_return e;
      continue;
    }
    const pass_result pass = co_await process_mailbox(c);
    if (pass.bytes_fetched >= allocator::release_after_bytes) allocator::release_free_memory();
    retry_.pass_ended(std::chrono::steady_clock::now(), pass.delivery_failed, pass.delivered > 0,
                      std::chrono::seconds(mb_.idle_timeout));
    if (pass.ec) co_return pass.ec;
    if (!stopping_) {
      if (auto e = co_await count_unseen(c)) co_return e;
    }
    health_.progress();
    if (stopping_) break;
    if (retry_.backing_off(std::chrono::steady_clock::now())) continue;
    // IDLE is renewed every idle_check_interval: DONE must be answered within
    // command_timeout, which proves the server (and every hop to it) still
    // answers. TCP keepalive alone misses a peer that keeps the TCP session
    // up but stopped serving (a hung server, a stuck proxy).
    std::chrono::milliseconds wait =
        std::min(std::chrono::seconds(mb_.idle_timeout), mb_.idle_check_interval);
    // Messages another instance claimed are normally flagged by it soon; if it
    // died instead, they become ours once its last renewal expires, within
    // claim_ttl. Look again every quarter claim_ttl rather than after a whole
    // idle_timeout (no new mail would wake us): such a message is delivered
    // within 1.25 x claim_ttl of the other instance's death (a cluster
    // takeover included, README "Several instances").
    if (pass.claimed_elsewhere)
      wait = std::min<std::chrono::milliseconds>(
          wait, std::max<std::chrono::milliseconds>(mb_.arbitration_opts.claim_ttl / 4,
                                                    std::chrono::seconds(1)));
    // Mail announced while we were busy: look again before idling.
    if (c.take_new_mail_hint()) continue;
    log_->info(context_line("Idling"));
    auto r = co_await c.idle(wait);
    if (!r) co_return r.error();
    health_.progress();
  }
  co_return error_code{};
}

asio::awaitable<error_code> imap_watcher::wait_to_retry(imap::client& c) {
  auto f = context_line("waiting to retry delivery");
  const auto now = std::chrono::steady_clock::now();
  f["retry_in_ms"] =
      std::chrono::ceil<std::chrono::milliseconds>(retry_.next_attempt() - now).count();
  f["backoff_ms"] = retry_.delay().count();
  log_->info(f);
  const std::chrono::milliseconds renew =
      std::min(std::chrono::seconds(mb_.idle_timeout), mb_.idle_check_interval);
  for (auto t = now; !stopping_ && retry_.backing_off(t); t = std::chrono::steady_clock::now()) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(retry_.next_attempt() - t);
    auto r = co_await c.idle(std::min(left, renew), /*wake_on_new_mail=*/false);
    if (!r) co_return r.error();
    health_.progress();
  }
  co_return error_code{};
}

asio::awaitable<error_code> imap_watcher::count_unseen(imap::client& c) {
  // What STATUS (UNSEEN) would say (RFC 3501 §6.3.10), which is what
  // GitLab's mailbox exporter reports; STATUS on the selected mailbox is
  // discouraged (§6.3.10), so SEARCH UNSEEN it is. It includes what the
  // pass's search leaves out: messages set aside by keyword, those over
  // limit_max_unread, those left for a retry.
  const std::string criteria = "UNSEEN";
  auto found = co_await c.uid_search(criteria);
  if (!found) co_return found.error();
  unseen_count u;
  u.messages = found->size();
  if (!found->empty()) {
    // UIDs ascend in the order messages were added (RFC 3501 §2.3.1.1).
    const std::vector<std::uint32_t> oldest{*std::min_element(found->begin(), found->end())};
    auto meta = co_await c.uid_fetch_meta(oldest, /*with_date=*/true);
    if (!meta) co_return meta.error();
    if (!meta->empty()) u.oldest_arrival = meta->front().internal_date;
  }
  u.counted_at = unix_seconds();
  health_.unseen = u;
  co_return error_code{};
}

asio::awaitable<error_code> imap_watcher::expunge_leftovers(imap::client& c) {
  // A process that died between flagging \Deleted and expunging leaves
  // messages behind. With expunge_deleted the operator asked for \Deleted
  // messages to go (mail_room's EXPUNGE removes all of them too), so clear
  // them once per session.
  if (!mb_.expunge_deleted) co_return error_code{};
  const std::string criteria = "DELETED";
  auto found = co_await c.uid_search(criteria);
  if (!found) co_return found.error();
  if (found->empty()) co_return error_code{};
  auto f = context_line("expunging messages left flagged \\Deleted");
  f["count"] = found->size();
  log_->info(f);
  if (auto ec = co_await c.expunge(*found)) co_return ec;
  health_.counters.expunged_leftovers += found->size();
  co_return error_code{};
}

asio::awaitable<boost::system::result<imap::move_outcome>> imap_watcher::move_creating(
    imap::client& c, const std::vector<std::uint32_t>& uids, const std::string& folder,
    const std::string& mark_copied) {
  auto moved = co_await c.uid_move(uids, folder, mark_copied);
  if (!moved && moved.error() == imap::client_errc::command_failed) {
    // Most likely the folder is missing ([TRYCREATE]): create it and try
    // once more (a CREATE refused because it exists changes nothing).
    const std::string refused = c.last_error();
    const error_code created = co_await c.create(folder);
    if (created && created != imap::client_errc::command_failed) co_return created;
    if (!created) {
      auto f = context_line("created a folder");
      f["folder"] = folder;
      f["after"] = refused;
      log_->info(f);
    }
    moved = co_await c.uid_move(uids, folder, mark_copied);
  }
  co_return moved;
}

asio::awaitable<error_code> imap_watcher::move_delivered(imap::client& c,
                                                         const std::vector<std::uint32_t>& uids) {
  // \Seen first: from then on the message is never delivered again, whether
  // or not the move works; MOVE and COPY keep the flags (RFC 6851 §3.3).
  const std::string seen = "\\Seen";
  if (auto ec = co_await c.uid_store_add_flags(uids, seen)) co_return ec;
  const std::string no_mark;
  auto moved = co_await move_creating(c, uids, mb_.move_to, no_mark);
  if (moved) {
    // Copied without MOVE or UIDPLUS: \Seen \Deleted here, gone with the
    // pass's expunge (expunge_deleted).
    co_return error_code{};
  }
  if (moved.error() != imap::client_errc::command_failed) co_return moved.error();
  // Delivered and \Seen: they stay in the folder, and nothing is lost.
  auto w = context_line("cannot move delivered messages; they stay in the folder, flagged \\Seen");
  w["move_to"] = mb_.move_to;
  w["count"] = uids.size();
  w["error"] = c.last_error();
  log_->warn(w);
  co_return error_code{};
}

asio::awaitable<std::pair<error_code, bool>> imap_watcher::set_aside(
    imap::client& c, const std::vector<imap::message_meta>& metas, aside_reason reason) {
  const aside_policy policy = aside_policy_for(mb_, reason);
  std::vector<std::uint32_t> uids;
  for (const auto& m : metas) {
    auto f = context_line(policy.why);
    f["uid"] = m.uid;
    if (reason == aside_reason::oversize) {
      f["byte_size"] = m.size;
      f["max_message_size"] = mb_.max_message_size;
    } else if (reason == aside_reason::too_old) {
      f["arrived"] = m.internal_date;
      f["max_message_age"] = mb_.max_message_age.count();
    }
    f["set_aside"] = policy.folder.empty() ? "flag " + policy.keyword : "move to " + policy.folder;
    log_->warn(f);
    uids.push_back(m.uid);
  }
  if (!policy.folder.empty()) {
    auto moved = co_await move_creating(c, uids, policy.folder, policy.keyword);
    if (moved) {
      // Copied and flagged \Deleted plus the keyword (no MOVE, no UIDPLUS):
      // they leave the folder with this pass's expunge if expunge_deleted.
      co_return std::pair{error_code{}, *moved == imap::move_outcome::copied};
    }
    const error_code ec = moved.error();
    if (ec != imap::client_errc::command_failed) co_return std::pair{ec, false};
    auto w = context_line("cannot move messages set aside; flagging them instead");
    w["folder"] = policy.folder;
    w["error"] = c.last_error();
    log_->warn(w);
  }
  // The keyword keeps them out of later passes. A server without keywords
  // (no \* in PERMANENTFLAGS) answers NO: remember them in memory instead.
  auto ec = co_await c.uid_store_add_flags(uids, policy.keyword);
  if (ec == imap::client_errc::command_failed) {
    auto w = context_line("cannot flag messages set aside; remembered until restart");
    w["keyword"] = policy.keyword;
    w["error"] = c.last_error();
    log_->warn(w);
    reported_[static_cast<std::size_t>(reason)].insert(uids.begin(), uids.end());
    co_return std::pair{error_code{}, false};
  }
  co_return std::pair{ec, false};
}

asio::awaitable<pass_result> imap_watcher::process_mailbox(imap::client& c) {
  log_->info(context_line("Processing started"));
  // Whatever arrived before this search is found by it.
  (void)c.take_new_mail_hint();
  // Messages set aside for good stay out of the search, so that a backlog
  // of them neither costs a size query per pass nor uses up limit_max_unread
  // (which would starve newer mail). Search keys side by side are ANDed
  // (RFC 3501 §6.4.4), whatever search_command holds.
  std::string criteria = mb_.search_command + " UNKEYWORD " + mb_.rejected_keyword;
  if (mb_.max_message_age.count() > 0) criteria += " UNKEYWORD " + mb_.too_old_keyword;
  auto found = co_await c.uid_search(criteria);
  if (!found) {
    pass_result failed;
    failed.ec = found.error();
    co_return failed;
  }
  health_.progress();
  std::vector<std::uint32_t> uids = std::move(*found);
  if (mb_.limit_max_unread > 0 && uids.size() > mb_.limit_max_unread)
    uids.resize(mb_.limit_max_unread);

  pass_settings settings;
  settings.fetch_batch = opts_.fetch_batch;
  settings.fetch_bytes = opts_.fetch_bytes;
  settings.max_message_size = mb_.max_message_size;
  if (mb_.max_message_age.count() > 0) {
    const auto now = std::chrono::system_clock::now();
    settings.oldest_arrival = std::chrono::duration_cast<std::chrono::seconds>(
                                  (now - mb_.max_message_age).time_since_epoch())
                                  .count();
  }
  settings.max_deliveries_in_flight = opts_.max_deliveries_in_flight;
  // The flag action's "delete too" is the inbox's cue to delete or move.
  settings.delete_after_delivery = mb_.leaves_folder_after_delivery();
  settings.expunge_deleted = mb_.expunge_deleted;
  imap_inbox in(*this, c);
  co_return co_await runner_.run(in, std::move(uids), settings);
}

}  // namespace mailroom::mailbox
