// Builds the running service from a validated config: one event loop, one
// watcher per mailbox, shared Redis clients and HTTP client, the health
// endpoint, and signal handling for a bounded graceful shutdown.
#pragma once

#include "config/model.hpp"

#include <chrono>
#include <functional>
#include <string>

namespace mailroom::app {

struct run_options {
  std::chrono::seconds shutdown_grace{25};  // in-flight deliveries may finish
  // Called once with a one-line reason when the service stops because of a
  // fatal error (e.g. a login rejected at start-up).
  std::function<void(const std::string&)> on_fatal;
};

// Runs until SIGTERM/SIGINT or a fatal error. Returns the process exit code:
// 0 after a requested shutdown, 1 after a fatal error.
int run_service(const config::config& cfg, const run_options& opts);

}  // namespace mailroom::app
