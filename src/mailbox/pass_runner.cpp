#include "mailbox/pass_runner.hpp"

#include "mailbox/concurrently.hpp"

#include "delivery/errc.hpp"
#include "mime/headers.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <map>
#include <utility>

namespace mailroom::mailbox {

namespace asio = boost::asio;
using boost::system::error_code;

// A release (empty jid) or a delivered record, with what became of it.
struct claim_write {
  arbitration::write_result result = arbitration::write_result::done;
  std::string detail;
};

namespace {

nlohmann::ordered_json id_list(const std::vector<std::uint32_t>& ids) {
  nlohmann::ordered_json j;
  j["count"] = ids.size();
  j["ids"] = ids;
  return j;
}

asio::awaitable<claim_write> renew_claim(std::shared_ptr<arbitration::arbitrator> a,
                                         arbitration::claim_request req) {
  claim_write w;
  w.result = co_await a->renew(req, w.detail);
  co_return w;
}

asio::awaitable<claim_write> write_claim(std::shared_ptr<arbitration::arbitrator> a,
                                         arbitration::claim_request req, std::string jid) {
  claim_write w;
  if (jid.empty()) {
    w.result = co_await a->release(req, w.detail);
  } else {
    w.result = co_await a->mark_delivered(req, jid, w.detail);
  }
  co_return w;
}

}  // namespace

// One pass on the event loop: the engine, and the bodies that wait for a
// delivery slot. Deliveries hold it until they complete.
struct pass_runner::pass_run {
  pass_run(asio::any_io_executor ex, const pass_settings& s, std::vector<std::uint32_t> keys)
      : engine(s, std::move(keys)), wake(ex, asio::steady_timer::time_point::max()) {}
  pass_engine engine;
  std::map<std::uint32_t, mail_message> queued;
  // Never expires: cancelled when a delivery completes (or stop()), which is
  // what a `wait` action waits for.
  asio::steady_timer wake;
  // Claims granted and not yet released or recorded: renewed while held.
  std::map<std::uint32_t, arbitration::claim_request> held;
  std::shared_ptr<asio::steady_timer> renew_timer;
  bool over = false;  // the pass has returned: renewals stop
  // Arrival in the mailbox (Unix seconds) of the messages sized so far, for
  // the delivery latency.
  std::map<std::uint32_t, std::int64_t> arrived;
  std::vector<std::uint32_t> flagged;  // flagged delivered in this pass
};

namespace {

// Ends the renewals however the pass ends (also by an exception): a claim
// renewed forever would never let another instance have the message.
struct pass_over {
  std::shared_ptr<pass_runner::pass_run>& run;
  ~pass_over() {
    run->over = true;
    if (run->renew_timer) run->renew_timer->cancel();
  }
};

}  // namespace

asio::awaitable<void> pass_runner::renew_claims(std::shared_ptr<pass_run> run,
                                                std::chrono::milliseconds every) {
  run->renew_timer = std::make_shared<asio::steady_timer>(executor_);
  const auto timer = run->renew_timer;
  while (!run->over) {
    timer->expires_after(every);
    error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (run->over) break;
    if (run->held.empty()) continue;
    std::vector<std::uint32_t> keys;
    std::vector<asio::awaitable<claim_write>> ops;
    for (const auto& [key, req] : run->held) {
      keys.push_back(key);
      ops.push_back(renew_claim(arbitrator_, req));
    }
    const auto writes = co_await run_all(executor_, std::move(ops));
    if (run->over) break;
    std::size_t failed = 0;
    std::string detail;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (writes[i].result == arbitration::write_result::unavailable) {
        ++failed;
        detail = writes[i].detail;
      } else if (writes[i].result == arbitration::write_result::claim_lost &&
                 run->held.erase(keys[i]) > 0) {
        // Expired before its renewal (the store was unreachable for longer
        // than claim_ttl, or the process stalled): another instance may
        // deliver the message too, with the same jid.
        auto f = context_line_("claim expired while its message was being delivered");
        f["uid"] = keys[i];
        log_->warn(f);
        ++health_.counters.claims_lost;
      }
    }
    if (failed > 0) {
      auto f = context_line_("renewing claims failed");
      f["count"] = failed;
      f["error"] = detail;
      log_->warn(f);
      health_.counters.arbitration_write_errors += failed;
    }
  }
}

