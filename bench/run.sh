#!/usr/bin/env bash
# The performance benchmark in one command (numbers: bench/RESULTS.md).
# Starts its own Dovecot and Redis (tests/servers; PostgreSQL too for the que
# scenario), runs bench/perf_bench.py against build/mailroom and prints a
# Markdown table; JSON goes to build/bench-results.json (or --json FILE;
# bench/results.json keeps the run recorded in bench/RESULTS.md).
#
#   usage: bench/run.sh [--quick] [--no-ruby] [--json FILE] [--only drain,pickup,idle,que]
#                       [--perf-record FILE] [--idle-transport tls|plain]
#                       [--idle-sizes 1,100,1000,10000]
#   --idle-transport: the idle scenario's connections, default tls (Dovecot's
#            IMAPS port, implicit TLS, the test CA); plain: the IMAP port
#            without TLS (as before). drain, pickup and que are always plain.
#            Next to mailroom, a raw asyncio client opens the same N sessions
#            at once (mailroom has no connect limit) and IDLEs them.
#   --idle-sizes: the idle scenario's mailbox counts (default 1,100,1000,10000;
#            quick 1,100,1000); per-mailbox figures are over the 1-mailbox run.
#   --quick: smaller sizes (2,000 x 4 KB, 20 x 5 MB, 20 pickups, up to 1,000
#            idle mailboxes), under ~2 minutes; the full run takes ~10 minutes.
#   --only:  default all four. que: the 4 KB drain with sidekiq delivery and
#            again with que delivery (Que 2.x que_jobs in PostgreSQL 15, from
#            tests/servers/start-postgres.sh); ~15 s of the full run, ~6 s
#            quick; skipped with a note when PostgreSQL is not installed,
#            unless named (`bench/run.sh --only que`); exits 1 when the rows in
#            que_jobs are not exactly the messages drained.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$ROOT/build/mailroom" ]; then
  echo "build/mailroom missing: building it (cmake --build build)" >&2
  [ -f "$ROOT/build/CMakeCache.txt" ] || cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$ROOT/build" -j"$(nproc)" --target mailroom
fi
# Debian's python3: it has the redis module (a pyenv/venv python3 may not)
exec /usr/bin/python3 "$ROOT/bench/perf_bench.py" "$@"
