"""Operator commands (mailroom status|unseen|peek|mark-seen|expunge|reingest|check)
against real Dovecot and Redis.

A shared corpus of several hundred messages of varied dates, senders and
encodings (raw UTF-8 and ISO-8859-1, RFC 2047 Q and B, folded headers, missing
Date) serves the read-only tests; every destructive test gets its own user."""
import base64
import copy
import email.header
import email.utils
import json
import os
import pty
import re
import select
import subprocess
import time

import pytest

import harness
from mailinject import make_message

CORPUS = 360
DAY = 86400

SENDERS = [
    ("Alice Example", "alice@example.com"),
    ("Bot", "noreply@ci.example.org"),
    ("Jörg Müller", "joerg@example.de"),
    ("Zoë", "zoe@example.net"),
]


# ---------------------------------------------------------------- helpers
def ops_config(servers, user, workdir, *, name="ops", queue="ops_unused", namespace=None,
               password="secret", **mailbox):
    """A config file (path) for one mailbox of user, Sidekiq delivery into
    queue (default: a queue nobody consumes) and redis arbitration."""
    mb = harness.imap_mailbox(servers, user, password=password, **mailbox)
    mb.update(harness.sidekiq_delivery(servers.redis_url, queue))
    mb.update(harness.redis_arbitration(servers.redis_url, namespace or f"ops:{user}"))
    path = os.path.join(str(workdir), f"{name}.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(harness.to_yaml({"mailboxes": [mb]}) + "\n")
    return path


def run(args, timeout=60):
    return harness.run_cli(args, timeout=timeout)


def ok(cp):
    assert cp.returncode == 0, f"rc={cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return cp


def corpus_message(i, user, now):
    """Message i of the corpus and what the commands must show for it."""
    name, addr = SENDERS[i % len(SENDERS)]
    age = (i % 12) * DAY // 2 + 3600  # 1 h .. 5.5 d 1 h, in half days
    date = email.utils.formatdate(now - age, localtime=False)
    to = f"incoming+group{i % 3}-project-{i}@example.com"
    kind = i % 6
    subject = f"message {i} Grüße"
    if kind == 0:  # raw UTF-8
        head = f"From: {name} <{addr}>\r\nSubject: {subject}\r\n"
        raw = head.encode("utf-8")
    elif kind == 1:  # raw ISO-8859-1
        head = f"From: {name} <{addr}>\r\nSubject: {subject}\r\n"
        raw = head.encode("latin-1", "replace")
    elif kind == 2:  # RFC 2047 Q
        q = email.header.Header(subject, "iso-8859-1").encode()
        qn = email.header.Header(name, "iso-8859-1").encode()
        raw = f"From: {qn} <{addr}>\r\nSubject: {q}\r\n".encode()
    elif kind == 3:  # RFC 2047 B
        b = email.header.Header(subject, "utf-8").encode()
        raw = f"From: <{addr}>\r\nSubject: {b}\r\n".encode()
        name = ""
    elif kind == 4:  # folded Subject and To
        subject = f"message {i} folded over two lines"
        raw = (f"From: {addr}\r\nSubject: message {i} folded\r\n over two lines\r\n").encode()
        name = ""
    else:  # missing Date
        raw = f"From: {addr}\r\nSubject: message {i} undated\r\n".encode()
        subject = f"message {i} undated"
        name = ""
    lines = raw + f"To: {to}\r\nMessage-ID: <c{i}.{user}@ops.test>\r\n".encode()
    if kind != 5:
        lines += f"Date: {date}\r\n".encode()
    msg = lines + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody %d\r\n" % i
    expect = {"subject": subject, "addr": addr, "name": name, "to": to,
              "date": None if kind == 5 else now - age, "i": i,
              # what the age filters see: the Date, else the arrival time (~now)
              "when": now if kind == 5 else now - age}
    return msg, expect


@pytest.fixture(scope="module")
def corpus(servers, tmp_path_factory):
    """A user whose INBOX holds CORPUS messages (UIDs 1..CORPUS) and a config."""
    user = servers.add_user()
    now = int(time.time())
    msgs, expects = [], {}
    for i in range(CORPUS):
        m, e = corpus_message(i, user, now)
        msgs.append(m)
        expects[i + 1] = e
    uids = servers.append(user, msgs)
    assert uids == list(range(1, CORPUS + 1)), uids[:5]
    d = tmp_path_factory.mktemp("ops-corpus")
    os.chmod(d, 0o755)
    return {"user": user, "config": ops_config(servers, user, d), "expect": expects, "now": now}


def unseen_json(config, *args):
    cp = ok(run(["unseen", "-c", config, "--json", *args]))
    return json.loads(cp.stdout)


def uids_of(items):
    return sorted(m["uid"] for m in items)


# ---------------------------------------------------------------- listing
def test_unseen_json_decodes_every_encoding_and_changes_nothing(servers, corpus):
    items = unseen_json(corpus["config"])
    assert uids_of(items) == list(range(1, CORPUS + 1))
    for m in items:
        e = corpus["expect"][m["uid"]]
        assert m["subject"] == e["subject"], (m, e)
        assert e["addr"] in m["from"], (m, e)
        if e["name"]:
            assert m["from"].startswith(e["name"]), (m, e)
        assert m["to"] == e["to"]
        assert m["message_id"] == f"c{e['i']}.{corpus['user']}@ops.test"
        if e["date"] is None:
            assert m["date_header"] is None
            assert m["date"] == m["internal_date"], "undated: the arrival time stands in"
        else:
            assert m["age_seconds"] == pytest.approx(time.time() - e["date"], abs=120)
        assert "\\Seen" not in m["flags"]
    assert all(not f for f in servers.flags(corpus["user"]).values()), "a listing changed flags"


@pytest.mark.parametrize("args, want", [
    (["--older-than", "2d"], lambda e, now: now - e["when"] > 2 * DAY),
    (["--newer-than", "6h"], lambda e, now: now - e["when"] < 6 * 3600),
    (["--older-than", "1d", "--newer-than", "3d"], lambda e, now: DAY < now - e["when"] < 3 * DAY),
    (["--from", "^bot|NOREPLY@"], lambda e, now: e["addr"].startswith("noreply")),
    (["--from", "müller"], lambda e, now: e["addr"].startswith("joerg") and e["name"] == "Jörg Müller"),
    (["--to", r"incoming\+group2-"], lambda e, now: "+group2-" in e["to"]),
    (["--subject", "undated$"], lambda e, now: e["subject"].endswith("undated")),
    (["--subject", "Grüße"], lambda e, now: "Grüße" in e["subject"]),
    (["--uid", "1,5,10:20,350:*"], lambda e, now: e["i"] + 1 in {1, 5, *range(10, 21), *range(350, 361)}),
    (["--uid", "10:40", "--from", "alice"], lambda e, now: 10 <= e["i"] + 1 <= 40 and e["addr"].startswith("alice")),
])
def test_unseen_filters(corpus, args, want):
    now = time.time()
    got = uids_of(unseen_json(corpus["config"], *args))
    expected = sorted(uid for uid, e in corpus["expect"].items() if want(e, now))
    assert expected, "the filter case selects nothing; proves nothing"
    assert got == expected


def test_unseen_table_for_people(corpus, metric):
    cp = ok(run(["unseen", "-c", corpus["config"]]))
    lines = cp.stdout.splitlines()
    assert re.match(r"\s+UID\s+DATE\s+AGE\s+FROM\s+TO\s+SUBJECT", lines[0]), lines[0]
    assert len(lines) == CORPUS + 1
    row = next(ln for ln in lines if re.match(r"\s+3\s", ln))
    assert "Jörg Müller" in row and "message 2 Grüße" in row, row
    assert f"{CORPUS} of {CORPUS} unseen" in cp.stderr
    metric(f"unseen: table of {CORPUS} messages", cp.elapsed)


def test_peek_header_and_body_leave_the_message_unseen(servers, corpus):
    cp = ok(run(["peek", "-c", corpus["config"], "4"]))
    assert "Message-ID: <c3." in cp.stdout and "body 3" not in cp.stdout
    cp = ok(run(["peek", "-c", corpus["config"], "4", "--body"]))
    assert "Message-ID: <c3." in cp.stdout and "body 3" in cp.stdout
    cp = ok(run(["peek", "-c", corpus["config"], "4", "--json"]))
    j = json.loads(cp.stdout)
    assert j["uid"] == 4 and j["subject"] == corpus["expect"][4]["subject"]
    assert servers.flags(corpus["user"])[4] == set()
    cp = run(["peek", "-c", corpus["config"], "99999"])
    assert cp.returncode == 1 and "UID 99999" in cp.stderr


# ---------------------------------------------------------------- mark-seen
def small_mailbox(servers, user, n, now=None, **kw):
    now = now or int(time.time())
    msgs = [make_message(i, user, subject=f"small {i}",
                         extra_headers=()) for i in range(n)]
    # Dates: message i is i hours old.
    msgs = [re.sub(rb"Date: [^\r]*", b"Date: " + email.utils.formatdate(now - i * 3600).encode(), m)
            for i, m in enumerate(msgs)]
    servers.append(user, msgs, **kw)
    return msgs


def test_mark_seen_needs_a_selection(servers, user, workdir):
    cfg = ops_config(servers, user, workdir)
    cp = run(["mark-seen", "-c", cfg])
    assert cp.returncode == 2 and "--all" in cp.stderr
    cp = run(["mark-seen", "-c", cfg, "--older-than", "2 days"])
    assert cp.returncode == 2 and "--older-than" in cp.stderr


def test_mark_seen_dry_run_then_real(servers, user, workdir):
    small_mailbox(servers, user, 30)
    cfg = ops_config(servers, user, workdir)
    cp = ok(run(["mark-seen", "-c", cfg, "--older-than", "10h30m", "--dry-run", "--json"]))
    listed = uids_of(json.loads(cp.stdout))
    assert listed == list(range(12, 31)), listed  # 11 h and older
    assert "would mark 19 of 30" in cp.stderr
    assert all(not f for f in servers.flags(user).values()), "dry run changed flags"

    cp = ok(run(["mark-seen", "-c", cfg, "--older-than", "10h30m"]))
    assert "marked 19 of 30 unseen" in cp.stdout, cp.stdout
    flags = servers.flags(user)
    assert sorted(u for u, f in flags.items() if "\\Seen" in f) == list(range(12, 31))
    assert all("\\Deleted" not in f for f in flags.values())

    cp = ok(run(["mark-seen", "-c", cfg, "--uid", "1,3:4"]))
    assert "marked 3 of 11" in cp.stdout
    assert sorted(u for u, f in servers.flags(user).items() if "\\Seen" not in f) == [2, *range(5, 12)]

    cp = ok(run(["mark-seen", "-c", cfg, "--all"]))
    assert "marked 8 of 8" in cp.stdout
    assert all("\\Seen" in f for f in servers.flags(user).values())


def _interact(args, answers, timeout=30):
    """Run mailroom with a pseudo-terminal as stdin/stdout; answer each
    "(y/N/q)" prompt with the next answer. Returns (rc, transcript)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([harness.mailroom_binary(), *args], stdin=slave, stdout=slave,
                         stderr=subprocess.PIPE, close_fds=True)
    os.close(slave)
    out = b""
    answers = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break  # EIO: the child closed the terminal
                if not chunk:
                    break
                out += chunk
                while answers and out.count(b"(y/N/q)") > len(_interact.sent):
                    a = answers.pop(0)
                    _interact.sent.append(a)
                    os.write(master, a.encode() + b"\n")
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        _interact.sent = []
        os.close(master)
        if p.poll() is None:
            p.kill()
    return rc, out.decode("utf-8", "replace"), p.stderr.read().decode()


_interact.sent = []


def test_mark_seen_interactive_through_a_pty(servers, user, workdir):
    small_mailbox(servers, user, 4)
    cfg = ops_config(servers, user, workdir)
    rc, out, err = _interact(["mark-seen", "-c", cfg, "--uid", "1:3", "--interactive"], ["y", "", "Y"])
    assert rc == 0, out + err
    # Each prompt shows date, from, to and subject, as the runbook loop printed them.
    assert re.search(r"UID 1 @\d{4}-\d\d-\d\d \d\d:\d\d UTC \(.*ago\) from Sender <sender@example.com> "
                     rf"to {user}@example.com\. Subject: small 0", out), out
    assert out.count("Mark this message as seen? (y/N/q)") == 3
    assert "marked 2 message(s) seen, left 2 unseen (4 unseen before)" in out, out
    flags = servers.flags(user)
    assert {u for u, f in flags.items() if "\\Seen" in f} == {1, 3}


def test_mark_seen_interactive_quit(servers, user, workdir):
    small_mailbox(servers, user, 3)
    cfg = ops_config(servers, user, workdir)
    rc, out, err = _interact(["mark-seen", "-c", cfg, "--all", "--interactive"], ["y", "q"])
    assert rc == 0, out + err
    assert out.count("(y/N/q)") == 2
    assert {u for u, f in servers.flags(user).items() if "\\Seen" in f} == {1}


# ---------------------------------------------------------------- expunge
def test_expunge_dry_run_then_real(servers, user, workdir):
    small_mailbox(servers, user, 20)
    m = servers.imap(user)
    m.select("INBOX")
    m.uid("STORE", "1:10", "+FLAGS.SILENT", "(\\Deleted)")
    m.logout()
    cfg = ops_config(servers, user, workdir)
    assert run(["expunge", "-c", cfg]).returncode == 2
    cp = ok(run(["expunge", "-c", cfg, "--all", "--dry-run"]))
    assert "would expunge 10 of 10" in cp.stderr
    assert servers.status(user)["MESSAGES"] == 20
    cp = ok(run(["expunge", "-c", cfg, "--uid", "1:3"]))
    assert re.search(r"expunged 3 \\Deleted message\(s\) with UID EXPUNGE in [\d.]+ s", cp.stdout), cp.stdout
    assert servers.status(user)["MESSAGES"] == 17
    cp = ok(run(["expunge", "-c", cfg, "--all"]))
    assert "expunged 7 " in cp.stdout
    assert sorted(servers.flags(user)) == list(range(11, 21))


# ---------------------------------------------------------------- status / check
def test_status_counts_queue_and_keys(servers, user, workdir):
    small_mailbox(servers, user, 12)
    m = servers.imap(user)
    m.select("INBOX")
    m.uid("STORE", "1:2", "+FLAGS.SILENT", "(\\Seen)")
    m.uid("STORE", "3", "+FLAGS.SILENT", "(\\Seen \\Deleted)")
    m.logout()
    queue = f"opsstatus_{user}"
    r = servers.r
    r.delete("queue:" + queue)
    r.lpush("queue:" + queue, "a", "b")
    cfg = ops_config(servers, user, workdir, queue=queue)
    uidvalidity = servers.status(user)["UIDVALIDITY"]
    keys = [harness.arbitration_key(f"ops:{user}", user, servers.imap_port, uidvalidity, u) for u in (1, 2)]
    for k in keys:
        r.set(k, "delivered:jid", ex=600)
    try:
        cp = ok(run(["status", "-c", cfg, "--json"]))
        [s] = json.loads(cp.stdout)
        assert s["mailbox"] == harness.mailbox_label(user, servers.imap_port)
        assert s["imap"]["reachable"] is True
        assert s["uidvalidity"] == uidvalidity
        assert (s["total"], s["unseen"], s["deleted"]) == (12, 9, 1)
        assert s["oldest_unseen"]["uid"] == 4
        assert s["sidekiq"]["length"] == 2
        assert s["arbitration"]["keys"] == 2
        cp = ok(run(["status", "-c", cfg]))
        assert "12 total, 9 unseen, 1 flagged \\Deleted" in cp.stdout
        assert "2 key(s) held" in cp.stdout and f"queue {queue} length 2" in cp.stdout
    finally:
        r.delete("queue:" + queue, *keys)


def test_check_passes_and_fails_naming_mailbox_not_secret(servers, user, workdir):
    cfg = ops_config(servers, user, workdir)
    label = re.escape(harness.mailbox_label(user, servers.imap_port))
    cp = ok(run(["check", "-c", cfg]))
    assert re.search(rf"^ok\s+{label}\s+imap:", cp.stdout, re.M), cp.stdout
    assert "sidekiq redis" in cp.stdout and "arbitration redis" in cp.stdout
    assert "0 failed" in cp.stdout

    bad = ops_config(servers, user, workdir, name="bad", password="wrong-Qz9-password")
    cp = run(["check", "-c", bad])
    assert cp.returncode == 1
    assert re.search(rf"^FAIL\s+{label}\s+imap: .*login", cp.stdout, re.M), cp.stdout
    assert "wrong-Qz9-password" not in cp.stdout + cp.stderr

    # An unreachable Redis fails its line too.
    mb = harness.imap_mailbox(servers, user)
    mb.update(harness.sidekiq_delivery(f"redis://127.0.0.1:{harness.free_port()}", "q"))
    path = os.path.join(str(workdir), "noredis.yml")
    with open(path, "w") as fh:
        fh.write(harness.to_yaml({"mailboxes": [mb]}) + "\n")
    cp = run(["check", "-c", path])
    assert cp.returncode == 1 and re.search(r"^FAIL .*sidekiq redis", cp.stdout, re.M), cp.stdout


def test_check_webhook_and_jwt(servers, user, workdir):
    hook = harness.WebhookReceiver()
    try:
        secret = os.path.join(str(workdir), "jwt.secret")
        with open(secret, "w") as fh:
            fh.write(base64.b64encode(b"k" * 32).decode() + "\n")
        os.chmod(secret, 0o600)
        mb = harness.imap_mailbox(servers, user)
        mb.update({"delivery_method": "postback",
                   "delivery_options": {"delivery_url": hook.url(), "jwt_auth_header": "X-JWT",
                                        "jwt_secret_path": secret, "jwt_issuer": "gitlab-mailroom"}})
        path = os.path.join(str(workdir), "hook.yml")
        with open(path, "w") as fh:
            fh.write(harness.to_yaml({"mailboxes": [mb]}) + "\n")
        cp = ok(run(["check", "-c", path]))
        assert re.search(r"^ok .*webhook: OPTIONS http://127\.0\.0\.1:\d+/.* answered HTTP", cp.stdout, re.M)
        assert re.search(r"^ok .*jwt secret: .* decodes to a 32-byte key", cp.stdout, re.M), cp.stdout
        assert hook.count() == 0, "check must not post a message"
    finally:
        hook.close()


def test_usage_errors_exit_2(servers, corpus, workdir):
    assert run(["unseen", "-c", corpus["config"], "--newer-than", "6 hours"]).returncode == 2
    assert run(["unseen", "-c", corpus["config"], "--uid", "0"]).returncode == 2
    assert run(["unseen", "-c", corpus["config"], "--mailbox", "nobody"]).returncode == 2
    assert run(["peek", "-c", corpus["config"]]).returncode == 2
    assert run(["unseen"]).returncode == 2
    cp = ok(run(["reingest", "--help"]))
    assert "Safe while instances run" in cp.stdout


def test_mailbox_selector_forms(servers, corpus):
    """--mailbox takes the full label, email/name, the email or the name alone."""
    user = corpus["user"]
    label = harness.mailbox_label(user, servers.imap_port)
    for sel in (label, f"{user}/INBOX", user, "INBOX"):
        items = unseen_json(corpus["config"], "--mailbox", sel, "--uid", "7")
        assert uids_of(items) == [7], (sel, items)
    cp = ok(run(["status", "-c", corpus["config"], "--mailbox", label, "--json"]))
    assert [s["mailbox"] for s in json.loads(cp.stdout)] == [label]
    for sel in (f"{user}/INBOX@127.0.0.1:1", f"{user}/Other", "nobody@example.com"):
        cp = run(["unseen", "-c", corpus["config"], "--mailbox", sel])
        assert cp.returncode == 2, (sel, cp.returncode, cp.stderr)


# ---------------------------------------------------------------- reingest
def test_reingest_while_the_service_runs_delivers_once(servers, user, workdir, mailroom, queue):
    """Two instances watch the mailbox. A delivered message is reingested
    (--unseen) while they run: it is delivered exactly once more."""
    ns = f"reingest:{user}"
    cfg = harness.sidekiq_config(servers, user, queue, workdir, arbitration_namespace=ns, idle_timeout=1)
    a = mailroom(cfg, name="a")
    cfg_b = copy.deepcopy(cfg)  # its own log: its passes and deliveries are counted apart
    cfg_b["mailboxes"][0]["logger"]["log_path"] = str(workdir / "mailroom-b.log")
    b = mailroom(cfg_b, name="b")
    servers.append(user, [make_message(1, user, subject="reingest me", msgid="<ri1@ops.test>")])
    first = servers.performed(queue, 1, 30, proc=a)
    assert harness.message_id(first[0]) == "<ri1@ops.test>"
    harness.wait_until(lambda: "\\Seen" in servers.flags(user).get(1, set()), 10, "the message flagged seen")
    uidvalidity = servers.status(user)["UIDVALIDITY"]
    key = harness.arbitration_key(ns, user, servers.imap_port, uidvalidity, 1)
    harness.wait_until(lambda: servers.r.exists(key), 5, "the arbitration key")

    ops_cfg = a.config_path
    cp = ok(run(["reingest", "-c", ops_cfg, "--uid", "1", "--unseen", "--dry-run"]))
    assert "would delete 1 key(s)" in cp.stderr and "would clear \\Seen on 1" in cp.stderr, cp.stderr
    assert servers.r.exists(key) and "\\Seen" in servers.flags(user)[1]

    cp = ok(run(["reingest", "-c", ops_cfg, "--uid", "1", "--unseen"]))
    assert "deleted 1 arbitration key(s)" in cp.stdout and "cleared \\Seen on 1" in cp.stdout, cp.stdout
    second = servers.performed(queue, 1, 30, proc=a)
    assert harness.message_id(second[0]) == "<ri1@ops.test>"
    harness.wait_until(lambda: "\\Seen" in servers.flags(user)[1], 10, "flagged seen again")
    # More passes of both instances (idle_timeout 1 s), each begun after the
    # message was flagged seen again; then both stop, and their logs hold
    # every delivery they sent: two in all.
    passes = [len(p.records("Processing started")) for p in (a, b)]
    for p, n in zip((a, b), passes):
        p.wait_log("Processing started", n + 2, timeout=20, desc=f"two more passes of instance {p.name}")
    a.stop_ok()
    b.stop_ok()
    sent = [r for p in (a, b) for r in p.records("sending to deliverer")]
    assert len(sent) == 2 and all(r.get("message_id", "").strip("<>") == "ri1@ops.test" for r in sent), \
        f"deliveries sent: {sent}\n" + a.diagnostics() + b.diagnostics()
    assert servers.r.llen(servers.result_key(queue)) == 0, "a third job performed"


def test_reingest_keeps_in_flight_claims_unless_forced(servers, user, workdir):
    small_mailbox(servers, user, 3)
    cfg = ops_config(servers, user, workdir)
    uidvalidity = servers.status(user)["UIDVALIDITY"]
    key = lambda u: harness.arbitration_key(f"ops:{user}", user, servers.imap_port, uidvalidity, u)  # noqa: E731
    r = servers.r
    r.set(key(1), "claimed:other-instance", ex=600)
    r.set(key(2), "delivered:jid123", ex=600)
    try:
        cp = ok(run(["reingest", "-c", cfg, "--all"]))
        assert "deleted 1 arbitration key(s), kept 1 in-flight claim(s)" in cp.stdout, cp.stdout
        assert r.exists(key(1)) and not r.exists(key(2))
        cp = ok(run(["reingest", "-c", cfg, "--uid", "1", "--force"]))
        assert "deleted 1 arbitration key(s)" in cp.stdout
        assert not r.exists(key(1))
        assert all(not f for f in servers.flags(user).values())
        assert run(["reingest", "-c", cfg]).returncode == 2
    finally:
        r.delete(key(1), key(2))
