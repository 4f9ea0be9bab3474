#include "mailbox/graph_watcher.hpp"

#include "mailbox/concurrently.hpp"
#include "mailbox/set_aside.hpp"

#include "common/allocator.hpp"
#include "common/unix_time.hpp"
#include "delivery/job.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <optional>
#include <utility>

namespace mailroom::mailbox {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace std::chrono_literals;

// What one poll listed, as the pass runner sees it. Keys are positions in
// the listing (1-based); the Graph id names the message everywhere else
// (jid, arbitration key, the calls).
class graph_watcher::graph_inbox final : public inbox {
 public:
  graph_inbox(graph_watcher& w, std::vector<graph::listed_message> listed)
      : w_(w), listed_(std::move(listed)) {}

  std::vector<std::uint32_t> keys() const {
    std::vector<std::uint32_t> k(listed_.size());
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint32_t>(i + 1);
    return k;
  }
  // The request that failed during the pass: it ended the pass (an inbox
  // error) or only left some messages for later (throttled while fetching).
  const std::optional<graph::failure>& failure() const { return failure_; }
  // What is still unread in the folder after the pass, of what was listed:
  // not flagged read (or deleted), not moved aside, not gone meanwhile.
  unseen_count unseen_after(const std::vector<std::uint32_t>& flagged) const {
    unseen_count u;
    u.counted_at = unix_seconds();
    std::vector<bool> left(listed_.size(), true);
    for (const auto k : flagged)
      if (k >= 1 && k <= left.size()) left[k - 1] = false;
    for (const auto k : gone_)
      if (k >= 1 && k <= left.size()) left[k - 1] = false;
    for (std::size_t i = 0; i < left.size(); ++i) {
      if (!left[i]) continue;
      ++u.messages;
      const std::int64_t r = listed_[i].received;
      if (r > 0 && (u.oldest_arrival == 0 || r < u.oldest_arrival)) u.oldest_arrival = r;
    }
    return u;
  }

  asio::awaitable<error_code> sizes(const std::vector<std::uint32_t>& keys,
                                    std::vector<message_size>& out) override {
    const auto& mb = w_.mb_;
    for (const auto k : keys) {
      const auto& m = at(k);
      const auto marked = [&](const std::string& keyword, aside_reason r) {
        return std::find(m.categories.begin(), m.categories.end(), keyword) != m.categories.end() ||
               w_.reported_[static_cast<std::size_t>(r)].count(m.id) > 0;
      };
      message_size s;
      s.uid = k;
      s.size = std::max(m.size, learnt(m.id));
      s.flagged_oversize = marked(mb.oversize_keyword, aside_reason::oversize);
      s.arrived = m.received;
      s.flagged_too_old = marked(mb.too_old_keyword, aside_reason::too_old);
      s.age_exempt = std::find(m.categories.begin(), m.categories.end(), reingested_keyword) !=
                     m.categories.end();
      s.rejected = marked(mb.rejected_keyword, aside_reason::refused);
      out.push_back(s);
    }
    co_return error_code{};
  }

  asio::awaitable<std::pair<error_code, bool>> set_aside(const std::vector<std::uint32_t>& keys,
                                                         aside_reason reason) override {
    const auto& mb = w_.mb_;
    const aside_policy policy = aside_policy_for(mb, reason);
    const bool move = !policy.folder.empty();
    for (const auto k : keys) {
      const auto& m = at(k);
      auto f = w_.context_line(policy.why);
      f["uid"] = k;
      f["message_id"] = m.id;
      if (reason == aside_reason::oversize) {
        f["byte_size"] = std::max(m.size, learnt(m.id));
        f["max_message_size"] = mb.max_message_size;
      } else if (reason == aside_reason::too_old) {
        f["arrived"] = m.received;
        f["max_message_age"] = mb.max_message_age.count();
      }
      f["set_aside"] = move ? "move to " + policy.folder : "tag " + policy.keyword;
      w_.log_->warn(f);
      graph::failure fail;
      if (move) {
        const error_code ec = co_await w_.client_.move(m.id, policy.folder, fail);
        if (!ec || ec == graph::graph_errc::not_found) {
          gone_.push_back(k);
          continue;
        }
        if (graph::is_retriable(ec)) co_return std::pair{remember(fail), false};
        auto w = w_.context_line("cannot move messages set aside; tagging them instead");
        w["folder"] = policy.folder;
        w["error"] = fail.detail;
        w_.log_->warn(w);
      }
      // The keyword as an Outlook category keeps it out of later passes
      // (it stays unread); the message's own categories are kept.
      std::vector<std::string> categories = m.categories;
      categories.push_back(policy.keyword);
      const error_code ec = co_await w_.client_.set_categories(m.id, categories, fail);
      if (!ec || ec == graph::graph_errc::not_found) continue;
      if (graph::is_retriable(ec)) co_return std::pair{remember(fail), false};
      auto w = w_.context_line("cannot tag message set aside; remembered until restart");
      w["keyword"] = policy.keyword;
      w["error"] = fail.detail;
      w_.log_->warn(w);
      w_.reported_[static_cast<std::size_t>(reason)].insert(m.id);
    }
    co_return std::pair{error_code{}, false};
  }

