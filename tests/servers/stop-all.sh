#!/usr/bin/env bash
# Stop everything start-all.sh started in DIR (Sidekiq first, then Dovecot,
# Cyrus, Courier, PostgreSQL and Redis), by PID, and wait until each is gone.  The dir stays
# for inspection.
#   usage: tests/servers/stop-all.sh "$TEST_SERVERS_DIR"
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D="${1:?usage: stop-all.sh DIR}"
[ -d "$D/sidekiq" ] && "$HERE/stop-sidekiq.sh" "$D/sidekiq"
[ -d "$D/dovecot" ] && "$HERE/stop-dovecot.sh" "$D/dovecot" &
[ -d "$D/cyrus" ] && "$HERE/stop-cyrus.sh" "$D/cyrus" &
[ -d "$D/courier" ] && "$HERE/stop-courier.sh" "$D/courier" &
[ -d "$D/postgres" ] && "$HERE/stop-postgres.sh" "$D/postgres" &
[ -d "$D/redis" ] && "$HERE/stop-redis.sh" "$D/redis"
wait
exit 0
