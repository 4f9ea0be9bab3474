// One mailbox's lease, as this instance sees it (the `:cluster:` mode). No
// I/O, no clock: the driver feeds it the time and Redis's answers and carries
// out the action it returns.
//
// In Redis the lease is a key holding the owner's instance id with a TTL
// (SET NX PX to take it; renewal and release are compare-and-set on the id).
// Redis's expiry decides who may own the mailbox next; this side decides
// when the owner must stop touching it. It may watch the mailbox only until
//
//     valid_until = (when the last successful take or renewal was SENT)
//                   + ttl - safety
//
// Redis started the TTL no earlier than the request was sent, so the key
// outlives valid_until by at least `safety` (which covers the two clocks'
// drift over one TTL). A renewal that fails, or a pause (a stopped process, a
// long GC-like stall, Redis unreachable), lets valid_until pass: the watcher
// is aborted at once, before another instance can take the key.
//
// Handover: when the assignment gives the mailbox to another instance, the
// watcher stops gracefully (deliveries in flight finish and are flagged),
// the lease is renewed meanwhile, and released only once the watcher ended.
#pragma once

#include <chrono>

namespace mailroom::cluster {

using clock = std::chrono::steady_clock;

struct lease_timing {
  clock::duration ttl = std::chrono::seconds(10);
  clock::duration renew_every = std::chrono::seconds(10) / 3;
  clock::duration safety = std::chrono::seconds(1);
  // A take that found the key held is tried again this soon: the holder may
  // be handing over, or dead with its key about to expire.
  clock::duration retry_take = std::chrono::seconds(1);
  // How often the membership is renewed and the live members read: a dead
  // member is noticed this long after its membership expired, at most.
  clock::duration heartbeat_every = std::chrono::seconds(2);
  // From `ttl`: renewal every third of it, heartbeat every fifth, safety a
  // tenth (at least 100 ms), a failed take retried after a tenth (at least
  // 500 ms, at most a renewal period).
  static lease_timing from_ttl(clock::duration ttl);
};

enum class lease_action {
  none,
  take,           // SET key id NX PX ttl, then on_take()
  renew,          // compare-and-set PEXPIRE, then on_renew()
  release,        // compare-and-set DEL, then on_release()
  start_watcher,  // the lease is ours: watch the mailbox
  stop_watcher,   // stop gracefully, then on_watcher_stopped()
  abort_watcher,  // stop now: the lease may be gone; then on_watcher_stopped()
};

// What Redis answered to a take, renew or release.
enum class lease_reply {
  done,         // taken / renewed / released
  not_ours,     // another instance holds the key (or it is gone, for renew)
  unavailable,  // no answer: an error reply, a lost connection, a timeout
};

enum class lease_state {
  idle,      // not ours, not wanted
  taking,    // a take is in flight
  held,      // ours; the watcher runs
  stopping,  // ours; the watcher is stopping (handover, or shutdown)
  aborting,  // possibly not ours any more; the watcher is being aborted
  releasing  // the watcher ended; a release is in flight
};

class lease {
 public:
  explicit lease(lease_timing t) : timing_(t) {}

  // Whether the assignment gives this mailbox to this instance.
  void want(bool wanted) { wanted_ = wanted; }
  bool wanted() const { return wanted_; }

  // The next thing to do at `now` (call again until it returns none; a
  // request in flight makes it wait for the reply).
  lease_action next(clock::time_point now);

  // Replies to take/renew/release, with the time the request was sent.
  void on_take(lease_reply r, clock::time_point sent);
  void on_renew(lease_reply r, clock::time_point sent);
  void on_release(lease_reply r);
  void on_watcher_stopped();

  lease_state state() const { return state_; }
  // Since when the lease is ours (the take that got it), while held.
  clock::time_point held_since() const { return held_since_; }
  clock::time_point valid_until() const { return valid_until_; }
  // Whether the watcher may touch the mailbox at `now`.
  bool may_watch(clock::time_point now) const {
    return (state_ == lease_state::held || state_ == lease_state::stopping) && now < valid_until_;
  }
  // When next() has something to do, at the latest (for the driver's timer).
  clock::time_point next_deadline() const;

 private:
  lease_timing timing_;
  lease_state state_ = lease_state::idle;
  bool wanted_ = false;
  bool request_in_flight_ = false;
  bool watcher_running_ = false;
  bool lost_ = false;  // the key is not ours (renewal said so, or valid_until passed)
  clock::time_point held_since_{};
  clock::time_point valid_until_{};
  clock::time_point next_renew_at_{};
  clock::time_point retry_take_at_{};
};

}  // namespace mailroom::cluster
