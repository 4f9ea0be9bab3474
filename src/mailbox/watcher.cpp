#include "mailbox/watcher.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
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

watcher::watcher(asio::any_io_executor ex, const config::mailbox& mb,
                 std::shared_ptr<delivery::deliverer> deliverer,
                 std::shared_ptr<arbitration::arbitrator> arbitrator,
                 std::shared_ptr<log::logger> log, watcher_options opts)
    : executor_(ex),
      mb_(mb),
      deliverer_(std::move(deliverer)),
      arbitrator_(std::move(arbitrator)),
      log_(std::move(log)),
      opts_(opts) {}

log::fields watcher::context_line(const char* action) const {
  log::fields f;
  f["context"] = {{"email", mb_.email}, {"name", mb_.name}};
  f["action"] = action;
  return f;
}

void watcher::stop() {
  stopping_ = true;
  if (current_) current_->interrupt_idle();
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

asio::awaitable<void> watcher::run(std::function<void(const fatal_error&)> on_fatal) {
  log_->info(context_line("Setting up watcher"));
  bool ever_logged_in = false;
  auto backoff = opts_.reconnect_min;
  while (!stopping_) {
    imap::client c(executor_, mb_, opts_.imap);
    current_ = &c;
    bool logged_in = false;
    const error_code ec = co_await session(c, logged_in);
    state_ = watcher_state::connecting;
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
    if (!ever_logged_in && imap::is_permanent(ec)) {
      auto f = context_line("Giving up");
      f["error"] = ec.message() + ": " + c.last_error();
      log_->error(f);
      state_ = watcher_state::stopped;
      on_fatal({mb_.label(), ec.message() + ": " + c.last_error()});
      co_return;
    }
    const auto delay = with_jitter(backoff);
    auto f = context_line("Disconnected. Resetting...");
    f["error"] = ec ? ec.message() + (c.last_error().empty() ? "" : ": " + c.last_error())
                    : "connection ended";
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

  while (!stopping_) {
    const pass_result pass = co_await process_mailbox(c);
    if (pass.ec) co_return pass.ec;
    if (stopping_) break;
    auto wait = std::chrono::seconds(mb_.idle_timeout);
    if (pass.delivery_failed) {
      retry_delay_ =
          retry_delay_.count() == 0 ? opts_.retry_min : std::min(retry_delay_ * 2, opts_.retry_max);
      wait = std::min(wait, std::chrono::ceil<std::chrono::seconds>(retry_delay_));
    } else {
      retry_delay_ = 0ms;
    }
    // Mail announced while we were busy: look again before idling.
    if (c.take_new_mail_hint()) continue;
    log_->info(context_line("Idling"));
    auto r = co_await c.idle(wait);
    if (!r) co_return r.error();
  }
  co_return error_code{};
}

asio::awaitable<void> watcher::release_claim(std::uint32_t uidvalidity, std::uint32_t uid) {
  // A named request: g++ 12 may destroy a temporary in a co_await expression twice.
  const arbitration::claim_request req{mb_.email, mb_.name, uidvalidity, uid};
  co_await arbitrator_->release(req);
}

asio::awaitable<watcher::pass_result> watcher::process_mailbox(imap::client& c) {
  pass_result result;
  log_->info(context_line("Processing started"));
  auto found = co_await c.uid_search(mb_.search_command);
  if (!found) {
    result.ec = found.error();
    co_return result;
  }
  std::vector<std::uint32_t> uids = std::move(*found);
  if (mb_.limit_max_unread > 0 && uids.size() > mb_.limit_max_unread)
    uids.resize(mb_.limit_max_unread);

  std::vector<std::uint32_t> deleted;
  const std::string flags = mb_.delete_after_delivery ? "\\Seen \\Deleted" : "\\Seen";

  // Claim, fetch and deliver batch by batch so that memory is bounded and a
  // claim never waits long for its delivery (claims expire).
  for (std::size_t start = 0; start < uids.size() && !stopping_; start += opts_.fetch_batch) {
    const std::size_t end = std::min(uids.size(), start + opts_.fetch_batch);
    const std::vector<std::uint32_t> batch(uids.begin() + start, uids.begin() + end);

    std::vector<std::uint32_t> granted;
    bool store_down = false;
    std::vector<arbitration::claim_request> requests;
    std::vector<std::string> details(batch.size());
    requests.reserve(batch.size());
    std::vector<asio::awaitable<arbitration::claim_result>> claims;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto f = context_line("asking arbiter to deliver");
      f["uid"] = batch[i];
      f["arbitrator"] = arbitrator_->class_name();
      log_->info(f);
      requests.push_back({mb_.email, mb_.name, c.uidvalidity(), batch[i]});
      claims.push_back(arbitrator_->claim(requests.back(), details[i]));
    }
    const auto answers = co_await run_all(executor_, std::move(claims));
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (answers[i] == arbitration::claim_result::granted) granted.push_back(batch[i]);
      if (answers[i] == arbitration::claim_result::unavailable && !store_down) {
        auto w = context_line("arbitration unavailable");
        w["uid"] = batch[i];
        w["error"] = details[i];
        log_->warn(w);
        store_down = true;
      }
    }
    auto g = context_line("Getting new messages");
    g["unread"] = id_list(batch);
    g["to_be_delivered"] = id_list(granted);
    log_->info(g);

    auto release = [&](std::uint32_t uid) { return release_claim(c.uidvalidity(), uid); };

    std::vector<std::pair<std::uint32_t, std::string>> fetched;
    if (!granted.empty()) {
      const imap::body_handler collect = [&](std::uint32_t uid, std::string&& body) {
        fetched.emplace_back(uid, std::move(body));
      };
      auto ec = co_await c.uid_fetch_bodies(granted, collect);
      if (ec) {
        for (const auto uid : granted) co_await release(uid);
        result.ec = ec;
        co_return result;
      }
    }

    std::vector<std::uint32_t> delivered;
    bool stop_batch = false;
    std::set<std::uint32_t> seen_in_fetch;
    std::vector<mail_message> messages;
    messages.reserve(fetched.size());
    for (auto& [uid, body] : fetched) {
      seen_in_fetch.insert(uid);
      if (stopping_) {
        co_await release(uid);  // not started: leave it for the next pass/instance
        continue;
      }
      auto f = context_line("sending to deliverer");
      f["uid"] = uid;
      f["deliverer"] = deliverer_->class_name();
      f["byte_size"] = body.size();
      log_->info(f);
      messages.push_back({mb_.email, mb_.name, c.uidvalidity(), uid, std::move(body)});
    }
    fetched.clear();
    std::vector<asio::awaitable<delivery::result>> deliveries;
    for (const auto& m : messages) deliveries.push_back(deliverer_->deliver(m));
    const auto outcomes = co_await run_all(executor_, std::move(deliveries));
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const auto uid = messages[i].uid;
      if (outcomes[i].ok()) {
        delivered.push_back(uid);
        continue;
      }
      const auto& res = outcomes[i];
      auto w = context_line("delivery failed");
      w["uid"] = uid;
      w["error"] = res.ec.message() + (res.detail.empty() ? "" : ": " + res.detail);
      w["message_left_in_mailbox"] = true;
      log_->warn(w);
      result.delivery_failed = true;
      co_await release(uid);
      // A failure of the target (not of this message): later batches would
      // fail the same way, so stop the pass and retry after a backoff.
      if (res.ec != delivery::errc::bad_message) stop_batch = true;
    }
    messages.clear();
    // Granted but not returned by FETCH: expunged meanwhile by someone else.
    for (const auto uid : granted)
      if (!seen_in_fetch.count(uid)) co_await release(uid);

    if (!delivered.empty()) {
      // Only now, after the target acknowledged, may the message leave.
      if (auto ec = co_await c.uid_store_add_flags(delivered, flags)) {
        result.ec = ec;
        co_return result;
      }
      delivered_ += delivered.size();
      if (mb_.delete_after_delivery)
        deleted.insert(deleted.end(), delivered.begin(), delivered.end());
    }
    if (store_down || stop_batch) {
      result.delivery_failed = true;
      break;
    }
  }

  if (mb_.expunge_deleted && !deleted.empty()) {
    if (auto ec = co_await c.expunge(deleted)) result.ec = ec;
  }
  co_return result;
}

}  // namespace mailroom::mailbox
