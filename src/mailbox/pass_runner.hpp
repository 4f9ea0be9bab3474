// Runs a pass_engine on the event loop: carries its actions out on an inbox,
// the arbitration store and the deliverer, and feeds the answers back. It
// decides nothing itself; what it adds is the logging, the counters and the
// health state that the watchers of every inbox kind share.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "common/histogram.hpp"
#include "common/logger.hpp"
#include "delivery/deliverer.hpp"
#include "mailbox/inbox.hpp"
#include "mailbox/pass_engine.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace mailroom::mailbox {

// What a watcher counts, for /metrics (all monotonic except where noted).
struct watcher_counters {
  std::uint64_t delivered = 0;          // acknowledged by the target and flagged
  std::uint64_t delivery_failures = 0;  // left unseen for a retry
  std::uint64_t already_delivered = 0;  // found unflagged with a "delivered" record: flagged
  std::uint64_t claimed_elsewhere = 0;  // skipped: another instance holds the claim
  // A release or delivered record that found our claim expired (left alone).
  std::uint64_t claims_lost = 0;
  // A release or delivered record that the arbitration store did not take.
  std::uint64_t arbitration_write_errors = 0;
  std::uint64_t oversize = 0;           // larger than max_message_size: flagged or moved
  std::uint64_t too_old = 0;            // older than max_message_age: flagged or moved
  std::uint64_t rejected = 0;           // refused by the target for good: flagged or moved
  std::uint64_t connects = 0;           // sessions that reached SELECT
  std::uint64_t tls_resumed = 0;        // of those, over a resumed TLS session
  std::uint64_t connection_errors = 0;  // sessions ended by an error (then reconnect)
  std::uint64_t login_failures = 0;     // of those, a login the server refused
  std::uint64_t bytes_fetched = 0;      // message bytes fetched
  std::uint64_t uidvalidity_changes = 0;
  std::uint64_t expunged_leftovers = 0;  // \Deleted messages expunged at session start
};

// Buckets of the histograms (seconds). Delivery latency starts at the
// message's arrival in the mailbox (INTERNALDATE, whole seconds; Graph's
// receivedDateTime), so it has nothing finer than half a second.
inline constexpr double delivery_latency_buckets[] = {0.5, 1,   2,   5,   10,   30,
                                                      60,  120, 300, 600, 1800, 3600};
inline constexpr double target_response_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                     0.5,   1,    2.5,   5,    10};

// The unseen messages of the folder, counted after each pass (the number an
// IMAP STATUS (UNSEEN) gives, and GitLab's mailbox exporter).
struct unseen_count {
  std::uint64_t messages = 0;
  std::int64_t oldest_arrival = 0;  // of the oldest of them, Unix seconds; 0: none or unknown
  std::int64_t counted_at = 0;      // when the pass that counted them ended; 0: not yet
};

// A watcher's state that its passes update.
struct watcher_health {
  watcher_counters counters;
  // Arrival in the mailbox -> acknowledged by the delivery target.
  histogram delivery_latency{delivery_latency_buckets};
  // One request to the delivery target, whatever its answer.
  histogram target_response{target_response_buckets};
  unseen_count unseen;
  // notAfter of the server certificate at the last TLS handshake (Unix
  // seconds); 0 without TLS.
  std::int64_t certificate_expiry = 0;
  // False after a delivery failed because of the target (Redis down, webhook
  // failing) until a delivery succeeds again: /readiness.
  bool target_ok = true;
  std::string last_error;  // the last connection or delivery error
  std::chrono::steady_clock::time_point last_progress = std::chrono::steady_clock::now();
  void progress() { last_progress = std::chrono::steady_clock::now(); }
};

struct pass_result {
  boost::system::error_code ec;     // the inbox failed: reconnect
  bool delivery_failed = false;     // back off, then retry (retry_schedule)
  std::size_t delivered = 0;        // acknowledged and flagged in this pass
  bool claimed_elsewhere = false;   // look again once those claims may have expired
  std::uint64_t bytes_fetched = 0;  // message bytes fetched in this pass
  // The keys this pass flagged delivered (or found already delivered).
  std::vector<std::uint32_t> flagged;
};

struct claim_write;

class pass_runner {
 public:
  // `context_line(action)` starts a log line naming the mailbox.
  pass_runner(boost::asio::any_io_executor ex, std::shared_ptr<delivery::deliverer> deliverer,
              std::shared_ptr<arbitration::arbitrator> arbitrator, std::shared_ptr<log::logger> log,
              std::function<log::fields(const char*)> context_line, watcher_health& health);
  ~pass_runner();

  // One pass over `keys` (what the inbox's search found, in order).
  boost::asio::awaitable<pass_result> run(inbox& in, std::vector<std::uint32_t> keys,
                                          const pass_settings& settings);
  // Shutdown: deliveries waiting for a slot are not sent, those running
  // finish, nothing more is fetched.
  void stop();
  // After stop(), once no pass runs: passes may run again (a watcher
  // restarted, cluster mode).
  void resume() { stopping_ = false; }

  struct pass_run;  // one pass on the event loop (.cpp)

 private:
  boost::asio::awaitable<void> deliver_one(std::shared_ptr<pass_run> run, mail_message m);
  void delivery_done(const std::shared_ptr<pass_run>& run, std::uint32_t key,
                     delivery_outcome outcome, const delivery::result& r);
  void apply(const std::shared_ptr<pass_run>& run, const delivery_orders& orders);
  // Renews the claims the pass holds every `every` until the pass is over.
  boost::asio::awaitable<void> renew_claims(std::shared_ptr<pass_run> run,
                                            std::chrono::milliseconds every);
  // Logs and counts the releases or records (`records`) that did not happen.
  void report_writes(const std::vector<std::uint32_t>& keys, const std::vector<claim_write>& writes,
                     bool records);
  boost::asio::awaitable<std::vector<claim_answer>> claim_batch(
      const inbox& in, const std::vector<std::uint32_t>& batch, pass_result& result);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<delivery::deliverer> deliverer_;
  std::shared_ptr<arbitration::arbitrator> arbitrator_;
  std::shared_ptr<log::logger> log_;
  std::function<log::fields(const char*)> context_line_;
  watcher_health& health_;
  bool stopping_ = false;
  std::shared_ptr<pass_run> pass_;  // the pass running, for stop()
};

}  // namespace mailroom::mailbox
