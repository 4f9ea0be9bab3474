"""SIGTERM in the middle of a backlog drain: nothing lost, nothing doubled.

Every start is held by a gate at a chosen point of its drain (a FaultProxy in
front of Dovecot or of Redis stops one stream there), gets SIGTERM while held,
and is let go once /liveness answers 500, i.e. once the signal was taken. It
must then exit 0 within the shutdown bound, deliver what it had started and
nothing more, and leave the rest in the mailbox with their claims released;
the next start delivers them. In the end every message has exactly one job.
Nothing here depends on how fast mailroom drains."""
import json
import re
import signal

import harness
from faultproxy import FaultProxy
from mailinject import make_message

N = 2000
SIDEKIQ_BATCH = 500  # messages per FETCH batch of a Sidekiq mailbox (coordinator.cpp)
LPUSH = re.compile(rb"\*3\r\n\$5\r\nLPUSH\r\n")  # a Sidekiq job push
CLAIM = re.compile(rb"\*6\r\n\$3\r\nSET\r\n")    # SET key claim EX ttl NX (the delivered mark has 5 parts)


def _arm(phase, imap, redis):
    """The gate of one phase; returns (Hold, deliveries this start must make:
    a number, or a (min, max) range where it depends on how far the FETCH or
    the previous batch's deliveries had got)."""
    if phase == "fetch":
        # 150 whole literals reach mailroom, the 151st stops after 1,000 bytes;
        # the signal follows their 150 deliveries' start, and none starts after it.
        return imap.cut_in_literal(after_bytes=1000, skip=150, action="hold"), 150
    if phase == "lpush":
        # 100 jobs pushed; the 101st and every later Redis command wait (the
        # FETCH goes on: every message of the first batch whose body arrived
        # before the signal is delivered).
        return redis.hold(LPUSH, "c2s", when="before", skip=100), (101, SIDEKIQ_BATCH)
    if phase == "claim":
        # The claims of the first batch are on their way: no message is
        # fetched before they are answered, and none may be sent once stopping.
        return redis.hold(CLAIM, "c2s", when="before"), 0
    if phase == "store":
        # The first UID STORE flags the first batch, delivered and recorded;
        # by then the second batch (up to 500 less what was still in flight)
        # may have been fetched, and its deliveries started, too.
        return imap.hold(b"UID STORE", "c2s", when="before"), (SIDEKIQ_BATCH, 2 * SIDEKIQ_BATCH)
    raise ValueError(phase)


def _claims(r, ns):
    """Arbitration keys of the namespace still holding a claim (not "delivered:")."""
    return {k: v for k in r.scan_iter(match=f"{ns}:*", count=1000)
            if (v := r.get(k)) is not None and not v.startswith(b"delivered:")}


