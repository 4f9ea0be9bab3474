#!/usr/bin/env bash
# mailroom quick start: one command on a fresh Debian 12, as root.
#
# Installs the dependencies, builds mailroom, starts a private Dovecot (IMAP over
# TLS), Redis and a real Sidekiq on loopback, writes a mail_room-style config,
# puts a few sample messages into alice's INBOX, runs mailroom until Sidekiq has
# performed one EmailReceiverWorker job per message, shows what the worker got,
# that the mailbox is empty and that /liveness answers, then stops everything.
#
# usage: scripts/demo.sh [--keep] [--no-deps] [--no-build]
#   --keep      leave mailroom and the servers running (prints how to stop them)
#   --no-deps   do not run scripts/install-deps.sh
#   --no-build  use the existing binary ($MAILROOM_BIN, default build/mailroom)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KEEP=0 DEPS=1 BUILD=1
BIN="${MAILROOM_BIN:-build/mailroom}"
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    --no-deps) DEPS=0 ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

PY=/usr/bin/python3
if [ -t 1 ]; then B=$'\e[1m' N=$'\e[0m'; else B="" N=""; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
info() { printf '    %s\n' "$*"; }

DEMO=""
MR_PID=""
finish() {
  local rc=$?
  if [ "$KEEP" = 1 ] && [ "$rc" = 0 ]; then return 0; fi
  if [ -n "$MR_PID" ] && kill -0 "$MR_PID" 2>/dev/null; then
    kill -TERM "$MR_PID" 2>/dev/null || true
    wait "$MR_PID" 2>/dev/null || true
  fi
  if [ -n "$DEMO" ] && [ -d "$DEMO/servers" ]; then
    tests/servers/stop-all.sh "$DEMO/servers" >/dev/null 2>&1 || true
  fi
  if [ "$rc" != 0 ]; then
    echo "demo failed (exit $rc); files are in ${DEMO:-?}" >&2
  fi
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ "$DEPS" = 1 ]; then
  step "Installing dependencies (apt, Debian 12)"
  # The demo needs no Cyrus/Courier and no packaging tools.
  MAILROOM_INTEROP=0 MAILROOM_DEPLOY_TOOLS=0 scripts/install-deps.sh
fi

if [ "$BUILD" = 1 ]; then
  step "Building mailroom (cmake, RelWithDebInfo, -j2)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
  cmake --build build -j2
fi
info "binary: $BIN ($("$BIN" --version 2>/dev/null | head -n1 || true))"

step "Starting Dovecot, Redis and Sidekiq on loopback (private instances, free ports)"
DEMO="$(mktemp -d /tmp/mailroom-demo.XXXXXX)"
chmod 0755 "$DEMO"
MAILROOM_INTEROP=0 tests/servers/start-all.sh "$DEMO/servers" > "$DEMO/env.sh"
# shellcheck disable=SC1091
. "$DEMO/env.sh"
info "Dovecot  IMAPS 127.0.0.1:$DOVECOT_IMAPS_PORT (self-signed CA $DOVECOT_CA), users alice/bob/carol, password 'secret'"
info "Redis    127.0.0.1:$REDIS_PORT"
info "Sidekiq  pid $SIDEKIQ_PID, EmailReceiverWorker records each job's raw message in Redis"
HEALTH_PORT="$("$PY" tests/servers/free-ports.py 1)"

step "Writing the mail_room-style config $DEMO/mail_room.yml"
cat > "$DEMO/mail_room.yml" <<YML
:health_check:
  :address: "127.0.0.1"
  :port: $HEALTH_PORT
:mailboxes:
  -
    :host: "127.0.0.1"
    :port: $DOVECOT_IMAPS_PORT
    :ssl:
      :ca_file: "$DOVECOT_CA"
    :start_tls: false
    :email: "alice"
    :password: "secret"
    :name: "INBOX"
    :idle_timeout: 60
    :delete_after_delivery: true
    :expunge_deleted: true
    :logger:
      :log_path: "$DEMO/mail_room_json.log"
    :delivery_method: sidekiq
    :delivery_options:
      :redis_url: "redis://127.0.0.1:$REDIS_PORT"
      :redis_db: 0
      :queue: email_receiver
      :worker: EmailReceiverWorker
    :arbitration_method: redis
    :arbitration_options:
      :redis_url: "redis://127.0.0.1:$REDIS_PORT"
      :namespace: mail_room:gitlab
YML
sed 's/^/    | /' "$DEMO/mail_room.yml"

