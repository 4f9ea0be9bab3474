#!/usr/bin/env bash
# Stop the PostgreSQL that start-postgres.sh started in DIR (fast shutdown:
# sessions are ended, open transactions rolled back, a checkpoint written) and
# wait until it is gone.  The data directory stays, so start-postgres.sh DIR
# can start it again with its databases.
#   usage: tests/servers/stop-postgres.sh "$MAILROOM_PG_DIR"
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-postgres.sh DIR}"
pidf="$D/data/postmaster.pid"
[ -s "$pidf" ] || exit 0
pid="$(head -n 1 "$pidf")"
pid_alive "$pid" || exit 0

BIN="${MAILROOM_PG_BIN:-}"
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
  BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
if [ -n "$BIN" ] && [ -x "$BIN/pg_ctl" ]; then
  owner="$(stat -c %U "$D/data")"
  if [ "$(id -u)" = 0 ] && [ "$owner" != root ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "$owner" -- "$BIN/pg_ctl" -D "$D/data" -m fast -w -t 30 stop >/dev/null 2>&1
    else
      su -s /bin/sh "$owner" -c "'$BIN/pg_ctl' -D '$D/data' -m fast -w -t 30 stop" >/dev/null 2>&1
    fi
  else
    "$BIN/pg_ctl" -D "$D/data" -m fast -w -t 30 stop >/dev/null 2>&1
  fi
fi
# pg_ctl missing or stuck: SIGTERM is the same fast shutdown, SIGKILL after 30 s
stop_pid "$pid" postgres 30
exit 0
