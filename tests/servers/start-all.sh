#!/usr/bin/env bash
# Start every server the integration tests and the demo need, under one dir:
# Dovecot (IMAP + STARTTLS, IMAPS, LMTP), a Redis primary (plus replica and
# Sentinel with --sentinel), PostgreSQL and a real Sidekiq with the test workers, all on free
# loopback ports.  Writes the export lines to DIR/env.sh and prints them.
# Also Cyrus IMAP and Courier-IMAP for the interop tests (start-cyrus.sh,
# start-courier.sh; CYRUS_* / COURIER_* exports), started in parallel with the
# rest:  MAILROOM_INTEROP=0 skips them; unset: started when
# install-imap-servers.sh has installed them (else a note on stderr);
# MAILROOM_INTEROP=1: required.
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
bg_pids=()
on_error() {
  local rc=$?
  ((${#bg_pids[@]})) && wait "${bg_pids[@]}" 2>/dev/null  # the interop servers still starting
  "$HERE/stop-all.sh" "$D" >/dev/null 2>&1 || true
  exit "$rc"
}
trap on_error ERR

# Cyrus and Courier take about 0.5-1 s each: start them in the background, each
# writing its export lines to its own file, and collect them at the end.
interop=()
interop_required=""
case "${MAILROOM_INTEROP:-auto}" in
  0|no|false) ;;
  1|yes|true) interop=(cyrus courier); interop_required=1 ;;
  *)
    root="${MAILROOM_IMAP_SERVERS_ROOT:-/opt/mailroom-imap-servers}"
    if [ "$(id -u)" = 0 ] && [ -x "$root/cyrus/usr/lib/cyrus/bin/master" ] && [ -x "$root/courier/usr/bin/imapd" ]; then
      interop=(cyrus courier)
    else
      echo "start-all: Cyrus/Courier not started (run tests/servers/install-imap-servers.sh as root; MAILROOM_INTEROP=0 silences this)" >&2
    fi ;;
esac
if ((${#interop[@]})); then
  # the IMAP servers start concurrently: pick all their ports in one go, so that
  # none of them is handed a port another has picked but not yet bound
  read -r -a ports <<<"$(free_ports 8)"
  for v in DOVECOT_IMAP_PORT DOVECOT_IMAPS_PORT DOVECOT_LMTP_PORT CYRUS_IMAP_PORT CYRUS_IMAPS_PORT \
           COURIER_IMAP_PORT COURIER_IMAPS_PORT COURIER_NOUIDPLUS_PORT; do
    [ "${!v:-0}" != 0 ] || export "$v=${ports[0]}"
    ports=("${ports[@]:1}")
  done
fi
for s in "${interop[@]}"; do
  "$HERE/start-$s.sh" "$D/$s" > "$D/$s.env" 2> "$D/$s.start.log" &
  bg_pids+=($!)
done

# XOAUTH2 / OAUTHBEARER with locally validated HS256 JWTs (the integration
# tests' token endpoint signs them with this key); a new key per start.
DOVECOT_OAUTH2_HS256_SECRET="${DOVECOT_OAUTH2_HS256_SECRET:-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')}" \
  "$HERE/start-dovecot.sh" "$D/dovecot" >> "$D/env.sh"
"$HERE/start-redis.sh" "$D/redis" >> "$D/env.sh"
# PostgreSQL for the que delivery tests (MAILROOM_PG_* exports).
if [ -x "$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/initdb" ] || command -v initdb >/dev/null; then
  "$HERE/start-postgres.sh" "$D/postgres" >> "$D/env.sh"
else
  echo "start-all: PostgreSQL not started (install postgresql-15)" >&2
fi
# shellcheck disable=SC1091
. "$D/env.sh"
"$HERE/start-sidekiq.sh" "$D/sidekiq" >> "$D/env.sh"

failed=""
for i in "${!interop[@]}"; do
  s="${interop[$i]}"
  if wait "${bg_pids[$i]}"; then
    cat "$D/$s.env" >> "$D/env.sh"
  else
    failed+=" $s"
    echo "start-all: start-$s.sh failed:" >&2
    cat "$D/$s.start.log" >&2
  fi
done
bg_pids=()
if [ -n "$failed" ]; then
  [ -n "$interop_required" ] && false  # MAILROOM_INTEROP=1: fatal (the ERR trap stops everything)
  # auto: the Dovecot-based tests can still run; the interop ones find no CYRUS_*/COURIER_*
  echo "start-all: WARNING: continuing without$failed (MAILROOM_INTEROP=1 makes this fatal)" >&2
  for s in $failed; do "$HERE/stop-$s.sh" "$D/$s" >/dev/null 2>&1 || true; done
fi
trap - ERR
cat "$D/env.sh"
