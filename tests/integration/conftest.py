"""Fixtures for mailroom's integration tests against real servers.

Servers: if TEST_SERVERS_DIR (or MAILROOM_TEST_ENV, a path to an env.sh) is set,
as scripts/test.sh does after tests/servers/start-all.sh, the running servers are
used; otherwise this session starts its own set and stops it at the end.

The binary under test is $MAILROOM_BIN, default build/mailroom.
"""
import base64
import itertools
import json
import os
import shutil
import tempfile

import pytest

import harness

collect_ignore = ["redis"]  # tests/integration/redis holds C++ tests (ctest)

_metrics = []


def pytest_addoption(parser):
    parser.addoption("--keep-servers", action="store_true",
                     help="do not stop the servers this session started")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_terminal_summary(terminalreporter):
    if _metrics:
        terminalreporter.section("mailroom integration measurements")
        for name, value, unit in _metrics:
            terminalreporter.write_line(f"{name}: {value:.3f} {unit}")
    if _fault_rows:
        terminalreporter.section("mailroom fault injection")
        for line in _fault_table_lines(_fault_rows):
            terminalreporter.write_line(line)
        _write_table(terminalreporter, _fault_rows, "MAILROOM_FAULT_TABLE", "fault-table.json")
    if _interop_rows:
        _interop_summary(terminalreporter)


def _write_table(terminalreporter, rows, env_var, name):
    """rows as JSON to $env_var, or build/test-logs/<name>."""
    path = os.environ.get(env_var) or os.path.join(harness.REPO, "build", "test-logs", name)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)
            fh.write("\n")
        terminalreporter.write_line(f"(written to {path})")
    except OSError as e:
        terminalreporter.write_line(f"could not write {path}: {e}")


# ---------------------------------------------------------------- fault table
# One row per fault-injection scenario (tests/integration/test_faults.py),
# printed as a table at the end of the run and written as JSON to
# $MAILROOM_FAULT_TABLE (default build/test-logs/fault-table.json).
_fault_rows = []
_FAULT_COLUMNS = [("scenario", "scenario"), ("injected", "injected"), ("delivered", "delivered"),
                  ("distinct", "distinct"), ("duplicates", "dup"), ("lost", "lost"),
                  ("left_in_mailbox", "left"), ("posts_per_message", "posts/msg"), ("seconds", "seconds"),
                  ("outcome", "outcome")]