def test_sigterm_mid_drain_loses_and_doubles_nothing(servers, user, workdir, mailroom, metric):
    queue = f"drain_{user}"  # not a queue Sidekiq consumes: the jobs stay countable
    key = "queue:" + queue
    ns = f"drain:{user}"
    r = servers.r
    r.delete(key)
    body = ("x" * 70 + "\r\n") * 40  # ~3 KB
    msgs = [make_message(i, user, body=body) for i in range(N)]
    servers.maildir_deliver(user, msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == N, 20, f"{N} messages in INBOX")
    # Both proxies stay up for every start: the mailbox's identity (jid,
    # arbitration key) includes the IMAP server's port.
    imap = FaultProxy(harness.HOST, servers.imap_port, name="imap-proxy")
    redis = FaultProxy(harness.HOST, servers.redis_port, name="redis-proxy")
    redis_url = f"redis://{harness.HOST}:{redis.port}"

    def config(health_port, name):
        cfg = harness.sidekiq_config(servers, user, queue, workdir, health_port=health_port,
                                     redis_url=redis_url, arbitration_namespace=ns, delete=True, expunge=True,
                                     command_timeout=120, connect_timeout=30)
        cfg["mailboxes"][0]["port"] = imap.port
        cfg["mailboxes"][0]["logger"]["log_path"] = str(workdir / f"{name}.log")
        cfg["mailboxes"][0]["arbitration_options"]["redis_url"] = redis_url
        return cfg

    exits, report = [], []
    try:
        for phase in ("fetch", "lpush", "claim", "store"):
            jobs_before = r.llen(key)
            health = harness.free_port()
            gate, expect = _arm(phase, imap, redis)
            mr = mailroom(config(health, f"mailroom-{phase}"), name=f"mailroom-{phase}")
            harness.wait_until(gate.held.is_set, 60, f"the drain to reach its gate ({phase})", proc=mr)
            if phase == "fetch":
                # The proxy has passed 150 literals on; the signal must come
                # after mailroom has read them all (a body read after it is
                # not sent).
                mr.wait_log("sending to deliverer", 150, desc="the 150 bodies before the gate handed over")
            mr.proc.send_signal(signal.SIGTERM)
            harness.wait_http_status(f"http://{harness.HOST}:{health}/liveness", 500, 10,
                                     f"/liveness 500: SIGTERM taken ({phase})", proc=mr)
            gate.release()
            exits.append(mr.wait_exit_ok(30))
            left = servers.status(user)["MESSAGES"]
            jobs = r.llen(key)
            delivered = jobs - jobs_before
            report.append(f"{phase}: {delivered}")
            assert left > 0, f"{phase}: the gate did not hold the drain ({left} left)"
            assert jobs == N - left, f"{phase}: {jobs} jobs, {N - left} messages gone from the mailbox"
            lo, hi = expect if isinstance(expect, tuple) else (expect, expect)
            assert lo <= delivered <= hi, f"{phase}: {delivered} delivered, expected {expect}\n" + \
                mr.diagnostics()
            assert len(mr.records("sending to deliverer")) == delivered, mr.diagnostics()
            assert not _claims(r, ns), f"{phase}: claims left behind: {_claims(r, ns)}"
        mr = mailroom(config(harness.free_port(), "mailroom-final"), name="mailroom-final")
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 120, "an empty INBOX",
                           interval=0.05, proc=mr)
        mr.stop_ok()
        jobs = [json.loads(j) for j in r.lrange(key, 0, -1)]
        ids = [harness.message_id(j["args"][0].encode()) for j in jobs]
        assert len(ids) == N, f"{len(ids)} jobs for {N} messages"
        assert len(set(ids)) == N, f"{len(ids) - len(set(ids))} messages delivered twice"
        assert set(ids) == {harness.message_id(m) for m in msgs}
        print("delivered per held start: " + ", ".join(report))
        metric(f"SIGTERM mid-drain ({len(exits)} held stops, {N} messages, 0 lost, 0 doubled): "
               "slowest exit after the gate opened", max(exits))
    finally:
        imap.close()
        redis.close()
        r.delete(key)


def test_sigterm_with_webhook_requests_in_flight(servers, user, workdir, mailroom):
    """SIGTERM while a webhook mailbox has requests in flight (the receiver
    holds its answers): those requests are finished (answered 200 after the
    signal, so delivered and removed), no request is sent after the signal,
    exit 0; the next start delivers the rest, each message once."""
    n = 40
    hook = harness.WebhookReceiver()
    hook.hold()
    try:
        msgs = [make_message(i, user, subject=f"in flight {i}") for i in range(n)]
        servers.append(user, msgs)

        def config(health_port):
            mb = harness.imap_mailbox(servers, user, delete=True, expunge=True,
                                      log_path=str(workdir / f"webhook-{health_port}.log"))
            mb["delivery_method"] = "postback"
            mb["delivery_options"] = {"delivery_url": hook.url(), "content_type": "text/plain",
                                      "read_timeout": 60}
            return {"health_check": {"address": harness.HOST, "port": health_port}, "mailboxes": [mb]}

        health = harness.free_port()
        mr = mailroom(config(health), name="mailroom-held")
        # A webhook mailbox sends at most 4 requests at once.
        harness.wait_until(lambda: hook.holding == 4, 30, "4 requests held at the receiver", proc=mr)
        mr.proc.send_signal(signal.SIGTERM)
        harness.wait_http_status(f"http://{harness.HOST}:{health}/liveness", 500, 10, "SIGTERM taken",
                                 proc=mr)
        hook.release()
        mr.wait_exit_ok(30)
        assert hook.count() == 4 and hook.count(200) == 4, \
            f"{hook.count()} requests ({hook.count(200)} answered 200): none may be sent after SIGTERM"
        assert servers.status(user)["MESSAGES"] == n - 4
        assert len(mr.records("message pushed")) == 4

        mr2 = mailroom(config(harness.free_port()), name="mailroom-rest")
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 60, "an empty INBOX", proc=mr2)
        mr2.stop_ok()
        with hook.lock:
            reqs = list(hook.requests)
        assert all(q["status"] == 200 for q in reqs), [q["status"] for q in reqs]
        ids = sorted(harness.message_id(q["body"]) for q in reqs)
        assert ids == sorted(harness.message_id(m) for m in msgs), f"{len(ids)} requests for {n} messages"
        assert len({q["headers"].get("idempotency-key") for q in reqs}) == n
    finally:
        hook.close()
