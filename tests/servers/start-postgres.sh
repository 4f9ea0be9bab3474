#!/usr/bin/env bash
# Start a throw-away PostgreSQL (Debian's postgresql-15) on loopback in DIR,
# without systemd, for the que delivery tests.  Works as root (CI) and as an
# ordinary user.
#
#   usage:  eval "$(tests/servers/start-postgres.sh [DIR])"    # prints export lines
#   env:    MAILROOM_PG_PORT  TCP port on 127.0.0.1 (unset/0: a free port)
#           MAILROOM_PG_BIN   PostgreSQL's bin dir (default: the newest
#                             /usr/lib/postgresql/*/bin, else initdb on PATH)
#           MAILROOM_PG_DURABLE=1  fsync and synchronous commit on, as in
#                             production (the benchmark); default off
#   stop:   tests/servers/stop-postgres.sh "$MAILROOM_PG_DIR"
#
# Authentication: the superuser `postgres` is trusted over the Unix socket
# (in DIR/run) and over TCP from 127.0.0.1; the role `mailroom` (password
# `secret`, stored as SCRAM-SHA-256) must give its password over TCP.
# PostgreSQL refuses to run as root: as root the server runs as the `postgres`
# system user (from the postgresql package), else as `nobody`; DIR/data and
# DIR/run belong to that user and every parent of DIR must be traversable.
# Restart a stopped server with the same DIR and MAILROOM_PG_PORT: the data
# directory (and every database in it) is kept.  No fsync unless
# MAILROOM_PG_DURABLE=1: a test server.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

D="$(make_dir "${1:-}" postgres-test)"
PORT="${MAILROOM_PG_PORT:-0}"
choose_ports postgres PORT

BIN="${MAILROOM_PG_BIN:-}"
if [ -z "$BIN" ]; then
  BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  [ -n "$BIN" ] && [ -x "$BIN/initdb" ] || BIN="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
fi
if [ ! -x "$BIN/initdb" ] || [ ! -x "$BIN/pg_ctl" ]; then
  echo "postgres: initdb/pg_ctl not found (install postgresql-15, or set MAILROOM_PG_BIN)" >&2
  exit 1
fi
PSQL="$(command -v psql || echo "$BIN/psql")"

if [ "$(id -u)" = 0 ]; then
  if id postgres >/dev/null 2>&1; then RUN_AS=postgres; else RUN_AS=nobody; fi
  require_traversable "$D" "the $RUN_AS user"
else
  RUN_AS="$(id -un)"
fi
# as_user CMD... -> CMD run as $RUN_AS
as_user() {
  if [ "$(id -u)" != 0 ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$RUN_AS" -- "$@"
  else
    su -s /bin/sh "$RUN_AS" -c "$(printf '%q ' "$@")"
  fi
}

if [ -s "$D/data/postmaster.pid" ] && pid_alive "$(head -n 1 "$D/data/postmaster.pid")"; then
  echo "a postgres from an earlier run still uses $D (pid $(head -n 1 "$D/data/postmaster.pid")); stop it first" >&2
  exit 1
fi
mkdir -p "$D/run"
touch "$D/postgres.log"
if [ "$(id -u)" = 0 ]; then
  chown "$RUN_AS" "$D/run" "$D/postgres.log"
fi
chmod 0755 "$D/run"

if [ ! -s "$D/data/PG_VERSION" ]; then
  rm -rf "$D/data"
  mkdir -p "$D/data"
  [ "$(id -u)" = 0 ] && chown "$RUN_AS" "$D/data"
  chmod 0700 "$D/data"
  # -U postgres: the same superuser whoever runs this; trust until pg_hba.conf
  # below is in place.
  as_user "$BIN/initdb" -D "$D/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    > "$D/initdb.log" 2>&1 || { echo "postgres: initdb failed:" >&2; cat "$D/initdb.log" >&2; exit 1; }
  as_user sh -c "cat > '$D/data/pg_hba.conf'" <<'HBA'
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       all                     trust
host    all       mailroom  127.0.0.1/32  scram-sha-256
host    all       all       127.0.0.1/32  trust
HBA
  as_user sh -c "echo \"include_if_exists 'mailroom-test.conf'\" >> '$D/data/postgresql.conf'"
fi
durable=off
[ "${MAILROOM_PG_DURABLE:-0}" = 1 ] && durable=on
# Rewritten at every start: the port may differ.
as_user sh -c "cat > '$D/data/mailroom-test.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$D/run'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = $durable
synchronous_commit = $durable
full_page_writes = $durable
shared_buffers = 32MB
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_min_error_statement = error
CONF

fail() {
  echo "postgres: $1 (log: $D/postgres.log)" >&2
  tail -n 20 "$D/postgres.log" >&2 || true
  as_user "$BIN/pg_ctl" -D "$D/data" -m immediate -w stop >/dev/null 2>&1 || true
  exit 1
}
as_user "$BIN/pg_ctl" -D "$D/data" -l "$D/postgres.log" -w -t 60 start > "$D/pg_ctl.log" 2>&1 \
  || fail "pg_ctl start failed"

# The password role; idempotent, so that a restart of the same DIR works.
"$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$D/run" -p "$PORT" -U postgres -d postgres <<'SQL' > /dev/null \
  || fail "creating the role mailroom failed"
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mailroom') THEN
    CREATE ROLE mailroom LOGIN CREATEDB PASSWORD 'secret';
  END IF;
END
$$;
SQL
# The password really works over TCP (scram), not just the socket.
PGPASSWORD=secret PGCONNECT_TIMEOUT=10 "$PSQL" -X -q -At -h 127.0.0.1 -p "$PORT" -U mailroom \
  -d postgres -c 'SELECT 1' > /dev/null || fail "the role mailroom cannot log in over TCP"

cat <<ENV
export MAILROOM_PG_DIR='$D'
export MAILROOM_PG_HOST='127.0.0.1' MAILROOM_PG_PORT='$PORT' MAILROOM_PG_SOCKET_DIR='$D/run'
export MAILROOM_PG_SUPERUSER='postgres' MAILROOM_PG_USER='mailroom' MAILROOM_PG_PASSWORD='secret'
export MAILROOM_PG_BIN='$BIN'
ENV
