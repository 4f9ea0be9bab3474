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

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace mailroom::mailbox {

struct watcher_options {
  imap::client_options imap;
  std::size_t fetch_batch = 20;  // messages fetched (and held) at once
  std::chrono::milliseconds reconnect_min{1000};
  std::chrono::milliseconds reconnect_max{60000};
  std::chrono::milliseconds retry_min{2000};  // after a failed delivery
  std::chrono::milliseconds retry_max{300000};
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
  std::uint64_t delivered_count() const { return delivered_; }

 private:
  struct pass_result {
    boost::system::error_code ec;  // connection-level failure: reconnect
    bool delivery_failed = false;  // retry sooner than idle_timeout
  };

  boost::asio::awaitable<boost::system::error_code> session(imap::client& c, bool& logged_in);
  boost::asio::awaitable<pass_result> process_mailbox(imap::client& c);
  boost::asio::awaitable<void> release_claim(std::uint32_t uidvalidity, std::uint32_t uid);
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
  std::uint64_t delivered_ = 0;
  imap::client* current_ = nullptr;
  std::shared_ptr<boost::asio::steady_timer> sleep_timer_;
  std::chrono::milliseconds retry_delay_{0};
};

}  // namespace mailroom::mailbox