  asio::awaitable<error_code> fetch_bodies(const std::vector<std::uint32_t>& keys,
                                           const body_sink& on_body) override {
    std::optional<graph::failure> permanent;
    // Named, not a temporary: see graph::client::call.
    key_step fetch_one = [this, &on_body, &permanent](std::uint32_t k) -> asio::awaitable<bool> {
      if (w_.stopping_) co_return false;
      const auto& m = at(k);
      graph::failure fail;
      bool too_large = false;
      auto body = co_await w_.client_.mime(m.id, w_.mb_.max_message_size, too_large, fail);
      if (!body) {
        if (body.error() == graph::graph_errc::not_found) {  // gone meanwhile
          gone_.push_back(k);
          co_return true;
        }
        remember(fail);
        if (!graph::is_retriable(body.error())) permanent = fail;
        // Throttled or unavailable: the rest wait for the next pass;
        // what was delivered is still marked.
        co_return false;
      }
      if (too_large) {
        // Graph listed it smaller (or without a size): the next pass
        // sets it aside by the size learnt here.
        w_.learnt_sizes_[m.id] = w_.mb_.max_message_size + 1;
        auto f = w_.context_line("message larger than listed; set aside next pass");
        f["uid"] = k;
        f["message_id"] = m.id;
        f["listed_size"] = m.size;
        f["max_message_size"] = w_.mb_.max_message_size;
        w_.log_->warn(f);
        co_return true;
      }
      on_body(k, std::move(*body));
      co_return true;
    };
    co_await for_each_concurrently(w_.executor_, keys, w_.opts_.concurrent_requests,
                                   std::move(fetch_one));
    co_return permanent ? permanent->ec : error_code{};
  }

  asio::awaitable<error_code> mark_delivered(const std::vector<std::uint32_t>& keys,
                                             bool remove) override {
    error_code first;
    key_step mark = [this, remove, &first](std::uint32_t k) -> asio::awaitable<bool> {
      const error_code ec = co_await mark_one(at(k).id, remove);
      if (ec && !first) first = ec;
      co_return true;
    };
    co_await for_each_concurrently(w_.executor_, keys, w_.opts_.concurrent_requests,
                                   std::move(mark));
    co_return first;
  }

  // Graph's DELETE needs no expunge.
  asio::awaitable<error_code> expunge(const std::vector<std::uint32_t>&) override {
    co_return error_code{};
  }

  mail_message message(std::uint32_t key, std::string&& body) const override {
    const auto& mb = w_.mb_;
    const std::string& id = at(key).id;
    return {mb.email,
            mb.name,
            0,
            key,
            std::move(body),
            delivery::stable_jid(mb.server(), mb.email, config::canonical_folder(mb.name), id)};
  }

  arbitration::claim_request claim_request(std::uint32_t key) const override {
    return {w_.mb_.email, w_.mb_.name, w_.mb_.server(), 0, key, at(key).id};
  }

 private:
  const graph::listed_message& at(std::uint32_t key) const { return listed_.at(key - 1); }
  std::uint64_t learnt(const std::string& id) const {
    auto it = w_.learnt_sizes_.find(id);
    return it == w_.learnt_sizes_.end() ? 0 : it->second;
  }
  error_code remember(const graph::failure& f) {
    if (!failure_) failure_ = f;
    return f.ec;
  }

