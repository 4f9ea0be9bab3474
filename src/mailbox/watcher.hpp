// One watched mailbox: connect, then search -> arbitrate -> fetch -> deliver ->
// flag -> expunge -> idle, over and over, reconnecting with backoff when the
// connection fails. Many watchers share one event loop (no thread per mailbox).
//
// The difference from mail_room that matters: a message is fetched with
// BODY.PEEK[] (it stays unseen) and flagged \Seen (and \Deleted) only after the
// delivery target acknowledged it. A failed delivery leaves it unseen; its
// arbitration claim is released and it is retried on a later pass.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "common/logger.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"
#include "imap/client.hpp"
#include "mailbox/retry_schedule.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace mailroom::mailbox {

struct watcher_options {
  imap::client_options imap;
  std::size_t fetch_batch = 20;  // messages fetched (and held) at once
  // Bytes fetched (and held) at once, by RFC822.SIZE; one message always fits.
  std::uint64_t fetch_bytes = 64ull * 1024 * 1024;
  std::chrono::milliseconds reconnect_min{1000};
  std::chrono::milliseconds reconnect_max{60000};
  std::chrono::milliseconds retry_min{2000};  // after a failed delivery
  std::chrono::milliseconds retry_max{300000};
  // Deliveries running at once (the others wait their turn, in arrival
  // order). A webhook's requests run on the HTTP pool's few threads; once one
  // fails, those not yet started are not sent at all.
  std::size_t max_deliveries_in_flight = SIZE_MAX;
};

// Where a watcher is, for health checks and tests.
enum class watcher_state {
  connecting,   // TCP/TLS/LOGIN/SELECT in progress
  connected,    // selected: processing or idling
  backing_off,  // waiting before the next connection attempt
  stopped,      // run() has returned
};

// What a watcher counts, for /metrics (all monotonic except where noted).
struct watcher_counters {
  std::uint64_t delivered = 0;          // acknowledged by the target and flagged
  std::uint64_t delivery_failures = 0;  // left unseen for a retry
  std::uint64_t already_delivered = 0;  // found unflagged with a "delivered" record: flagged
  std::uint64_t claimed_elsewhere = 0;  // skipped: another instance holds the claim
  std::uint64_t oversize = 0;           // larger than max_message_size: flagged or moved
  std::uint64_t connects = 0;           // sessions that reached SELECT
  std::uint64_t connection_errors = 0;  // sessions ended by an error (then reconnect)
  std::uint64_t uidvalidity_changes = 0;
  std::uint64_t expunged_leftovers = 0;  // \Deleted messages expunged at session start
};

// Why a watcher gave up for good (the coordinator decides what to do).
struct fatal_error {
  std::string mailbox;  // label
  std::string message;
};

class watcher {
 public:
  watcher(boost::asio::any_io_executor ex, const config::mailbox& mb,
          std::shared_ptr<delivery::deliverer> deliverer,
          std::shared_ptr<arbitration::arbitrator> arbitrator, std::shared_ptr<log::logger> log,
          watcher_options opts = {});

  // Runs until stop(). `on_fatal` is called when the first connection fails
  // for a reason that reconnecting cannot cure (login rejected, certificate
  // rejected, no such mailbox): mail_room exits at start-up in that case.
  boost::asio::awaitable<void> run(std::function<void(const fatal_error&)> on_fatal);

  // Stop taking new work: an in-flight delivery finishes and is flagged, IDLE
  // ends with DONE, the session ends with LOGOUT.
  void stop();
  // Shutdown grace period over: close the connection now.
  void abort();

  const config::mailbox& mailbox() const { return mb_; }
  watcher_state state() const { return state_; }
  bool connected() const { return state_ == watcher_state::connected; }
  std::uint64_t delivered_count() const { return counters_.delivered; }
  const watcher_counters& counters() const { return counters_; }
  // Time since the watcher last moved forward (a command answered, a pass
  // finished, an IDLE ended, a backoff elapsed). /liveness compares it with
  // health_check.stuck_after; zero once stopped.
  std::chrono::steady_clock::duration stalled_for() const;
  // False after a delivery failed because of the target (Redis down, webhook
  // failing) until a delivery succeeds again: /readiness.
  bool target_ok() const { return target_ok_; }
  // The last connection or delivery error, for /readiness ("" when none).
  const std::string& last_error() const { return last_error_; }

 private:
  struct pass_result {
    boost::system::error_code ec;     // connection-level failure: reconnect
    bool delivery_failed = false;     // back off, then retry (retry_schedule)
    std::size_t delivered = 0;        // acknowledged and flagged in this pass
    bool claimed_elsewhere = false;   // look again once those claims may have expired
    std::uint64_t bytes_fetched = 0;  // message bytes fetched in this pass
  };

