"""Interop matrix: the same scenarios against Dovecot 2.3, Cyrus IMAP 3.6,
Courier-IMAP 5.0 and a Courier that does not offer UIDPLUS, plus two mailboxes
that collide on (email, folder, UIDVALIDITY, UID) across two servers, and a
Gmail-like behaviour profile (gmail_proxy.py) in front of Dovecot.

Servers come from tests/servers/start-all.sh (MAILROOM_INTEROP=1 starts Cyrus
and Courier; their CYRUS_* / COURIER_* exports land in env.sh).  A server
whose exports are missing is skipped.  Every test uses a fresh user.

Transports: over TLS wherever the server offers it, implicit TLS
(`ssl: {ca_file:}`) and STARTTLS (`ssl: {ca_file:}` + `start_tls: true`),
each verified against the server's own CA; the Courier without UIDPLUS has
no implicit-TLS listener, so it runs STARTTLS and plain.

Scenarios per server (the cells of the table printed at the end of the run
and written to build/test-logs/interop-table.json):

  drain/<transport>  varied messages (raw UTF-8 headers, ISO-8859-1 body, a
                     multipart with an attachment, ~1 MB, CRLF edge cases)
                     through the real Sidekiq, byte for byte
  idle               mail appended while mailroom idles is delivered
                     (pickup latency per server)
  delete             delete_after_delivery + expunge_deleted: mailbox empty
                     (the no-UIDPLUS Courier: the plain EXPUNGE path)
  ops                status, unseen, peek, mark-seen --uid, expunge --all,
                     reingest --uid N --unseen
  sigterm            SIGTERM while a webhook holds the drain: exit 0 after the
                     held deliveries; a second start delivers the rest, each
                     message exactly once
  wrong-pw           exit 1, a clear error, no secret printed
  oversize-move      oversize_action move with and without MOVE/UIDPLUS; a
                     message another client flagged \\Deleted survives
  after-move         after_delivery: move to a folder mailroom creates, with
                     and without MOVE/UIDPLUS

Below the matrix: "dovecot+cyrus / collision" (task: the same account and
folder on two servers with equal UIDVALIDITY and UID) and the Gmail profile,
"gmail-proxy / trash" (EXPUNGE moves to Trash), "limit/bye" and "limit/no"
(the session limit answered as Gmail does, BYE or tagged NO), "idle-drop"
(the server ends IDLE) and "bye-text" (an expected failure: a known product
bug, see its test).

Waiting is always on an observable event (a log record, a job in Redis, a
held request, an HTTP status, a proxy counter), never on a sleep.
"""
import base64
import imaplib
import json
import os
import random
import re
import signal
import subprocess
import time
import uuid

import pytest

import harness
import imapservers
import mailinject
from gmail_proxy import GmailProxy
from mailinject import make_message

HOST = harness.HOST
PASSWORD = "secret"

# name -> (the export that says it runs, its transports: the first is the "primary")
SERVERS = {
    "dovecot": ("DOVECOT_IMAP_PORT", ("tls", "starttls")),
    "cyrus": ("CYRUS_IMAP_PORT", ("tls", "starttls")),
    "courier": ("COURIER_IMAP_PORT", ("tls", "starttls")),
    "courier-nouidplus": ("COURIER_NOUIDPLUS_PORT", ("starttls", "plain")),
}
NAMES = list(SERVERS)

# Messages a server stores differently from what was appended (so mailroom
# must deliver what the server serves): Courier ends a message that lacks a
# final CRLF with one.
SERVER_REWRITES = {"courier": {"no-final-crlf"}, "courier-nouidplus": {"no-final-crlf"}}


