"""New mail while mailroom idles is picked up at once (IMAP IDLE), not at the
next idle_timeout."""
import time

import harness
from mailinject import make_message


def test_message_appended_while_idling_is_picked_up_quickly(servers, user, queue, workdir, mailroom, metric):
    cfg = harness.sidekiq_config(servers, user, queue, workdir, idle_timeout=600,
                                 delete=True, expunge=True)
    mr = mailroom(cfg)
    harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
    latencies = []
    for i in range(3):  # after each pickup mailroom must go back to IDLE and see the next one
        raw = make_message(i, user, subject=f"idle pickup {i}")
        t0 = time.monotonic()
        servers.append(user, [raw])
        got = servers.performed(queue, 1, timeout=10, proc=mr)
        latencies.append(time.monotonic() - t0)
        assert got == [raw]
        harness.wait_until(lambda: servers.idle_sessions(user) == 1 and servers.status(user)["MESSAGES"] == 0,
                           10, "mailroom to go back to IDLE", proc=mr)
    for n, lat in enumerate(latencies):
        metric(f"IDLE pickup latency, append -> Sidekiq perform (#{n + 1})", lat)
    print(f"IDLE pickup latencies: {', '.join(f'{x:.3f} s' for x in latencies)}")
    assert max(latencies) < 10
    mr.stop_ok()
