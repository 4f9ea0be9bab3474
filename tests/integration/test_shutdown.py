"""SIGTERM in the middle of a backlog drain: nothing lost, nothing doubled.

Each stop must end in exit code 0 within the shutdown bound; the messages that
were not yet delivered stay in the mailbox (their claims released), and the next
start delivers them. In the end every message has exactly one job."""
import json

import harness
from mailinject import make_message

N = 2000


def test_sigterm_mid_drain_loses_and_doubles_nothing(servers, user, workdir, mailroom, metric):
    queue = f"drain_{user}"  # not a queue Sidekiq consumes: the jobs stay countable
    key = "queue:" + queue
    r = servers.r
    r.delete(key)
    body = ("x" * 70 + "\r\n") * 40  # ~3 KB
    msgs = [make_message(i, user, body=body) for i in range(N)]
    servers.maildir_deliver(user, msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == N, 20, f"{N} messages in INBOX")
    cfg = harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=f"drain:{user}",
                                 delete=True, expunge=True)
    stops = []
    try:
        # Five starts, each stopped while it is delivering (as soon as it has
        # pushed more jobs), then one start that drains the rest.
        for attempt in range(5):
            before = r.llen(key)
            mr = mailroom(cfg, name=f"mailroom{attempt}")
            harness.wait_until(lambda: r.llen(key) > before, 30, "mailroom to deliver something",
                               interval=0.005, proc=mr)
            stops.append(mr.stop_ok(timeout=30))
        assert servers.status(user)["MESSAGES"] > 0, "drained before the last stop; proves nothing"
        mr = mailroom(cfg, name="mailroom-final")
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 120, "an empty INBOX",
                           interval=0.05, proc=mr)
        mr.stop_ok()
        jobs = [json.loads(j) for j in r.lrange(key, 0, -1)]
        ids = [harness.message_id(j["args"][0].encode()) for j in jobs]
        assert len(ids) == N, f"{len(ids)} jobs for {N} messages"
        assert len(set(ids)) == N, f"{len(ids) - len(set(ids))} messages delivered twice"
        assert set(ids) == {harness.message_id(m) for m in msgs}
        metric(f"SIGTERM mid-drain ({len(stops)} stops, {N} messages, 0 lost, 0 doubled): "
               "slowest exit after SIGTERM", max(stops))
    finally:
        r.delete(key)
