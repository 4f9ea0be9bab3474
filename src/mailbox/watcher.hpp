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
#include "mailbox/pass_runner.hpp"
#include "mailbox/retry_schedule.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
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
  std::uint64_t delivered_count() const { return health_.counters.delivered; }
  const watcher_counters& counters() const { return health_.counters; }
  // Time since the watcher last moved forward (a command answered, a pass
  // finished, an IDLE ended, a backoff elapsed). /liveness compares it with
  // health_check.stuck_after; zero once stopped.
  std::chrono::steady_clock::duration stalled_for() const;
  // False after a delivery failed because of the target (Redis down, webhook
  // failing) until a delivery succeeds again: /readiness.
  bool target_ok() const { return health_.target_ok; }
  // The last connection or delivery error, for /readiness ("" when none).
  const std::string& last_error() const { return health_.last_error; }

 private:
  class imap_inbox;

  boost::asio::awaitable<boost::system::error_code> session(imap::client& c, bool& logged_in);
  // Waits out retry_ with the session kept alive (IDLE, renewed every
  // idle_check_interval); new mail does not end the wait.
  boost::asio::awaitable<boost::system::error_code> wait_to_retry(imap::client& c);
  boost::asio::awaitable<pass_result> process_mailbox(imap::client& c);
  boost::asio::awaitable<boost::system::error_code> expunge_leftovers(imap::client& c);
  // The error, and whether they were left flagged \Deleted (copied: no MOVE).
  boost::asio::awaitable<std::pair<boost::system::error_code, bool>> set_aside_oversize(
      imap::client& c, const std::vector<imap::message_meta>& big);
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
  watcher_health health_;
  std::uint32_t last_uidvalidity_ = 0;
  // Oversize UIDs already reported that could not be flagged (no keywords).
  std::set<std::uint32_t> oversize_reported_;
  imap::client* current_ = nullptr;
  std::shared_ptr<boost::asio::steady_timer> sleep_timer_;
  retry_schedule retry_;
  pass_runner runner_;  // after what it refers to
};

}  // namespace mailroom::mailbox
