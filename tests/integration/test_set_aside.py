"""Messages set aside instead of delivered, against real Dovecot: a message the
target refuses for good (webhook 400/413/422, a Sidekiq job above
max_job_size), a message older than max_message_age. Each is moved to its
folder or flagged with its keyword, stays unseen, is counted, and the mailbox
goes on; `mailroom reingest` makes it eligible again."""
import time

import harness
from mailinject import make_message

DAY = 86400


def webhook_config(servers, user, workdir, url, **mailbox):
    mb = harness.imap_mailbox(servers, user, log_path=str(workdir / "mailroom.log"), **mailbox)
    mb["delivery_method"] = "postback"
    mb["delivery_options"] = {"delivery_url": url, "content_type": "text/plain"}
    return {"mailboxes": [mb]}


def folder_uids(servers, user, folder):
    return sorted(servers.flags(user, folder))


def reingest(config_path, uid):
    cp = harness.run_cli(["reingest", "-c", config_path, "--uid", str(uid), "--unseen"])
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp.stdout


def test_webhook_400_sets_one_message_aside_and_delivers_the_49_others(servers, user, workdir, mailroom,
                                                                      webhook):
    """50 messages, the webhook answers GitLab's 400 "too large" for one: that
    one is moved to rejected_folder (created), unseen, and never sent again;
    the 49 others are delivered once each, in the same pass."""
    msgs = [make_message(i, user, subject=("refuse me" if i == 17 else f"m{i}")) for i in range(50)]
    servers.append(user, msgs)
    webhook.status_for = lambda body: 400 if b"Subject: refuse me" in body else None
    health = harness.free_port()
    cfg = webhook_config(servers, user, workdir, webhook.url(), rejected_folder="Rejected")
    cfg["health_check"] = {"address": harness.HOST, "port": health}
    mr = mailroom(cfg)
    harness.wait_until(lambda: len(folder_uids(servers, user, "Rejected")) == 1 if
                       "Rejected" in servers.folders(user) else False, 30,
                       "the refused message in Rejected", proc=mr)
    harness.wait_until(lambda: all("\\Seen" in f for f in servers.flags(user).values()), 30,
                       "the 49 others flagged seen", proc=mr)
    inbox = servers.flags(user)
    assert len(inbox) == 49, inbox
    rejected = servers.flags(user, "Rejected")
    assert [f - {"$MailroomRejected"} for f in rejected.values()] == [set()], rejected  # unseen
    assert webhook.count(400) == 1 and webhook.count(200) == 49
    refused = mr.records("delivery refused for good")
    assert len(refused) == 1 and "HTTP 400" in refused[0]["error"] and "too large" in refused[0]["error"], refused
    assert len(mr.records("message refused by the target, set aside")) == 1
    # A later pass (a new message) does not send the refused one again.
    servers.append(user, [make_message(99, user, subject="later")])
    harness.wait_until(lambda: webhook.count(200) == 50, 30, "the later message delivered", proc=mr)
    assert webhook.count(400) == 1, "the refused message was sent again"
    metrics = harness.http_get(f"http://{harness.HOST}:{health}/metrics")[1].decode()
    assert "mailroom_messages_rejected_total{" in metrics
    assert [ln for ln in metrics.splitlines()
            if ln.startswith("mailroom_messages_rejected_total{") and ln.endswith(" 1")], metrics
    mr.stop_ok()


def test_refused_without_a_folder_is_flagged_then_reingested(servers, user, workdir, mailroom, webhook):
    """Without rejected_folder a refused message is flagged $MailroomRejected
    and stays in the INBOX, unseen, out of later passes; a 500 is not a
    refusal. After `mailroom reingest` it is delivered once the target takes it."""
    uids = servers.append(user, [make_message(1, user, subject="unprocessable"),
                                 make_message(2, user, subject="fine")])
    webhook.status_for = lambda body: 422 if b"unprocessable" in body else None
    cfg = webhook_config(servers, user, workdir, webhook.url(), idle_timeout=2)
    mr = mailroom(cfg)
    harness.wait_until(lambda: "$MailroomRejected" in servers.flags(user).get(uids[0], set()), 30,
                       "the refused message flagged", proc=mr)
    harness.wait_until(lambda: "\\Seen" in servers.flags(user)[uids[1]], 30, "the other delivered", proc=mr)
    assert "\\Seen" not in servers.flags(user)[uids[0]]
    # Passes go on (idle_timeout 2 s) without sending it again.
    n = len(mr.records("Processing started"))
    mr.wait_log("Processing started", n + 2, timeout=20, desc="two more passes")
    assert webhook.count(422) == 1

    webhook.status_for = None
    out = reingest(mr.config_path, uids[0])
    assert "1 set aside (too old or refused) made eligible again" in out, out
    harness.wait_until(lambda: "\\Seen" in servers.flags(user)[uids[0]], 30, "the reingested one delivered",
                       proc=mr)
    assert "$MailroomRejected" not in servers.flags(user)[uids[0]]
    assert webhook.count(200) == 2 and webhook.count(422) == 1
    mr.stop_ok()