step "Putting 4 sample messages into alice's INBOX (IMAP APPEND)"
M="$DEMO/messages"
mkdir -p "$M"
printf 'From: Ada <ada@example.com>\r\nTo: incoming+group-project-1-issue@example.com\r\nSubject: Hello from the demo\r\nMessage-ID: <demo-1@example.com>\r\n\r\nA plain ASCII message.\r\n' > "$M/1.eml"
printf 'From: J\xc3\xbcrgen <j@example.de>\r\nTo: alice@example.com\r\nSubject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x98\x83\r\nMessage-ID: <demo-2@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUTF-8 body: \xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\r\n' > "$M/2.eml"
printf 'From: Emile <emile@example.fr>\r\nTo: alice@example.com\r\nSubject: Caf\xe9 cr\xe8me\r\nMessage-ID: <demo-3@example.com>\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nLe caf\xe9 est tr\xe8s bon, la cr\xe8me br\xfbl\xe9e aussi. Voil\xe0, \xe0 bient\xf4t !\r\n' > "$M/3.eml"
printf 'From: Service Desk <desk@example.com>\r\nTo: alice@example.com\r\nSubject: Printer on fire\r\nMessage-ID: <demo-4@example.com>\r\n\r\nPlease help.\r\n' > "$M/4.eml"
"$PY" tests/servers/mailinject.py append --user alice "$M"/*.eml
info "INBOX: $("$PY" tests/servers/mailinject.py status --user alice)"

step "Running: $BIN -c $DEMO/mail_room.yml"
"$BIN" -c "$DEMO/mail_room.yml" > "$DEMO/mailroom.out" 2>&1 < /dev/null &
MR_PID=$!
info "pid $MR_PID, output in $DEMO/mailroom.out, structured log in $DEMO/mail_room_json.log"

step "Waiting until Sidekiq has performed all 4 jobs (at most 60 s)"
RESULTS="$SIDEKIQ_RESULT_PREFIX:email_receiver"
deadline=$((SECONDS + 60))
n=0
while :; do
  n="$(redis-cli -p "$REDIS_PORT" llen "$RESULTS")"
  [ "$n" -ge 4 ] && break
  if ! kill -0 "$MR_PID" 2>/dev/null; then
    wait "$MR_PID" && rc=0 || rc=$?
    MR_PID=""
    echo "mailroom exited (status $rc) before delivering everything; its output:" >&2
    cat "$DEMO/mailroom.out" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "only $n of 4 jobs performed after 60 s; mailroom output:" >&2
    tail -n 30 "$DEMO/mailroom.out" "$DEMO/mail_room_json.log" >&2 || true
    exit 1
  fi
  sleep 0.2
done
info "$n jobs performed"

step "What EmailReceiverWorker received (raw message, UTF-8)"
"$PY" - "$REDIS_PORT" "$RESULTS" <<'PY'
import sys
import redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
jobs = sorted(r.lrange(sys.argv[2], 0, -1),
              key=lambda raw: raw.split(b"Message-ID:", 1)[-1][:20])  # demo-1 .. demo-4
for n, raw in enumerate(jobs, 1):
    text = raw.decode("utf-8")  # always valid UTF-8: ISO-8859-1 mail was converted
    head, _, body = text.partition("\r\n\r\n")
    subject = next((l for l in head.split("\r\n") if l.lower().startswith("subject:")), "(no subject)")
    first = body.split("\r\n", 1)[0]
    print(f"    job {n}: {subject}   |   {first}")
PY

step "The mailbox after delivery (delete_after_delivery + expunge_deleted)"
info "INBOX: $("$PY" tests/servers/mailinject.py status --user alice)"

step "Health check: GET http://127.0.0.1:$HEALTH_PORT/liveness"
"$PY" - "$HEALTH_PORT" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/liveness", timeout=5) as r:
        print(f"    HTTP {r.status} {r.read()!r}")
except (OSError, urllib.error.HTTPError) as e:
    print(f"    no answer: {e}")
PY

step "Structured log (first lines of $DEMO/mail_room_json.log)"
head -n 5 "$DEMO/mail_room_json.log" 2>/dev/null | sed 's/^/    /' || info "(no log file)"

if [ "$KEEP" = 1 ]; then
  step "Left running (--keep)"
  info "mailroom pid $MR_PID; servers: . $DEMO/env.sh"
  info "stop: kill $MR_PID; tests/servers/stop-all.sh $DEMO/servers"
  exit 0
fi

step "Stopping mailroom (SIGTERM) and the servers"
kill -TERM "$MR_PID"
wait "$MR_PID" && rc=0 || rc=$?
MR_PID=""
info "mailroom exited with status $rc"
tests/servers/stop-all.sh "$DEMO/servers"
info "done; files kept in $DEMO"
