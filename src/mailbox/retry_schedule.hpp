// When a mailbox tries its delivery target again after a failed pass (README
// "Delivery guarantee", point 2). No I/O and no clock of its own: the time is
// passed in, so every ordering of passes and failures is a unit test.
//
// The rule:
//  * a pass in which a delivery failed because of the target (or the
//    arbitration store) ends in a backoff: `first` (2 s) after a pass that
//    delivered nothing, doubling with every further such pass up to `max`
//    (5 min), and never more than `cap` (the mailbox's idle_timeout);
//  * a failed pass that still delivered something starts again at `first`:
//    the target is partly working, so the next attempt should come soon;
//  * a pass without a failure ends the backoff.
// While backing off no pass starts, not even for new mail: it would fail the
// same way, and a burst of arriving mail must not become a burst of requests
// to a target that is down.
#pragma once

#include <chrono>

namespace mailroom::mailbox {

class retry_schedule {
 public:
  using clock = std::chrono::steady_clock;
  using milliseconds = std::chrono::milliseconds;

  retry_schedule(milliseconds first, milliseconds max) : first_(first), max_(max) {}

  // At the end of every pass, also one cut short by a lost connection.
  void pass_ended(clock::time_point now, bool failed, bool delivered_any, milliseconds cap);

  // True until next_attempt() once a failed pass ended.
  bool backing_off(clock::time_point now) const { return delay_.count() > 0 && now < next_; }
  clock::time_point next_attempt() const { return next_; }
  // The current step (0 when the last pass did not fail).
  milliseconds delay() const { return delay_; }

 private:
  milliseconds first_;
  milliseconds max_;
  milliseconds step_{0};   // the backoff step reached, before the cap
  milliseconds delay_{0};  // the wait in force, after the cap
  clock::time_point next_{};
};

}  // namespace mailroom::mailbox