pass_runner::pass_runner(asio::any_io_executor ex, std::shared_ptr<delivery::deliverer> deliverer,
                         std::shared_ptr<arbitration::arbitrator> arbitrator,
                         std::shared_ptr<log::logger> log,
                         std::function<log::fields(const char*)> context_line,
                         watcher_health& health)
    : executor_(ex),
      deliverer_(std::move(deliverer)),
      arbitrator_(std::move(arbitrator)),
      log_(std::move(log)),
      context_line_(std::move(context_line)),
      health_(health) {}

pass_runner::~pass_runner() = default;

void pass_runner::stop() {
  stopping_ = true;
  if (!pass_) return;
  apply(pass_, pass_->engine.stop());
  pass_->wake.cancel();
}

asio::awaitable<void> pass_runner::deliver_one(std::shared_ptr<pass_run> run, mail_message m) {
  const std::uint32_t key = m.uid;
  // Started a moment after it was ordered: the target may have failed (or
  // shutdown begun) meanwhile, and then it is not sent.
  if (!run->engine.may_send()) {
    delivery_done(run, key, delivery_outcome::not_sent, {});
    co_return;
  }
  auto f = context_line_("sending to deliverer");
  f["uid"] = m.uid;
  f["jid"] = m.id;
  // For finding a message in the logs; the jid is what identifies a delivery.
  if (auto mid = mime::message_id(m.body)) f["message_id"] = *mid;
  f["deliverer"] = deliverer_->class_name();
  f["byte_size"] = m.body.size();
  log_->info(f);
  delivery::result r;
  const auto sent = std::chrono::steady_clock::now();
  try {
    r = co_await deliverer_->deliver(m);
  } catch (const std::exception& e) {  // not expected: a deliverer reports failures as values
    r.ec = delivery::errc::target_unavailable;
    r.detail = std::string("the deliverer failed: ") + e.what();
  }
  health_.target_response.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count());
  m.body = std::string();  // freed as soon as the target has answered
  const delivery_outcome outcome = r.ok()                            ? delivery_outcome::delivered
                                   : r.ec == delivery::errc::refused ? delivery_outcome::refused
                                                                     : delivery_outcome::failed;
  delivery_done(run, key, outcome, r);
}

void pass_runner::delivery_done(const std::shared_ptr<pass_run>& run, std::uint32_t key,
                                delivery_outcome outcome, const delivery::result& r) {
  if (outcome == delivery_outcome::delivered) {
    health_.target_ok = true;
    // Arrival times have whole seconds (INTERNALDATE), and the server's clock
    // may run ahead of ours: never below zero.
    if (auto it = run->arrived.find(key); it != run->arrived.end() && it->second > 0) {
      const double now =
          std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
              .count();
      health_.delivery_latency.observe(std::max(0.0, now - double(it->second)));
    }
  } else if (outcome == delivery_outcome::failed) {
    auto w = context_line_("delivery failed");
    w["uid"] = key;
    w["error"] = r.ec.message() + (r.detail.empty() ? "" : ": " + r.detail);
    w["message_left_in_mailbox"] = true;
    log_->warn(w);
    ++health_.counters.delivery_failures;
    health_.target_ok = false;
    health_.last_error = w["error"].get<std::string>();
  } else if (outcome == delivery_outcome::refused) {
    // The target works but will never take this message: it is set aside
    // (rejected_folder or rejected_keyword), and the mailbox goes on.
    auto w = context_line_("delivery refused for good");
    w["uid"] = key;
    w["error"] = r.ec.message() + (r.detail.empty() ? "" : ": " + r.detail);
    log_->warn(w);
    health_.target_ok = true;
  }
  apply(run, run->engine.delivery_done(key, outcome));
  // Waking the pass for every completion would cost a resumption each.
  if (run->engine.wait_over()) run->wake.cancel();
}

void pass_runner::apply(const std::shared_ptr<pass_run>& run, const delivery_orders& orders) {
  for (const auto key : orders.drop) run->queued.erase(key);
  for (const auto key : orders.start) {
    auto it = run->queued.find(key);
    if (it == run->queued.end()) continue;
    mail_message m = std::move(it->second);
    run->queued.erase(it);
    asio::co_spawn(executor_, deliver_one(run, std::move(m)), asio::detached);
  }
}

