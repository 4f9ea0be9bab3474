#!/usr/bin/env bash
# Stop the Dovecot that start-dovecot.sh started in DIR, by its master PID, and wait
# until it is gone (the master exits after its children, about 1 s; the ports stay
# busy until then).   usage: tests/servers/stop-dovecot.sh "$DOVECOT_DIR"
set -u
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
D="${1:?usage: stop-dovecot.sh DIR}"
pid="$(cat "$D/run/master.pid" 2>/dev/null || true)"
stop_pid "$pid" dovecot 10
exit 0
