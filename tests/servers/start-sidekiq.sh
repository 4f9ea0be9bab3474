#!/usr/bin/env bash
# Start a real Sidekiq (Debian ruby-sidekiq 6.4, Ruby 3.1) in the background with the
# test workers of email_receiver_worker.rb, consuming from $REDIS_URL.
# Sidekiq 6 has no --daemon/--logfile: it is backgrounded here, logging to DIR.
#
#   usage:  eval "$(tests/servers/start-sidekiq.sh [DIR])"    (needs REDIS_URL)
#   env:    SIDEKIQ_QUEUES   queues to poll (space separated; default
#                            "email_receiver service_desk_email_receiver default"
#                            plus it00 .. it39 for tests, one queue each)
#           SIDEKIQ_RESULT_PREFIX  (test:performed) where the workers record jobs
#           SIDEKIQ_CONCURRENCY (5)
#   stop:   tests/servers/stop-sidekiq.sh "$SIDEKIQ_DIR"
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="$(make_dir "${1:-}" sidekiq-test)"
: "${REDIS_URL:?set REDIS_URL, e.g. redis://127.0.0.1:6379/0}"
export REDIS_URL
export SIDEKIQ_RESULT_PREFIX="${SIDEKIQ_RESULT_PREFIX:-test:performed}"
if [ -z "${SIDEKIQ_QUEUES:-}" ]; then
  SIDEKIQ_QUEUES="email_receiver service_desk_email_receiver default"
  for i in $(seq -w 0 39); do SIDEKIQ_QUEUES+=" it$i"; done
fi
qargs=()
for q in $SIDEKIQ_QUEUES; do qargs+=(-q "$q"); done

hp="${REDIS_URL#redis://}"; hp="${hp%%/*}"; hp="${hp##*@}"
RH="${hp%%:*}"; RP="${hp##*:}"; [ "$RP" != "$hp" ] || RP=6379
db="${REDIS_URL#redis://*/}"; [ "$db" != "$REDIS_URL" ] && [ -n "$db" ] || db=0
rc() { redis-cli -h "$RH" -p "$RP" -n "$db" "$@"; }

if [ -s "$D/sidekiq.pid" ] && pid_alive "$(cat "$D/sidekiq.pid")"; then
  echo "a sidekiq from an earlier run still uses $D (pid $(cat "$D/sidekiq.pid"))" >&2; exit 1
fi
# -t 2: shutdown timeout; -e test: environment name only
nohup sidekiq -r "$SERVERS_HERE/email_receiver_worker.rb" "${qargs[@]}" \
  -c "${SIDEKIQ_CONCURRENCY:-5}" -t 2 -e test > "$D/sidekiq.log" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$D/sidekiq.pid"

# Ready when this process's heartbeat is in the "processes" set (Ruby boot, ~1 s).
ready=""
for _ in $(seq 1 400); do
  if rc smembers processes 2>/dev/null | grep -q ":$pid:"; then ready=1; break; fi
  pid_alive "$pid" || break
  sleep 0.05
done
if [ -z "$ready" ]; then
  echo "sidekiq did not become ready; log follows" >&2
  cat "$D/sidekiq.log" >&2
  stop_pid "$pid" sidekiq 5
  exit 1
fi
cat <<ENV
export SIDEKIQ_DIR='$D' SIDEKIQ_PID='$pid'
export SIDEKIQ_RESULT_PREFIX='$SIDEKIQ_RESULT_PREFIX'
export SIDEKIQ_QUEUES='$SIDEKIQ_QUEUES'
ENV
