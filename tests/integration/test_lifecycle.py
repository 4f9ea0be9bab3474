"""Signals and the health check."""
import signal

import harness


def test_sigterm_while_idle_exits_0_within_5s(servers, user, queue, workdir, mailroom, metric):
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, idle_timeout=600))
    harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
    took = mr.stop_ok(timeout=5)
    metric("SIGTERM while idle -> exit", took)
    harness.wait_until(lambda: servers.idle_sessions(user) == 0, 5, "the IMAP session to end")


def test_sigint_while_idle_exits_0(servers, user, queue, workdir, mailroom):
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, idle_timeout=600))
    harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
    mr.proc.send_signal(signal.SIGINT)
    rc, _ = mr.wait_exit(5)
    assert rc == 0, mr.diagnostics()


def test_liveness_endpoint(servers, user, queue, workdir, mailroom):
    port = harness.free_port()
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, health_port=port))
    url = f"http://127.0.0.1:{port}/liveness"

    def ok():
        try:
            return harness.http_get(url, timeout=2)
        except OSError:
            return None
    status, body = harness.wait_until(ok, 20, f"GET {url}", proc=mr)
    assert (status, body) == (200, b"OK\n")
    mr.stop_ok()
