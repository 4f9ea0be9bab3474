// One watched mailbox, as the coordinator, the health endpoint and /metrics
// see it, whatever kind of inbox it reads: imap_watcher (an IMAP folder,
// IDLE) or graph_watcher (a Microsoft Graph mail folder, polled). Each runs
// its passes through a pass_runner, so the delivery guarantees, the counters
// and the log lines are the same for both.
#pragma once

#include "common/logger.hpp"
#include "config/model.hpp"
#include "mailbox/pass_runner.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace mailroom::mailbox {

// Where a watcher is, for health checks and tests.
enum class watcher_state {
  connecting,   // IMAP: TCP/TLS/LOGIN/SELECT in progress; Graph: before the first answer
  connected,    // IMAP: selected; Graph: the last request was answered
  backing_off,  // waiting before the next connection attempt or request
  stopped,      // run() has returned
};

// Why a watcher gave up for good (the coordinator decides what to do).
struct fatal_error {
  std::string mailbox;  // label
  std::string message;
};

class watcher {
 public:
  virtual ~watcher() = default;

  // Runs until stop(). `on_fatal` is called when the mailbox fails for a
  // reason that retrying cannot cure (login or credentials rejected, a
  // certificate rejected, no such mailbox) and on_permanent_error says to
  // give up: mail_room exits at start-up in that case.
  virtual boost::asio::awaitable<void> run(std::function<void(const fatal_error&)> on_fatal) = 0;
  // Stop taking new work: deliveries in flight finish and are marked, the
  // session ends cleanly.
  virtual void stop() = 0;
  // Shutdown grace period over: close connections now.
  virtual void abort() = 0;
  // After run() returned: the next run() starts afresh (cluster mode: the
  // mailbox's lease came back). Counters are kept.
  virtual void restart() = 0;
  // OAuth2 access tokens fetched and failed requests, of the token source
  // this mailbox uses (shared by the mailboxes with the same credentials).
  struct token_counts {
    std::uint64_t renewals = 0;
    std::uint64_t failures = 0;
  };
  virtual token_counts tokens() const { return {}; }
  // Whether this instance watches the mailbox (false in cluster mode while
  // another instance holds its lease): /readiness only waits for those.
  bool active() const { return active_; }
  // `since`: when this instance took the mailbox's lease (Unix seconds; 0
  // without a cluster).
  void set_active(bool a, std::int64_t since = 0) {
    active_ = a;
    active_since_ = a ? since : 0;
    // Another instance counts them now: a stale count here would keep an
    // alert on max(unseen) firing.
    if (!a) health_.unseen = {};
  }
  std::int64_t active_since() const { return active_since_; }

  const config::mailbox& mailbox() const { return mb_; }
  watcher_state state() const { return state_; }
  bool connected() const { return state_ == watcher_state::connected; }
  std::uint64_t delivered_count() const { return health_.counters.delivered; }
  const watcher_counters& counters() const { return health_.counters; }
  const watcher_health& health() const { return health_; }
  // Time since the watcher last moved forward (a command answered, a pass
  // finished, an IDLE ended, a backoff elapsed). /liveness compares it with
  // health_check.stuck_after; zero once stopped.
  std::chrono::steady_clock::duration stalled_for() const {
    if (state_ == watcher_state::stopped) return {};
    return std::chrono::steady_clock::now() - health_.last_progress;
  }
  // False after a delivery failed because of the target (Redis down, webhook
  // failing) until a delivery succeeds again: /readiness.
  bool target_ok() const { return health_.target_ok; }
  // The last connection or delivery error, for /readiness ("" when none).
  const std::string& last_error() const { return health_.last_error; }

 protected:
  explicit watcher(const config::mailbox& mb) : mb_(mb) {}
  // A log line naming the mailbox: {"context": {email, name}, "action": ...}.
  log::fields context_line(const char* action) const;
  // `d` +-20 %, so that instances restarted together do not retry in lockstep.
  static std::chrono::milliseconds jittered(std::chrono::milliseconds d);

  const config::mailbox& mb_;
  watcher_state state_ = watcher_state::connecting;
  watcher_health health_;
  bool active_ = true;
  std::int64_t active_since_ = 0;
};

}  // namespace mailroom::mailbox