# ---------------------------------------------------------------- the servers
class Imap:
    """One server of the matrix: where it listens, users, mail in and out."""

    def __init__(self, name, servers):
        self.name = name
        self.base = "courier" if name.startswith("courier") else name
        self.servers = servers
        self.env = servers.env
        ep = imapservers.endpoint(name, self.env)
        self.port, self.tls_port, self.ca = ep["port"], ep["tls_port"], ep["ca"]
        self.transports = SERVERS[name][1]
        self.uidplus = name != "courier-nouidplus"

    def __repr__(self):
        return f"Imap({self.name} :{self.port})"

    def add_user(self, user=None):
        """A fresh user with an empty INBOX (password "secret")."""
        if self.base == "dovecot" and user is None:
            return self.servers.add_user()
        user = user or f"i{uuid.uuid4().hex[:10]}"
        imapservers.add_user(self.base, user, PASSWORD, self.env)
        return user

    def port_for(self, transport):
        return self.tls_port if transport == "tls" else self.port

    def label(self, user, transport):
        return harness.mailbox_label(user, self.port_for(transport))

    def mailbox(self, user, transport, workdir, log="mailroom", **extra):
        """The IMAP part of a mailbox entry (INBOX), with a JSON log."""
        mb = {"host": HOST}
        if transport == "tls":
            mb.update(port=self.tls_port, ssl={"ca_file": self.ca}, start_tls=False)
        elif transport == "starttls":
            mb.update(port=self.port, ssl={"ca_file": self.ca}, start_tls=True)
        elif transport == "plain":
            mb.update(port=self.port, ssl=False, start_tls=False, allow_plaintext_login=True)
        else:
            raise ValueError(transport)
        mb.update(email=user, password=PASSWORD, name="INBOX", idle_timeout=600,
                  delete_after_delivery=False, expunge_deleted=False, command_timeout=30,
                  connect_timeout=10, logger={"log_path": str(workdir / f"{log}.log")})
        mb.update(extra)
        return mb

    def append(self, user, messages, folder="INBOX"):
        return mailinject.imap_append(messages, user, PASSWORD, HOST, self.port, folder)

    def imap(self, user):
        return imapservers.login(self.name, user, PASSWORD, self.env)

    def status(self, user, folder="INBOX"):
        m = self.imap(user)
        try:
            typ, data = m.status(mailinject._quote(folder), "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
            assert typ == "OK", data
            return {k.decode(): int(v) for k, v in re.findall(rb"(\w+) (\d+)", data[0].split(b"(", 1)[1])}
        finally:
            m.logout()

    def messages(self, user, folder="INBOX", body=True):
        """{uid: (flags, raw bytes or header)} of every message, read-only."""
        m = self.imap(user)
        try:
            typ, data = m.select(mailinject._quote(folder), readonly=True)
            assert typ == "OK", data
            if int(data[0]) == 0:
                return {}
            part = "BODY.PEEK[]" if body else "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
            typ, data = m.uid("FETCH", "1:*", f"(UID FLAGS {part})")
            assert typ == "OK", data
            res = {}
            for item in data:
                if not isinstance(item, tuple):
                    continue
                head = item[0]
                uid = int(re.search(rb"UID (\d+)", head).group(1))
                fl = re.search(rb"FLAGS \(([^)]*)\)", head)
                flags = set(fl.group(1).decode().split()) - {"\\Recent"} if fl else set()
                res[uid] = (flags, item[1])
            # Courier puts FLAGS after the literal: "... BODY[] {n}" then " FLAGS (...))"
            for i, item in enumerate(data):
                if isinstance(item, bytes) and b"FLAGS (" in item and i > 0 and isinstance(data[i - 1], tuple):
                    uid = int(re.search(rb"UID (\d+)", data[i - 1][0]).group(1))
                    fl = re.search(rb"FLAGS \(([^)]*)\)", item)
                    res[uid] = (set(fl.group(1).decode().split()) - {"\\Recent"}, res[uid][1])
            return res
        finally:
            m.logout()

    def flags(self, user, folder="INBOX"):
        return {uid: f for uid, (f, _) in self.messages(user, folder, body=False).items()}

    def store(self, user, uids, flags):
        m = self.imap(user)
        try:
            m.select("INBOX")
            typ, data = m.uid("STORE", uids, "+FLAGS.SILENT", flags)
            assert typ == "OK", data
        finally:
            m.logout()


def imap_server(servers, name):
    """The server, or skip the test when start-all.sh did not start it."""
    if SERVERS[name][0] not in servers.env:
        pytest.skip(f"{name} is not running (start the servers with MAILROOM_INTEROP=1)")
    return Imap(name, servers)


# ---------------------------------------------------------------- the table
class Cell:
    """Records one cell of the interop table when the block ends: pass, FAIL
    (with the first line of the error) or skip; seconds; optional value."""

    def __init__(self, record, server, scenario, xfail=False):
        self.record, self.server, self.scenario = record, server, scenario
        self.xfail = xfail  # a known product bug: failing is expected ("xfail"), passing is news ("XPASS")
        self.value = self.unit = None
        self.notes = []

    def note(self, text):
        self.notes.append(text)

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            outcome = "XPASS" if self.xfail else "pass"
        elif issubclass(et, pytest.skip.Exception):
            outcome = "skip"
        else:
            outcome = "xfail" if self.xfail else "FAIL"
            first = str(ev).strip().splitlines()[0] if str(ev).strip() else et.__name__
            self.notes.append(first[:200])
        row = {"server": self.server, "scenario": self.scenario, "outcome": outcome,
               "seconds": round(time.monotonic() - self.t0, 2), "matrix": self.server in SERVERS}
        if self.value is not None and outcome == "pass":
            row["value"], row["unit"] = round(self.value, 3), self.unit or ""
        if self.notes:
            row["note"] = "; ".join(self.notes)
        self.record(**row)
        return False


# ---------------------------------------------------------------- helpers
def sidekiq_cfg(mb, redis_url, queue, *, health_port=None, arbitration_ns=None):
    mb = dict(mb)
    mb.update(harness.sidekiq_delivery(redis_url, queue))
    if arbitration_ns:
        mb.update(harness.redis_arbitration(redis_url, arbitration_ns))
    cfg = {}
    if health_port:
        cfg["health_check"] = {"address": HOST, "port": health_port}
    cfg["mailboxes"] = [mb]
    return cfg


def write_config(workdir, name, cfg):
    path = os.path.join(str(workdir), f"{name}.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(harness.to_yaml(cfg) + "\n")
    return path


def cli(*args, timeout=60):
    return harness.run_cli(list(args), timeout=timeout)


def ok(cp):
    assert cp.returncode == 0, f"rc={cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    return cp


def as_delivered(raw):
    """What the Sidekiq job carries for raw bytes: valid UTF-8 unchanged, else
    converted (these tests' only 8-bit non-UTF-8 text is ISO-8859-1)."""
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")


def unpolled_queue(servers):
    q = f"interop_{uuid.uuid4().hex[:10]}"
    servers.r.delete("queue:" + q)
    return q


def queued_jobs(servers, queue):
    """The jobs mailroom pushed to a queue Sidekiq does not poll."""
    return [json.loads(j) for j in servers.r.lrange("queue:" + queue, 0, -1)]


def job_ids(jobs):
    return [harness.message_id(j["args"][0].encode("utf-8")) for j in jobs]


def deliveries(mr):
    """UIDs mailroom handed to its deliverer, from its log."""
    return [r.get("uid") for r in mr.log_records() if r.get("action") == "sending to deliverer"]


def wait_idling_after_deliveries(mr, n, timeout=30):
    """Wait for an "Idling" record after the n-th "sending to deliverer" one:
    mailroom has finished that pass and is (about to be) in IDLE.  Every
    server of the matrix reports mail that arrived before its IDLE began as
    soon as the IDLE starts (checked: Dovecot, Cyrus, Courier), so mail
    appended from now on is announced to this IDLE either way."""
    def ready():
        recs = mr.log_records()
        sent = [i for i, r in enumerate(recs) if r.get("action") == "sending to deliverer"]
        if len(sent) < n:
            return False
        after = sent[n - 1] if n else -1
        return any(r.get("action") == "Idling" for r in recs[after + 1:])
    harness.wait_until(ready, timeout, f"mailroom idling after {n} deliveries", proc=mr)


def metric_value(text, name, label):
    m = re.search(r'^%s\{mailbox="%s"\} (\S+)$' % (re.escape(name), re.escape(label)), text, re.M)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------- messages
UTF8_SUBJECT = "Grüße aus Köln ☃ — 日本語 ✓"
UTF8_BODY = "Zeile eins: äöü ß\r\nPreis: 100 €\r\nCRLF and a trailing space \r\n\r\n-- \r\nsig\r\n"
FRENCH = ("Bonjour,\r\n\r\nLe café est très bon, la crème brûlée aussi. Voilà une phrase en "
          "français avec des accents : é è ê à ù ç ô î ï. Ça marche très bien à Noël, "
          "dit le garçon à la fenêtre. Déjà vu, à bientôt !\r\n")


def drain_messages(user):
    """name -> raw bytes: the varied messages of the drain scenario."""
    run = uuid.uuid4().hex[:10]

    def mid(tag):
        return f"<{run}.{tag}@interop.mailroom.test>"

    msgs = {}
    msgs["utf8"] = make_message(1, user, subject=UTF8_SUBJECT, body=UTF8_BODY, msgid=mid("utf8"),
                                sender="Jörg Müller <joerg@example.de>")
    msgs["latin1"] = (f"From: Émile <emile@example.fr>\r\nTo: {user}@example.com\r\nSubject: Café\r\n"
                      f"Message-ID: {mid('latin1')}\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                      + FRENCH).encode("latin-1")
    blob = random.Random(run).randbytes(30000)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n").decode()
    msgs["multipart"] = (f"From: a@example.com\r\nTo: {user}@example.com\r\nSubject: with attachment\r\n"
                         f"Message-ID: {mid('multipart')}\r\nMIME-Version: 1.0\r\n"
                         'Content-Type: multipart/mixed; boundary="=_b0undary_42"\r\n\r\n'
                         "This is a multi-part message in MIME format.\r\n\r\n"
                         "--=_b0undary_42\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 8bit\r\n\r\nSee the attachment — données.\r\n\r\n"
                         "--=_b0undary_42\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
                         "Content-Disposition: attachment; filename=\"data.bin\"\r\n"
                         "Content-Transfer-Encoding: base64\r\n\r\n" + b64 +
                         "--=_b0undary_42--\r\n").encode("utf-8")
    line = "0123456789abcdefghijklmnopqrstuvwxyz" * 2 + "\r\n"
    msgs["1mb"] = make_message(4, user, subject="about one megabyte", msgid=mid("1mb"),
                               body=line * (1024 * 1024 // len(line)))
    msgs["crlf"] = (f"From: b@example.com\r\nTo: {user}@example.com\r\nSubject: folded\r\n\tover\r\n  three lines\r\n"
                    f"Message-ID: {mid('crlf')}\r\n\r\n"
                    "\r\n.\r\n..\r\nFrom the start of a line\r\n>From quoted\r\n \t \r\ntrailing ws \t\r\n"
                    + "x" * 5000 + "\r\nend\r\n\r\n\r\n").encode()
    msgs["no-final-crlf"] = (f"From: c@example.com\r\nSubject: no final CRLF\r\nMessage-ID: {mid('nofinal')}\r\n\r\n"
                             "last line without CRLF").encode()
    msgs["empty-body"] = f"From: d@example.com\r\nSubject: empty body\r\nMessage-ID: {mid('empty')}\r\n\r\n".encode()
    return msgs


# ================================================================ a. drain
DRAIN_CASES = [(n, t) for n in NAMES for t in SERVERS[n][1]]


@pytest.mark.parametrize("name, transport", DRAIN_CASES, ids=[f"{n}-{t}" for n, t in DRAIN_CASES])
def test_drain_varied_messages_byte_for_byte(name, transport, servers, queue, workdir, mailroom, interop_table,
                                             metric):
    with Cell(interop_table, name, f"drain/{transport}") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        msgs = drain_messages(user)
        uids = srv.append(user, list(msgs.values()))
        assert len(uids) == len(msgs)
        served = {k: raw for k, (_, (_, raw)) in zip(msgs, sorted(srv.messages(user).items()))}
        rewritten = {k for k in msgs if served[k] != msgs[k]}
        assert rewritten == SERVER_REWRITES.get(name, set()), \
            f"{name} stores {sorted(rewritten)} differently from what was appended"
        if rewritten:
            cell.note(f"server rewrites {', '.join(sorted(rewritten))}")
        t0 = time.monotonic()
        mr = mailroom(sidekiq_cfg(srv.mailbox(user, transport, workdir), servers.redis_url, queue))
        got = servers.performed(queue, len(msgs), timeout=60, proc=mr)
        took = time.monotonic() - t0
        by_id = {}
        for raw in got:
            by_id.setdefault(harness.message_id(raw), []).append(raw)
        for k, raw in msgs.items():
            want = as_delivered(served[k])
            have = by_id.get(harness.message_id(raw), [])
            assert len(have) == 1, f"{k}: delivered {len(have)} times"
            assert have[0] == want, (f"{k}: delivered {len(have[0])} bytes differ from the {len(want)} "
                                     f"expected (first difference at byte "
                                     f"{next((i for i, (a, b) in enumerate(zip(have[0], want)) if a != b), min(len(have[0]), len(want)))})")
        assert by_id.keys() == {harness.message_id(m) for m in msgs.values()}
        # latin-1 really went through the conversion, the others byte for byte
        assert as_delivered(msgs["latin1"]) != msgs["latin1"]
        harness.wait_until(lambda: all("\\Seen" in f for f in srv.flags(user).values()), 20,
                           "every message flagged \\Seen", proc=mr)
        mr.stop_ok()
        assert sorted(deliveries(mr)) == sorted(uids), "a message was handed to the deliverer twice"
        cell.value, cell.unit = took, "s"
        metric(f"interop {name}/{transport}: drain of {len(msgs)} varied messages (~1.1 MB)", took)


# ================================================================ b. IDLE
@pytest.mark.parametrize("name", NAMES)
def test_idle_pickup(name, servers, queue, workdir, mailroom, interop_table, metric):
    with Cell(interop_table, name, "idle") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        transport = srv.transports[0]
        mr = mailroom(sidekiq_cfg(srv.mailbox(user, transport, workdir, delete_after_delivery=True,
                                              expunge_deleted=True), servers.redis_url, queue))
        latencies = []
        for i in range(2):  # after each pickup mailroom must idle again and see the next one
            wait_idling_after_deliveries(mr, i)
            raw = make_message(i, user, subject=f"idle pickup {i}")
            t0 = time.monotonic()
            srv.append(user, [raw])
            got = servers.performed(queue, 1, timeout=20, proc=mr)
            latencies.append(time.monotonic() - t0)
            assert got == [raw]
        harness.wait_until(lambda: srv.status(user)["MESSAGES"] == 0, 10, "the mailbox empty", proc=mr)
        mr.stop_ok()
        for n, lat in enumerate(latencies):
            metric(f"interop {name}: IDLE pickup latency #{n + 1} ({transport})", lat)
        cell.value, cell.unit = max(latencies), "s"
        cell.note("pickups " + ", ".join(f"{x:.3f}" for x in latencies) + " s")


# ================================================================ c. delete + expunge
@pytest.mark.parametrize("name", NAMES)
def test_delete_and_expunge_empty_the_mailbox(name, servers, queue, workdir, mailroom, interop_table):
    with Cell(interop_table, name, "delete") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        transport = srv.transports[1]
        msgs = [make_message(i, user, subject=f"delete {i}") for i in range(12)]
        srv.append(user, msgs)
        mr = mailroom(sidekiq_cfg(srv.mailbox(user, transport, workdir, delete_after_delivery=True,
                                              expunge_deleted=True), servers.redis_url, queue))
        got = servers.performed(queue, len(msgs), timeout=30, proc=mr)
        assert sorted(got) == sorted(msgs)
        harness.wait_until(lambda: srv.status(user)["MESSAGES"] == 0, 20, "the mailbox empty", proc=mr)
        mr.stop_ok()
        assert len(deliveries(mr)) == len(msgs)
        if not srv.uidplus:
            # UID EXPUNGE does not exist there: an empty mailbox means the plain EXPUNGE worked
            cell.note("no UIDPLUS: emptied by plain EXPUNGE")


# ================================================================ d. operator commands
@pytest.mark.parametrize("name", NAMES)
def test_operator_commands(name, servers, workdir, mailroom, interop_table):
    with Cell(interop_table, name, "ops"):
        srv = imap_server(servers, name)
        user = srv.add_user()
        transport = srv.transports[0]
        msgs = [make_message(1, user, subject="ops Grüße ☃"),
                make_message(2, user, subject="=?iso-8859-1?q?Caf=E9_cr=E8me?=", body="the body of two\r\n"),
                make_message(3, user, subject="ops three"),
                make_message(4, user, subject="ops four"),
                make_message(5, user, subject="ops five")]
        assert srv.append(user, msgs) == [1, 2, 3, 4, 5]
        queue = unpolled_queue(servers)
        ns = f"interop:{user}"
        cfg = sidekiq_cfg(srv.mailbox(user, transport, workdir, idle_timeout=2), servers.redis_url, queue,
                          arbitration_ns=ns)
        path = write_config(workdir, "ops", cfg)
        label = srv.label(user, transport)
        uidvalidity = srv.status(user)["UIDVALIDITY"]
        try:
            # status
            [s] = json.loads(ok(cli("status", "-c", path, "--json")).stdout)
            assert s["mailbox"] == label, s
            assert s["imap"]["reachable"] is True, s
            assert s["uidvalidity"] == uidvalidity
            assert (s["total"], s["unseen"], s["deleted"]) == (5, 5, 0), s
            assert s["oldest_unseen"]["uid"] == 1
            # unseen
            items = json.loads(ok(cli("unseen", "-c", path, "--json")).stdout)
            assert sorted(m["uid"] for m in items) == [1, 2, 3, 4, 5]
            subjects = {m["uid"]: m["subject"] for m in items}
            assert subjects[1] == "ops Grüße ☃" and subjects[2] == "Café crème", subjects
            # peek: header, then the whole message; it stays unseen
            cp = ok(cli("peek", "-c", path, "2"))
            assert harness.message_id(msgs[1]) in cp.stdout and "the body of two" not in cp.stdout, cp.stdout
            cp = ok(cli("peek", "-c", path, "2", "--body"))
            assert "the body of two" in cp.stdout
            assert "\\Seen" not in srv.flags(user)[2]
            # mark-seen --uid
            cp = ok(cli("mark-seen", "-c", path, "--uid", "1"))
            assert "marked 1 of 5" in cp.stdout, cp.stdout
            flags = srv.flags(user)
            assert "\\Seen" in flags[1] and all("\\Seen" not in flags[u] for u in (2, 3, 4, 5)), flags
            # expunge (UIDs 4 and 5 flagged \Deleted by someone else): --uid 4, then --all
            srv.store(user, "4:5", "(\\Deleted)")
            cp = cli("expunge", "-c", path, "--uid", "4")
            if srv.uidplus:
                assert re.search(r"expunged 1 \\Deleted message\(s\) with UID EXPUNGE in", ok(cp).stdout), cp.stdout
                assert sorted(srv.flags(user)) == [1, 2, 3, 5]
            else:
                # without UIDPLUS only all \Deleted messages can go at once: a selection is refused
                assert cp.returncode == 1 and "lacks UIDPLUS" in cp.stderr, (cp.returncode, cp.stderr)
                assert sorted(srv.flags(user)) == [1, 2, 3, 4, 5]
            cp = ok(cli("expunge", "-c", path, "--all"))
            want = "expunged 1 \\Deleted message(s) with UID EXPUNGE in" if srv.uidplus else \
                "expunged 2 \\Deleted message(s) with EXPUNGE in"
            assert want in cp.stdout, cp.stdout
            assert sorted(srv.flags(user)) == [1, 2, 3]
            # the service delivers 2 and 3 (1 was marked seen)
            mr = mailroom(cfg)
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 2 and
                               all("\\Seen" in f for f in srv.flags(user).values()), 30,
                               "UIDs 2 and 3 delivered and flagged", proc=mr)
            key = harness.arbitration_key(ns, user, srv.port_for(transport), uidvalidity, 2)
            harness.wait_until(lambda: servers.r.exists(key), 10, f"the arbitration key {key}", proc=mr)
            # reingest --uid 2 --unseen while it runs: delivered once more
            cp = ok(cli("reingest", "-c", path, "--uid", "2", "--unseen"))
            assert "deleted 1 arbitration key(s)" in cp.stdout and "cleared \\Seen on 1" in cp.stdout, cp.stdout
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 3 and
                               "\\Seen" in srv.flags(user)[2], 30, "UID 2 delivered again and flagged", proc=mr)
            mr.stop_ok()
            jobs = queued_jobs(servers, queue)
            ids = job_ids(jobs)
            m2, m3 = harness.message_id(msgs[1]), harness.message_id(msgs[2])
            assert sorted(ids) == sorted([m2, m2, m3]), ids
            jids2 = {j["jid"] for j, i in zip(jobs, ids) if i == m2}
            assert len(jids2) == 1, f"the reingested message got a new jid: {jids2}"
            [s] = json.loads(ok(cli("status", "-c", path, "--json")).stdout)
            assert (s["total"], s["unseen"]) == (3, 0), s
            assert s["sidekiq"]["length"] == 3 and s["arbitration"]["keys"] >= 2, s
        finally:
            servers.r.delete("queue:" + queue)
            for k in servers.r.scan_iter(match=f"{ns}:*"):
                servers.r.delete(k)


# ================================================================ e. SIGTERM mid-drain
@pytest.mark.parametrize("name", NAMES)
def test_sigterm_while_the_drain_is_held(name, servers, workdir, mailroom, interop_table):
    """A webhook that holds every request is the gate: SIGTERM while mailroom
    waits for it, /liveness turns 500, the gate opens, mailroom flags what was
    delivered and exits 0; a second start delivers the rest."""
    with Cell(interop_table, name, "sigterm") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        transport = srv.transports[1]
        n = 10
        msgs = [make_message(i, user, subject=f"sigterm {i}") for i in range(n)]
        srv.append(user, msgs)
        hook = harness.WebhookReceiver()
        try:
            hook.hold()
            hp = harness.free_port()

            def cfg(log):
                mb = srv.mailbox(user, transport, workdir, log=log, delete_after_delivery=True,
                                 expunge_deleted=True)
                mb.update({"delivery_method": "postback",
                           "delivery_options": {"delivery_url": hook.url(), "content_type": "text/plain",
                                                "read_timeout": 30}})
                return {"health_check": {"address": HOST, "port": hp}, "mailboxes": [mb]}

            mr = mailroom(cfg("first"), name="first")
            harness.wait_until(lambda: hook.holding >= 1, 30, "a delivery held by the webhook", proc=mr)
            assert srv.status(user)["UNSEEN"] == n  # nothing can have been acknowledged
            mr.proc.send_signal(signal.SIGTERM)
            harness.wait_http_status(f"http://{HOST}:{hp}/liveness", 500, 10,
                                     "/liveness 500 after SIGTERM", proc=mr)
            held = hook.holding
            hook.release()
            took = mr.wait_exit_ok(30)
            first = [r for r in hook.requests if r["status"] == 200]
            k = len(first)
            assert 1 <= k < n, f"{k} of {n} delivered before the exit: not mid-drain"
            assert srv.status(user)["UNSEEN"] == n - k, "delivered messages must be flagged before the exit"
            second = mailroom(cfg("second"), name="second")
            harness.wait_until(lambda: hook.count(200) >= n and srv.status(user)["MESSAGES"] == 0, 30,
                               "the rest delivered and the mailbox empty", proc=second)
            second.stop_ok()
            bodies = [r["body"] for r in hook.requests]
            ids = [harness.message_id(b) for b in bodies]
            assert all(r["status"] == 200 for r in hook.requests), [r["status"] for r in hook.requests]
            assert sorted(ids) == sorted(harness.message_id(m) for m in msgs), "lost or doubled"
            assert sorted(bodies) == sorted(msgs)
            cell.note(f"{held} held at SIGTERM, {k} delivered by the first run, exit 0 {took:.2f} s after release")
        finally:
            hook.close()


# ================================================================ f. wrong password
@pytest.mark.parametrize("name", NAMES)
def test_wrong_password_exits_1_without_the_secret(name, servers, queue, workdir, mailroom, interop_table):
    with Cell(interop_table, name, "wrong-pw") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        srv.append(user, [make_message(1, user)])
        secret = f"Wr0ng-{uuid.uuid4().hex[:10]}"
        mb = srv.mailbox(user, srv.transports[0], workdir, password=secret)
        mr = mailroom(sidekiq_cfg(mb, servers.redis_url, queue))
        rc, took = mr.wait_exit(40)
        assert rc == 1, f"exit code {rc}\n" + mr.diagnostics()
        assert user in mr.stderr, "stderr does not name the mailbox\n" + mr.diagnostics()
        assert re.search(r"login|authenticat", mr.stderr, re.I), "stderr does not say LOGIN failed\n" + mr.diagnostics()
        assert secret not in mr.all_output(), "the password appears in the output"
        assert any(r.get("action") == "Giving up" for r in mr.log_records()), mr.diagnostics()
        assert srv.flags(user) == {1: set()}
        assert servers.r.llen("queue:" + queue) == 0
        last = (mr.stderr.strip().splitlines() or [""])[-1]
        cell.note(f"exit 1 after {took:.1f} s: {last[:150]}")


# ================================================================ g. oversize move
@pytest.mark.parametrize("name", NAMES)
def test_oversize_move_leaves_other_deleted_messages_alone(name, servers, workdir, mailroom, interop_table):
    """oversize_action: move.  Dovecot and Cyrus have MOVE; Courier has not
    (UID COPY + \\Deleted + UID EXPUNGE of that UID), and the Courier without
    UIDPLUS cannot expunge one UID.  Whatever the server offers, the big
    message is not delivered and leaves the unseen set, the small ones are
    delivered, and a message another client flagged \\Seen \\Deleted (its own
    expunge pending) survives: expunge_deleted is false."""
    with Cell(interop_table, name, "oversize-move") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        folder = "Oversize" if srv.base == "dovecot" else "INBOX.Oversize"  # Cyrus, Courier: INBOX.<name>
        m = srv.imap(user)
        assert m.create(folder)[0] == "OK"
        m.logout()
        small = [make_message(0, user, subject="small 0"), make_message(2, user, subject="small 2")]
        big = make_message(1, user, subject="big", body=("y" * 78 + "\r\n") * 64)
        foreign = make_message(3, user, subject="deleted by another client")
        assert srv.append(user, [small[0], big, small[1], foreign]) == [1, 2, 3, 4]
        srv.store(user, "4", "(\\Seen \\Deleted)")
        queue = unpolled_queue(servers)
        mb = srv.mailbox(user, srv.transports[0], workdir, max_message_size=2048, oversize_action="move",
                         oversize_folder=folder)
        try:
            mr = mailroom(sidekiq_cfg(mb, servers.redis_url, queue))

            def pass_done():
                # an "Idling" record after the oversize warning: the pass that set
                # the big one aside (COPY/MOVE, STORE, EXPUNGE) is over
                recs = mr.log_records()
                big_at = [i for i, r in enumerate(recs) if r.get("action") == "message too large, not delivered"]
                return big_at and any(r.get("action") == "Idling" for r in recs[big_at[0] + 1:])
            harness.wait_until(lambda: pass_done() and len(queued_jobs(servers, queue)) >= 2, 20,
                               "the small ones delivered, the big one set aside, mailroom idling", proc=mr)
            inbox = srv.flags(user)
            moved = srv.status(user, folder)["MESSAGES"] == 1
            assert (moved and "\\Seen" not in inbox.get(2, set())) or "$MailroomOversize" in inbox.get(2, set()), \
                f"the big one neither moved nor flagged: {inbox}"
            mr.stop_ok()
            assert sorted(job_ids(queued_jobs(servers, queue))) == sorted(harness.message_id(x) for x in small)
            inbox = srv.flags(user)
            cell.note("moved" if moved else "flagged $MailroomOversize (not moved)")
            assert 4 in inbox, f"the message another client flagged \\Deleted was expunged: INBOX now {inbox}"
            assert inbox[4] == {"\\Seen", "\\Deleted"}, inbox
        finally:
            servers.r.delete("queue:" + queue)


# ================================================================ h. after_delivery move
@pytest.mark.parametrize("name", NAMES)
def test_after_delivery_move_keeps_a_copy_in_a_folder_it_creates(name, servers, workdir, mailroom,
                                                                  interop_table):
    """after_delivery: move to a folder that does not exist yet.  mailroom
    creates it on the server's [TRYCREATE] refusal, flags the delivered
    messages \\Seen and moves them (UID MOVE; UID COPY + \\Deleted + UID
    EXPUNGE with UIDPLUS; without either, the copies are made and the
    originals stay \\Seen \\Deleted, since a plain EXPUNGE would also remove
    other clients' mail and expunge_deleted is off).  Each message is
    delivered once, the folder holds each once, \\Seen, and a message another
    client flagged \\Deleted survives."""
    with Cell(interop_table, name, "after-move") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        folder = "Processed" if srv.base == "dovecot" else "INBOX.Processed"  # Cyrus, Courier: INBOX.<name>
        msgs = [make_message(i, user, subject=f"keep a copy {i}") for i in range(3)]
        foreign = make_message(3, user, subject="deleted by another client")
        assert srv.append(user, msgs + [foreign]) == [1, 2, 3, 4]
        srv.store(user, "4", "(\\Seen \\Deleted)")
        queue = unpolled_queue(servers)
        mb = srv.mailbox(user, srv.transports[0], workdir, after_delivery="move", move_to=folder)
        try:
            mr = mailroom(sidekiq_cfg(mb, servers.redis_url, queue))
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 3, 20, "3 jobs", proc=mr)
            wait_idling_after_deliveries(mr, 3)
            mr.stop_ok()
            assert sorted(job_ids(queued_jobs(servers, queue))) == sorted(harness.message_id(x) for x in msgs)
            kept = srv.messages(user, folder)
            assert sorted(harness.message_id(b) for _, b in kept.values()) == \
                sorted(harness.message_id(x) for x in msgs), kept
            assert all("\\Seen" in f for f, _ in kept.values()), {u: f for u, (f, _) in kept.items()}
            assert [r for r in mr.records("created a folder") if r["folder"] == folder], mr.diagnostics()
            inbox = srv.flags(user)
            assert inbox.get(4) == {"\\Seen", "\\Deleted"}, f"the other client's message: {inbox}"
            left = {u: f for u, f in inbox.items() if u != 4}
            if srv.uidplus:
                assert not left, f"moved messages left in INBOX: {left}"
                cell.note("moved; the folder created")
            else:
                assert set(left) <= {1, 2, 3} and all(f >= {"\\Seen", "\\Deleted"} for f in left.values()), left
                cell.note(f"copied; {len(left)} original(s) left \\Seen \\Deleted (no MOVE, no UIDPLUS)")
        finally:
            servers.r.delete("queue:" + queue)


# ================================================================ i. rejected_folder
@pytest.mark.parametrize("name", NAMES)
def test_refused_message_goes_to_the_rejected_folder(name, servers, workdir, mailroom, webhook, interop_table):
    """A webhook that answers 400 for one message of three: that one is moved
    to rejected_folder (created on [TRYCREATE]; UID MOVE, or COPY + \\Deleted
    (+ UID EXPUNGE with UIDPLUS) on a server without MOVE), unseen there; the
    two others are delivered once each and the refused one is sent once."""
    with Cell(interop_table, name, "rejected-move") as cell:
        srv = imap_server(servers, name)
        user = srv.add_user()
        folder = "Rejected" if srv.base == "dovecot" else "INBOX.Rejected"
        msgs = [make_message(i, user, subject=("refuse me" if i == 1 else f"fine {i}")) for i in range(3)]
        assert srv.append(user, msgs) == [1, 2, 3]
        webhook.status_for = lambda body: 400 if b"Subject: refuse me" in body else None
        mb = srv.mailbox(user, srv.transports[0], workdir, rejected_folder=folder)
        mb["delivery_method"] = "postback"
        mb["delivery_options"] = {"delivery_url": webhook.url(), "content_type": "text/plain"}
        mr = mailroom({"mailboxes": [mb]})
        mr.wait_log("message refused by the target, set aside", desc="the refused message set aside")
        wait_idling_after_deliveries(mr, 3)
        mr.stop_ok()
        assert webhook.count(200) == 2 and webhook.count(400) == 1
        kept = srv.messages(user, folder)
        assert [harness.message_id(b) for _, b in kept.values()] == [harness.message_id(msgs[1])], kept
        assert all("\\Seen" not in f for f, _ in kept.values()), kept
        inbox = srv.flags(user)
        assert all("\\Seen" in inbox[u] for u in (1, 3)), inbox
        if srv.uidplus:
            assert 2 not in inbox, f"the refused message left in INBOX: {inbox}"
            cell.note("moved; the folder created")
        else:
            assert inbox[2] >= {"\\Deleted", "$MailroomRejected"}, inbox
            cell.note("copied; the original left \\Deleted + $MailroomRejected (no MOVE, no UIDPLUS)")


# ================================================================ 2. collision across servers
def test_same_account_and_folder_on_two_servers_with_equal_uidvalidity(servers, workdir, mailroom, interop_table):
    """bob/INBOX on Dovecot and bob/INBOX on Cyrus, the same UIDVALIDITY, one
    message each with UID 1, one process, one arbitration namespace: both are
    delivered, once each, with different jids."""
    with Cell(interop_table, "dovecot+cyrus", "collision") as cell:
        dov, cyr = imap_server(servers, "dovecot"), imap_server(servers, "cyrus")
        user = f"b{uuid.uuid4().hex[:10]}"
        cyr.add_user(user)
        dov.add_user(user)
        uv = cyr.status(user)["UIDVALIDITY"]
        cp = subprocess.run(["doveadm", "-c", servers.env["DOVECOT_CONF"], "mailbox", "update", "-u", user,
                             "--uid-validity", str(uv), "INBOX"], capture_output=True, timeout=30)
        assert cp.returncode == 0, cp.stderr
        m_dov = make_message(1, user, subject="on dovecot")
        m_cyr = make_message(1, user, subject="on cyrus")
        assert dov.append(user, [m_dov]) == [1] and cyr.append(user, [m_cyr]) == [1]
        assert dov.status(user)["UIDVALIDITY"] == cyr.status(user)["UIDVALIDITY"] == uv
        queue = unpolled_queue(servers)
        ns = f"interop-collision:{user}"
        hp = harness.free_port()
        mbs = []
        for srv in (dov, cyr):
            mb = srv.mailbox(user, "tls", workdir)
            mb.update(harness.sidekiq_delivery(servers.redis_url, queue))
            mb.update(harness.redis_arbitration(servers.redis_url, ns))
            mbs.append(mb)
        cfg = {"health_check": {"address": HOST, "port": hp}, "mailboxes": mbs}
        path = write_config(workdir, "collision", cfg)
        labels = [dov.label(user, "tls"), cyr.label(user, "tls")]
        try:
            mr = mailroom(cfg)
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 2 and
                               dov.flags(user) == {1: {"\\Seen"}} and cyr.flags(user) == {1: {"\\Seen"}},
                               30, "both messages delivered and flagged", proc=mr)
            base = f"http://{HOST}:{hp}"
            text = harness.wait_until(
                lambda: (r := harness.http_get(base + "/metrics")) and
                all(metric_value(r[1].decode(), "mailroom_messages_delivered_total", lb) == 1 for lb in labels)
                and r[1].decode(), 10, "two delivered series in /metrics", proc=mr)
            series = re.findall(r'^mailroom_messages_delivered_total\{mailbox="([^"]*)"\}', text, re.M)
            assert sorted(series) == sorted(labels), series
            for srv in (dov, cyr):
                key = harness.arbitration_key(ns, user, srv.tls_port, uv, 1)
                assert servers.r.exists(key), f"no arbitration key {key}"
            # --mailbox: email/folder is ambiguous, the full label is not
            cp = cli("status", "-c", path, "--mailbox", f"{user}/INBOX")
            assert cp.returncode == 2, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
            assert "ambiguous" in cp.stderr and all(lb in cp.stderr for lb in labels), cp.stderr
            for lb in labels:
                [s] = json.loads(ok(cli("status", "-c", path, "--mailbox", lb, "--json")).stdout)
                assert s["mailbox"] == lb and (s["total"], s["unseen"]) == (1, 0), s
            mr.stop_ok()
            jobs = queued_jobs(servers, queue)
            assert sorted(job_ids(jobs)) == sorted([harness.message_id(m_dov), harness.message_id(m_cyr)]), jobs
            # the same account and folder on the SAME server twice ("inbox" is INBOX): a config error
            twice = dict(mbs[1], name="inbox")
            bad = write_config(workdir, "twice", {"mailboxes": [mbs[0], mbs[1], twice]})
            cp = harness.run_cli(["-c", bad], timeout=15)
            assert cp.returncode == 1, f"rc={cp.returncode}\n{cp.stderr}"
            assert f"the same folder on 127.0.0.1:{cyr.tls_port} is already configured" in cp.stderr, cp.stderr
            jids = [j["jid"] for j in jobs]
            assert len(set(jids)) == 2, f"both messages got the jid {jids[0]}"
            cell.note(f"UIDVALIDITY {uv} on both; jids {', '.join(jids)}")
        finally:
            servers.r.delete("queue:" + queue)
            for k in servers.r.scan_iter(match=f"{ns}:*"):
                servers.r.delete(k)


# ================================================================ 3. a Gmail-like server
def gmail_cfg(servers, user, proxy, workdir, queue, **extra):
    mb = {"host": HOST, "port": proxy.port, "ssl": False, "start_tls": False, "allow_plaintext_login": True,
          "email": user, "password": PASSWORD, "name": "INBOX", "idle_timeout": 600,
          "delete_after_delivery": True, "expunge_deleted": True, "command_timeout": 10, "connect_timeout": 5,
          "logger": {"log_path": str(workdir / "mailroom.log")}}
    mb.update(extra)
    mb.update(harness.sidekiq_delivery(servers.redis_url, queue))
    return {"mailboxes": [mb]}


def dovecot_ids(servers, user, folder):
    """Message-IDs in a Dovecot folder (read-only)."""
    srv = Imap("dovecot", servers)
    return sorted(harness.message_id(h) for _, h in srv.messages(user, folder, body=False).values())


def test_gmail_expunge_moves_to_trash_nothing_delivered_twice(servers, workdir, mailroom, interop_table):
    """\\Deleted + EXPUNGE puts the messages into Trash (Gmail): mailroom
    watches INBOX only, so every message is delivered once; INBOX ends empty
    and Trash holds the copies."""
    with Cell(interop_table, "gmail-proxy", "trash") as cell:
        user = servers.add_user()
        m = servers.imap(user)
        assert m.create("Trash")[0] == "OK"
        m.logout()
        msgs = [make_message(i, user, subject=f"gmail trash {i}") for i in range(20)]
        servers.append(user, msgs)
        queue = unpolled_queue(servers)
        proxy = GmailProxy(HOST, servers.imap_port, trash_on_expunge=True)
        try:
            mr = mailroom(gmail_cfg(servers, user, proxy, workdir, queue))
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 20 and
                               servers.status(user)["MESSAGES"] == 0, 30, "20 delivered, INBOX empty", proc=mr)
            assert dovecot_ids(servers, user, "Trash") == sorted(harness.message_id(x) for x in msgs)
            # One more message after Trash filled up: mailroom passes again and
            # delivers that one only.
            extra = make_message(99, user, subject="after the trash filled")
            servers.append(user, [extra])
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 21 and
                               servers.status(user)["MESSAGES"] == 0 and
                               servers.status(user, "Trash")["MESSAGES"] == 21, 30,
                               "the new one delivered and trashed", proc=mr)
            mr.stop_ok()
            ids = job_ids(queued_jobs(servers, queue))
            assert sorted(ids) == sorted(harness.message_id(x) for x in msgs + [extra]), "lost or doubled"
            assert dovecot_ids(servers, user, "Trash") == sorted(ids)
            assert all("\\Deleted" not in f for f in servers.flags(user, "Trash").values())
            assert proxy.errors == [], proxy.errors
            assert proxy.trashed == 21 and proxy.expunges >= 2, proxy
            cell.note(f"{proxy.expunges} EXPUNGE(s) intercepted, {proxy.trashed} messages moved to Trash")
        finally:
            proxy.close()
            servers.r.delete("queue:" + queue)


