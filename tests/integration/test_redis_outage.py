"""Redis unavailable during Sidekiq delivery: the message must not be lost."""
import json

import harness
from mailinject import make_message


def test_redis_down_keeps_message_then_delivers_once_after_restart(servers, user, workdir, mailroom):
    r = harness.RedisServer(str(workdir / "redis"))  # a dedicated Redis for this test
    try:
        queue = "outage"
        key = "queue:" + queue
        cfg = harness.sidekiq_config(servers, user, queue, workdir, redis_url=r.url, idle_timeout=5,
                                     delete=True, expunge=True)
        mr = mailroom(cfg)
        harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
        r.stop()
        raw = make_message(1, user, subject="during the outage")
        uid = servers.append(user, [raw])[0]
        # Three failed passes (the first, then its retries after backoffs of
        # 2 s and 4 s; idle_timeout 5 s caps the next at 5 s): after each the
        # message is still there, unseen, and mailroom keeps running.
        for n in (1, 2, 3):
            mr.wait_log("waiting to retry delivery", n, desc=f"failed pass {n} to end in a backoff")
            assert servers.flags(user) == {uid: set()}, f"after failed pass {n}: {servers.flags(user)}"
        recs = mr.log_records()  # one snapshot: each failed pass logs "delivery failed", then its backoff
        steps = [rec["backoff_ms"] for rec in recs if rec.get("action") == "waiting to retry delivery"]
        failed = [rec for rec in recs if rec.get("action") == "delivery failed"]
        assert steps[:3] == [2000, 4000, 5000], steps
        assert len(steps) <= len(failed) <= len(steps) + 1 and all(rec["uid"] == uid for rec in failed), failed
        r.start()  # same port
        c = r.client()
        harness.wait_until(lambda: c.llen(key) >= 1, 60, "the job after Redis came back", proc=mr)
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX", proc=mr)
        assert c.llen(key) == 1
        assert json.loads(c.lindex(key, 0))["args"] == [raw.decode()]
        mr.stop_ok()
    finally:
        r.stop()


def test_redis_refusing_writes_keeps_message_then_delivers_once(servers, user, workdir, mailroom):
    """Redis up but refusing writes (OOM with noeviction: what a full memory
    or, with MISCONF, a full disk looks like to a client): the LPUSH fails, the
    message stays unseen, and it is delivered once writes are accepted again."""
    r = harness.RedisServer(str(workdir / "redis"))
    try:
        queue = "full"
        key = "queue:" + queue
        c = r.client()
        cfg = harness.sidekiq_config(servers, user, queue, workdir, redis_url=r.url, idle_timeout=5,
                                     delete=True, expunge=True)
        mr = mailroom(cfg)
        harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", "1")
        raw = make_message(1, user, subject="while Redis is full")
        uid = servers.append(user, [raw])[0]
        harness.wait_until(lambda: any(rec.get("action") == "delivery failed" and "OOM" in rec.get("error", "")
                                       for rec in mr.log_records()), 20, "a refused LPUSH", proc=mr)
        assert servers.flags(user) == {uid: set()}, "the message must stay unseen and undeleted"
        assert c.llen(key) == 0
        c.config_set("maxmemory", "0")
        harness.wait_until(lambda: c.llen(key) >= 1, 60, "the job after Redis accepted writes", proc=mr)
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX", proc=mr)
        assert c.llen(key) == 1
        assert json.loads(c.lindex(key, 0))["args"] == [raw.decode()]
        mr.stop_ok()
    finally:
        r.stop()
