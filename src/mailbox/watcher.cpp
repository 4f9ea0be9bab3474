#include "mailbox/watcher.hpp"

#include "common/allocator.hpp"
#include "delivery/job.hpp"
#include "mime/headers.hpp"

#include <boost/algorithm/string/predicate.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <utility>

namespace mailroom::mailbox {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace std::chrono_literals;

namespace {

nlohmann::ordered_json id_list(const std::vector<std::uint32_t>& ids) {
  nlohmann::ordered_json j;
  j["count"] = ids.size();
  j["ids"] = ids;
  return j;
}

std::chrono::milliseconds with_jitter(std::chrono::milliseconds d) {
  // +-20 % so that instances restarted together do not reconnect in lockstep.
  static thread_local std::minstd_rand rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(d.count() * f(rng)));
}

// Runs the operations concurrently and returns their results in input order.
// The Redis client pipelines concurrent commands and the HTTP client runs
// requests on its pool, so a batch costs about one round trip, not one each.
template <typename T>
asio::awaitable<std::vector<T>> run_all(asio::any_io_executor ex,
                                        std::vector<asio::awaitable<T>> ops) {
  // A ranged parallel_group over no operations never completes.
  if (ops.empty()) co_return std::vector<T>{};
  using op_type = decltype(asio::co_spawn(ex, std::declval<asio::awaitable<T>>(), asio::deferred));
  std::vector<op_type> spawned;
  spawned.reserve(ops.size());
  for (auto& op : ops) spawned.push_back(asio::co_spawn(ex, std::move(op), asio::deferred));
  auto [order, exceptions, results] =
      co_await asio::experimental::make_parallel_group(std::move(spawned))
          .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (const auto& e : exceptions)
    if (e) std::rethrow_exception(e);
  co_return std::move(results);
}

}  // namespace

watcher::batch_deliveries::batch_deliveries(asio::any_io_executor ex)
    : wake(ex, asio::steady_timer::time_point::max()) {}

void watcher::batch_deliveries::finished(const delivery_slot& slot) {
  held_bytes -= slot.bytes;
  if (slot.error || (!slot.skipped && !slot.outcome.ok())) target_failed = true;
  if (--pending == 0) wake.cancel();
}

watcher::delivery_gate::delivery_gate(asio::any_io_executor ex, std::size_t max_running)
    : executor(ex), limit(std::max<std::size_t>(max_running, 1)) {}