@pytest.mark.parametrize("reply", ["bye", "no"])
def test_gmail_session_limit_at_start_is_survived(reply, servers, workdir, mailroom, interop_table):
    """Two sessions already use the account's two slots, so mailroom's LOGIN
    is refused with Gmail's text, "[ALERT] Too many simultaneous connections.
    (Failure)": as an untagged BYE and a close ("bye"), or as the tagged NO
    that Gmail sends ("no").  mailroom must keep retrying with backoff, not
    exit, and deliver once a slot is free."""
    with Cell(interop_table, "gmail-proxy", f"limit/{reply}") as cell:
        user = servers.add_user()
        msgs = [make_message(i, user, subject=f"gmail limit {i}") for i in range(3)]
        servers.append(user, msgs)
        queue = unpolled_queue(servers)
        proxy = GmailProxy(HOST, servers.imap_port, max_sessions=2, limit_reply=reply)
        others = []
        try:
            for _ in range(2):
                c = imaplib.IMAP4(HOST, proxy.port)
                c.login(user, PASSWORD)
                others.append(c)
            assert proxy.sessions(user) == 2
            mr = mailroom(gmail_cfg(servers, user, proxy, workdir, queue))
            recs = mr.wait_log("Disconnected. Resetting...", n=2, timeout=20,
                               desc="two LOGINs refused (mailroom retried)")
            assert proxy.rejected >= 2, proxy
            assert all(r.get("permanent") is False for r in recs[:2]), recs[:2]
            if reply == "no":  # the server's text is in the log (for BYE see test_gmail_bye_alert_text_is_logged)
                assert all("Too many simultaneous connections" in r.get("error", "") for r in recs[:2]), recs[:2]
            assert recs[1]["retry_in_ms"] > recs[0]["retry_in_ms"], "no backoff between the attempts"
            assert queued_jobs(servers, queue) == []
            others.pop(0).logout()  # a slot is free
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 3 and
                               servers.status(user)["MESSAGES"] == 0, 30, "delivered once a slot is free",
                               proc=mr)
            mr.stop_ok()
            assert sorted(job_ids(queued_jobs(servers, queue))) == sorted(harness.message_id(m) for m in msgs)
            assert proxy.errors == [], proxy.errors
            cell.note(f"{proxy.rejected} LOGIN(s) refused, retries after "
                      + "/".join(str(r["retry_in_ms"]) for r in recs[:2]) + f" ms ({recs[0]['error'][:90]}), "
                      "then delivered")
        finally:
            for c in others:
                c.logout()
            proxy.close()
            servers.r.delete("queue:" + queue)