def test_a_webhook_500_is_retried_not_set_aside(servers, user, workdir, mailroom, webhook):
    uid = servers.append(user, [make_message(1, user)])[0]
    webhook.status = 500
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url()))
    mr.wait_log("waiting to retry delivery", desc="the failed pass to end in a backoff")
    assert servers.flags(user) == {uid: set()}
    assert not mr.records("delivery refused for good")
    webhook.status = 200
    harness.wait_until(lambda: "\\Seen" in servers.flags(user)[uid], 30, "delivered after the retry", proc=mr)
    mr.stop_ok()


def test_max_message_age_sets_an_old_backlog_aside(servers, user, workdir, mailroom, webhook):
    """5 messages that arrived 30 days ago and 3 new ones, max_message_age 7d:
    the 3 are delivered; the 5 are flagged $MailroomTooOld (or moved to
    too_old_folder) unseen, with a log line each, until an operator
    reingests one, which is then delivered whatever its age."""
    old = servers.append(user, [make_message(i, user, subject=f"old {i}") for i in range(5)],
                         date=time.time() - 30 * DAY)
    new = servers.append(user, [make_message(10 + i, user, subject=f"new {i}") for i in range(3)])
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url(), max_message_age="7d",
                                 too_old_folder="Old backlog", idle_timeout=2))
    harness.wait_until(lambda: all("\\Seen" in servers.flags(user).get(u, set()) for u in new), 30,
                       "the 3 new ones delivered", proc=mr)
    harness.wait_until(lambda: "Old backlog" in servers.folders(user) and
                       len(servers.flags(user, "Old backlog")) == 5, 30, "the 5 old ones moved", proc=mr)
    assert webhook.count() == 3
    assert sorted(servers.flags(user)) == sorted(new), "old messages left in the INBOX"
    moved = servers.flags(user, "Old backlog")
    assert all("\\Seen" not in f for f in moved.values()), moved
    lines = mr.records("message older than max_message_age, not delivered")
    assert sorted(r["uid"] for r in lines) == sorted(old), lines
    assert all(r["max_message_age"] == 7 * DAY for r in lines)
    mr.stop_ok()


def test_reingest_lifts_the_age_limit_for_that_message(servers, user, workdir, mailroom, webhook):
    uids = servers.append(user, [make_message(i, user) for i in range(2)], date=time.time() - 30 * DAY)
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url(), max_message_age=7 * DAY,
                                 idle_timeout=2))
    harness.wait_until(lambda: all("$MailroomTooOld" in servers.flags(user)[u] for u in uids), 30,
                       "both flagged too old", proc=mr)
    assert webhook.count() == 0
    out = reingest(mr.config_path, uids[0])
    assert "1 set aside (too old or refused) made eligible again" in out, out
    harness.wait_until(lambda: "\\Seen" in servers.flags(user)[uids[0]], 30, "the reingested one delivered",
                       proc=mr)
    flags = servers.flags(user)
    assert "$MailroomReingested" in flags[uids[0]] and "$MailroomTooOld" not in flags[uids[0]]
    assert flags[uids[1]] == {"$MailroomTooOld"}
    assert webhook.count() == 1
    mr.stop_ok()


def test_sidekiq_job_above_max_job_size_is_set_aside(servers, user, workdir, mailroom, queue):
    """max_job_size: a job above it is never pushed to Redis; the message is
    flagged $MailroomRejected and the others are delivered."""
    big = make_message(1, user, subject="big", body="x" * 60000 + "\r\n")
    uids = servers.append(user, [make_message(0, user), big, make_message(2, user)])
    cfg = harness.sidekiq_config(servers, user, queue, workdir, max_job_size=50000)
    mr = mailroom(cfg)
    jobs = servers.performed(queue, 2, 30, proc=mr)
    assert len(jobs) == 2 and all(b"Subject: big" not in j for j in jobs)
    harness.wait_until(lambda: "$MailroomRejected" in servers.flags(user)[uids[1]], 30,
                       "the big one flagged", proc=mr)
    refused = mr.records("delivery refused for good")
    assert len(refused) == 1 and "above max_job_size (50000 bytes)" in refused[0]["error"], refused
    assert "\\Seen" not in servers.flags(user)[uids[1]]
    assert servers.r.llen("queue:" + queue) == 0
    mr.stop_ok()


def test_set_aside_messages_do_not_starve_newer_mail(servers, user, workdir, mailroom, webhook):
    """limit_max_unread 3 and a backlog of 5 old messages: once they are set
    aside they are out of the search, so the 2 messages that arrive later are
    delivered (they would never be reached if the old ones kept filling the
    3 slots of every pass)."""
    old = servers.append(user, [make_message(i, user) for i in range(5)], date=time.time() - 30 * DAY)
    # idle_timeout 2: a pass every 2 s at least (a pass cut short by the
    # limit does not start the next one at once, as in mail_room).
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url(), max_message_age="7d",
                                 limit_max_unread=3, idle_timeout=2))
    harness.wait_until(lambda: all("$MailroomTooOld" in servers.flags(user)[u] for u in old[:3]), 30,
                       "the first 3 set aside", proc=mr)
    new = servers.append(user, [make_message(10 + i, user, subject=f"new {i}") for i in range(2)])
    harness.wait_until(lambda: all("\\Seen" in servers.flags(user)[u] for u in new), 30,
                       "the 2 new ones delivered", proc=mr)
    harness.wait_until(lambda: all("$MailroomTooOld" in servers.flags(user)[u] for u in old), 30,
                       "all 5 old ones set aside", proc=mr)
    assert webhook.count() == 2
    mr.stop_ok()
