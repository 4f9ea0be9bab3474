"""Fixtures for mailroom's integration tests against real servers.

Servers: if TEST_SERVERS_DIR (or MAILROOM_TEST_ENV, a path to an env.sh) is set,
as scripts/test.sh does after tests/servers/start-all.sh, the running servers are
used; otherwise this session starts its own set and stops it at the end.

The binary under test is $MAILROOM_BIN, default build/mailroom.
"""
import itertools
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
    for p in procs:
        p.close()
        if failed:
            print(p.diagnostics(tail=80))
