#include "mailbox/retry_schedule.hpp"

#include <algorithm>

namespace mailroom::mailbox {

void retry_schedule::pass_ended(clock::time_point now, bool failed, bool delivered_any,
                                milliseconds cap) {
  if (!failed) {
    step_ = delay_ = milliseconds{0};
    return;
  }
  if (delivered_any || step_.count() == 0) {
    step_ = first_;
  } else {
    step_ = std::min(step_ * 2, max_);
  }
  delay_ = std::max(std::min(step_, cap), milliseconds{1});
  next_ = now + delay_;
}

}  // namespace mailroom::mailbox
