#!/usr/bin/env bash
# Stop the Sidekiq that start-sidekiq.sh started in DIR (SIGTERM; it finishes
# in-flight jobs within its -t 2 s, then exits; SIGKILL after 10 s).
#   usage: tests/servers/stop-sidekiq.sh "$SIDEKIQ_DIR"
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-sidekiq.sh DIR}"
[ -s "$D/sidekiq.pid" ] && stop_pid "$(cat "$D/sidekiq.pid")" sidekiq 10
exit 0
