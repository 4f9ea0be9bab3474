// A programmable deliverer and arbitrator for watcher tests. Both are used
// only on the io_context's thread, except the atomic counters, which a fake
// server thread may read, and release(), which any thread may call. Attempts
// are recorded when a delivery completes.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "delivery/deliverer.hpp"
#include "support/async_test.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <vector>

namespace mailroom::test {

class fake_deliverer : public delivery::deliverer {
 public:
  struct attempt {
    mail_message message;
    bool ok = false;
  };

  const char* class_name() const override { return "MailRoom::Delivery::Fake"; }

  boost::asio::awaitable<delivery::result> deliver(const mail_message& m) override {
    if (on_deliver) on_deliver(m);
    arrived.fetch_add(1);
    const int now = ++running_;
    if (now > max_running.load()) max_running = now;
    // A target that does not answer until the test says so.
    if (auto it = held_.find(m.uid); it != held_.end()) {
      auto flag = it->second;
      co_await flag.wait();
    } else if (hold_all_) {
      auto flag = *hold_all_;
      co_await flag.wait();
    }
    --running_;
    delivery::result r;
    auto it = failures_.find(m.uid);
    if (it != failures_.end() && !it->second.empty()) {
      r.ec = it->second.front();
      r.detail = "fake failure";
      it->second.pop_front();
    }
    attempts.push_back({m, r.ok()});
    if (r.ok()) acknowledged.fetch_add(1);
    co_return r;
  }

  // The next delivery of `uid` fails with `ec` (queued: call again for more).
  void fail_next(std::uint32_t uid, delivery::errc ec) { failures_[uid].push_back(ec); }

  // Deliveries of `uid` (or of every message) are held at the target until
  // release() / release(uid), which any thread may call. Call before the
  // watcher runs.
  void hold(boost::asio::any_io_executor ex, std::uint32_t uid) {
    held_.emplace(uid, async_flag(ex));
  }
  void hold_all(boost::asio::any_io_executor ex) { hold_all_.emplace(ex); }
  void release(std::uint32_t uid) const { held_.at(uid).set(); }
  void release() const {
    if (hold_all_) hold_all_->set();
  }

  // UIDs of the acknowledged deliveries, in order.
  std::vector<std::uint32_t> delivered_uids() const {
    std::vector<std::uint32_t> out;
    for (const auto& a : attempts)
      if (a.ok) out.push_back(a.message.uid);
    return out;
  }
  std::vector<std::uint32_t> attempted_uids() const {
    std::vector<std::uint32_t> out;
    for (const auto& a : attempts) out.push_back(a.message.uid);
    return out;
  }

  std::vector<attempt> attempts;  // completed, in order
  std::atomic<int> arrived{0};    // deliveries that reached the target (held or not)
  std::atomic<int> acknowledged{0};
  std::atomic<int> max_running{0};  // most deliveries at the target at once
  // Called when a delivery starts.
  std::function<void(const mail_message&)> on_deliver;

 private:
  int running_ = 0;
  std::map<std::uint32_t, std::deque<boost::system::error_code>> failures_;
  std::map<std::uint32_t, async_flag> held_;
  std::optional<async_flag> hold_all_;
};

class fake_arbitrator : public arbitration::arbitrator {
 public:
  using claim_result = arbitration::claim_result;

  const char* class_name() const override { return "MailRoom::Arbitration::Fake"; }

  boost::asio::awaitable<claim_result> claim(const arbitration::claim_request& r,
                                             std::string& error_detail) override {
    claims.push_back(r);
    claim_result answer = claim_result::granted;
    if (!next_answers_.empty()) {
      answer = next_answers_.front();
      next_answers_.pop_front();
    } else if (auto it = per_uid_.find(r.uid); it != per_uid_.end() && !it->second.empty()) {
      answer = it->second.front();
      it->second.pop_front();
    }
    if (answer == claim_result::unavailable) error_detail = "fake store unreachable";
    co_return answer;
  }

  boost::asio::awaitable<arbitration::write_result> release(const arbitration::claim_request& r,
                                                            std::string&) override {
    releases.push_back(r);
    co_return arbitration::write_result::done;
  }

  boost::asio::awaitable<arbitration::write_result> renew(const arbitration::claim_request& r,
                                                          std::string&) override {
    renewals.push_back(r);
    ++renewal_count;
    co_return arbitration::write_result::done;
  }
  std::chrono::seconds claim_ttl() const override { return ttl; }

  boost::asio::awaitable<arbitration::write_result> mark_delivered(
      const arbitration::claim_request& r, const std::string& jid, std::string& detail) override {
    marked.push_back(r);
    marked_jids.push_back(jid);
    if (record_result_ == arbitration::write_result::unavailable) detail = "fake store unreachable";
    co_return record_result_;
  }

  // What delivered records answer from now on.
  void records_answer(arbitration::write_result r) { record_result_ = r; }

  // The next claim of `uid` gets `answer` (queued); later ones are granted.
  void answer_for(std::uint32_t uid, claim_result answer) { per_uid_[uid].push_back(answer); }
  // The next `n` claims, whatever their UID, get `answer`.
  void answer_next(std::size_t n, claim_result answer) {
    for (std::size_t i = 0; i < n; ++i) next_answers_.push_back(answer);
  }

  static std::vector<std::uint32_t> uids(const std::vector<arbitration::claim_request>& rs) {
    std::vector<std::uint32_t> out;
    for (const auto& r : rs) out.push_back(r.uid);
    return out;
  }

  std::vector<arbitration::claim_request> claims;
  std::vector<arbitration::claim_request> releases;
  std::vector<arbitration::claim_request> renewals;
  std::atomic<int> renewal_count{0};  // read by the fake server's thread
  // Claims renewed every max(ttl / 3, 1 s) by the pass; 0: never.
  std::chrono::seconds ttl{0};
  arbitration::write_result record_result_ = arbitration::write_result::done;
  std::vector<arbitration::claim_request> marked;
  std::vector<std::string> marked_jids;

 private:
  std::deque<claim_result> next_answers_;
  std::map<std::uint32_t, std::deque<claim_result>> per_uid_;
};

}  // namespace mailroom::test