asio::awaitable<std::vector<claim_answer>> pass_runner::claim_batch(
    const inbox& in, const std::vector<std::uint32_t>& batch, pass_result& result) {
  std::vector<arbitration::claim_request> requests;
  std::vector<std::string> details(batch.size());
  requests.reserve(batch.size());
  std::vector<asio::awaitable<arbitration::claim_result>> claims;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto f = context_line_("asking arbiter to deliver");
    f["uid"] = batch[i];
    f["arbitrator"] = arbitrator_->class_name();
    log_->info(f);
    requests.push_back(in.claim_request(batch[i]));
    claims.push_back(arbitrator_->claim(requests.back(), details[i]));
  }
  const auto answers = co_await run_all(executor_, std::move(claims));
  health_.progress();
  std::vector<claim_answer> out;
  std::vector<std::uint32_t> granted;
  std::vector<std::uint32_t> already;
  bool store_down = false;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    switch (answers[i]) {
      case arbitration::claim_result::granted:
        out.push_back(claim_answer::granted);
        granted.push_back(batch[i]);
        break;
      case arbitration::claim_result::delivered:
        out.push_back(claim_answer::delivered);
        already.push_back(batch[i]);
        break;
      case arbitration::claim_result::taken:
        out.push_back(claim_answer::taken);
        ++health_.counters.claimed_elsewhere;
        result.claimed_elsewhere = true;
        break;
      case arbitration::claim_result::unavailable:
        out.push_back(claim_answer::unavailable);
        if (!store_down) {
          auto w = context_line_("arbitration unavailable");
          w["uid"] = batch[i];
          w["error"] = details[i];
          log_->warn(w);
          health_.last_error = details[i];
          health_.target_ok = false;
          store_down = true;
        }
        break;
    }
  }
  auto g = context_line_("Getting new messages");
  g["unread"] = id_list(batch);
  g["to_be_delivered"] = id_list(granted);
  if (!already.empty()) g["already_delivered"] = id_list(already);
  log_->info(g);
  co_return out;
}

void pass_runner::report_writes(const std::vector<std::uint32_t>& keys,
                                const std::vector<claim_write>& writes, bool records) {
  for (std::size_t i = 0; i < keys.size() && i < writes.size(); ++i) {
    const claim_write& w = writes[i];
    if (w.result == arbitration::write_result::done) continue;
    if (w.result == arbitration::write_result::unavailable) {
      // A release that failed leaves the claim to expire (claim_ttl); a record
      // that failed means a duplicate (same jid) if we die before flagging.
      auto f = context_line_(records ? "recording delivery failed" : "releasing claim failed");
      f["uid"] = keys[i];
      f["error"] = w.detail;
      log_->warn(f);
      ++health_.counters.arbitration_write_errors;
      continue;
    }
    // Our claim expired (it outlived claim_ttl): another instance may have
    // claimed the message meanwhile, and its claim is left alone.
    auto f = context_line_(records ? "claim expired before the delivery was recorded"
                                   : "claim expired before it was released");
    f["uid"] = keys[i];
    log_->warn(f);
    ++health_.counters.claims_lost;
  }
}

