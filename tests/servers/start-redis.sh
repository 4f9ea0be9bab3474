#!/usr/bin/env bash
# Start a throw-away Redis 7 primary on loopback in DIR (no persistence, no
# systemd), optionally a replica and a Sentinel for fault tests.
#
#   usage:  eval "$(tests/servers/start-redis.sh [DIR])"          # prints export lines
#   env:    REDIS_PORT           primary port (unset/0: a free port)
#           REDIS_REPLICA=1      also start a replica (REDIS_REPLICA_PORT, unset/0: free)
#           REDIS_SENTINEL=1     also start a Sentinel monitoring the primary as
#                                $SENTINEL_MASTER_NAME (mymaster) (SENTINEL_PORT, unset/0: free)
#           REDIS_TLS_PORT       also listen with TLS there (needs REDIS_TLS_CERT/REDIS_TLS_KEY,
#                                e.g. the dovecot test certificate)
#   stop:   tests/servers/stop-redis.sh "$REDIS_DIR"
#
# Busy ports are refused: with --daemonize a bind failure only reaches the log and
# a stale server on the port would silently answer PING instead of ours.
# Restart a stopped primary on the same port with: tests/servers/start-redis.sh DIR
# again with REDIS_PORT set (the dir's config is rewritten, data was not persisted).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

D="$(make_dir "${1:-}" redis-test)"
PORT="${REDIS_PORT:-0}"
RPORT=0; SPORT=0
read -r f1 f2 f3 <<<"$(free_ports 3)"
[ "$PORT" != 0 ] || PORT="$f1"
if [ "${REDIS_REPLICA:-0}" = 1 ]; then RPORT="${REDIS_REPLICA_PORT:-0}"; [ "$RPORT" != 0 ] || RPORT="$f2"; fi
if [ "${REDIS_SENTINEL:-0}" = 1 ]; then SPORT="${SENTINEL_PORT:-0}"; [ "$SPORT" != 0 ] || SPORT="$f3"; fi
TLSPORT="${REDIS_TLS_PORT:-0}"
NAME="${SENTINEL_MASTER_NAME:-mymaster}"
for p in "$PORT" "$RPORT" "$SPORT" "$TLSPORT"; do [ "$p" = 0 ] || require_free_port "$p" redis; done

started=()
fail() {
  echo "redis: $1" >&2
  for f in "${started[@]}"; do [ -s "$f" ] && stop_pid "$(cat "$f")" redis 5; done
  exit 1
}
# wait until the server whose pid file is $1 answers PING on port $2 (and is
# really that process: its INFO process_id matches)
wait_ready() {
  local pidf="$1" p="$2" i pid
  for ((i = 0; i < 200; i++)); do
    if [ -s "$pidf" ]; then
      pid="$(cat "$pidf")"
      if [ "$(redis-cli -h 127.0.0.1 -p "$p" info server 2>/dev/null | tr -d '\r' \
             | sed -n 's/^process_id://p')" = "$pid" ]; then return 0; fi
    fi
    sleep 0.025
  done
  fail "server on port $p did not come up (log: $D/*-$p.log)"
}

# repl-diskless-sync-delay 0: otherwise the primary waits 5 s before the first sync
common=(--bind 127.0.0.1 --protected-mode yes --save "" --appendonly no
        --repl-diskless-sync-delay 0 --daemonize yes --dir "$D" --loglevel notice)
tlsargs=()
if [ "$TLSPORT" != 0 ]; then
  tlsargs=(--tls-port "$TLSPORT" --tls-cert-file "$REDIS_TLS_CERT"
           --tls-key-file "$REDIS_TLS_KEY" --tls-ca-cert-file "$REDIS_TLS_CERT"
           --tls-auth-clients no)
fi

rm -f "$D/redis-$PORT.pid"
redis-server --port "$PORT" "${common[@]}" "${tlsargs[@]}" \
  --pidfile "$D/redis-$PORT.pid" --logfile "$D/redis-$PORT.log" --dbfilename "dump-$PORT.rdb" \
  < /dev/null > /dev/null
started+=("$D/redis-$PORT.pid")
wait_ready "$D/redis-$PORT.pid" "$PORT"

if [ "$RPORT" != 0 ]; then
  rm -f "$D/redis-$RPORT.pid"
  redis-server --port "$RPORT" "${common[@]}" --replicaof 127.0.0.1 "$PORT" \
    --pidfile "$D/redis-$RPORT.pid" --logfile "$D/redis-$RPORT.log" --dbfilename "dump-$RPORT.rdb" \
    < /dev/null > /dev/null
  started+=("$D/redis-$RPORT.pid")
  wait_ready "$D/redis-$RPORT.pid" "$RPORT"
  up=""
  for _ in $(seq 1 200); do
    redis-cli -p "$RPORT" info replication | grep -q 'master_link_status:up' && { up=1; break; }
    sleep 0.025
  done
  [ -n "$up" ] || fail "replica on $RPORT did not sync"
fi

if [ "$SPORT" != 0 ]; then
  # Sentinel rewrites its config file: a writable copy in DIR
  rm -f "$D/sentinel-$SPORT.pid"
  cat > "$D/sentinel-$SPORT.conf" <<CONF
port $SPORT
bind 127.0.0.1
daemonize yes
pidfile $D/sentinel-$SPORT.pid
logfile $D/sentinel-$SPORT.log
dir $D
sentinel resolve-hostnames no
sentinel monitor $NAME 127.0.0.1 $PORT 1
sentinel down-after-milliseconds $NAME 1000
sentinel failover-timeout $NAME 3000
sentinel parallel-syncs $NAME 1
CONF
  redis-sentinel "$D/sentinel-$SPORT.conf" < /dev/null > /dev/null
  started+=("$D/sentinel-$SPORT.pid")
  wait_ready "$D/sentinel-$SPORT.pid" "$SPORT"
  got=""
  for _ in $(seq 1 200); do
    got="$(redis-cli -p "$SPORT" sentinel get-master-addr-by-name "$NAME" 2>/dev/null | paste -sd: || true)"
    [ "$got" = "127.0.0.1:$PORT" ] && break
    sleep 0.025
  done
  [ "$got" = "127.0.0.1:$PORT" ] || fail "sentinel on $SPORT does not know $NAME (got '$got')"
fi

cat <<ENV
export REDIS_DIR='$D'
export REDIS_HOST='127.0.0.1' REDIS_PORT='$PORT' REDIS_REPLICA_PORT='$RPORT' SENTINEL_PORT='$SPORT' REDIS_TLS_PORT='$TLSPORT'
export REDIS_URL='redis://127.0.0.1:$PORT/0'
export SENTINEL_MASTER_NAME='$NAME'
ENV
