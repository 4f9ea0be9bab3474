// Records what a component logs (log::logger::to_function), so that a test or
// a scripted server thread can wait for a line instead of sleeping: the
// decision a line reports has been taken once the line exists.
#pragma once

#include "common/logger.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mailroom::test {

class log_recorder {
 public:
  // A logger writing every severity (DEBUG included) into this recorder.
  std::shared_ptr<log::logger> logger() {
    auto l = log::logger::to_function([this](const std::string& line) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      std::lock_guard lock(mutex_);
      lines_.push_back(std::move(j));
      cv_.notify_all();
    });
    l->set_min_severity(log::severity::debug);
    return l;
  }

  // How many lines with this "action" were logged so far (any thread).
  std::size_t count(const std::string& action) const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& j : lines_) n += is(j, action);
    return n;
  }

  // Waits until `n` lines with this action exist; false after `limit`.
  bool wait_for(const std::string& action, std::size_t n = 1,
                std::chrono::milliseconds limit = std::chrono::seconds(10)) const {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] {
      std::size_t k = 0;
      for (const auto& j : lines_) k += is(j, action);
      return k >= n;
    });
  }

  // Every line with this action, in order.
  std::vector<nlohmann::json> lines(const std::string& action) const {
    std::lock_guard lock(mutex_);
    std::vector<nlohmann::json> out;
    for (const auto& j : lines_)
      if (is(j, action)) out.push_back(j);
    return out;
  }

 private:
  static bool is(const nlohmann::json& j, const std::string& action) {
    return j.is_object() && j.contains("action") && j["action"] == action;
  }

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<nlohmann::json> lines_;
};

}  // namespace mailroom::test