asio::awaitable<pass_result> pass_runner::run(inbox& in, std::vector<std::uint32_t> keys,
                                              const pass_settings& settings) {
  pass_result result;
  auto run = std::make_shared<pass_run>(executor_, settings, std::move(keys));
  const pass_over over{run};
  pass_ = run;
  if (stopping_) apply(run, run->engine.stop());
  if (const auto ttl = arbitrator_->claim_ttl(); ttl.count() > 0) {
    // Three renewals per claim_ttl: one may fail or come late without
    // the claim expiring.
    const auto every = std::max<std::chrono::milliseconds>(
        std::chrono::duration_cast<std::chrono::milliseconds>(ttl) / 3,
        std::chrono::milliseconds(100));
    asio::co_spawn(executor_, renew_claims(run, every), asio::detached);
  }

  // The engine decides; this loop only carries its actions out.
  for (;;) {
    const pass_action a = run->engine.next();
    for (const auto& n : run->engine.take_notes()) {
      if (n.what != pass_note::kind::waiting_for_deliveries) continue;
      auto d = context_line_("waiting for deliveries before fetching more");
      d["in_flight"] = n.in_flight;
      d["held_bytes"] = n.held_bytes;
      log_->debug(d);
    }
    switch (a.what) {
      case pass_action::kind::wait: {
        error_code ec;
        co_await run->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        health_.progress();
        break;
      }
      case pass_action::kind::fetch_sizes: {
        // Sizes first: an oversize message is never fetched (it would have
        // to be held whole), and the batch is cut to the budgets.
        std::vector<message_size> sizes;
        const error_code ec = co_await in.sizes(a.uids, sizes);
        if (!ec) health_.progress();
        for (const auto& m : sizes) run->arrived[m.uid] = m.arrived;
        run->engine.sizes_fetched(ec, sizes);
        break;
      }
      case pass_action::kind::set_aside: {
        const auto r = co_await in.set_aside(a.uids, a.reason);
        run->engine.set_aside_done(r.first, r.second);
        if (r.first) break;
        switch (a.reason) {
          case aside_reason::oversize:
            health_.counters.oversize += a.uids.size();
            break;
          case aside_reason::too_old:
            health_.counters.too_old += a.uids.size();
            break;
          case aside_reason::refused:
            health_.counters.rejected += a.uids.size();
            break;
        }
        break;
      }
      case pass_action::kind::claim: {
        const auto answers = co_await claim_batch(in, a.uids, result);
        for (std::size_t i = 0; i < answers.size() && i < a.uids.size(); ++i)
          if (answers[i] == claim_answer::granted)
            run->held[a.uids[i]] = in.claim_request(a.uids[i]);
        run->engine.claimed(answers);
        break;
      }
      case pass_action::kind::fetch_bodies: {
        // Each message goes to the deliverer as soon as it has arrived, so
        // its delivery overlaps the transfer of the rest of the batch, and
        // its body is freed as soon as its delivery returns.
        const body_sink on_body = [this, &run, &in](std::uint32_t key, std::string&& body) {
          const body_fate fate = run->engine.body_arrived(key, body.size());
          if (fate == body_fate::drop) return;
          mail_message m = in.message(key, std::move(body));
          if (fate == body_fate::deliver) {
            asio::co_spawn(executor_, deliver_one(run, std::move(m)), asio::detached);
            return;
          }
          auto w = context_line_("delivery waiting for a free slot");
          w["uid"] = key;
          w["in_flight"] = run->engine.deliveries_running();
          log_->debug(w);
          run->queued.emplace(key, std::move(m));
        };
        const error_code ec = co_await in.fetch_bodies(a.uids, on_body);
        if (!ec) health_.progress();
        run->engine.bodies_fetched(ec);
        break;
      }
      case pass_action::kind::release: {
        std::vector<asio::awaitable<claim_write>> ops;
        for (const auto key : a.uids)
          ops.push_back(write_claim(arbitrator_, in.claim_request(key), {}));
        report_writes(a.uids, co_await run_all(executor_, std::move(ops)), false);
        for (const auto key : a.uids) run->held.erase(key);
        run->engine.released();
        break;
      }
      case pass_action::kind::record: {
        std::vector<asio::awaitable<claim_write>> ops;
        for (const auto key : a.uids)
          ops.push_back(write_claim(arbitrator_, in.claim_request(key), in.message(key, {}).id));
        report_writes(a.uids, co_await run_all(executor_, std::move(ops)), true);
        for (const auto key : a.uids) run->held.erase(key);
        run->engine.recorded();
        break;
      }
      case pass_action::kind::flag: {
        const error_code ec = co_await in.mark_delivered(a.uids, a.delete_too);
        const pass_summary before = run->engine.summary();
        run->engine.flagged(ec);
        if (ec) break;
        health_.progress();
        run->flagged.insert(run->flagged.end(), a.uids.begin(), a.uids.end());
        health_.counters.delivered += run->engine.summary().delivered - before.delivered;
        health_.counters.already_delivered +=
            run->engine.summary().already_delivered - before.already_delivered;
        break;
      }
      case pass_action::kind::expunge: {
        const error_code ec = co_await in.expunge(a.uids);
        run->engine.expunged(ec);
        break;
      }
      case pass_action::kind::done: {
        const pass_summary& s = run->engine.summary();
        result.ec = s.ec;
        result.delivery_failed = s.delivery_failed;
        result.delivered = s.delivered;
        result.claimed_elsewhere = result.claimed_elsewhere || s.claimed_elsewhere;
        result.bytes_fetched = s.bytes_fetched;
        result.flagged = std::move(run->flagged);
        health_.counters.bytes_fetched += s.bytes_fetched;
        pass_.reset();
        co_return result;
      }
    }
  }
}

}  // namespace mailroom::mailbox
