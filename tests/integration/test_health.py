"""/readiness, /metrics, the stable job id and UIDVALIDITY changes, against
real Dovecot, Redis and Sidekiq."""
import json
import os
import re
import subprocess

import harness
from mailinject import make_message


def get(url):
    try:
        return harness.http_get(url, timeout=2)
    except OSError:
        return None


def metric(text, name, mailbox):
    m = re.search(r'^%s\{mailbox="%s"\} (\S+)$' % (re.escape(name), re.escape(mailbox)), text, re.M)
    return float(m.group(1)) if m else None


def test_readiness_and_metrics_follow_the_deliveries(servers, user, queue, workdir, mailroom):
    port = harness.free_port()
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, health_port=port,
                                         delete=True, expunge=True))
    base = f"http://127.0.0.1:{port}"
    status, body = harness.wait_until(lambda: (r := get(base + "/readiness")) and r[0] == 200 and r,
                                      20, "GET /readiness 200", proc=mr)
    label = harness.mailbox_label(user, servers.imap_port)  # "<email>/INBOX@127.0.0.1:<port>"
    assert body.startswith(b"Ready\n") and f"{label}: connected\n".encode() in body, body

    servers.append(user, [make_message(i, user) for i in range(5)])
    servers.performed(queue, 5, 30, proc=mr)

    def delivered():
        r = get(base + "/metrics")
        return r and metric(r[1].decode(), "mailroom_messages_delivered_total", label) == 5 and r
    status, body = harness.wait_until(delivered, 10, "5 deliveries in /metrics", proc=mr)
    text = body.decode()
    assert "# TYPE mailroom_messages_delivered_total counter" in text
    assert metric(text, "mailroom_mailbox_connected", label) == 1
    assert metric(text, "mailroom_delivery_failures_total", label) == 0
    assert metric(text, "mailroom_sessions_total", label) == 1
    status, body = get(base + "/liveness")
    assert (status, body) == (200, b"OK\n")
    mr.stop_ok()


def test_readiness_turns_503_while_redis_is_down(servers, user, workdir, mailroom):
    r = harness.RedisServer(str(workdir / "redis"))
    port = harness.free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        cfg = harness.sidekiq_config(servers, user, "ready", workdir, redis_url=r.url, health_port=port,
                                     idle_timeout=5, delete=True, expunge=True)
        mr = mailroom(cfg)
        harness.wait_until(lambda: (x := get(base + "/readiness")) and x[0] == 200, 20,
                           "ready at start", proc=mr)
        r.stop()
        servers.append(user, [make_message(1, user)])
        status, body = harness.wait_until(
            lambda: (x := get(base + "/readiness")) and x[0] == 503 and x, 20,
            "/readiness 503 after a failed delivery", proc=mr)
        assert b"delivery target failing" in body, body
        # liveness stays green: a restart would not bring Redis back
        assert get(base + "/liveness") == (200, b"OK\n")
        r.start()
        c = r.client()
        harness.wait_until(lambda: c.llen("queue:ready") == 1, 60, "the job after Redis came back",
                           proc=mr)
        harness.wait_until(lambda: (x := get(base + "/readiness")) and x[0] == 200, 20,
                           "ready again", proc=mr)
        mr.stop_ok()
    finally:
        r.stop()


def test_jid_is_stable_for_a_message_and_distinct_across_messages(servers, user, workdir, mailroom):
    """The jid derives from (account, folder, UIDVALIDITY, UID): a second
    delivery of the same message (here forced by clearing \\Seen) has the same
    jid; different messages have different ones."""
    r = harness.RedisServer(str(workdir / "redis"))
    try:
        # a flag change does not wake IDLE (only EXISTS does): renew it often
        cfg = harness.sidekiq_config(servers, user, "jid", workdir, redis_url=r.url, idle_timeout=1)
        c = r.client()
        uids = servers.append(user, [make_message(i, user) for i in range(3)])
        mr = mailroom(cfg)
        harness.wait_until(lambda: c.llen("queue:jid") == 3, 20, "3 jobs", proc=mr)
        harness.wait_until(lambda: all("\\Seen" in f for f in servers.flags(user).values()), 10,
                           "all seen", proc=mr)
        jobs = [json.loads(j) for j in c.lrange("queue:jid", 0, -1)]
        by_mid = {harness.message_id(j["args"][0].encode()): j["jid"] for j in jobs}
        assert len(set(by_mid.values())) == 3
        assert all(re.fullmatch(r"[0-9a-f]{24}", j) for j in by_mid.values())
        # make one message unseen again: delivered again, with the same jid
        m = servers.imap(user)
        m.select("INBOX")
        m.uid("STORE", str(uids[1]), "-FLAGS", "(\\Seen)")
        m.logout()
        harness.wait_until(lambda: c.llen("queue:jid") == 4, 20, "the redelivery", proc=mr)
        again = json.loads(c.lindex("queue:jid", 0))  # LPUSH: newest first
        assert again["jid"] == by_mid[harness.message_id(again["args"][0].encode())]
        mr.stop_ok()
    finally:
        r.stop()


