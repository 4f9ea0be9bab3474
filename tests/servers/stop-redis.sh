#!/usr/bin/env bash
# Stop what start-redis.sh started in DIR (Sentinel first, so that stopping the
# primary triggers no failover), by the PIDs in its pid files.
#   usage: tests/servers/stop-redis.sh "$REDIS_DIR" [PORT]   (PORT: only that server)
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-redis.sh DIR [PORT]}"
if [ -n "${2:-}" ]; then
  f="$D/redis-$2.pid"
  [ -s "$f" ] && stop_pid "$(cat "$f")" "redis:$2" 10
  exit 0
fi
for f in "$D"/sentinel-*.pid "$D"/redis-*.pid; do
  [ -s "$f" ] || continue
  stop_pid "$(cat "$f")" "$(basename "$f" .pid)" 10
done
exit 0
