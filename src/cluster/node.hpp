// This instance as a member of a cluster (`:cluster:`): it keeps its
// membership alive in Redis, computes the assignment of mailboxes to the live
// members (cluster/assignment.hpp), and holds one lease per mailbox it is
// given (cluster/lease.hpp), telling the coordinator, through hooks, when to
// start, stop or abort the watcher of a mailbox.
//
// One loop on the io_context: a heartbeat every fifth of lease_ttl (one EVAL:
// renew the membership, list the live members), then the leases' actions,
// batched (one EVAL each for the takes, the renewals and the releases of a
// round). Redis answers decide who may take a mailbox; the local clock
// decides when this instance must stop touching one (lease.hpp).
#pragma once

#include "cluster/lease.hpp"
#include "common/logger.hpp"
#include "config/model.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mailroom::redis {
class client;
}

namespace mailroom::cluster {

struct node_hooks {
  // The lease on mailbox i is ours: run its watcher.
  std::function<void(std::size_t)> start;
  // Handover: stop gracefully (deliveries in flight finish and are flagged),
  // then call node::watcher_stopped(i).
  std::function<void(std::size_t)> stop;
  // The lease may be gone: close the mailbox's connection now, then call
  // node::watcher_stopped(i).
  std::function<void(std::size_t)> abort;
};

// What `status` and /metrics show of one mailbox.
struct mailbox_ownership {
  bool ours = false;
  lease_state state = lease_state::idle;
  std::int64_t since_unix_ms = 0;  // when this instance took the lease
};

class node {
 public:
  node(boost::asio::any_io_executor ex, const config::cluster_options& opts,
       std::vector<std::string> mailbox_labels, node_hooks hooks, std::shared_ptr<log::logger> log);
  ~node();
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  // Runs until leave() has handed every mailbox back and the membership is
  // removed.
  boost::asio::awaitable<void> run();
  // Shutdown: stop every watcher gracefully, release the leases, leave.
  void leave();
  // The watcher of mailbox i has returned (after a stop or an abort hook).
  void watcher_stopped(std::size_t i);

  // "<host>:<pid>:<random>"
  const std::string& id() const { return id_; }
  std::vector<std::string> members() const { return members_; }
  mailbox_ownership ownership(std::size_t i) const;

 private:
  boost::asio::awaitable<void> heartbeat();
  boost::asio::awaitable<void> round();
  void wake();
  std::string instance_json() const;

  boost::asio::any_io_executor executor_;
  config::cluster_options opts_;
  lease_timing timing_;
  std::vector<std::string> labels_;
  node_hooks hooks_;
  std::shared_ptr<log::logger> log_;
  std::shared_ptr<redis::client> redis_;
  std::string id_;
  std::int64_t started_unix_ms_ = 0;
  std::vector<lease> leases_;
  std::vector<std::string> values_;  // each lease's value while we try to hold it
  std::vector<std::int64_t> taken_unix_ms_;
  std::vector<std::string> members_;
  bool leaving_ = false;
  bool woken_ = false;        // wake() since the loop last looked
  bool heartbeat_ok_ = true;  // log a failed heartbeat once, not every time
  clock::time_point next_heartbeat_{};
  boost::asio::steady_timer wake_timer_;
};

}  // namespace mailroom::cluster
