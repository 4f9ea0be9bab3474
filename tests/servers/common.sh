# Helpers shared by the start/stop scripts in this directory (sourced, not run).
# shellcheck shell=bash

SERVERS_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Debian's interpreter: a python3 earlier on PATH (pyenv, venv) may lack the
# modules the tests need.  The scripts here only use the standard library.
PYTHON="${PYTHON:-/usr/bin/python3}"
[ -x "$PYTHON" ] || PYTHON=python3

# free_ports N -> N distinct free loopback ports, space separated
free_ports() { "$PYTHON" "$SERVERS_HERE/free-ports.py" "$1" | tr '\n' ' '; }

# port_busy PORT -> true if something accepts connections on 127.0.0.1:PORT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# choose_ports NAME VAR... -> each VAR (a variable of the caller, 0 or unset:
# choose) gets a free loopback port; exit 1 if a given one is busy
choose_ports() {
  local name="$1" v i=0
  shift
  local -a free
  read -r -a free <<<"$(free_ports $#)"
  for v in "$@"; do
    [ "${!v:-0}" != 0 ] || printf -v "$v" '%s' "${free[$i]}"
    require_free_port "${!v}" "$name"
    i=$((i + 1))
  done
}

# require_traversable DIR WHO -> exit 1 unless every parent of DIR can be
# traversed by others: daemons that drop privileges must reach DIR (a 0700
# parent such as /root or a mktemp dir gives "Temporary authentication
# failure" in Dovecot and similar errors elsewhere)
require_traversable() {
  local p="$1"
  while [ "$p" != / ]; do
    p="$(dirname "$p")"
    if [ "$(( 0$(stat -c %a "$p") & 01 ))" = 0 ]; then
      echo "$p (mode $(stat -c %a "$p")) is not traversable by $2; use a dir under /tmp" >&2
      exit 1
    fi
  done
}

# require_free_port PORT NAME -> exit 1 if busy (a stale server from an earlier
# run would otherwise silently stand in for the new one)
require_free_port() {
  if port_busy "$1"; then
    echo "$2 port $1 is already in use (a stale server from an earlier run?)" >&2
    exit 1
  fi
}

# pid_alive PID -> true while the process exists and is not a zombie (PID 1 in
# containers may reap late; a zombie has released its ports already)
pid_alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pid PID NAME [TIMEOUT_S] -> SIGTERM, wait, SIGKILL after the timeout
stop_pid() {
  local pid="$1" name="$2" t="${3:-10}" i
  [ -n "$pid" ] || return 0
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 20; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.05
  done
  echo "$name (pid $pid) still running after ${t}s; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do pid_alive "$pid" || return 0; sleep 0.05; done
  return 0
}

# make_dir DIR-or-empty PREFIX -> prints an absolute, world-traversable dir.
# Server daemons that drop privileges (dovecot, dovenull) must be able to reach
# it, so the default lives under /tmp, not under $TMPDIR (which may be a 0700
# dir below /root).
make_dir() {
  local d="$1"
  if [ -z "$d" ]; then
    d="$(mktemp -d "${MAILROOM_TEST_TMP:-/tmp}/$2.XXXXXX")"
  fi
  mkdir -p "$d"
  d="$(cd "$d" && pwd)"
  chmod 0755 "$d"
  printf '%s\n' "$d"
}
