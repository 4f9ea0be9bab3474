// What the health endpoint answers, built from the watchers' state:
//
//   /liveness   200 "OK" while running; 500 "Not running" once shutdown began;
//               500 naming the mailbox when one made no progress for
//               health_check.stuck_after (a hung coroutine, a wedged
//               connection that no timeout caught): restarting helps then.
//   /readiness  200 when every mailbox is selected and its delivery target
//               answered last time; 503 listing the ones that are not.
//               Failing readiness does not restart the pod; it tells the
//               operator (and the alerting) that mail is not flowing.
//   /metrics    Prometheus text format (version 0.0.4), per mailbox.
#pragma once

#include "config/model.hpp"
#include "mailbox/watcher.hpp"
#include "observability/health_server.hpp"

#include <memory>
#include <vector>

namespace mailroom::app {

observability::route_handler make_health_routes(
    const config::config& cfg, const std::vector<std::unique_ptr<mailbox::watcher>>& watchers,
    const observability::health_server& health);

// The /metrics body (exposed for tests).
std::string render_metrics(const std::vector<std::unique_ptr<mailbox::watcher>>& watchers);

}  // namespace mailroom::app
