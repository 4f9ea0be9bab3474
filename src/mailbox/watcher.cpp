#include "mailbox/watcher.hpp"

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

bool worth_trying_next(const error_code& ec) {
  // A failure that is about this message alone; the target itself works.
  return ec == delivery::errc::bad_message;
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
    connected_ = false;
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
      on_fatal({mb_.label(), ec.message() + ": " + c.last_error()});
      co_return;
    }
    const auto delay = with_jitter(backoff);
    auto f = context_line("Disconnected. Resetting...");
    f["error"] = ec ? ec.message() + (c.last_error().empty() ? "" : ": " + c.last_error())
                    : "connection ended";
    f["retry_in_ms"] = delay.count();
    log_->warn(f);
    co_await sleep(delay);
    backoff = std::min(backoff * 2, opts_.reconnect_max);
  }
}

asio::awaitable<error_code> watcher::session(imap::client& c, bool& logged_in) {
  auto ec = co_await c.connect_and_login([this](const char* step) {
    log_->info(context_line(step));
  });
  if (ec) co_return ec;
  logged_in = true;
  log_->info(context_line("Setting mailbox"));
  if (auto e = co_await c.select(mb_.name)) co_return e;
  connected_ = true;

  while (!stopping_) {
    const pass_result pass = co_await process_mailbox(c);
    if (pass.ec) co_return pass.ec;
    if (stopping_) break;
    auto wait = std::chrono::seconds(mb_.idle_timeout);
    if (pass.delivery_failed) {
      retry_delay_ = retry_delay_.count() == 0 ? opts_.retry_min
                                               : std::min(retry_delay_ * 2, opts_.retry_max);
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::seconds>(retry_delay_) + 1s);
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
    for (const auto uid : batch) {
      auto f = context_line("asking arbiter to deliver");
      f["uid"] = uid;
      f["arbitrator"] = arbitrator_->class_name();
      log_->info(f);
      std::string detail;
      const arbitration::claim_request req{mb_.email, mb_.name, c.uidvalidity(), uid};
      const auto claim = co_await arbitrator_->claim(req, detail);
      if (claim == arbitration::claim_result::granted) granted.push_back(uid);
      if (claim == arbitration::claim_result::unavailable) {
        auto w = context_line("arbitration unavailable");
        w["uid"] = uid;
        w["error"] = detail;
        log_->warn(w);
        store_down = true;
        break;
      }
    }
    auto g = context_line("Getting new messages");
    g["unread"] = id_list(batch);
    g["to_be_delivered"] = id_list(granted);
    log_->info(g);

    auto release = [&](std::uint32_t uid) -> asio::awaitable<void> {
      co_await arbitrator_->release({mb_.email, mb_.name, c.uidvalidity(), uid});
    };

    std::vector<std::pair<std::uint32_t, std::string>> fetched;
    if (!granted.empty()) {
      auto ec = co_await c.uid_fetch_bodies(
          granted, [&](std::uint32_t uid, std::string&& body) {
            fetched.emplace_back(uid, std::move(body));
          });
      if (ec) {
        for (const auto uid : granted) co_await release(uid);
        result.ec = ec;
        co_return result;
      }
    }

    std::vector<std::uint32_t> delivered;
    bool stop_batch = false;
    std::set<std::uint32_t> seen_in_fetch;
    for (auto& [uid, body] : fetched) {
      seen_in_fetch.insert(uid);
      if (stopping_ || stop_batch) {
        co_await release(uid);  // not started: leave it for the next pass/instance
        continue;
      }
      auto f = context_line("sending to deliverer");
      f["uid"] = uid;
      f["deliverer"] = deliverer_->class_name();
      f["byte_size"] = body.size();
      log_->info(f);
      mail_message m{mb_.email, mb_.name, c.uidvalidity(), uid, std::move(body)};
      const auto res = co_await deliverer_->deliver(m);
      if (res.ok()) {
        delivered.push_back(uid);
        continue;
      }
      auto w = context_line("delivery failed");
      w["uid"] = uid;
      w["error"] = res.ec.message() + (res.detail.empty() ? "" : ": " + res.detail);
      w["message_left_in_mailbox"] = true;
      log_->warn(w);
      result.delivery_failed = true;
      co_await release(uid);
      if (!worth_trying_next(res.ec)) stop_batch = true;
    }
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
      if (mb_.delete_after_delivery) deleted.insert(deleted.end(), delivered.begin(), delivered.end());
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