  // What the deliveries of one pass share: at most `limit` run at once, the
  // others wait in arrival order; once one failed because of the target, the
  // waiting ones are not sent (they stay unseen for the next pass).
  struct delivery_gate {
    delivery_gate(boost::asio::any_io_executor ex, std::size_t limit);
    boost::asio::awaitable<void> acquire();
    void release();
    boost::asio::any_io_executor executor;
    std::size_t limit;
    std::size_t running = 0;
    bool target_failed = false;
    std::deque<std::shared_ptr<boost::asio::steady_timer>> waiting;
  };

  // One delivery started while the batch is still being fetched.
  struct delivery_slot {
    std::uint32_t uid = 0;
    std::string id;  // the jid
    delivery::result outcome;
    std::exception_ptr error;  // thrown by the deliverer (not expected)
    std::size_t bytes = 0;     // the body's size, held until the delivery returns
    bool skipped = false;      // not sent: the target failed (or shutdown began) first
  };
  // The deliveries of one batch; wait_all() returns once all have completed.
  struct batch_deliveries {
    explicit batch_deliveries(boost::asio::any_io_executor ex);
    void finished(const delivery_slot& slot);
    std::deque<delivery_slot> slots;  // stable addresses while deliveries run
    std::size_t pending = 0;
    std::uint64_t held_bytes = 0;    // bodies of the deliveries still running
    bool target_failed = false;      // a delivery failed because of the target
    boost::asio::steady_timer wake;  // never expires; cancelled when pending hits 0
  };
  static boost::asio::awaitable<void> wait_all(batch_deliveries& b);
  void start_delivery(const std::shared_ptr<batch_deliveries>& batch,
                      const std::shared_ptr<delivery_gate>& gate, std::uint32_t uidvalidity,
                      std::uint32_t uid, std::string&& body);
  // A batch whose bodies have been fetched (deliveries started), not yet
  // recorded and flagged.
  struct fetched_batch {
    std::shared_ptr<batch_deliveries> deliveries;
    std::vector<std::uint32_t> granted;
    std::vector<std::uint32_t> already;  // delivered before, still unflagged
    std::set<std::uint32_t> started;     // bodies received
    bool store_down = false;             // arbitration unavailable
  };
  struct pass_state {
    std::vector<std::uint32_t> deleted;  // flagged \Deleted in this pass
    bool stop = false;                   // the target or the arbitration store is failing
  };
  // Waits for the batch's deliveries, records the acknowledged ones, releases
  // the other claims and, when `flag`, flags the delivered messages. Empties
  // `batch`; an error is the STORE's.
  boost::asio::awaitable<boost::system::error_code> finish_batch(
      imap::client& c, std::unique_ptr<fetched_batch>& batch, bool flag, pass_state& pass,
      pass_result& result);
  boost::asio::awaitable<void> deliver_one(mail_message m, delivery_slot& slot,
                                           std::shared_ptr<delivery_gate> gate);

  boost::asio::awaitable<boost::system::error_code> session(imap::client& c, bool& logged_in);
  // Waits out retry_ with the session kept alive (IDLE, renewed every
  // idle_check_interval); new mail does not end the wait.
  boost::asio::awaitable<boost::system::error_code> wait_to_retry(imap::client& c);
  boost::asio::awaitable<pass_result> process_mailbox(imap::client& c);
  arbitration::claim_request request_for(std::uint32_t uidvalidity, std::uint32_t uid) const {
    return {mb_.email, mb_.name, mb_.server(), uidvalidity, uid};
  }
  boost::asio::awaitable<void> release_claim(std::uint32_t uidvalidity, std::uint32_t uid);
  boost::asio::awaitable<bool> record_delivery(std::uint32_t uidvalidity, std::uint32_t uid,
                                               std::string jid);
  boost::asio::awaitable<boost::system::error_code> expunge_leftovers(imap::client& c);
  boost::asio::awaitable<boost::system::error_code> set_aside_oversize(
      imap::client& c, const std::vector<imap::message_meta>& big, pass_state& pass);
  void progress() { last_progress_ = std::chrono::steady_clock::now(); }
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds d);
  log::fields context_line(const char* action) const;

  boost::asio::any_io_executor executor_;
  const config::mailbox& mb_;
  std::shared_ptr<delivery::deliverer> deliverer_;
  std::shared_ptr<arbitration::arbitrator> arbitrator_;
  std::shared_ptr<log::logger> log_;
  watcher_options opts_;
  bool stopping_ = false;
  watcher_state state_ = watcher_state::connecting;
  watcher_counters counters_;
  std::chrono::steady_clock::time_point last_progress_ = std::chrono::steady_clock::now();
  bool target_ok_ = true;
  std::string last_error_;
  std::uint32_t last_uidvalidity_ = 0;
  // Oversize UIDs already reported that could not be flagged (no keywords).
  std::set<std::uint32_t> oversize_reported_;
  imap::client* current_ = nullptr;
  std::shared_ptr<boost::asio::steady_timer> sleep_timer_;
  retry_schedule retry_;
};

}  // namespace mailroom::mailbox