asio::awaitable<void> watcher::delivery_gate::acquire() {
  if (running < limit && waiting.empty()) {
    ++running;
    co_return;
  }
  // Woken by release(), which hands its place over (running stays the same).
  auto t = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
  waiting.push_back(t);
  error_code ec;
  co_await t->async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

void watcher::delivery_gate::release() {
  if (waiting.empty()) {
    --running;
    return;
  }
  waiting.front()->cancel();
  waiting.pop_front();
}

asio::awaitable<void> watcher::wait_all(batch_deliveries& b) {
  while (b.pending > 0) {
    error_code ec;
    co_await b.wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> watcher::deliver_one(mail_message m, delivery_slot& slot,
                                           std::shared_ptr<delivery_gate> gate) {
  if (gate->running >= gate->limit || !gate->waiting.empty()) {
    auto w = context_line("delivery waiting for a free slot");
    w["uid"] = m.uid;
    w["in_flight"] = gate->running;
    log_->debug(w);
  }
  co_await gate->acquire();
  // The target failed meanwhile: sending more now would fail the same way
  // (and hammer a target that is down). Shutting down: only what was already
  // sent is finished.
  if (gate->target_failed || stopping_) {
    slot.skipped = true;
    gate->release();
    co_return;
  }
  auto f = context_line("sending to deliverer");
  f["uid"] = m.uid;
  f["jid"] = m.id;
  // For finding a message in the logs; the jid is what identifies a delivery.
  if (auto mid = mime::message_id(m.body)) f["message_id"] = *mid;
  f["deliverer"] = deliverer_->class_name();
  f["byte_size"] = m.body.size();
  log_->info(f);
  slot.outcome = co_await deliverer_->deliver(m);
  if (!slot.outcome.ok()) gate->target_failed = true;
  gate->release();
}  // the body is freed here, as soon as the target has answered

void watcher::start_delivery(const std::shared_ptr<batch_deliveries>& batch,
                             const std::shared_ptr<delivery_gate>& gate, std::uint32_t uidvalidity,
                             std::uint32_t uid, std::string&& body) {
  batch_deliveries& b = *batch;
  mail_message m{mb_.email, mb_.name, uidvalidity, uid, std::move(body), {}};
  m.id = delivery::stable_jid(mb_.server(), mb_.email, config::canonical_folder(mb_.name),
                              uidvalidity, uid);
  delivery_slot& slot = b.slots.emplace_back();
  slot.uid = uid;
  slot.id = m.id;
  slot.bytes = m.body.size();
  b.held_bytes += slot.bytes;
  ++b.pending;
  // The completion holds the batch: its slots outlive the delivery even if
  // the pass is abandoned (an exception) before wait_all() returns.
  asio::co_spawn(executor_, deliver_one(std::move(m), slot, gate),
                 [batch, gate, &slot](std::exception_ptr e) {
                   if (e) {  // thrown by the deliverer, after acquire()
                     slot.error = e;
                     gate->target_failed = true;
                     gate->release();
                   }
                   batch->finished(slot);
                 });
}

watcher::watcher(asio::any_io_executor ex, const config::mailbox& mb,
                 std::shared_ptr<delivery::deliverer> deliverer,
                 std::shared_ptr<arbitration::arbitrator> arbitrator,
                 std::shared_ptr<log::logger> log, watcher_options opts)
    : executor_(ex),
      mb_(mb),
      deliverer_(std::move(deliverer)),
      arbitrator_(std::move(arbitrator)),
      log_(std::move(log)),
      opts_(opts),
      retry_(opts.retry_min, opts.retry_max) {}

log::fields watcher::context_line(const char* action) const {
  log::fields f;
  f["context"] = {{"email", mb_.email}, {"name", mb_.name}};
  f["action"] = action;
  return f;
}

void watcher::stop() {
  stopping_ = true;
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

void watcher::abort() {
  stopping_ = true;
  if (current_) current_->close();
  if (sleep_timer_) sleep_timer_->cancel();
}

asio::awaitable<void> watcher::sleep(std::chrono::milliseconds d) {
  sleep_timer_ = std::make_shared<asio::steady_timer>(executor_, d);
  error_code ec;
  co_await sleep_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

std::chrono::steady_clock::duration watcher::stalled_for() const {
  if (state_ == watcher_state::stopped) return {};
  return std::chrono::steady_clock::now() - last_progress_;
}

asio::awaitable<void> watcher::run(std::function<void(const fatal_error&)> on_fatal) {
  log_->info(context_line("Setting up watcher"));
  bool ever_logged_in = false;
  auto backoff = opts_.reconnect_min;
  while (!stopping_) {
    progress();
    imap::client c(executor_, mb_, opts_.imap);
    current_ = &c;
    bool logged_in = false;
    const error_code ec = co_await session(c, logged_in);
    state_ = watcher_state::connecting;
    progress();
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
    last_error_ = error;
    ++counters_.connection_errors;
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
    const auto delay = with_jitter(backoff);
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

asio::awaitable<error_code> watcher::session(imap::client& c, bool& logged_in) {
  const std::function<void(const char*)> on_step = [this](const char* step) {
    progress();
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
  ++counters_.connects;
  progress();
  if (last_uidvalidity_ != 0 && c.uidvalidity() != last_uidvalidity_) {
    // Every UID was renumbered (RFC 3501 §2.3.1.1). Delivered messages are
    // \Seen (or gone), so the search below still finds only undelivered ones;
    // claims and records under the old UIDVALIDITY simply expire.
    auto f = context_line("UIDVALIDITY changed");
    f["old_uidvalidity"] = last_uidvalidity_;
    f["new_uidvalidity"] = c.uidvalidity();
    log_->warn(f);
    ++counters_.uidvalidity_changes;
    oversize_reported_.clear();
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
    progress();
    if (stopping_) break;
    if (retry_.backing_off(std::chrono::steady_clock::now())) continue;
    // IDLE is renewed every idle_check_interval: DONE must be answered within
    // command_timeout, which proves the server (and every hop to it) still
    // answers. TCP keepalive alone misses a peer that keeps the TCP session
    // up but stopped serving (a hung server, a stuck proxy).
    std::chrono::milliseconds wait =
        std::min(std::chrono::seconds(mb_.idle_timeout), mb_.idle_check_interval);
    // Messages another instance claimed are normally flagged by it soon; if it
    // died instead, they become ours once the claim expires. Look again then
    // rather than after a whole idle_timeout (no new mail would wake us).
    if (pass.claimed_elsewhere)
      wait = std::min<std::chrono::milliseconds>(
          wait, mb_.arbitration_opts.claim_ttl + std::chrono::seconds(1));
    // Mail announced while we were busy: look again before idling.
    if (c.take_new_mail_hint()) continue;
    log_->info(context_line("Idling"));
    auto r = co_await c.idle(wait);
    if (!r) co_return r.error();
    progress();
  }
  co_return error_code{};
}

asio::awaitable<error_code> watcher::wait_to_retry(imap::client& c) {
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
    progress();
  }
  co_return error_code{};
}

asio::awaitable<error_code> watcher::expunge_leftovers(imap::client& c) {
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
  counters_.expunged_leftovers += found->size();
  co_return error_code{};
}

asio::awaitable<error_code> watcher::set_aside_oversize(imap::client& c,
                                                        const std::vector<imap::message_meta>& big,
                                                        pass_state& pass) {
  std::vector<std::uint32_t> uids;
  for (const auto& m : big) {
    auto f = context_line("message too large, not delivered");
    f["uid"] = m.uid;
    f["byte_size"] = m.size;
    f["max_message_size"] = mb_.max_message_size;
    f["oversize_action"] = mb_.on_oversize == config::oversize_action::move
                               ? "move to " + mb_.oversize_folder
                               : "flag " + mb_.oversize_keyword;
    log_->warn(f);
    uids.push_back(m.uid);
  }
  counters_.oversize += uids.size();
  if (mb_.on_oversize == config::oversize_action::move) {
    auto moved = co_await c.uid_move(uids, mb_.oversize_folder, mb_.oversize_keyword);
    if (moved) {
      // Copied and flagged \Deleted plus the keyword (no MOVE, no UIDPLUS):
      // they leave the folder with this pass's expunge if expunge_deleted.
      if (*moved == imap::move_outcome::copied && mb_.expunge_deleted)
        pass.deleted.insert(pass.deleted.end(), uids.begin(), uids.end());
      co_return error_code{};
    }
    const error_code ec = moved.error();
    if (ec != imap::client_errc::command_failed) co_return ec;
    auto w = context_line("cannot move oversize messages; flagging them instead");
    w["error"] = c.last_error();
    log_->warn(w);
  }
  // The keyword keeps them out of later passes. A server without keywords
  // (no \* in PERMANENTFLAGS) answers NO: remember them in memory instead.
  auto ec = co_await c.uid_store_add_flags(uids, mb_.oversize_keyword);
  if (ec == imap::client_errc::command_failed) {
    auto w = context_line("cannot flag oversize messages");
    w["error"] = c.last_error();
    log_->warn(w);
    oversize_reported_.insert(uids.begin(), uids.end());
    co_return error_code{};
  }
  co_return ec;
}

asio::awaitable<void> watcher::release_claim(std::uint32_t uidvalidity, std::uint32_t uid) {
  // A named request: g++ 12 may destroy a temporary in a co_await expression twice.
  const arbitration::claim_request req = request_for(uidvalidity, uid);
  co_await arbitrator_->release(req);
}

asio::awaitable<bool> watcher::record_delivery(std::uint32_t uidvalidity, std::uint32_t uid,
                                               std::string jid) {
  const arbitration::claim_request req = request_for(uidvalidity, uid);
  co_await arbitrator_->mark_delivered(req, jid);
  co_return true;
}

asio::awaitable<watcher::pass_result> watcher::process_mailbox(imap::client& c) {
  pass_result result;
  log_->info(context_line("Processing started"));
  // Whatever arrived before this search is found by it.
  (void)c.take_new_mail_hint();
  auto found = co_await c.uid_search(mb_.search_command);
  if (!found) {
    result.ec = found.error();
    co_return result;
  }
  progress();
  std::vector<std::uint32_t> uids = std::move(*found);
  if (mb_.limit_max_unread > 0 && uids.size() > mb_.limit_max_unread)
    uids.resize(mb_.limit_max_unread);

  pass_state pass;
  const auto gate = std::make_shared<delivery_gate>(executor_, opts_.max_deliveries_in_flight);
  const std::uint32_t uidvalidity = c.uidvalidity();
  // The batch fetched last, its deliveries possibly still running: it is
  // finished (recorded and flagged) after the next batch has been fetched, so
  // that the IMAP server works on the next batch while the target
  // acknowledges this one.
  std::unique_ptr<fetched_batch> prev;

  // Batch by batch, so that memory is bounded (at most fetch_batch messages
  // per batch, and fetch_bytes of bodies held, counting those of the previous
  // batch still being delivered) and a claim never waits long for its
  // delivery.
  std::size_t next = 0;
  while (next < uids.size() && !stopping_ && !pass.stop) {
    // The target (or the arbitration store) already failed in this pass:
    // finish the previous batch now, which ends the pass, rather than fetch
    // more.
    if (gate->target_failed || (prev && prev->store_down)) {
      if (auto ec = co_await finish_batch(c, prev, true, pass, result)) {
        result.ec = ec;
        co_return result;
      }
      pass.stop = true;
      continue;
    }
    const std::size_t chunk_end = std::min(uids.size(), next + opts_.fetch_batch);
    const std::vector<std::uint32_t> chunk(uids.begin() + next, uids.begin() + chunk_end);

    // Sizes first: an oversize message is never fetched (its literal would
    // have to be held whole), and the batch is cut to the byte budget.
    auto meta = co_await c.uid_fetch_meta(chunk);
    if (!meta) {
      co_await finish_batch(c, prev, false, pass, result);
      result.ec = meta.error();
      co_return result;
    }
    progress();
    std::map<std::uint32_t, const imap::message_meta*> by_uid;
    for (const auto& m : *meta) by_uid[m.uid] = &m;
    // Deliveries of the previous batch still running count against this
    // batch's budgets: fetch_bytes of bodies, and fetch_batch deliveries at
    // once (webhook requests run a few at a time, and each must be done well
    // within claim_ttl). When not even the first message of this batch fits
    // beside them, the previous batch is finished first.
    std::uint64_t held = prev ? prev->deliveries->held_bytes : 0;
    std::size_t in_flight = prev ? prev->deliveries->pending : 0;
    if (prev) {
      bool fits = in_flight < opts_.fetch_batch;
      for (const auto uid : chunk) {  // the first message this batch would take
        if (!fits) break;
        auto it = by_uid.find(uid);
        if (it == by_uid.end() || it->second->size > mb_.max_message_size) continue;
        fits = held + it->second->size <= opts_.fetch_bytes;
        break;
      }
      if (!fits) {
        auto d = context_line("waiting for deliveries before fetching more");
        d["in_flight"] = in_flight;
        d["held_bytes"] = held;
        log_->debug(d);
        if (auto ec = co_await finish_batch(c, prev, true, pass, result)) {
          result.ec = ec;
          co_return result;
        }
        held = 0;
        in_flight = 0;
      }
    }
    // A target that refuses at once (connection refused) has usually failed
    // on the previous batch by now: then end the pass instead of fetching.
    if (gate->target_failed) {
      if (auto ec = co_await finish_batch(c, prev, true, pass, result)) {
        result.ec = ec;
        co_return result;
      }
      pass.stop = true;
      break;
    }
    const std::uint64_t budget = opts_.fetch_bytes - held;
    const std::size_t count_budget = opts_.fetch_batch - in_flight;
    std::vector<std::uint32_t> batch;
    std::vector<imap::message_meta> oversize;
    std::uint64_t bytes = 0;
    std::size_t consumed = 0;
    for (const auto uid : chunk) {
      auto it = by_uid.find(uid);
      if (it == by_uid.end()) {
        ++consumed;  // expunged meanwhile
        continue;
      }
      const imap::message_meta& m = *it->second;
      if (m.size > mb_.max_message_size) {
        ++consumed;
        const bool flagged = std::any_of(m.flags.begin(), m.flags.end(), [&](const auto& f) {
          return boost::algorithm::iequals(f, mb_.oversize_keyword);
        });
        if (!flagged && !oversize_reported_.count(uid)) oversize.push_back(m);
        continue;
      }
      if (!batch.empty() && (bytes + m.size > budget || batch.size() >= count_budget)) break;
      ++consumed;
      batch.push_back(uid);
      bytes += m.size;
    }
    next += consumed;
    if (!oversize.empty()) {
      if (auto ec = co_await set_aside_oversize(c, oversize, pass)) {
        co_await finish_batch(c, prev, false, pass, result);
        result.ec = ec;
        co_return result;
      }
    }
    if (batch.empty()) continue;

    auto cur = std::make_unique<fetched_batch>();
    cur->deliveries = std::make_shared<batch_deliveries>(executor_);
    std::vector<arbitration::claim_request> requests;
    std::vector<std::string> details(batch.size());
    requests.reserve(batch.size());
    std::vector<asio::awaitable<arbitration::claim_result>> claims;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto f = context_line("asking arbiter to deliver");
      f["uid"] = batch[i];
      f["arbitrator"] = arbitrator_->class_name();
      log_->info(f);
      requests.push_back(request_for(uidvalidity, batch[i]));
      claims.push_back(arbitrator_->claim(requests.back(), details[i]));
    }
    const auto answers = co_await run_all(executor_, std::move(claims));
    progress();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      switch (answers[i]) {
        case arbitration::claim_result::granted:
          cur->granted.push_back(batch[i]);
          break;
        case arbitration::claim_result::delivered:
          cur->already.push_back(batch[i]);
          break;
        case arbitration::claim_result::taken:
          ++counters_.claimed_elsewhere;
          result.claimed_elsewhere = true;
          break;
        case arbitration::claim_result::unavailable:
          if (!cur->store_down) {
            auto w = context_line("arbitration unavailable");
            w["uid"] = batch[i];
            w["error"] = details[i];
            log_->warn(w);
            last_error_ = details[i];
            target_ok_ = false;
            cur->store_down = true;
          }
          break;
      }
    }
    auto g = context_line("Getting new messages");
    g["unread"] = id_list(batch);
    g["to_be_delivered"] = id_list(cur->granted);
    if (!cur->already.empty()) g["already_delivered"] = id_list(cur->already);
    log_->info(g);

    // Each message goes to the deliverer as soon as its literal has arrived,
    // so its delivery overlaps the transfer of the rest of the batch, and its
    // body is freed as soon as its delivery returns.
    error_code fetch_ec;
    if (!cur->granted.empty()) {
      const std::set<std::uint32_t> wanted(cur->granted.begin(), cur->granted.end());
      fetched_batch& fb = *cur;
      const imap::body_handler on_body = [&](std::uint32_t uid, std::string&& body) {
        // Not asked for, or sent twice: a confused server; ignore it.
        if (!wanted.count(uid) || !fb.started.insert(uid).second) return;
        // Not started once stopping: released when finished, left for the next pass.
        if (stopping_) return;
        start_delivery(fb.deliveries, gate, uidvalidity, uid, std::move(body));
      };
      fetch_ec = co_await c.uid_fetch_bodies(cur->granted, on_body);
      result.bytes_fetched += bytes;
    }
    if (fetch_ec) {
      // Whatever was delivered is recorded (the next session finds the
      // record and only flags it); the rest is released.
      co_await finish_batch(c, prev, false, pass, result);
      co_await finish_batch(c, cur, false, pass, result);
      result.ec = fetch_ec;
      co_return result;
    }
    if (auto ec = co_await finish_batch(c, prev, true, pass, result)) {
      co_await finish_batch(c, cur, false, pass, result);
      result.ec = ec;
      co_return result;
    }
    prev = std::move(cur);
  }
  if (auto ec = co_await finish_batch(c, prev, true, pass, result)) {
    result.ec = ec;
    co_return result;
  }
  if (pass.stop || gate->target_failed) result.delivery_failed = true;

  if (mb_.expunge_deleted && !pass.deleted.empty()) {
    if (auto ec = co_await c.expunge(pass.deleted)) result.ec = ec;
  }
  co_return result;
}

asio::awaitable<error_code> watcher::finish_batch(imap::client& c,
                                                  std::unique_ptr<fetched_batch>& batch, bool flag,
                                                  pass_state& pass, pass_result& result) {
  if (!batch) co_return error_code{};
  const std::unique_ptr<fetched_batch> b = std::move(batch);
  const std::uint32_t uidvalidity = c.uidvalidity();
  co_await wait_all(*b->deliveries);
  progress();
  for (const auto& slot : b->deliveries->slots)
    if (slot.error) std::rethrow_exception(slot.error);

  std::vector<std::uint32_t> delivered;
  std::vector<asio::awaitable<bool>> records;
  std::set<std::uint32_t> attempted;
  for (const auto& slot : b->deliveries->slots) {
    const auto uid = slot.uid;
    if (slot.skipped) continue;  // never sent: released below, like the unfetched
    attempted.insert(uid);
    if (slot.outcome.ok()) {
      delivered.push_back(uid);
      records.push_back(record_delivery(uidvalidity, uid, slot.id));
      target_ok_ = true;
      continue;
    }
    const auto& res = slot.outcome;
    auto w = context_line("delivery failed");
    w["uid"] = uid;
    w["error"] = res.ec.message() + (res.detail.empty() ? "" : ": " + res.detail);
    w["message_left_in_mailbox"] = true;
    log_->warn(w);
    ++counters_.delivery_failures;
    result.delivery_failed = true;
    co_await release_claim(uidvalidity, uid);
    // A failure of the target (not of this message): later batches would
    // fail the same way, so stop the pass and retry after a backoff.
    pass.stop = true;
    target_ok_ = false;
    last_error_ = w["error"].get<std::string>();
  }
  if (b->store_down) pass.stop = true;
  // Granted but not delivered: not returned by FETCH (expunged meanwhile),
  // not sent (stopping, or the target failed first), or cut off by a failed
  // FETCH.
  for (const auto uid : b->granted)
    if (!attempted.count(uid)) co_await release_claim(uidvalidity, uid);
  // Recorded before flagging: if we die in between, whoever finds the
  // message unflagged flags it instead of delivering it again. This holds
  // when the connection failed after some deliveries too: the next session
  // finds them recorded and only flags them.
  co_await run_all(executor_, std::move(records));
  if (!flag) co_return error_code{};

  std::vector<std::uint32_t> to_flag = delivered;
  to_flag.insert(to_flag.end(), b->already.begin(), b->already.end());
  std::sort(to_flag.begin(), to_flag.end());
  if (to_flag.empty()) co_return error_code{};
  // Only now, after the target acknowledged, may the message leave.
  const std::string flags = mb_.delete_after_delivery ? "\\Seen \\Deleted" : "\\Seen";
  if (auto ec = co_await c.uid_store_add_flags(to_flag, flags)) co_return ec;
  progress();
  counters_.delivered += delivered.size();
  result.delivered += delivered.size();
  counters_.already_delivered += b->already.size();
  if (mb_.delete_after_delivery)
    pass.deleted.insert(pass.deleted.end(), to_flag.begin(), to_flag.end());
  co_return error_code{};
}

}  // namespace mailroom::mailbox
