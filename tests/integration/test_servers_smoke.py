"""The test harness itself, without mailroom: the servers answer, the
injection helpers work, and the real Sidekiq performs a hand-pushed job."""
import json
import time
import uuid

import harness
import mailinject


def test_dovecot_login_plain_starttls_and_implicit_tls(servers, user):
    m = servers.imap(user)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    ctx = servers.tls_context()  # verifies the certificate (SAN IP:127.0.0.1)
    m = mailinject.imap_login(user, tls_context=ctx, port=servers.imaps_port)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    m = mailinject.imap_login(user, tls_context=ctx, starttls=True, port=servers.imap_port)
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_dovecot_rejects_wrong_password(servers, user):
    t0 = time.monotonic()
    try:
        servers.imap(user, password="wrong")
    except Exception as e:  # imaplib.IMAP4.error
        assert "AUTHENTICATIONFAILED" in str(e) or "failed" in str(e).lower()
    else:
        raise AssertionError("LOGIN with a wrong password succeeded")
    assert time.monotonic() - t0 < 5, "auth penalty is not disabled"


def test_append_roundtrip_is_byte_exact_and_unseen(servers, user):
    raw = harness.mailinject.make_message(1, user, subject="Grüße ☃", body="Zeile 1 — ünïcödé\r\n")
    uids = servers.append(user, [raw])
    m = servers.imap(user)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", str(uids[0]), "(BODY.PEEK[])")
    m.logout()
    assert data[0][1] == raw
    assert servers.flags(user) == {uids[0]: set()}
    assert servers.status(user)["UNSEEN"] == 1


def test_bulk_injection_append_and_maildir(servers, user, metric):
    t0 = time.monotonic()
    servers.append(user, [mailinject.make_message(i, user) for i in range(200)])
    t1 = time.monotonic()
    servers.maildir_deliver(user, [mailinject.make_message(i, user) for i in range(2000)])
    t2 = time.monotonic()
    assert servers.status(user)["MESSAGES"] == 2200
    metric("inject 200 messages by IMAP APPEND", t1 - t0)
    metric("inject 2000 messages into Maildir/new", t2 - t1)


def test_idle_session_is_visible_in_proctitle(servers, user):
    m = servers.imap(user)
    m.select("INBOX")
    tag = m._new_tag().decode()
    m.send(f"{tag} IDLE\r\n".encode())
    assert m.readline().startswith(b"+")
    harness.wait_until(lambda: servers.idle_sessions(user) == 1, 5, "the IDLE proctitle")
    servers.append(user, [mailinject.make_message(0, user)])
    line = m.readline()
    assert b"EXISTS" in line, line
    m.send(b"DONE\r\n")
    m.logout()


def test_sidekiq_performs_a_hand_pushed_job(servers, queue):
    raw = "From: a@example.com\r\nSubject: h\u00e9llo\r\n\r\nbody \u2603\r\n"
    job = {"class": "EmailReceiverWorker", "args": [raw], "queue": queue,
           "jid": uuid.uuid4().hex[:24], "retry": False, "enqueued_at": time.time()}
    servers.r.lpush("queue:" + queue, json.dumps(job, ensure_ascii=False))
    got = servers.performed(queue, 1, timeout=15)
    assert got[0] == raw.encode("utf-8")
    jobs = servers.performed_jobs(queue)
    assert jobs[0]["class"] == "EmailReceiverWorker" and jobs[0]["jid"] == job["jid"]


def test_dedicated_redis_restarts_on_the_same_port(tmp_path):
    d = tmp_path / "redis"
    r = harness.RedisServer(str(d))
    try:
        c = r.client()
        assert c.ping()
        r.stop()
        harness.wait_until(lambda: not _pings(r), 10, "redis to stop")
        r.start()
        assert r.client().ping()
    finally:
        r.stop()


def _pings(r):
    try:
        return r.client().ping()
    except Exception:
        return False