  // After delivery: read, deleted, or read and then moved (after_delivery).
  asio::awaitable<error_code> mark_one(const std::string& id, bool remove) {
    const bool move = remove && w_.mb_.after_delivery == config::after_delivery_action::move;
    graph::failure last;
    if (remove && !move) co_return co_await attempt(mark_op::remove, id, last);
    if (auto ec = co_await attempt(mark_op::read, id, last); ec || !move) co_return ec;
    // Read from here on: never delivered again, whether or not it moves.
    const error_code ec = co_await attempt(mark_op::move, id, last);
    if (!ec || graph::is_retriable(ec)) co_return ec;
    // Refused (no such folder, say): not a reason to end the pass or back off.
    auto w = w_.context_line("cannot move delivered messages; they stay in the folder, read");
    w["move_to"] = w_.mb_.move_to;
    w["message_id"] = id;
    w["error"] = last.detail;
    w_.log_->warn(w);
    co_return error_code{};
  }

  enum class mark_op { read, remove, move };
  // The message was delivered: marking it matters (else it is delivered
  // again), so a throttled or failed request is tried again a few times,
  // after Retry-After or a short delay.
  // `fail` says why the last try failed. A refused move is not remembered as
  // the pass's failure (mark_one reports it).
  asio::awaitable<error_code> attempt(mark_op op, const std::string& id, graph::failure& fail) {
    error_code ec;
    for (int n = 0; n < 3; ++n) {
      // Not a conditional expression: g++ 12 runs both co_awaits of one.
      switch (op) {
        case mark_op::read:
          ec = co_await w_.client_.mark_read(id, fail);
          break;
        case mark_op::remove:
          ec = co_await w_.client_.remove(id, fail);
          break;
        case mark_op::move:
          ec = co_await w_.client_.move(id, w_.mb_.move_to, fail);
          break;
      }
      if (!ec || ec == graph::graph_errc::not_found) co_return error_code{};
      if (op != mark_op::move || graph::is_retriable(ec)) remember(fail);
      if (!graph::is_retriable(ec) || n == 2) break;
      const auto wait = fail.retry_after.count() > 0
                            ? std::chrono::milliseconds(std::min(fail.retry_after, 30s))
                            : std::chrono::milliseconds(500 << n);
      asio::steady_timer t(w_.executor_, wait);
      error_code te;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, te));
    }
    co_return ec;
  }

  graph_watcher& w_;
  std::vector<graph::listed_message> listed_;
  std::optional<graph::failure> failure_;
  std::vector<std::uint32_t> gone_;  // moved aside or found deleted during the pass
};

graph_watcher::graph_watcher(asio::any_io_executor ex, const config::mailbox& mb,
                             std::shared_ptr<delivery::http_client> http,
                             std::shared_ptr<imap::token_source> tokens,
                             std::shared_ptr<delivery::deliverer> deliverer,
                             std::shared_ptr<arbitration::arbitrator> arbitrator,
                             std::shared_ptr<log::logger> log, graph_watcher_options opts)
    : watcher(mb),
      executor_(ex),
      deliverer_(std::move(deliverer)),
      arbitrator_(std::move(arbitrator)),
      log_(std::move(log)),
      opts_(opts),
      tokens_(tokens),
      client_(std::move(http), std::move(tokens), opts.graph),
      retry_(opts.retry_min, opts.retry_max),
      runner_(
          ex, deliverer_, arbitrator_, log_,
          [this](const char* action) { return context_line(action); }, health_) {}

watcher::token_counts graph_watcher::tokens() const {
  if (!tokens_) return {};
  return {tokens_->renewals(), tokens_->failures()};
}

void graph_watcher::stop() {
  stopping_ = true;
  runner_.stop();
  client_.cancel();
  if (sleep_timer_) sleep_timer_->cancel();
}

void graph_watcher::restart() {
  stopping_ = false;
  runner_.resume();
  state_ = watcher_state::connecting;
  health_.progress();
}

void graph_watcher::abort() {
  stop();
}

asio::awaitable<void> graph_watcher::sleep(std::chrono::milliseconds d) {
  // In steps of at most a minute, each one progress: a poll_interval longer
  // than health_check.stuck_after is waiting, not being stuck.
  const auto end = std::chrono::steady_clock::now() + d;
  for (auto now = std::chrono::steady_clock::now(); !stopping_ && now < end;
       now = std::chrono::steady_clock::now()) {
    sleep_timer_ = std::make_shared<asio::steady_timer>(
        executor_, std::min<std::chrono::steady_clock::duration>(end - now, 60s));
    error_code ec;
    co_await sleep_timer_->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    health_.progress();
  }
}

