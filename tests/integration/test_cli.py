"""Command line and start-up failures."""
import json
import re

import harness
from mailinject import make_message


def test_version():
    cp = harness.run_cli(["--version"])
    assert cp.returncode == 0, cp.stderr
    assert re.search(r"\d+\.\d+\.\d+", cp.stdout), cp.stdout


def test_help():
    cp = harness.run_cli(["--help"])
    assert cp.returncode == 0, cp.stderr
    assert "--config" in cp.stdout and "--log-exit-as" in cp.stdout, cp.stdout


def test_unknown_option_fails():
    cp = harness.run_cli(["--no-such-option"])
    assert cp.returncode != 0


def _bad_password_config(servers, user, queue, workdir):
    cfg = harness.sidekiq_config(servers, user, queue, workdir, password="wrong-Hx7-password")
    return cfg


def test_login_rejected_at_startup_exits_nonzero(servers, user, queue, workdir, mailroom):
    servers.append(user, [make_message(1, user)])
    mr = mailroom(_bad_password_config(servers, user, queue, workdir))
    rc, took = mr.wait_exit(15)
    assert rc != 0, mr.diagnostics()
    out = mr.all_output()
    assert "wrong-Hx7-password" not in out, "the password was printed"
    naming = [ln for ln in out.splitlines() if user in ln]
    assert naming, "no log line names the mailbox\n" + mr.diagnostics()
    assert servers.flags(user) == {1: set()}
    assert servers.r.llen(servers.result_key(queue)) == 0


def test_log_exit_as_json_prints_one_fatal_line(servers, user, queue, workdir, mailroom):
    cfg = _bad_password_config(servers, user, queue, workdir)
    del cfg["mailboxes"][0]["logger"]  # nothing else on stdout
    mr = mailroom(cfg, args=["--log-exit-as", "json"])
    mr.wait_exit(15)
    lines = [ln for ln in mr.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected one JSON line on stdout\n" + mr.diagnostics()
    pairs = json.loads(lines[0], object_pairs_hook=lambda p: p)
    assert [k for k, _ in pairs] == ["time", "severity", "message", "backtrace"], lines[0]
    rec = dict(pairs)
    assert rec["severity"] == "fatal"
    assert isinstance(rec["message"], str) and rec["message"]
    assert isinstance(rec["backtrace"], list)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", rec["time"]), rec["time"]
    assert "wrong-Hx7-password" not in mr.all_output()