def _fault_table_lines(rows):
    def cell(row, key):
        v = row.get(key)
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if key == "posts_per_message" else f"{v:.1f}"
        return str(v)
    cells = [[title for _, title in _FAULT_COLUMNS]] + [[cell(r, k) for k, _ in _FAULT_COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_FAULT_COLUMNS))]
    lines = []
    for n, c in enumerate(cells):
        # the scenario name left-aligned, the numbers right-aligned
        lines.append("  ".join(c[0].ljust(widths[0]) if i == 0 else
                               (c[i].ljust(widths[i]) if _FAULT_COLUMNS[i][0] == "outcome" else c[i].rjust(widths[i]))
                               for i in range(len(c))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r.get("note"):
            lines.append(f"{r['scenario']}: {r['note']}")
    return lines


@pytest.fixture(scope="session")
def fault_table():
    """record(scenario=..., injected=..., delivered=..., duplicates=..., left_in_mailbox=...,
    seconds=..., **more): one row of the fault-injection table."""
    def record(**row):
        _fault_rows.append(row)
    return record


@pytest.fixture
def metric():
    """metric(name, value, unit): reported in the closing summary of the run."""
    def record(name, value, unit="s"):
        _metrics.append((name, value, unit))
    return record


@pytest.fixture(scope="session")
def servers(request):
    env_file = os.environ.get("MAILROOM_TEST_ENV")
    if not env_file and os.environ.get("TEST_SERVERS_DIR"):
        env_file = os.path.join(os.environ["TEST_SERVERS_DIR"], "env.sh")
    owned = None
    if env_file:
        s = harness.Servers(harness.parse_env_file(env_file))
    else:
        # under /tmp: Dovecot's unprivileged processes must traverse the path
        d = tempfile.mkdtemp(prefix="mailroom-it.", dir="/tmp")
        os.chmod(d, 0o755)
        s = owned = harness.Servers.start(d)
    os.environ.update(s.env)  # mailinject's defaults read DOVECOT_* from here
    yield s
    if owned is not None and not request.config.getoption("--keep-servers"):
        owned.stop()
        if request.session.testsfailed == 0:  # keep logs and mailboxes only after a failure
            shutil.rmtree(owned.dir, ignore_errors=True)


@pytest.fixture
def user(servers):
    """A fresh Dovecot user (password "secret") with an empty INBOX."""
    return servers.add_user()


_queue_cycle = None


@pytest.fixture
def queue(servers):
    """A Sidekiq queue that only this test uses (Sidekiq polls it00..it39); its
    job list and result lists are emptied before and after the test."""
    global _queue_cycle
    if _queue_cycle is None:
        pool = [q for q in servers.queues if q.startswith("it")] or ["email_receiver"]
        _queue_cycle = itertools.cycle(pool)
    q = next(_queue_cycle)
    servers.clear_queue(q)
    assert servers.sidekiq_alive(), "the Sidekiq test consumer is not running"
    yield q
    servers.clear_queue(q)


@pytest.fixture
def workdir(tmp_path):
    os.chmod(tmp_path, 0o755)
    return tmp_path


@pytest.fixture
def webhook():
    """A harness.WebhookReceiver, closed after the test."""
    w = harness.WebhookReceiver()
    yield w
    w.close()


@pytest.fixture
def jwt_secret(workdir):
    """(path, key): a random HS256 key written base64 as GitLab writes it."""
    key = os.urandom(32)
    path = workdir / "incoming_email_webhook_secret"
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return str(path), key


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.fixture
def mailroom(request, workdir):
    """start(config, args=(), env=None, name="mailroom") -> harness.Mailroom.

    config: a dict (written as mail_room YAML with symbol keys) or a str (written
    as is).  The process runs `mailroom -c <file> *args`; it is killed at the end
    of the test if still running (tests stop it themselves with stop_ok() to
    check the SIGTERM exit code)."""
    procs = []

    def start(config, args=(), env=None, name=None):
        name = name or f"mailroom{len(procs) or ''}"
        path = workdir / f"{name}.yml"
        text = config if isinstance(config, str) else harness.to_yaml(config) + "\n"
        path.write_text(text, encoding="utf-8")
        p = harness.Mailroom(str(workdir), ["-c", str(path), *args], env=env, name=name)
        p.config_path = str(path)
        p.config_text = text
        if isinstance(config, dict):
            for mb in config.get("mailboxes", []):
                lp = (mb.get("logger") or {}).get("log_path") if isinstance(mb, dict) else None
                if lp:
                    p.log_path = lp
                    break
        procs.append(p)
        return p.start()

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    reports = []
    for p in procs:
        p.close()
        if failed:
            print(p.diagnostics(tail=80))
        # A sanitizer build (scripts/test.sh's pytest-asan phase) reports on
        # stderr; a report fails the test even when the process went on.
        if any(marker in p.stderr for marker in SANITIZER_MARKERS):
            reports.append(f"{p.name}:\n{p.stderr[-4000:]}")
    assert not reports, "sanitizer report(s):\n" + "\n".join(reports)


# ---------------------------------------------------------------- interop table
# One cell per (server, scenario) of the interop matrix (test_interop.py):
# outcome pass / FAIL / skip, the scenario's seconds and, where useful, a
# measurement (IDLE pickup latency).  Printed as a server x scenario table at
# the end of the run and written as JSON to $MAILROOM_INTEROP_TABLE (default
# build/test-logs/interop-table.json).
_interop_rows = []


@pytest.fixture(scope="session")
def interop_table():
    """record(server=..., scenario=..., outcome="pass"|"FAIL"|"skip"|"xfail"|"XPASS",
    seconds=..., value=..., unit=..., note=..., matrix=True): one cell of the
    interop matrix (matrix=False: a scenario listed below the matrix)."""
    def record(**row):
        _interop_rows.append(row)
    return record


def _interop_cell(row):
    if row is None:
        return "-"
    text = row.get("outcome", "?")
    if row.get("value") is not None:
        text += f" {row['value']:.2f}{row.get('unit', '')}"
    elif row.get("seconds") is not None and row.get("outcome") != "skip":
        text += f" {row['seconds']:.1f}s"
    return text


def _interop_table_lines(rows):
    """The matrix (rows with matrix=True: server x scenario), then the other
    scenarios one per line, then the notes."""
    cells = {}
    for r in rows:
        cells[(r["server"], r["scenario"])] = r  # a re-run of a cell: the last one counts
    grid = [r for r in cells.values() if r.get("matrix", True)]
    rest = [r for r in cells.values() if not r.get("matrix", True)]
    lines = []
    if grid:
        servers, scenarios = [], []
        for r in grid:
            if r["server"] not in servers:
                servers.append(r["server"])
            if r["scenario"] not in scenarios:
                scenarios.append(r["scenario"])
        table = [["server"] + scenarios] + [[s] + [_interop_cell(cells.get((s, c))) for c in scenarios]
                                            for s in servers]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for n, row in enumerate(table):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
    if rest:
        lines.append("")
        w1 = max(len(r["server"]) for r in rest)
        w2 = max(len(r["scenario"]) for r in rest)
        for r in rest:
            lines.append(f"{r['server'].ljust(w1)}  {r['scenario'].ljust(w2)}  {_interop_cell(r)}")
    lines.append("")
    for r in cells.values():
        if r.get("note"):
            lines.append(f"{r['server']} / {r['scenario']}: {r['note']}")
    return lines


def _interop_summary(terminalreporter):
    terminalreporter.section("mailroom interop matrix")
    terminalreporter.write_line("cells: outcome and seconds: drain/*: the drain itself; idle: the slower of two "
                                "pickups (APPEND acknowledged -> Sidekiq performed); others: the whole scenario")
    for line in _interop_table_lines(_interop_rows):
        terminalreporter.write_line(line)
    _write_table(terminalreporter, _interop_rows, "MAILROOM_INTEROP_TABLE", "interop-table.json")