def test_uidvalidity_change_redelivers_nothing(servers, user, queue, workdir, mailroom):
    port = harness.free_port()
    label = harness.mailbox_label(user, servers.imap_port)
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, health_port=port))
    old = [make_message(i, user) for i in range(3)]
    servers.append(user, old)
    servers.performed(queue, 3, 30, proc=mr)
    harness.wait_until(lambda: all("\\Seen" in f for f in servers.flags(user).values()), 10,
                       "3 delivered and seen", proc=mr)
    doveadm = ["doveadm", "-c", servers.env["DOVECOT_CONF"], "mailbox", "update", "-u", user,
               "--uid-validity", "77", "INBOX"]
    cp = subprocess.run(doveadm, capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    # Dovecot ends the selected session when it notices; mailroom reconnects.
    new = make_message(9, user, subject="after the change")
    servers.append(user, [new])
    got = servers.performed(queue, 1, 30, proc=mr)
    assert b"after the change" in got[0]
    base = f"http://127.0.0.1:{port}"
    # The counter moves once the message is flagged, a moment after the job
    # reached Sidekiq: wait for both.
    text = harness.wait_until(
        lambda: (x := get(base + "/metrics")) and
        metric(x[1].decode(), "mailroom_uidvalidity_changes_total", label) == 1 and
        metric(x[1].decode(), "mailroom_messages_delivered_total", label) == 4 and
        x[1].decode(), 20, "the UIDVALIDITY change counted and 4 deliveries", proc=mr)
    assert metric(text, "mailroom_messages_delivered_total", label) == 4
    assert any(rec.get("action") == "UIDVALIDITY changed" for rec in mr.log_records())
    # The pass that delivered the new message searched UNSEEN under the new
    # UIDVALIDITY: a redelivery of the old three would have been sent in it.
    # Once the process has stopped, its log holds every delivery it sent.
    mr.stop_ok()
    sent = sorted(r.get("message_id", "").strip("<>") for r in mr.records("sending to deliverer"))
    want = sorted(harness.message_id(m).strip("<>") for m in old + [new])
    assert sent == want, f"deliveries sent {sent}, expected each of {want} once\n" + mr.diagnostics()


def test_liveness_fails_when_a_mailbox_is_stuck_longer_than_stuck_after(servers, user, queue,
                                                                         workdir, mailroom):
    """A server that stops answering while command_timeout is (mis)configured
    to an hour: no timeout fires, so /liveness must catch the stall after
    stuck_after (10 s here) and recover once the server answers again."""
    from faultproxy import FaultProxy
    port = harness.free_port()
    base = f"http://127.0.0.1:{port}"
    with FaultProxy(harness.HOST, servers.imap_port) as proxy:
        cfg = harness.sidekiq_config(servers, user, queue, workdir, health_port=port,
                                     command_timeout=3600, idle_check_interval=1)
        cfg["mailboxes"][0]["port"] = proxy.port
        cfg["health_check"]["stuck_after"] = 10
        mr = mailroom(cfg)
        harness.wait_until(lambda: get(base + "/liveness") == (200, b"OK\n"), 20, "alive", proc=mr)
        harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "IDLE", proc=mr)
        proxy.blackhole()  # the next DONE goes unanswered
        status, body = harness.wait_until(
            lambda: (x := get(base + "/liveness")) and x[0] == 500 and x, 30,
            "/liveness 500 while stuck", proc=mr)
        label = harness.mailbox_label(user, proxy.port)  # the server mailroom talks to: the proxy
        assert body.startswith(f"Stuck: mailbox {label} made no progress for ".encode()), body
        proxy.restore()
        servers.append(user, [make_message(1, user)])
        servers.performed(queue, 1, 30, proc=mr)
        harness.wait_until(lambda: get(base + "/liveness") == (200, b"OK\n"), 20, "alive again",
                           proc=mr)
        mr.stop_ok()
