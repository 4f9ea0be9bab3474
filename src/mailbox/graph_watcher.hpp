// One watched Microsoft Graph mail folder (inbox_method: microsoft_graph):
// list the unread messages every poll_interval, run a pass over them
// (arbitrate, fetch the MIME of several at once, deliver as each arrives,
// mark read or delete after the target acknowledged), and back off when Graph
// fails: at least Retry-After after a 429 or 503, doubling delays after other
// errors. The token is the application's (client credentials), renewed before
// it runs out and once more after a 401.
//
// Unlike mail_room's Graph inbox: the token is renewed (the gem's runs out
// after an hour and the process dies), a message is marked read only after
// delivery, throttling waits Retry-After, and every error is retried or
// reported instead of ending the process.
#pragma once

#include "arbitration/arbitrator.hpp"
#include "common/logger.hpp"
#include "config/model.hpp"
#include "delivery/deliverer.hpp"
#include "graph/client.hpp"
#include "mailbox/pass_runner.hpp"
#include "mailbox/retry_schedule.hpp"
#include "mailbox/watcher.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

namespace mailroom::mailbox {

struct graph_watcher_options {
  graph::client_options graph;
  std::size_t fetch_batch = 20;  // messages fetched (and held) at once
  std::uint64_t fetch_bytes = 64ull * 1024 * 1024;
  // Requests of one mailbox running at once (bodies, marks).
  std::size_t concurrent_requests = 4;
  std::chrono::milliseconds error_backoff_min{1000};  // after a failed request
  std::chrono::milliseconds error_backoff_max{300000};
  std::chrono::milliseconds retry_min{2000};  // after a failed delivery
  std::chrono::milliseconds retry_max{300000};
  std::size_t max_deliveries_in_flight = SIZE_MAX;
};

class graph_watcher final : public watcher {
 public:
  graph_watcher(boost::asio::any_io_executor ex, const config::mailbox& mb,
                std::shared_ptr<delivery::http_client> http,
                std::shared_ptr<imap::token_source> tokens,
                std::shared_ptr<delivery::deliverer> deliverer,
                std::shared_ptr<arbitration::arbitrator> arbitrator,
                std::shared_ptr<log::logger> log, graph_watcher_options opts);

  // A permanent error: the token endpoint refused the app (wrong secret,
  // unknown tenant), or Graph refused the folder (no permission, no such
  // user or folder).
  boost::asio::awaitable<void> run(std::function<void(const fatal_error&)> on_fatal) override;
  // Deliveries in flight finish and their messages are marked; nothing new
  // is listed, fetched or sent.
  void stop() override;
  void restart() override;
  void abort() override;
  token_counts tokens() const override;

 private:
  class graph_inbox;

  // Waits `d` (stop() ends the wait).
  boost::asio::awaitable<void> sleep(std::chrono::milliseconds d);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<delivery::deliverer> deliverer_;
  std::shared_ptr<arbitration::arbitrator> arbitrator_;
  std::shared_ptr<log::logger> log_;
  graph_watcher_options opts_;
  std::shared_ptr<imap::token_source> tokens_;  // for /metrics; client_ uses it
  graph::client client_;
  bool stopping_ = false;
  // Messages set aside that could be neither tagged nor moved (reported
  // once, then skipped), by id, by aside_reason.
  std::array<std::set<std::string>, 3> reported_;
  // Sizes learnt from bodies larger than max_message_size that Graph listed
  // smaller (or without a size): set aside by the next pass.
  std::map<std::string, std::uint64_t> learnt_sizes_;
  std::shared_ptr<boost::asio::steady_timer> sleep_timer_;
  retry_schedule retry_;
  pass_runner runner_;  // after what it refers to
};

}  // namespace mailroom::mailbox
