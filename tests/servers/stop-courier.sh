#!/usr/bin/env bash
# Stop the Courier that start-courier.sh started in DIR: the three couriertcpd
# listeners, authdaemond, then every process still carrying
# MAILROOM_COURIER_DIR=DIR in its environment (the gam_server imapd started for
# IMAP_ENHANCEDIDLE, imapd sessions of clients still connected), by PID, waiting
# until each is gone.  Without a mount namespace (see start-courier.sh) it also
# removes the /etc/courier symlinks that point into DIR.
#   usage: tests/servers/stop-courier.sh "$COURIER_DIR"
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-courier.sh DIR}"
D="$(cd "$D" 2>/dev/null && pwd)" || exit 0
for n in imapd imapd-ssl imapd-nouidplus authdaemond; do
  stop_pid "$(cat "$D/run/$n.pid" 2>/dev/null || true)" "courier $n" 10 &
done
wait
# stragglers, found by the marker in their environment
for pid in $("$PYTHON" - "MAILROOM_COURIER_DIR=$D" "$$" <<'PY'
import os, sys
marker, me = sys.argv[1].encode(), {sys.argv[2], str(os.getpid()), str(os.getppid())}
for p in os.listdir("/proc"):
    if not p.isdigit() or p in me:
        continue
    try:
        with open(f"/proc/{p}/environ", "rb") as fh:
            if marker in fh.read().split(b"\0"):
                print(p)
    except OSError:
        pass
PY
); do
  stop_pid "$pid" "courier process" 5 &
done
wait
if [ -f "$D/run/global-mode" ]; then
  for f in authdaemonrc userdb.dat userdbshadow.dat; do
    [ "$(readlink "/etc/courier/$f" 2>/dev/null)" = "$D/etc/$f" ] && rm -f "/etc/courier/$f"
  done
  rm -f "$D/run/global-mode"
fi
exit 0