asio::awaitable<void> graph_watcher::run(std::function<void(const fatal_error&)> on_fatal) {
  log_->info(context_line("Setting up watcher"));
  bool ever_listed = false;
  auto backoff = opts_.error_backoff_min;
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
  settings.expunge_deleted = false;

  while (!stopping_) {
    health_.progress();
    const auto now = std::chrono::steady_clock::now();
    if (retry_.backing_off(now)) {
      auto f = context_line("waiting to retry delivery");
      f["retry_in_ms"] =
          std::chrono::ceil<std::chrono::milliseconds>(retry_.next_attempt() - now).count();
      f["backoff_ms"] = retry_.delay().count();
      log_->info(f);
      co_await sleep(std::chrono::ceil<std::chrono::milliseconds>(retry_.next_attempt() - now));
      continue;
    }
    log_->info(context_line("Processing started"));
    graph::failure failed;
    bool ok = true;
    pass_result pass;
    bool listing_full = false;
    auto listed = co_await client_.list_unread(failed);
    if (!listed) {
      ok = false;
    } else {
      if (state_ != watcher_state::connected) ++health_.counters.connects;
      state_ = watcher_state::connected;
      ever_listed = true;
      health_.progress();
      listing_full = listed->size() >= opts_.graph.max_listed;
      graph_inbox in(*this, std::move(*listed));
      std::vector<std::uint32_t> keys = in.keys();
      pass = co_await runner_.run(in, std::move(keys), settings);
      // A listing cut at max_listed counts no further than that.
      health_.unseen = in.unseen_after(pass.flagged);
      if (pass.bytes_fetched >= allocator::release_after_bytes) allocator::release_free_memory();
      retry_.pass_ended(std::chrono::steady_clock::now(), pass.delivery_failed, pass.delivered > 0,
                        std::chrono::seconds(mb_.idle_timeout));
      if (in.failure()) {
        ok = false;
        failed = *in.failure();
      } else if (pass.ec) {
        ok = false;
        failed = {pass.ec, 0s, pass.ec.message()};
      }
    }
    health_.progress();
    if (stopping_) break;
    if (!ok) {
      state_ = watcher_state::backing_off;
      health_.last_error = failed.detail;
      ++health_.counters.connection_errors;
      const bool permanent = !graph::is_retriable(failed.ec);
      const auto policy = mb_.on_permanent_error;
      if (permanent &&
          (policy == config::permanent_error_policy::exit ||
           (policy == config::permanent_error_policy::exit_at_startup && !ever_listed))) {
        auto f = context_line("Giving up");
        f["error"] = failed.detail;
        log_->error(f);
        state_ = watcher_state::stopped;
        on_fatal({mb_.label(), failed.detail});
        co_return;
      }
      // Throttled: at least what the server asked for (no jitter below it).
      std::chrono::milliseconds delay = jittered(backoff);
      if (failed.ec == graph::graph_errc::throttled && failed.retry_after.count() > 0)
        delay = std::max<std::chrono::milliseconds>(failed.retry_after, delay / 4);
      backoff = std::min(backoff * 2, opts_.error_backoff_max);
      auto f = context_line("Graph request failed");
      f["error"] = failed.detail;
      f["permanent"] = permanent;
      f["retry_in_ms"] = delay.count();
      log_->warn(f);
      co_await sleep(delay);
      continue;
    }
    backoff = opts_.error_backoff_min;
    if (retry_.backing_off(std::chrono::steady_clock::now())) continue;
    // More unread than one listing takes, and this pass made progress.
    if (listing_full && pass.delivered > 0) continue;
    std::chrono::milliseconds wait = mb_.graph.poll_interval;
    // Messages another instance claimed become ours within claim_ttl of its
    // death (see imap_watcher).
    if (pass.claimed_elsewhere)
      wait = std::min<std::chrono::milliseconds>(
          wait, std::max<std::chrono::milliseconds>(mb_.arbitration_opts.claim_ttl / 4, 1s));
    auto f = context_line("Idling");
    f["poll_in_ms"] = wait.count();
    log_->info(f);
    co_await sleep(wait);
  }
  log_->info(context_line("Quitting connection..."));
  state_ = watcher_state::stopped;
}

}  // namespace mailroom::mailbox
