"""Sidekiq delivery end to end: Dovecot -> mailroom -> Redis -> a real Sidekiq
that performs EmailReceiverWorker and records the raw message it got."""
import json
import re
import time
import uuid

import pytest

import harness
from mailinject import make_message

UTF8_SUBJECT = "Grüße aus Köln ☃ — 日本語 ✓"
UTF8_BODY = "Zeile eins: äöü ß\r\nPreis: 100 €\r\nCRLF and a trailing space \r\n\r\n-- \r\nsig\r\n"

FRENCH = ("Bonjour,\r\n\r\nLe café est très bon, la crème brûlée aussi. Voilà une phrase en "
          "français avec des accents : é è ê à ù ç ô î ï. Ça marche très bien à Noël, "
          "dit le garçon à la fenêtre. Déjà vu, à bientôt !\r\n")


def latin1_message(user):
    head = (f"From: Émile <emile@example.fr>\r\nTo: {user}@example.com\r\nSubject: Café\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.fr>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
    return (head + FRENCH).encode("latin-1")


@pytest.mark.parametrize("transport", ["plain", "tls", "starttls"])
def test_sidekiq_delivers_raw_utf8_message_byte_exact(transport, servers, user, queue, workdir, mailroom):
    """plain IMAP; implicit TLS with the CA from `ssl: {ca_file:}`; STARTTLS with
    `ssl: false, start_tls: true` and the CA from SSL_CERT_FILE (the default trust
    store, as mail_room applies no ssl hash to STARTTLS)."""
    raw = make_message(1, user, subject=UTF8_SUBJECT, body=UTF8_BODY)
    servers.append(user, [raw])
    env = {"SSL_CERT_FILE": servers.ca} if transport == "starttls" else None
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir, transport=transport), env=env)
    got = servers.performed(queue, 1, timeout=20, proc=mr)
    assert got[0] == raw
    jobs = servers.performed_jobs(queue)
    assert jobs[0]["class"] == "EmailReceiverWorker" and jobs[0]["queue"] == queue
    mr.stop_ok()


def test_tls_hostname_localhost_verified_against_san(servers, user, queue, workdir, mailroom):
    """host "localhost" (DNS SAN; the server listens on 127.0.0.1 only)."""
    raw = make_message(1, user)
    servers.append(user, [raw])
    cfg = harness.sidekiq_config(servers, user, queue, workdir, transport="tls")
    cfg["mailboxes"][0]["host"] = "localhost"
    mr = mailroom(cfg)
    assert servers.performed(queue, 1, timeout=20, proc=mr) == [raw]
    mr.stop_ok()


def test_tls_certificate_is_verified_by_default(servers, user, queue, workdir, mailroom):
    """`ssl: true` without a CA: the self-signed certificate must be refused.
    Nothing is delivered and the message is untouched; mailroom either exits
    non-zero at start-up (as mail_room does) or keeps running and says why."""
    raw = make_message(1, user)
    servers.append(user, [raw])
    cfg = harness.sidekiq_config(servers, user, queue, workdir, transport="tls")
    cfg["mailboxes"][0]["ssl"] = True
    mr = mailroom(cfg, env={"SSL_CERT_FILE": "/nonexistent/ca.pem", "SSL_CERT_DIR": "/nonexistent"})
    harness.wait_until(lambda: not mr.alive() or re.search(r"certificate|verif", mr.all_output(), re.I),
                       15, "mailroom to refuse the certificate")
    if not mr.alive():
        assert mr.returncode != 0, "mailroom exited 0 after a TLS verification failure\n" + mr.diagnostics()
    assert servers.r.llen(servers.result_key(queue)) == 0
    assert servers.r.llen("queue:" + queue) == 0
    assert servers.flags(user) == {1: set()}


def test_iso_8859_1_message_arrives_as_utf8(servers, user, queue, workdir, mailroom):
    raw = latin1_message(user)
    servers.append(user, [raw])
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir))
    got = servers.performed(queue, 1, timeout=20, proc=mr)[0]
    text = got.decode("utf-8")  # valid UTF-8 (JSON needs it)
    assert "Subject: Café\r\n" in text
    assert got == raw.decode("latin-1").encode("utf-8")
    mr.stop_ok()


def test_job_json_has_mail_room_shape(servers, user, workdir, mailroom):
    """The job mailroom LPUSHes to queue:<queue>: exactly class, args, queue, jid,
    retry, enqueued_at, in that order (read from a queue Sidekiq does not poll)."""
    queue = f"unpolled_{uuid.uuid4().hex[:8]}"
    key = "queue:" + queue
    raw = make_message(1, user, subject=UTF8_SUBJECT, body=UTF8_BODY)
    servers.append(user, [raw])
    try:
        mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir))
        t0 = time.time()
        harness.wait_until(lambda: servers.r.llen(key) >= 1, 20, f"a job in {key}", proc=mr)
        payload = servers.r.lindex(key, 0)
        pairs = json.loads(payload, object_pairs_hook=lambda p: p)
        keys = [k for k, _ in pairs]
        job = dict(pairs)
        assert keys == ["class", "args", "queue", "jid", "retry", "enqueued_at"], payload
        assert job["class"] == "EmailReceiverWorker"
        assert job["args"] == [raw.decode("utf-8")]
        assert job["queue"] == queue
        assert re.fullmatch(r"[0-9a-f]{24}", job["jid"]), job["jid"]
        assert job["retry"] is False
        assert isinstance(job["enqueued_at"], float)
        assert t0 - 60 < job["enqueued_at"] < time.time() + 5
        # like mail_room (Ruby's JSON.generate): non-ASCII as raw UTF-8, CR LF escaped
        assert UTF8_SUBJECT.encode("utf-8") in payload
        assert b"\\r\\n" in payload and b"\r" not in payload
        mr.stop_ok()
    finally:
        servers.r.delete(key)


def test_service_desk_worker_and_queue(servers, user, workdir, mailroom):
    queue = "service_desk_email_receiver"
    servers.clear_queue(queue)
    raw = make_message(1, user, subject="service desk")
    servers.append(user, [raw])
    try:
        mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir,
                                             worker="ServiceDeskEmailReceiverWorker"))
        assert servers.performed(queue, 1, timeout=20, proc=mr) == [raw]
        assert servers.performed_jobs(queue)[0]["class"] == "ServiceDeskEmailReceiverWorker"
        mr.stop_ok()
    finally:
        servers.clear_queue(queue)


def test_structured_log_lines(servers, user, queue, workdir, mailroom):
    """The mailbox's `logger: {log_path:}` gets JSON lines with severity, time,
    context {email, name} and action."""
    servers.append(user, [make_message(1, user)])
    mr = mailroom(harness.sidekiq_config(servers, user, queue, workdir))
    servers.performed(queue, 1, timeout=20, proc=mr)
    harness.wait_until(lambda: any(r.get("context") == {"email": user, "name": "INBOX"}
                                   for r in mr.log_records()), 10, "a log line with the mailbox context",
                       proc=mr)
    recs = mr.log_records()
    assert recs, mr.log
    for r in recs:
        assert "severity" in r and "time" in r, r
    assert any("action" in r and r.get("context", {}).get("email") == user for r in recs)
    mr.stop_ok()