def test_gmail_bye_alert_text_is_logged(servers, workdir, mailroom, interop_table):
    """RFC 3501 §7.1: the text of an [ALERT] must be shown to the user.  A
    LOGIN refused with "* BYE [ALERT] Too many simultaneous connections.
    (Failure)" must leave that text in the log's error, not just "End of file"."""
    with Cell(interop_table, "gmail-proxy", "bye-text") as cell:
        user = servers.add_user()
        queue = unpolled_queue(servers)
        proxy = GmailProxy(HOST, servers.imap_port, max_sessions=0)  # every LOGIN refused
        try:
            mr = mailroom(gmail_cfg(servers, user, proxy, workdir, queue))
            [rec] = mr.wait_log("Disconnected. Resetting...", n=1, timeout=20, desc="the refused LOGIN logged")[:1]
            cell.note(f"logged error: {rec.get('error')!r}")
            assert "Too many simultaneous connections" in rec.get("error", ""), "the BYE text is not in the log"
            mr.stop_ok()
        finally:
            proxy.close()
            servers.r.delete("queue:" + queue)


def test_gmail_idle_dropped_by_the_server_reconnects_and_delivers(servers, workdir, mailroom, interop_table):
    """The server ends every IDLE after 1.5 s with "* BYE" and a close (Gmail:
    after about 10 minutes): mailroom reconnects, idles again and keeps
    delivering; nothing is delivered twice."""
    with Cell(interop_table, "gmail-proxy", "idle-drop") as cell:
        user = servers.add_user()
        queue = unpolled_queue(servers)
        first = make_message(0, user, subject="before any drop")
        servers.append(user, [first])
        proxy = GmailProxy(HOST, servers.imap_port, idle_drop_after=1.5)
        sent = [first]
        try:
            mr = mailroom(gmail_cfg(servers, user, proxy, workdir, queue))
            harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= 1, 20, "the first delivery", proc=mr)
            for k in (1, 2):
                drops = harness.wait_until(lambda: [e for e in proxy.events if e[1] == "idle-drop"][k - 1:] or None,
                                           20, f"IDLE drop #{k}", proc=mr)
                dropped_conn = drops[0][2]
                harness.wait_until(lambda: any(e[1] == "idle" and e[2] > dropped_conn for e in proxy.events), 20,
                                   f"mailroom idling on a new connection after drop #{k}", proc=mr)
                raw = make_message(k, user, subject=f"after drop {k}")
                sent.append(raw)
                servers.append(user, [raw])
                harness.wait_until(lambda: len(queued_jobs(servers, queue)) >= len(sent), 20,
                                   f"the message after drop #{k} delivered", proc=mr)
            harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "INBOX empty", proc=mr)
            mr.stop_ok()
            assert sorted(job_ids(queued_jobs(servers, queue))) == sorted(harness.message_id(m) for m in sent)
            resets = [r for r in mr.log_records() if r.get("action") == "Disconnected. Resetting..."]
            assert len(resets) >= 2 and all(r.get("permanent") is False for r in resets), resets
            assert proxy.errors == [], proxy.errors
            cell.note(f"{proxy.idle_dropped} IDLE drops, {proxy.accepted} connections, "
                      f"{len(sent)} delivered once each")
        finally:
            proxy.close()
            servers.r.delete("queue:" + queue)
