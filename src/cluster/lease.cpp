#include "cluster/lease.hpp"

#include <algorithm>

namespace mailroom::cluster {

lease_timing lease_timing::from_ttl(clock::duration ttl) {
  lease_timing t;
  t.ttl = ttl;
  t.renew_every = ttl / 3;
  t.safety = std::max<clock::duration>(ttl / 10, std::chrono::milliseconds(100));
  t.retry_take = std::min<clock::duration>(
      t.renew_every, std::max<clock::duration>(ttl / 10, std::chrono::milliseconds(500)));
  t.heartbeat_every = ttl / 5;
  return t;
}

lease_action lease::next(clock::time_point now) {
  switch (state_) {
    case lease_state::idle:
      if (wanted_ && !request_in_flight_ && now >= retry_take_at_) {
        state_ = lease_state::taking;
        request_in_flight_ = true;
        return lease_action::take;
      }
      return lease_action::none;
    case lease_state::taking:
      return lease_action::none;
    case lease_state::held:
    case lease_state::stopping:
      // The key may be gone, or another instance's: stop touching the
      // mailbox now, without finishing anything.
      if (lost_ || now >= valid_until_) {
        lost_ = true;
        if (!watcher_running_) {
          state_ = lease_state::releasing;
          return next(now);
        }
        state_ = lease_state::aborting;
        return lease_action::abort_watcher;
      }
      if (state_ == lease_state::held) {
        if (!wanted_) {
          if (watcher_running_) {
            state_ = lease_state::stopping;
            return lease_action::stop_watcher;
          }
          state_ = lease_state::releasing;
          return next(now);
        }
        if (!watcher_running_) {
          watcher_running_ = true;
          return lease_action::start_watcher;
        }
      }
      if (!request_in_flight_ && now >= next_renew_at_) {
        request_in_flight_ = true;
        next_renew_at_ = now + timing_.renew_every;
        return lease_action::renew;
      }
      return lease_action::none;
    case lease_state::aborting:
      return lease_action::none;  // until on_watcher_stopped()
    case lease_state::releasing:
      if (!request_in_flight_) {
        request_in_flight_ = true;
        return lease_action::release;
      }
      return lease_action::none;
  }
  return lease_action::none;
}

void lease::on_take(lease_reply r, clock::time_point sent) {
  request_in_flight_ = false;
  if (state_ != lease_state::taking) return;
  if (r == lease_reply::done) {
    state_ = lease_state::held;
    lost_ = false;
    watcher_running_ = false;
    held_since_ = sent;
    valid_until_ = sent + timing_.ttl - timing_.safety;
    next_renew_at_ = sent + timing_.renew_every;
    return;
  }
  // Another instance holds it (it is handing over, or died and its key is
  // about to expire), or Redis did not answer: try again soon.
  state_ = lease_state::idle;
  retry_take_at_ = sent + timing_.retry_take;
}

void lease::on_renew(lease_reply r, clock::time_point sent) {
  request_in_flight_ = false;
  if (state_ != lease_state::held && state_ != lease_state::stopping) return;
  switch (r) {
    case lease_reply::done:
      valid_until_ = std::max(valid_until_, sent + timing_.ttl - timing_.safety);
      break;
    case lease_reply::not_ours:
      lost_ = true;
      break;
    case lease_reply::unavailable:
      // Try again soon: valid_until_ is what still protects the mailbox.
      next_renew_at_ = std::min(next_renew_at_, sent + timing_.renew_every / 4);
      break;
  }
}

void lease::on_release(lease_reply) {
  // Whatever the answer: the release is compare-and-set, so it never removes
  // another instance's lease, and a key left behind expires by itself.
  request_in_flight_ = false;
  if (state_ != lease_state::releasing) return;
  state_ = lease_state::idle;
  lost_ = false;
  retry_take_at_ = {};
}

void lease::on_watcher_stopped() {
  watcher_running_ = false;
  if (state_ == lease_state::stopping || state_ == lease_state::aborting) {
    state_ = lease_state::releasing;
  }
}

clock::time_point lease::next_deadline() const {
  switch (state_) {
    case lease_state::idle:
      return wanted_ ? retry_take_at_ : clock::time_point::max();
    case lease_state::held:
    case lease_state::stopping:
      return std::min(valid_until_, next_renew_at_);
    default:
      return clock::time_point::max();
  }
}

}  // namespace mailroom::cluster
