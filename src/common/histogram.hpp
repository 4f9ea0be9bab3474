// A Prometheus histogram of one series: fixed upper bounds, a count per
// bucket, the sum and the count of the observations. No locking: each one is
// updated and read on the event loop thread that owns its watcher.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace mailroom {

class histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending; +Inf is implicit. The
  // caller keeps them alive (they are static tables).
  explicit histogram(std::span<const double> bounds)
      : bounds_(bounds), counts_(bounds.size() + 1, 0) {}

  void observe(double v) {
    const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);  // le: v <= bound
    ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
    sum_ += v;
    ++count_;
  }

  std::span<const double> bounds() const { return bounds_; }
  // Observations <= bounds()[i] (cumulative, as the exposition format wants);
  // i == bounds().size() is +Inf, the same as count().
  std::uint64_t cumulative(std::size_t i) const {
    std::uint64_t n = 0;
    for (std::size_t j = 0; j <= i && j < counts_.size(); ++j) n += counts_[j];
    return n;
  }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::span<const double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace mailroom
