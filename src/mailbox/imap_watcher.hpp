// One watched IMAP mailbox: connect, then search -> arbitrate -> fetch -> deliver ->
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
#include "mailbox/watcher.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
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

class imap_watcher final : public watcher {
 public:
  imap_watcher(boost::asio::any_io_executor ex, const config::mailbox& mb,
               std::shared_ptr<delivery::deliverer> deliverer,
               std::shared_ptr<arbitration::arbitrator> arbitrator,
               std::shared_ptr<log::logger> log, watcher_options opts = {});

  // A permanent error is a login or certificate rejected or a missing
  // folder, on the first connection (exit_at_startup) or on any.
  boost::asio::awaitable<void> run(std::function<void(const fatal_error&)> on_fatal) override;
  // An in-flight delivery finishes and is flagged, IDLE ends with DONE, the
  // session ends with LOGOUT.
  void stop() override;
  void restart() override;
  void abort() override;
  token_counts tokens() const override;

 private:
  class imap_inbox;

  boost::asio::awaitable<boost::system::error_code> session(imap::client& c, bool& logged_in);
  // Waits out retry_ with the session kept alive (IDLE, renewed every
  // idle_check_interval); new mail does not end the wait.
  boost::asio::awaitable<boost::system::error_code> wait_to_retry(imap::client& c);
  boost::asio::awaitable<pass_result> process_mailbox(imap::client& c);
  boost::asio::awaitable<boost::system::error_code> expunge_leftovers(imap::client& c);
  // After each pass: the unseen messages and the oldest one's arrival
  // (health_.unseen, for /metrics).
  boost::asio::awaitable<boost::system::error_code> count_unseen(imap::client& c);
  // after_delivery move: \Seen, then UID MOVE (or COPY...) to move_to,
  // creating it when the server says it is missing.
  boost::asio::awaitable<boost::system::error_code> move_delivered(
      imap::client& c, const std::vector<std::uint32_t>& uids);
  // UID MOVE (or COPY...) to `folder`, creating it when the server says it
  // is missing.
  boost::asio::awaitable<boost::system::result<imap::move_outcome>> move_creating(
      imap::client& c, const std::vector<std::uint32_t>& uids, const std::string& folder,
      const std::string& mark_copied);
  // Flags or moves them (aside_policy_for). The error, and whether they
  // were left flagged \Deleted (copied: no MOVE).
  boost::asio::awaitable<std::pair<boost::system::error_code, bool>> set_aside(
      imap::client& c, const std::vector<imap::message_meta>& metas, aside_reason reason);
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds d);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<delivery::deliverer> deliverer_;
  std::shared_ptr<arbitration::arbitrator> arbitrator_;
  std::shared_ptr<log::logger> log_;
  watcher_options opts_;
  bool stopping_ = false;
  std::uint32_t last_uidvalidity_ = 0;
  // UIDs set aside that could not be flagged (no keywords), by aside_reason.
  std::array<std::set<std::uint32_t>, 3> reported_;
  imap::client* current_ = nullptr;
  std::shared_ptr<boost::asio::steady_timer> sleep_timer_;
  retry_schedule retry_;
  pass_runner runner_;  // after what it refers to
};

}  // namespace mailroom::mailbox
