#!/usr/bin/env bash
# Start every server the integration tests and the demo need, under one dir:
# Dovecot (IMAP + STARTTLS, IMAPS, LMTP), a Redis primary (plus replica and
# Sentinel with --sentinel) and a real Sidekiq with the test workers, all on free
# loopback ports.  Writes the export lines to DIR/env.sh and prints them.
#
#   usage:  eval "$(tests/servers/start-all.sh [--sentinel] [DIR])"
#   stop:   tests/servers/stop-all.sh "$TEST_SERVERS_DIR"
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"
if [ "${1:-}" = --sentinel ]; then export REDIS_REPLICA=1 REDIS_SENTINEL=1; shift; fi
D="$(make_dir "${1:-}" mailroom-test)"
echo "export TEST_SERVERS_DIR='$D'" > "$D/env.sh"
# whatever fails below: stop what was started, keep the logs
on_error() {
  local rc=$?
  "$HERE/stop-all.sh" "$D" >/dev/null 2>&1 || true
  exit "$rc"
}
trap on_error ERR
"$HERE/start-dovecot.sh" "$D/dovecot" >> "$D/env.sh"
"$HERE/start-redis.sh" "$D/redis" >> "$D/env.sh"
# shellcheck disable=SC1091
. "$D/env.sh"
"$HERE/start-sidekiq.sh" "$D/sidekiq" >> "$D/env.sh"
trap - ERR
cat "$D/env.sh"
