#!/usr/bin/env bash
# Stop the Cyrus that start-cyrus.sh started in DIR: SIGTERM to its master (which
# ends its children), wait until it is gone, then end any child still left in the
# master's session (start-cyrus.sh runs it under setsid).
#   usage: tests/servers/stop-cyrus.sh "$CYRUS_DIR"
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-cyrus.sh DIR}"
pid="$(cat "$D/run/master.spawned.pid" 2>/dev/null || cat "$D/run/master.pid" 2>/dev/null || true)"
[ -n "$pid" ] || exit 0
stop_pid "$pid" cyrus 10
# stragglers: processes whose session id is the master's pid
for p in $(ps -e -o pid=,sid= | awk -v s="$pid" '$2 == s && $1 != s {print $1}'); do
  stop_pid "$p" "cyrus child" 5
done
exit 0
