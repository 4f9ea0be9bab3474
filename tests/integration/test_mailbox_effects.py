"""What mailroom leaves in the mailbox after delivering."""
import harness
from mailinject import make_message


def test_delete_and_expunge_leave_the_mailbox_empty(servers, user, queue, workdir, mailroom):
    msgs = [make_message(i, user) for i in range(3)]
    servers.append(user, msgs)
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, delete=True, expunge=True))
    got = servers.performed(queue, 3, timeout=20, proc=mr)
    assert sorted(got) == sorted(msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX", proc=mr)
    mr.stop_ok()


def test_delete_without_expunge_flags_deleted(servers, user, queue, workdir, mailroom):
    servers.append(user, [make_message(i, user) for i in range(2)])
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, delete=True, expunge=False))
    servers.performed(queue, 2, timeout=20, proc=mr)
    harness.wait_until(lambda: all("\\Deleted" in f for f in servers.flags(user).values()), 10,
                       "both messages flagged \\Deleted", proc=mr)
    assert servers.status(user)["MESSAGES"] == 2
    mr.stop_ok()


def test_without_delete_messages_stay_and_are_seen(servers, user, queue, workdir, mailroom):
    servers.append(user, [make_message(i, user) for i in range(2)])
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir))
    servers.performed(queue, 2, timeout=20, proc=mr)
    flags = harness.wait_until(lambda: (lambda f: f if all("\\Seen" in x for x in f.values()) else None)(
        servers.flags(user)), 10, "both messages \\Seen", proc=mr)
    assert len(flags) == 2
    assert not any("\\Deleted" in f for f in flags.values())
    mr.stop_ok()
    # and a restart does not deliver them again (they are seen; search is
    # UNSEEN): it delivers into a queue nobody consumes, makes a whole pass
    # (it goes idle after one) and stops; then that queue is still empty.
    unconsumed = f"again_{user}"
    servers.r.delete("queue:" + unconsumed)
    try:
        cfg = harness.sidekiq_config(servers, user, unconsumed, workdir)
        cfg["mailboxes"][0]["logger"]["log_path"] = str(workdir / "mailroom-again.log")
        mr2 = mailroom(cfg, name="mailroom-again")
        mr2.wait_log("Idling", desc="the restart to finish a pass and go idle")
        assert mr2.records("Processing started"), mr2.diagnostics()
        mr2.stop_ok()
        assert servers.r.llen("queue:" + unconsumed) == 0, "a second delivery"
        assert not mr2.records("sending to deliverer"), mr2.diagnostics()
    finally:
        servers.r.delete("queue:" + unconsumed)
