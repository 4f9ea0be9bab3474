"""Redis arbitration: several mailroom instances on one mailbox deliver each
message once."""
import copy
import time
import uuid

import harness
from mailinject import make_message


def test_two_instances_deliver_each_message_exactly_once(servers, user, queue, workdir, mailroom, metric):
    n = 50
    ns = f"mail_room:test:{uuid.uuid4().hex[:8]}"
    cfg = harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=ns,
                                 delete=True, expunge=True)
    a = mailroom(cfg, name="mailroom-a")
    cfg_b = copy.deepcopy(cfg)
    cfg_b["mailboxes"][0]["logger"]["log_path"] = str(workdir / "mailroom-b.log")
    b = mailroom(cfg_b, name="mailroom-b")
    harness.wait_until(lambda: servers.idle_sessions(user) == 2, 20, "both instances to enter IDLE", proc=a)
    assert b.alive(), b.diagnostics()
    msgs = [make_message(i, user, subject=f"arbitration {i}") for i in range(n)]
    t0 = time.monotonic()
    servers.append(user, msgs)
    got = servers.performed(queue, n, timeout=60, proc=a)
    metric(f"{n} messages, 2 instances: append -> all performed", time.monotonic() - t0)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 20, "an empty INBOX", proc=a)
    ids = [harness.message_id(m) for m in got]
    assert len(set(ids)) == n, f"duplicates: {len(ids) - len(set(ids))}"
    assert set(ids) == {harness.message_id(m) for m in msgs}
    # Once both have stopped, their logs hold every delivery they sent: a
    # duplicate would show there, whether Sidekiq performed it yet or not.
    a.stop_ok()
    b.stop_ok()
    sent = [r.get("message_id", "").strip("<>") for p in (a, b) for r in p.records("sending to deliverer")]
    assert sorted(sent) == sorted(i.strip("<>") for i in ids), \
        f"{len(sent)} deliveries sent for {n} messages\n" + a.diagnostics() + b.diagnostics()
    assert servers.r.llen(servers.result_key(queue)) == 0, "a job performed twice"


def _arbitration_keys(servers, ns):
    return sorted(k.decode() for k in servers.r.scan_iter(match=f"{ns}:delivered:*", count=1000))


def test_arbitration_key_default_is_scoped_by_mailbox(servers, user, queue, workdir, mailroom):
    """Default key: <namespace>:delivered:<email>/<NAME>@<host>:<port>:<uidvalidity>:<uid>
    (INBOX upper-cased, the host lower-cased), TTL 600 s."""
    ns = f"mail_room:test:{uuid.uuid4().hex[:8]}"
    uid = servers.append(user, [make_message(1, user)])[0]
    uidvalidity = servers.status(user)["UIDVALIDITY"]
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=ns))
    servers.performed(queue, 1, timeout=20, proc=mr)
    key = f"{ns}:delivered:{user}/INBOX@127.0.0.1:{servers.imap_port}:{uidvalidity}:{uid}"
    assert key == harness.arbitration_key(ns, user, servers.imap_port, uidvalidity, uid)
    assert _arbitration_keys(servers, ns) == [key]
    assert 0 < servers.r.ttl(key) <= 600
    mr.stop_ok()


def test_arbitration_key_format_mail_room(servers, user, queue, workdir, mailroom):
    """`arbitration_options: {key_format: mail_room}`: mail_room's <namespace>:delivered:<uid>."""
    ns = f"mail_room:test:{uuid.uuid4().hex[:8]}"
    uid = servers.append(user, [make_message(1, user)])[0]
    cfg = harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=ns)
    cfg["mailboxes"][0]["arbitration_options"]["key_format"] = "mail_room"
    mr = mailroom(cfg)
    servers.performed(queue, 1, timeout=20, proc=mr)
    assert _arbitration_keys(servers, ns) == [f"{ns}:delivered:{uid}"]
    assert 0 < servers.r.ttl(f"{ns}:delivered:{uid}") <= 600
    mr.stop_ok()


def test_arbitration_key_canonical_folder_and_host(servers, user, queue, workdir, mailroom):
    """name "inbox" and host "LOCALHOST": the key says INBOX and localhost."""
    ns = f"mail_room:test:{uuid.uuid4().hex[:8]}"
    uid = servers.append(user, [make_message(1, user)])[0]
    uidvalidity = servers.status(user)["UIDVALIDITY"]
    cfg = harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=ns, name="inbox")
    cfg["mailboxes"][0]["host"] = "LOCALHOST"
    mr = mailroom(cfg)
    servers.performed(queue, 1, timeout=20, proc=mr)
    assert _arbitration_keys(servers, ns) == [f"{ns}:delivered:{user}/INBOX@localhost:{servers.imap_port}:"
                                              f"{uidvalidity}:{uid}"]
    mr.stop_ok()
