"""Fault injection: faults in the middle of a drain, against real servers.

Every scenario puts N messages (each with its own Message-ID) into a mailbox,
runs build/mailroom, injects one fault while mailroom is busy, lets it recover,
and then counts at the delivery target (the Sidekiq queue in Redis, read with
LRANGE, or the requests a webhook answered with 2xx):

    delivered   deliveries at the target
    distinct    distinct Message-IDs among them
    duplicates  delivered - distinct
    left        messages still in the mailbox and not flagged \\Deleted
    lost        injected messages neither delivered nor left in the mailbox

and asserts lost == 0 and duplicates == 0.  Where a duplicate cannot be avoided
(the target acknowledged, then the process or Redis died before the "delivered"
mark was written), the scenario says so in its docstring and asserts instead
that the copies carry the same Sidekiq `jid`: mailroom derives the jid from
(mailbox, UIDVALIDITY, UID), so a consumer can drop the copy.

No scenario relies on mailroom being slow or on a sleep: where the fault must
land in the middle of a drain, a gate the test controls holds the drain there
(faultproxy.FaultProxy in front of Dovecot or Redis stops one stream at a chosen
FETCH literal or Redis command), the fault is injected while it holds, and the
gate is released; where the test waits, it waits for an event it can observe
(a log record such as "delivery failed", "waiting to retry delivery" or
"Disconnected. Resetting...", a Redis key or list length, /liveness).

Each scenario adds a row to the fault table printed at the end of the run
(conftest.py; JSON in $MAILROOM_FAULT_TABLE or build/test-logs/fault-table.json),
also when it fails.  Faults that need their own servers get them (a Redis with
an append-only file, a Redis primary + replica + Sentinel, a Dovecot, all under
/tmp); the others use the session's servers, through faultproxy.FaultProxy
where the fault is on the wire.
"""
import copy
import hashlib
import imaplib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import http.server

import pytest

import harness
import mailinject
from faultproxy import FaultProxy
from mailinject import make_message

HOST = harness.HOST
N = 300                                 # messages per scenario (one FETCH batch of a Sidekiq mailbox)
BODY = ("0123456789abcdef" * 4 + "xxxxxx\r\n") * 220   # ~15 KB: a drain takes a while
FAST = {"command_timeout": 5, "connect_timeout": 5}     # every scenario: no 120 s waits
OVERSIZE_KEYWORD = "$MailroomOversize"
LPUSH = re.compile(rb"\*3\r\n\$5\r\nLPUSH\r\n")  # a Sidekiq job push, for FaultProxy.hold()
K = 60                                  # messages through before a gate closes


# ---------------------------------------------------------------- messages
def make_batch(n, user, tag, body=BODY):
    run = uuid.uuid4().hex[:12]
    return [make_message(i, user, subject=f"{tag} {i}", body=f"{tag} message {i}\r\n" + body,
                         msgid=f"<{run}.{i}.{tag}@faults.mailroom.test>") for i in range(n)]


def ids_of(msgs):
    return [harness.message_id(m) for m in msgs]


def maildir_undeleted(maildir):
    """Messages in a Maildir whose file name does not carry the T (trashed =
    \\Deleted) flag: readable while Dovecot is down."""
    n = 0
    for sub in ("new", "cur"):
        try:
            names = os.listdir(os.path.join(maildir, sub))
        except OSError:
            continue
        for name in names:
            info = name.rsplit(":2,", 1)[1] if ":2," in name else ""
            if "T" not in info:
                n += 1
    return n


# ---------------------------------------------------------------- the mailbox, read-only
def _imap(port, user, password="secret"):
    m = imaplib.IMAP4(HOST, port)
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)  # EXAMINE: changes nothing
    assert typ == "OK", data
    return m, int(data[0])


def undeleted_count(port, user):
    """Messages in INBOX not flagged \\Deleted."""
    m, exists = _imap(port, user)
    try:
        if exists == 0:
            return 0
        typ, data = m.uid("SEARCH", "UNDELETED")
        assert typ == "OK", data
        return len(data[0].split())
    finally:
        m.logout()


def mailbox_messages(port, user):
    """{Message-ID: set of flags} of the messages in INBOX not flagged \\Deleted."""
    m, exists = _imap(port, user)
    try:
        if exists == 0:
            return {}
        typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", data
        res = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            fl = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            flags = set(fl.group(1).decode().split()) - {"\\Recent"} if fl else set()
            mid = harness.message_id(item[1])
            if "\\Deleted" not in flags:
                res[mid] = flags
        return res
    finally:
        m.logout()


# ---------------------------------------------------------------- delivery targets
def digest(raw):
    return hashlib.sha1(raw).hexdigest()


def sidekiq_deliveries(client, queue):
    """[(Message-ID, jid, sha1 of the message)] of the jobs in queue:<queue>
    (nothing consumes it)."""
    out = []
    for raw in client.lrange("queue:" + queue, 0, -1):
        job = json.loads(raw)
        body = job["args"][0].encode("utf-8")
        out.append((harness.message_id(body), job.get("jid"), digest(body)))
    return out


class FaultWebhook:
    """A webhook endpoint that can fail on cue.  mode: "ok" (200), "500", or
    "hang" (hold the request for hang_s, longer than mailroom's read_timeout,
    then close the connection without an answer: not delivered).
    fail_after=(k, mode): after k requests answered 200, switch to mode by
    itself (so the fault starts in the middle of the drain, deterministically).
    fail_for=s: answer 500 from the first request on for s seconds, then 200
    (an outage of the target, timed by the target itself).  (A receiver that
    holds its answers until the test releases them: harness.WebhookReceiver.)"""

    def __init__(self, hang_s=3.0):
        self.mode = "ok"
        self.fail_after = None
        self.fail_for = None
        self.first_request = None  # (monotonic, wall clock) of the first request
        self.hang_s = hang_s
        self.requests = []  # dicts: body, status ("timeout" for a hung one), time, wall, key
        self.lock = threading.Lock()
        self._closing = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5  # an idle keep-alive connection ends its thread

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.lock:
                    now, wall = time.monotonic(), time.time()
                    if outer.first_request is None:
                        outer.first_request = (now, wall)
                    if outer.fail_after and outer.mode == "ok" and outer.count(200) >= outer.fail_after[0]:
                        outer.mode = outer.fail_after[1]
                        outer.fail_after = None
                    mode = outer.mode
                    if outer.fail_for is not None:
                        mode = "500" if now < outer.first_request[0] + outer.fail_for else "ok"
                    rec = {"body": body, "status": 200 if mode == "ok" else (500 if mode == "500" else "timeout"),
                           "time": now, "wall": wall, "key": self.headers.get("Idempotency-Key")}
                    outer.requests.append(rec)
                if mode == "hang":
                    outer._closing.wait(outer.hang_s)
                    self.close_connection = True
                    return  # no answer at all
                st = rec["status"]
                payload = b'{"success":true}' if st == 200 else b'{"message":"error"}'
                self.send_response(st)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = False
        self.server.block_on_close = True  # server_close joins the handler threads
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-webhook", daemon=True)
        self.thread.start()

    def url(self):
        return f"http://{HOST}:{self.port}/api/v4/internal/mail_room/incoming_email"

    def count(self, status=None):
        return sum(1 for r in self.requests if status is None or r["status"] == status)

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            self.fail_after = None

    def deliveries(self):
        with self.lock:
            return [(harness.message_id(r["body"]), None, digest(r["body"])) for r in self.requests
                    if r["status"] == 200]

    def close(self):
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


# ---------------------------------------------------------------- private servers
def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class AofRedis:
    """A Redis primary that keeps every acknowledged write in an append-only
    file (appendfsync always), so that it can be SIGKILLed and restarted on the
    same port without losing the jobs it acknowledged."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.port = harness.free_port()
        self.pidfile = os.path.join(directory, "redis.pid")
        self.start()

    def start(self):
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", HOST, "--dir", self.dir,
                        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                        "--daemonize", "yes", "--pidfile", self.pidfile,
                        "--logfile", os.path.join(self.dir, "redis.log")],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30)
        c = self.client()

        def up():
            try:
                return c.ping() and c.info("persistence").get("loading") == 0
            except Exception:  # noqa: BLE001
                return False
        harness.wait_until(up, 20, f"redis on {self.port} to answer")

    @property
    def pid(self):
        with open(self.pidfile) as fh:
            return int(fh.read().strip())

    def kill(self):
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        harness.wait_until(lambda: not _pid_alive(pid), 10, "the killed redis to be gone")
        os.unlink(self.pidfile)

    def stop(self):
        try:
            pid = self.pid
        except OSError:
            return
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                harness.wait_until(lambda: not _pid_alive(pid), 10, "redis to stop")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def client(self):
        import redis
        return redis.Redis(host=HOST, port=self.port, socket_timeout=10)


class SentinelSet:
    """A private Redis primary + replica + Sentinel (tests/servers/start-redis.sh)."""

    def __init__(self, directory, name="mymaster"):
        self.dir = directory
        self.name = name
        env = dict(os.environ, REDIS_PORT="0", REDIS_REPLICA="1", REDIS_SENTINEL="1",
                   SENTINEL_MASTER_NAME=name)
        env.pop("REDIS_REPLICA_PORT", None)
        env.pop("SENTINEL_PORT", None)
        os.makedirs(directory, exist_ok=True)
        envfile = os.path.join(directory, "env.sh")
        with open(envfile, "w") as out, open(os.path.join(directory, "start.log"), "w") as err:
            rc = subprocess.run([os.path.join(harness.SERVERS, "start-redis.sh"), directory], env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=60).returncode
        if rc != 0:
            with open(os.path.join(directory, "start.log")) as fh:
                raise RuntimeError("start-redis.sh (sentinel) failed:\n" + fh.read())
        e = harness.parse_env_file(envfile)
        self.master_port = int(e["REDIS_PORT"])
        self.replica_port = int(e["REDIS_REPLICA_PORT"])
        self.sentinel_port = int(e["SENTINEL_PORT"])

    def client(self, port):
        import redis
        return redis.Redis(host=HOST, port=port, socket_timeout=10)

    def sentinel(self, *args):
        return self.client(self.sentinel_port).execute_command("SENTINEL", *args)

    def master_addr(self):
        r = self.sentinel("GET-MASTER-ADDR-BY-NAME", self.name)
        if not r:
            return None
        host, port = r
        return (host.decode() if isinstance(host, bytes) else host), int(port)

    def replica_known(self):
        """The Sentinel sees the replica as healthy (otherwise it cannot fail over)."""
        for rep in self.sentinel("REPLICAS", self.name) or []:
            d = rep if isinstance(rep, dict) else {rep[i].decode(): rep[i + 1] for i in range(0, len(rep), 2)}
            flags = d.get("flags", b"")
            flags = flags.decode() if isinstance(flags, bytes) else str(flags)
            if "slave" in flags and "down" not in flags and "disconnected" not in flags:
                return True
        return False

    def pid(self, port):
        with open(os.path.join(self.dir, f"redis-{port}.pid")) as fh:
            return int(fh.read().strip())

    def stop(self):
        subprocess.run([os.path.join(harness.SERVERS, "stop-redis.sh"), self.dir], timeout=60,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PrivateDovecot:
    """A Dovecot of this test alone (tests/servers/start-dovecot.sh) in a temp
    dir under /tmp, restartable on the same ports."""

    def __init__(self, user="fault"):
        self.dir = tempfile.mkdtemp(prefix="mailroom-fault-dovecot.", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.user = user
        self.ports = {}
        self.start()

    def start(self):
        env = dict(os.environ, DOVECOT_USERS=self.user, DOVECOT_PASSWORD="secret")
        for k in ("DOVECOT_IMAP_PORT", "DOVECOT_IMAPS_PORT", "DOVECOT_LMTP_PORT"):
            env[k] = str(self.ports.get(k, 0))
        envfile = os.path.join(self.dir, "env.sh")
        log = os.path.join(self.dir, "start.log")
        with open(envfile, "w") as out, open(log, "w") as err:
            rc = subprocess.run([os.path.join(harness.SERVERS, "start-dovecot.sh"), self.dir], env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=60).returncode
        if rc != 0:
            with open(log) as fh:
                raise RuntimeError("start-dovecot.sh failed:\n" + fh.read())
        self.env = harness.parse_env_file(envfile)
        for k in ("DOVECOT_IMAP_PORT", "DOVECOT_IMAPS_PORT", "DOVECOT_LMTP_PORT"):
            self.ports[k] = int(self.env[k])
        self.imap_port = self.ports["DOVECOT_IMAP_PORT"]
        self.maildir = mailinject.user_maildir(self.user, self.env["DOVECOT_MAIL_DIR"])

    def stop(self):
        subprocess.run([os.path.join(harness.SERVERS, "stop-dovecot.sh"), self.dir], timeout=60,
                       stdin=subprocess.DEVNULL)

    def terminate(self):
        """SIGTERM to the master and, at the same moment, to its children (the
        master alone takes a while to bring the imap processes down); returns
        once the master is gone."""
        pid = int(self.env["DOVECOT_PID"])
        children = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/stat") as fh:
                        if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                            children.append(int(p))
                except (OSError, ValueError, IndexError):
                    pass
        for c in children:
            try:
                os.kill(c, signal.SIGTERM)
            except OSError:
                pass
        os.kill(pid, signal.SIGTERM)
        harness.wait_until(lambda: not _pid_alive(pid), 20, "Dovecot to stop", interval=0.02)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- configuration
def fault_mailbox(servers, user, workdir, name, delivery, *, port=None, arbitration=None, **mb):
    """A mailbox entry: plaintext IMAP (allow_plaintext_login), delete + expunge
    after delivery, short command/connect timeouts, a JSON log per instance."""
    opts = dict(FAST)
    opts.update(mb)
    m = harness.imap_mailbox(servers, user, delete=True, expunge=True,
                             log_path=str(workdir / f"{name}.log"), allow_plaintext_login=True, **opts)
    if port is not None:
        m["port"] = port
    m.update(delivery)
    if arbitration:
        m.update(arbitration)
    return {"mailboxes": [m]}


def renamed(cfg, workdir, name):
    """The same config for another instance, logging to its own file."""
    c = copy.deepcopy(cfg)
    for mb in c["mailboxes"]:
        mb["logger"] = {"log_path": str(workdir / f"{name}.log")}
    return c


def sentinel_opts(ss):
    """mail_room's sentinel form: the redis_url host is the master name."""
    return {"redis_url": f"redis://{ss.name}", "sentinels": [{"host": HOST, "port": ss.sentinel_port}]}


# ---------------------------------------------------------------- counting
class Tally:
    """Counts one scenario at the end and records its row in the fault table,
    also when the scenario fails half way (then with outcome FAIL).

    injected: the raw messages put into the mailbox; deliverable: those of
    them that must be delivered (default: all).
    deliveries(): [(Message-ID, jid or None, sha1 of the bytes)] at the target;
    each must be byte for byte a message injected.
    in_mailbox(): {Message-ID: flags} of the messages left (not \\Deleted)."""

    def __init__(self, record, scenario, injected, deliveries, in_mailbox, deliverable=None, quick=None):
        self.quick = quick  # cheap count of deliveries (LLEN), to poll with
        self.record = record
        self.scenario = scenario
        # injected: the raw messages; each delivery must be byte for byte one of them
        self.originals = {harness.message_id(m): digest(m) for m in injected}
        injected = list(self.originals)
        if deliverable is not None:
            deliverable = ids_of(deliverable)
        self.injected = list(injected)
        self.deliverable = set(deliverable if deliverable is not None else injected)
        self.deliveries = deliveries
        self.in_mailbox = in_mailbox
        self.t0 = time.monotonic()
        self.seconds = None
        self.recorded = False
        self.note = ""
        self.fields = {}  # more columns of the row (e.g. posts_per_message)

    def add_note(self, text):
        self.note = (self.note + "; " if self.note else "") + text

    def stop_clock(self):
        if self.seconds is None:
            self.seconds = time.monotonic() - self.t0

    def count(self):
        dl = self.deliveries()
        ids = [d[0] for d in dl]
        distinct = set(ids)
        left = self.in_mailbox()
        lost = [i for i in self.injected if i not in distinct and i not in left]
        by_id = {}
        for mid, jid, _ in dl:
            by_id.setdefault(mid, []).append(jid)
        corrupt = [mid for mid, _, dg in dl if self.originals.get(mid) != dg]
        return {"deliveries": dl, "ids": ids, "distinct": distinct, "left": left, "lost": lost, "by_id": by_id,
                "duplicates": len(ids) - len(distinct), "corrupt": corrupt}

    def _row(self, c, outcome):
        row = {"scenario": self.scenario, "injected": len(self.injected),
               "delivered": len(c["ids"]) if c else None, "distinct": len(c["distinct"]) if c else None,
               "duplicates": c["duplicates"] if c else None, "lost": len(c["lost"]) if c else None,
               "left_in_mailbox": len(c["left"]) if c else None,
               "seconds": round(self.seconds if self.seconds is not None else time.monotonic() - self.t0, 2),
               "outcome": outcome}
        if c and c["corrupt"]:
            row["corrupt"] = len(c["corrupt"])
        row.update(self.fields)
        if self.note:
            row["note"] = self.note
        return row

    def check(self, *, expect_left=0, same_jid_duplicates_ok=False):
        """Count, record, and assert: nothing lost, nothing doubled (or only
        copies with one jid), expect_left messages left in the mailbox, nothing
        delivered that was not deliverable."""
        self.stop_clock()
        c = self.count()
        problems = []
        if c["lost"]:
            problems.append(f"{len(c['lost'])} message(s) lost, e.g. {c['lost'][:3]}")
        dups = {mid: jids for mid, jids in c["by_id"].items() if len(jids) > 1}
        if dups:
            odd = {mid: jids for mid, jids in dups.items() if len(set(jids)) != 1 or None in jids}
            if not same_jid_duplicates_ok:
                problems.append(f"{c['duplicates']} duplicate deliveries, e.g. {list(dups.items())[:3]}")
            elif odd:
                problems.append(f"{len(odd)} message(s) delivered twice with different jids "
                                f"(the jid must be stable per mailbox/UIDVALIDITY/UID), e.g. {list(odd.items())[:3]}")
            else:
                self.note = (self.note + "; " if self.note else "") + \
                    f"{c['duplicates']} duplicate(s), each with the jid of its original"
        if c["corrupt"]:
            problems.append(f"{len(c['corrupt'])} delivery(ies) differ from the message injected (truncated or "
                            f"altered), e.g. {c['corrupt'][:3]}")
        undeliverable = c["distinct"] - self.deliverable
        if undeliverable:
            problems.append(f"{len(undeliverable)} message(s) delivered that must not be: {sorted(undeliverable)[:3]}")
        missing = self.deliverable - c["distinct"]
        if missing and not c["lost"]:
            problems.append(f"{len(missing)} deliverable message(s) not delivered (still in the mailbox)")
        if len(c["left"]) != expect_left:
            problems.append(f"{len(c['left'])} message(s) left in the mailbox, expected {expect_left}")
        self.record(**self._row(c, "FAIL" if problems else "pass"))
        self.recorded = True
        assert not problems, f"{self.scenario}: " + "; ".join(problems)
        return c

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if not self.recorded:
            self.stop_clock()
            try:
                c = self.count()
            except Exception:  # noqa: BLE001  (a server of the scenario may be down)
                c = None
            if ev is not None:
                first = str(ev).strip().splitlines()[0] if str(ev).strip() else type(ev).__name__
                self.note = (self.note + "; " if self.note else "") + first[:200]
            self.record(**self._row(c, "FAIL" if ev is not None else "unchecked"))
            self.recorded = True
        return False


def wait_drained(tally, proc, timeout, expect_left=0, interval=0.2, also=None):
    """Until every deliverable message was delivered and expect_left messages
    are left in the mailbox (undeleted)."""
    def done():
        if tally.quick is not None and tally.quick() < len(tally.deliverable):
            return False
        got = {d[0] for d in tally.deliveries()}
        if not tally.deliverable <= got:
            return False
        if len(tally.in_mailbox()) != expect_left:
            return False
        return also() if also else True
    harness.wait_until(done, timeout, f"{tally.scenario}: all {len(tally.deliverable)} messages delivered "
                                      f"and {expect_left} left in the mailbox", interval=interval, proc=proc)


def held(gate, proc, what, timeout=60):
    """Wait until the gate holds the drain (a FaultProxy Hold)."""
    harness.wait_until(gate.held.is_set, timeout, f"the drain to reach its gate ({what})", proc=proc)


def assert_mid_drain(undeleted, total, what):
    """Called while a gate holds the drain, so it holds by construction; it
    guards the gate itself (a pattern that stopped matching, say)."""
    assert 0 < undeleted, f"the drain had finished at {what} ({total} injected): the gate did not hold"


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def proxy(servers):
    p = FaultProxy(HOST, servers.imap_port)
    yield p
    p.close()


@pytest.fixture
def drain_queue(servers, user):
    """A queue nothing consumes: its jobs stay in queue:<name> to be counted."""
    q = f"fault_{user}"
    servers.r.delete("queue:" + q)
    yield q
    servers.r.delete("queue:" + q)


def shared_setup(servers, user, tag, n=N):
    msgs = make_batch(n, user, tag)
    servers.maildir_deliver(user, msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == n, 20, f"{n} messages in INBOX")
    return msgs


def arbitration_keys(client, ns, user=None, port=None):
    """{key: (value, ttl)} of the arbitration keys under namespace ns, except
    those holding "delivered:..." (the finished ones).  With user and port,
    every key (finished ones too) must have the scoped form
    <ns>:delivered:<user>/INBOX@127.0.0.1:<port>:<uidvalidity>:<uid>."""
    out = {}
    form = re.compile(re.escape(f"{ns}:delivered:{user}/INBOX@{HOST}:{port}:") + r"\d+:\d+") \
        if user is not None else None
    for k in client.scan_iter(match=f"{ns}:*", count=1000):
        if form is not None:
            assert form.fullmatch(k.decode()), f"arbitration key {k!r} not of the form {form.pattern}"
        v = client.get(k)
        if v is not None and not v.startswith(b"delivered:"):
            out[k.decode()] = (v.decode("utf-8", "replace"), client.ttl(k))
    return out


def arbitration(url_or_opts, **extra):
    ns = f"faults:{uuid.uuid4().hex[:8]}"
    if isinstance(url_or_opts, dict):
        opts = dict(url_or_opts, namespace=ns)
        opts.update(extra)
        return {"arbitration_method": "redis", "arbitration_options": opts}
    return harness.redis_arbitration(url_or_opts, ns, **extra)


# ================================================================ Redis
def test_redis_killed_mid_drain_then_restarted(servers, user, workdir, mailroom, fault_table):
    """SIGKILL of Redis (delivery and arbitration) in the middle of a drain,
    then it comes back on the same port with its append-only file.  The gate:
    a FaultProxy between mailroom's Sidekiq client and Redis holds the job
    push after K (so K jobs are in Redis, the next ones are in flight); Redis
    is killed while it holds.  It is started again once mailroom has shown it
    noticed (a failed pass ending in "waiting to retry delivery").
    Unavoidable duplicates: a job Redis wrote but whose acknowledgement never
    reached mailroom, or whose "delivered" mark the kill prevented, is pushed
    again; such a copy must carry the same jid."""
    rs = AofRedis(str(workdir / "redis"))
    gatekeeper = FaultProxy(HOST, rs.port, name="redis-proxy")
    try:
        msgs = shared_setup(servers, user, "rediskill")
        queue = "rediskill"
        c = rs.client()
        with Tally(fault_table, "redis killed mid-drain", msgs, lambda: sidekiq_deliveries(c, queue),
                   lambda: mailbox_messages(servers.imap_port, user), quick=lambda: c.llen("queue:" + queue)) as t:
            cfg = fault_mailbox(servers, user, workdir, "mailroom",
                                harness.sidekiq_delivery(f"redis://{HOST}:{gatekeeper.port}", queue),
                                arbitration=arbitration(rs.url, claim_ttl=3))
            gate = gatekeeper.hold(LPUSH, "c2s", when="before", skip=K)
            mr = mailroom(cfg)
            held(gate, mr, f"job {K + 1} pushed")
            harness.wait_until(lambda: c.llen("queue:" + queue) == K, 10, f"the first {K} jobs in Redis", proc=mr)
            assert_mid_drain(undeleted_count(servers.imap_port, user), N, "the kill of Redis")
            rs.kill()
            gate.release()  # its connection died with Redis
            t.add_note(f"killed after {K} jobs, the next push held")
            mr.wait_log("waiting to retry delivery", desc="a failed pass ending in a backoff")
            failed = mr.records("delivery failed")
            assert failed, "no delivery failed while Redis was down\n" + mr.diagnostics()
            rs.start()
            wait_drained(t, mr, 60)
            mr.stop_ok(timeout=30)
            t.add_note(f"{len(failed)} delivery(ies) failed")
            t.check(same_jid_duplicates_ok=True)
    finally:
        gatekeeper.close()
        rs.stop()


def test_sentinel_failover_mid_drain(servers, user, workdir, mailroom, fault_table, proxy):
    """The Redis primary (found through Sentinel, for delivery and arbitration)
    dies in the middle of a drain; Sentinel promotes the replica and mailroom
    must follow it.  Redis replication is asynchronous, so to keep Redis itself
    from losing acknowledged writes the primary first refuses writes
    (min-replicas-to-write 2: NOREPLICAS errors, which mailroom must treat as a
    failed delivery) until the replica has every acknowledged write, then it is
    killed.  The gate: a FaultProxy in front of Dovecot holds the FETCH after K
    bodies; the primary starts refusing while it holds, so the deliveries of
    the bodies that follow are refused.  Unavoidable duplicates: a job pushed
    whose "delivered" mark was refused is pushed again after the claim
    expires; it must carry the same jid."""
    ss = SentinelSet(str(workdir / "sentinel"))
    try:
        harness.wait_until(ss.replica_known, 20, "the sentinel to know the replica", interval=0.1)
        msgs = shared_setup(servers, user, "sentinel")
        queue = "sentinel"
        state = {"port": ss.master_port}

        def deliveries():
            return sidekiq_deliveries(ss.client(state["port"]), queue)

        with Tally(fault_table, "sentinel failover mid-drain", msgs, deliveries,
                   lambda: mailbox_messages(servers.imap_port, user),
                   quick=lambda: ss.client(state["port"]).llen("queue:" + queue)) as t:
            opts = sentinel_opts(ss)
            cfg = fault_mailbox(servers, user, workdir, "mailroom",
                                {"delivery_method": "sidekiq",
                                 "delivery_options": dict(opts, queue=queue, worker="EmailReceiverWorker")},
                                port=proxy.port, arbitration=arbitration(opts, claim_ttl=3), command_timeout=60)
            master, replica = ss.client(ss.master_port), ss.client(ss.replica_port)
            gate = proxy.cut_in_literal(after_bytes=1000, skip=K, action="hold")
            mr = mailroom(cfg)
            held(gate, mr, f"body {K + 1}")
            harness.wait_until(lambda: master.llen("queue:" + queue) == K, 10, f"the first {K} jobs", proc=mr)
            assert_mid_drain(undeleted_count(servers.imap_port, user), N, "the primary refusing writes")
            master.config_set("min-replicas-to-write", 2)  # from now on: NOREPLICAS
            gate.release()
            mr.wait_log("delivery failed", where=lambda rec: "NOREPLICAS" in rec.get("error", ""),
                        desc="a delivery refused with NOREPLICAS")
            t.add_note(f"writes refused after {K} jobs")
            harness.wait_until(lambda: master.info("replication")["master_repl_offset"]
                               == replica.info("replication")["master_repl_offset"], 10,
                               "the replica to have every acknowledged write", interval=0.01)
            os.kill(ss.pid(ss.master_port), signal.SIGKILL)
            harness.wait_until(lambda: ss.master_addr() == (HOST, ss.replica_port), 30,
                               "Sentinel to promote the replica", interval=0.1)
            state["port"] = ss.replica_port
            wait_drained(t, mr, 60)
            mr.stop_ok(timeout=30)
            t.check(same_jid_duplicates_ok=True)
    finally:
        ss.stop()


# ================================================================ IMAP server
def test_dovecot_restarted_mid_drain(servers, workdir, mailroom, fault_table, drain_queue):
    """A private Dovecot is stopped in the middle of a drain and started again
    on the same ports (same maildir, same UIDVALIDITY).  The gate: a FaultProxy
    in front of it holds the FETCH after K bodies, whose deliveries finish
    (jobs in Redis, recorded "delivered" once the FETCH fails, not flagged: the
    batch is flagged after its FETCH); Dovecot is stopped while it holds.  It
    is started again once mailroom has noticed ("Disconnected. Resetting...").
    The K messages are then found "delivered" in the arbitration keys and only
    flagged: no duplicates."""
    dv = PrivateDovecot()
    gatekeeper = FaultProxy(HOST, dv.imap_port, name="dovecot-proxy")
    try:
        user = dv.user
        n = 500  # one FETCH batch
        msgs = make_batch(n, user, "dovecot", body=BODY * 2)
        mailinject.maildir_deliver(dv.maildir, msgs)
        r = servers.r
        with Tally(fault_table, "dovecot restarted mid-drain", msgs,
                   lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(dv.imap_port, user),
                   quick=lambda: r.llen("queue:" + drain_queue)) as t:
            cfg = fault_mailbox(servers, user, workdir, "mailroom",
                                harness.sidekiq_delivery(servers.redis_url, drain_queue), port=gatekeeper.port,
                                arbitration=arbitration(servers.redis_url, claim_ttl=3), command_timeout=60)
            gate = gatekeeper.cut_in_literal(after_bytes=1000, skip=K, action="hold")
            mr = mailroom(cfg)
            held(gate, mr, f"body {K + 1}")
            harness.wait_until(lambda: r.llen("queue:" + drain_queue) == K, 10, f"the first {K} jobs", proc=mr)
            assert_mid_drain(maildir_undeleted(dv.maildir), n, "the stop of Dovecot")
            dv.terminate()
            gate.release()
            mr.wait_log("Disconnected. Resetting...", desc="mailroom to notice Dovecot is gone")
            # The session is over: what it delivered (the K, and whatever bodies
            # Dovecot had sent into the socket buffers before it died) is in
            # Redis, recorded "delivered", and not flagged.
            first = r.llen("queue:" + drain_queue)
            t.add_note(f"stopped after {K} jobs, {first} when the session ended")
            assert mr.alive(), mr.diagnostics()
            dv.start()
            wait_drained(t, mr, 60)
            mr.stop_ok(timeout=30)
            already = sum(rec.get("already_delivered", {}).get("count", 0)
                          for rec in mr.records("Getting new messages"))
            t.add_note(f"{already} found delivered and only flagged")
            assert already == first, f"{already} messages found already delivered, expected {first}\n" + \
                mr.diagnostics()
            t.check()
    finally:
        gatekeeper.close()
        dv.stop()
        dv.remove()


def test_connection_cut_in_literal(servers, user, workdir, mailroom, fault_table, drain_queue, proxy):
    """Three times, the connection is closed after 1,000 bytes of a FETCH BODY[]
    literal (each time after another 40 messages went through); mailroom must
    reconnect, and neither deliver the cut message half nor lose the batch.
    Each time the gate holds the stream inside the literal, the test checks
    the drain is under way, arms the next cut, and closes the connection."""
    msgs = shared_setup(servers, user, "literal")
    r = servers.r
    with Tally(fault_table, "connection cut in a literal (3x)", msgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               quick=lambda: r.llen("queue:" + drain_queue)) as t:
        gate = proxy.cut_in_literal(after_bytes=1000, skip=40, action="hold")
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            port=proxy.port, arbitration=arbitration(servers.redis_url, claim_ttl=3),
                            command_timeout=60)
        mr = mailroom(cfg)
        for cut in (1, 2, 3):
            held(gate, mr, f"cut {cut}")
            assert_mid_drain(undeleted_count(servers.imap_port, user), N, f"cut {cut}")
            nxt = proxy.cut_in_literal(after_bytes=1000, skip=40, action="hold") if cut < 3 else None
            proxy.drop_all()  # 1,000 bytes of the literal went through; now the connection ends
            gate.release()
            mr.wait_log("Disconnected. Resetting...", cut, desc=f"mailroom to notice cut {cut}")
            gate = nxt
        wait_drained(t, mr, 60)
        assert proxy.cuts == 3 and proxy.accepted >= 4, proxy
        mr.stop_ok(timeout=30)
        t.add_note(f"{proxy.cuts} cuts, {proxy.accepted} connections")
        t.check()


def test_blackhole_during_idle(servers, user, workdir, mailroom, fault_table, drain_queue, proxy):
    """While mailroom idles, the server goes silent (TCP stays up, nothing
    arrives) and N messages arrive in the mailbox.  idle_timeout is 600 s, so
    only idle_check_interval (2 s) + command_timeout (2 s) can reveal the dead
    connection: mailroom must open a new one by itself, and deliver everything
    once the path is restored."""
    r = servers.r
    msgs = make_batch(N, user, "bh-idle")
    with Tally(fault_table, "black hole during IDLE", msgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               quick=lambda: r.llen("queue:" + drain_queue)) as t:
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            port=proxy.port, arbitration=arbitration(servers.redis_url, claim_ttl=3),
                            idle_timeout=600, idle_check_interval=2, command_timeout=2, connect_timeout=2)
        mr = mailroom(cfg)
        harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to enter IDLE", proc=mr)
        proxy.blackhole()
        t_fault = time.monotonic()
        before = proxy.accepted
        servers.maildir_deliver(user, msgs)
        harness.wait_until(lambda: proxy.accepted > before, 20,
                           "mailroom to notice the silent server and connect again", interval=0.05, proc=mr)
        noticed = time.monotonic() - t_fault
        assert r.llen("queue:" + drain_queue) == 0  # nothing can have passed
        proxy.restore()
        wait_drained(t, mr, 60)
        mr.stop_ok(timeout=30)
        t.add_note(f"new connection {noticed:.1f} s after the black hole began")
        t.check()


def test_blackhole_during_fetch(servers, user, workdir, mailroom, fault_table, drain_queue, proxy):
    """In the middle of a drain, 1,000 bytes into a FETCH BODY[] literal, the
    server goes silent (TCP stays up).  command_timeout (2 s) must reveal it;
    once the path is restored everything is delivered once."""
    msgs = shared_setup(servers, user, "bh-fetch")
    r = servers.r
    with Tally(fault_table, "black hole during FETCH", msgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               quick=lambda: r.llen("queue:" + drain_queue)) as t:
        proxy.cut_in_literal(after_bytes=1000, times=1, skip=60, action="blackhole")
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            port=proxy.port, arbitration=arbitration(servers.redis_url, claim_ttl=3),
                            command_timeout=2, connect_timeout=2)
        mr = mailroom(cfg)
        harness.wait_until(lambda: proxy.cuts >= 1, 30, "the black hole in a FETCH", proc=mr)
        t_fault = time.monotonic()
        t.add_note(f"black hole after {r.llen('queue:' + drain_queue)} jobs")
        before = proxy.accepted
        assert proxy.blackholed
        assert_mid_drain(undeleted_count(servers.imap_port, user), N, "the black hole")
        harness.wait_until(lambda: proxy.accepted > before, 20,
                           "mailroom to give up the silent FETCH and connect again", interval=0.05, proc=mr)
        noticed = time.monotonic() - t_fault
        proxy.restore()
        wait_drained(t, mr, 60)
        mr.stop_ok(timeout=30)
        t.add_note(f"new connection {noticed:.1f} s after the black hole began")
        t.check()


# ================================================================ webhook
def _webhook_scenario(servers, user, workdir, mailroom, fault_table, name, mode):
    """After N/3 deliveries (counted by the webhook itself) it starts failing;
    it goes on failing until mailroom has retried once (a second failed pass,
    seen as a second "waiting to retry delivery"), then answers 200."""
    w = FaultWebhook()
    try:
        msgs = shared_setup(servers, user, f"webhook-{mode}")
        with Tally(fault_table, name, msgs, w.deliveries,
                   lambda: mailbox_messages(servers.imap_port, user), quick=lambda: w.count(200)) as t:
            w.fail_after = (N // 3, mode)
            delivery = {"delivery_method": "postback",
                        "delivery_options": {"delivery_url": w.url(), "content_type": "text/plain",
                                             "open_timeout": 2, "read_timeout": 1}}
            mr = mailroom(fault_mailbox(servers, user, workdir, "mailroom", delivery))
            failing = 500 if mode == "500" else "timeout"
            harness.wait_until(lambda: w.count(failing) >= 1, 30, f"the webhook to start failing ({mode})", proc=mr)
            t.add_note(f"failing after {w.count(200)} deliveries")
            # the fault lasts until mailroom retried: two failed passes, each ending in a backoff
            waits = mr.wait_log("waiting to retry delivery", 2, timeout=60, desc="a failed pass and a failed retry")
            w.set_mode("ok")
            wait_drained(t, mr, 60)
            mr.stop_ok(timeout=30)
            t.add_note(f"{w.count(failing)} failed request(s) in {len(mr.records('waiting to retry delivery'))} "
                       f"failed passes, backoff {'/'.join(str(x['backoff_ms']) for x in waits)} ms")
            t.check()
    finally:
        w.close()


def test_webhook_500_then_recovers(servers, user, workdir, mailroom, fault_table):
    """After N/3 messages the webhook answers 500 until mailroom has retried
    once: those messages stay in the mailbox and are delivered once it answers
    200 again."""
    _webhook_scenario(servers, user, workdir, mailroom, fault_table, "webhook 500, 2 failed passes", "500")


def test_webhook_timeout_then_recovers(servers, user, workdir, mailroom, fault_table):
    """After N/3 messages the webhook stops answering (read_timeout is 1 s; a
    held request is closed without an answer after 3 s, so it was not
    delivered) until mailroom has retried once: those messages are delivered
    once it answers again."""
    _webhook_scenario(servers, user, workdir, mailroom, fault_table, "webhook timing out, 2 failed passes", "hang")


def _backoff_steps(n, idle_timeout):
    """The backoff of n failed passes that delivered nothing (README): 2 s,
    doubling, at most 5 min and at most idle_timeout."""
    return [min(2000 * 2 ** i, 300_000, idle_timeout * 1000) for i in range(n)]


def _webhook_outage(servers, user, workdir, mailroom, fault_table, outage):
    """The webhook answers 500 from its first request for `outage` seconds,
    then 200, while N messages arrive (appended while mailroom runs: 30, then
    the rest once the first failed pass has ended, i.e. during its backoff).
    Redis arbitration, idle_timeout 60.  Checks: each message delivered once
    (by Idempotency-Key and Message-ID), none left; the failed passes follow
    the backoff schedule (new mail starts no pass), so the POSTs are bounded
    (at most 4 per failed pass: 4 at once, none sent once one failed); the
    retry after the outage starts at most one backoff step after it ended."""
    idle_timeout = 60
    w = FaultWebhook()
    w.fail_for = outage
    try:
        msgs = make_batch(N, user, f"outage{outage}")
        with Tally(fault_table, f"webhook 500 for {outage} s", msgs, w.deliveries,
                   lambda: mailbox_messages(servers.imap_port, user), quick=lambda: w.count(200)) as t:
            delivery = {"delivery_method": "postback",
                        "delivery_options": {"delivery_url": w.url(), "content_type": "text/plain"}}
            mr = mailroom(fault_mailbox(servers, user, workdir, "mailroom", delivery, idle_timeout=idle_timeout,
                                        arbitration=arbitration(servers.redis_url)))
            harness.wait_until(lambda: servers.idle_sessions(user) == 1, 20, "mailroom to idle", proc=mr)
            servers.append(user, msgs[:30])
            mr.wait_log("waiting to retry delivery", desc="the first failed pass to end in a backoff")
            for i in range(30, N, 30):
                servers.append(user, msgs[i:i + 30])
            wait_drained(t, mr, outage + 120)
            mr.stop_ok(timeout=30)

            with w.lock:
                reqs = list(w.requests)
            recovery = w.first_request[1] + outage  # wall clock
            ok = [q for q in reqs if q["status"] == 200]
            posts, failed_posts = len(reqs), len(reqs) - len(ok)
            recs = mr.log_records()
            waits = [x for x in recs if x.get("action") == "waiting to retry delivery"]
            steps = [x["backoff_ms"] for x in waits]
            # the pass that delivered: the first to start after the last backoff began
            last_wait = harness.log_time(waits[-1])
            retry_start = next(harness.log_time(x) for x in recs if x.get("action") == "Processing started"
                               and harness.log_time(x) >= last_wait)
            first_ok, last_ok = min(q["wall"] for q in ok), max(q["wall"] for q in ok)
            step = steps[-1] / 1000
            pass_s = last_ok - retry_start
            to_last = last_ok - recovery
            keys = [q["key"] for q in ok]
            t.fields.update(posts=posts, posts_per_message=round(posts / N, 3))
            t.add_note(f"{posts} POSTs ({failed_posts} answered 500) = {posts / N:.3f} per message; "
                       f"{len(waits)} failed passes, backoff steps {'/'.join(str(x // 1000) for x in steps)} s; "
                       f"recovery -> retry pass {retry_start - recovery:+.1f} s (step {step:.0f} s), "
                       f"-> first delivery {first_ok - recovery:+.1f} s, "
                       f"recovery -> last delivery {to_last:.1f} s (pass {pass_s:.1f} s)")
            assert len(keys) == N and len(set(keys)) == N and None not in keys, \
                f"{len(ok)} deliveries, {len(set(keys))} distinct Idempotency-Keys for {N} messages"
            # every failed pass delivered nothing: the schedule doubles from 2 s, capped at idle_timeout
            assert steps == _backoff_steps(len(waits), idle_timeout), steps
            # passes at 0, 2, 6, 14, 30, 62 s ... (at the earliest): those starting inside the outage fail
            starts, at = [], 0
            for st in _backoff_steps(20, idle_timeout):
                if at >= outage:
                    break
                starts.append(at)
                at += st / 1000
            assert len(waits) <= len(starts) + 1, \
                f"{len(waits)} failed passes in a {outage} s outage (schedule: {len(starts)}): new mail started passes"
            assert failed_posts <= 4 * len(waits), f"{failed_posts} failed POSTs in {len(waits)} failed passes"
            assert not [x for x in recs if x.get("action") == "delivery failed" and harness.log_time(x) > retry_start]
            assert retry_start - recovery <= step + 1.0, \
                f"the retry began {retry_start - recovery:.1f} s after the recovery; the step was {step:.0f} s"
            assert to_last <= step + pass_s + 1.0
            t.check()
    finally:
        w.close()


def test_webhook_500_for_10s(servers, user, workdir, mailroom, fault_table):
    _webhook_outage(servers, user, workdir, mailroom, fault_table, 10)


def test_webhook_500_for_60s(servers, user, workdir, mailroom, fault_table):
    _webhook_outage(servers, user, workdir, mailroom, fault_table, 60)


# ================================================================ the process
def test_sigterm_mid_drain_then_restart(servers, user, workdir, mailroom, fault_table, drain_queue, proxy):
    """SIGTERM in the middle of a drain (exit 0), then a new start delivers the
    rest.  The gate holds the FETCH after K bodies; SIGTERM lands while it
    holds; once /liveness answers 500 (the signal was taken) it is released:
    exactly the K deliveries started before the signal are made."""
    msgs = shared_setup(servers, user, "sigterm")
    r = servers.r
    with Tally(fault_table, "SIGTERM mid-drain, restart", msgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               quick=lambda: r.llen("queue:" + drain_queue)) as t:
        health = harness.free_port()
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            port=proxy.port, arbitration=arbitration(servers.redis_url, claim_ttl=3),
                            command_timeout=60)
        cfg["health_check"] = {"address": HOST, "port": health}
        gate = proxy.cut_in_literal(after_bytes=1000, skip=K, action="hold")
        mr = mailroom(cfg)
        held(gate, mr, f"body {K + 1}")
        # The proxy has passed K literals on; the signal follows mailroom's
        # reading them (a body read after it is not sent).
        mr.wait_log("sending to deliverer", K, desc=f"the {K} bodies before the gate handed over")
        mr.proc.send_signal(signal.SIGTERM)
        harness.wait_http_status(f"http://{HOST}:{health}/liveness", 500, 10, "SIGTERM taken", proc=mr)
        gate.release()
        took = mr.wait_exit_ok(30)
        jobs = r.llen("queue:" + drain_queue)
        t.add_note(f"stopped after {jobs} jobs, exit 0 in {took:.2f} s after the gate opened")
        assert jobs == K, f"{jobs} jobs: exactly the {K} started before SIGTERM must be delivered"
        assert_mid_drain(undeleted_count(servers.imap_port, user), N, "SIGTERM")
        cfg2 = renamed(cfg, workdir, "mailroom-restart")
        del cfg2["health_check"]
        mr2 = mailroom(cfg2, name="mailroom-restart")  # through the proxy: the same server identity
        wait_drained(t, mr2, 60)
        mr2.stop_ok(timeout=30)
        t.check()


def test_sigkill_mid_drain_then_restart(servers, user, workdir, mailroom, fault_table, drain_queue):
    """SIGKILL in the middle of a drain, then a new start (claim_ttl 10 s, so
    that the claims of the killed process expire soon and the new start must
    pick those messages up by itself, without new mail and long before
    idle_timeout).  The gate: a FaultProxy between mailroom's Sidekiq client
    and Redis holds the push after K jobs; the kill comes while it holds, so
    the claims of the whole batch are outstanding (asserted) and K jobs were
    pushed whose "delivered" mark was never written.  Those K are pushed
    again by the new start: unavoidable duplicates, each with the jid of its
    original."""
    msgs = shared_setup(servers, user, "sigkill")
    r = servers.r
    key = "queue:" + drain_queue
    gatekeeper = FaultProxy(HOST, servers.redis_port, name="redis-proxy")
    try:
        with Tally(fault_table, "SIGKILL mid-drain, restart", msgs,
                   lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
                   quick=lambda: r.llen(key)) as t:
            # claim_ttl 10 s: the claims must still be there when the test counts them
            arb = arbitration(servers.redis_url, claim_ttl=10)
            ns = arb["arbitration_options"]["namespace"]
            cfg = fault_mailbox(servers, user, workdir, "mailroom",
                                harness.sidekiq_delivery(f"redis://{HOST}:{gatekeeper.port}", drain_queue),
                                arbitration=arb)
            gate = gatekeeper.hold(LPUSH, "c2s", when="before", skip=K)
            mr = mailroom(cfg)
            held(gate, mr, f"job {K + 1} pushed")
            harness.wait_until(lambda: r.llen(key) == K, 10, f"the first {K} jobs in Redis", proc=mr)
            mr.kill()
            # What mailroom wrote behind the held push dies with it (released,
            # the proxy would still forward it to Redis).
            gatekeeper.drop_all()
            gate.release()
            claims = arbitration_keys(r, ns, user, servers.imap_port)
            assert_mid_drain(undeleted_count(servers.imap_port, user), N, "SIGKILL")
            assert len(claims) == N and all(v.startswith("claimed:") and 0 < ttl <= 10 for v, ttl in claims.values()), \
                f"{len(claims)} claims outstanding at the kill, expected {N}: {list(claims.items())[:3]}"
            t.add_note(f"killed after {K} jobs with {len(claims)} claims outstanding")
            cfg2 = renamed(cfg, workdir, "mailroom-restart")
            cfg2["mailboxes"][0]["delivery_options"]["redis_url"] = servers.redis_url
            t_restart = time.monotonic()
            mr2 = mailroom(cfg2, name="mailroom-restart")
            wait_drained(t, mr2, 60)
            took = time.monotonic() - t_restart
            t.add_note(f"restart -> all delivered in {took:.1f} s")
            # The stale claims expire within claim_ttl of the kill and the new
            # process looks again every quarter claim_ttl: 12.5 s at most.
            assert took < 15, f"{took:.1f} s from the restart until every message was delivered"
            mr2.stop_ok(timeout=30)
            assert not arbitration_keys(r, ns, user, servers.imap_port), "claims left after the drain"
            c = t.check(same_jid_duplicates_ok=True)
            assert c["duplicates"] == K, f"{c['duplicates']} duplicates, expected the {K} pushed before the kill"
    finally:
        gatekeeper.close()


def test_claims_of_a_killed_instance_pass_to_another_within_15s(servers, user, workdir, mailroom, fault_table,
                                                               drain_queue):
    """Two instances on one mailbox, the default claim_ttl (10 s).  A delivers to
    a webhook that holds its answers (a 60 s response timeout), so A holds the
    claims of the whole batch (20 messages, a webhook batch) with its
    deliveries running.  B, delivering to Sidekiq, keeps finding them taken;
    after B's fifth look (10 s, a claim_ttl, after its first) they are still
    outstanding and nothing was delivered: A renews them.  Then A is
    SIGKILLed: its claims expire within claim_ttl and B, looking every
    claim_ttl / 4, delivers all 20, each once, within 1.25 x claim_ttl."""
    n = 20
    msgs = shared_setup(servers, user, "claimkill", n=n)
    r = servers.r
    key = "queue:" + drain_queue
    w = harness.WebhookReceiver()
    try:
        with Tally(fault_table, "SIGKILL of the claim holder, another instance", msgs,
                   lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
                   quick=lambda: r.llen(key)) as t:
            arb = arbitration(servers.redis_url)  # claim_ttl: the default
            ns = arb["arbitration_options"]["namespace"]
            w.hold()
            webhook = {"delivery_method": "postback",
                       "delivery_options": {"delivery_url": w.url(), "content_type": "text/plain",
                                            "read_timeout": 60}}
            a = mailroom(fault_mailbox(servers, user, workdir, "mailroom-a", webhook,
                                       arbitration=copy.deepcopy(arb)), name="mailroom-a")
            harness.wait_until(w.held.is_set, 30, "A's first webhook request to be held", proc=a)
            b = mailroom(fault_mailbox(servers, user, workdir, "mailroom-b",
                                       harness.sidekiq_delivery(servers.redis_url, drain_queue),
                                       arbitration=copy.deepcopy(arb)), name="mailroom-b")
            b.wait_log("Getting new messages", 5, timeout=40, desc="B's fifth look at the claimed messages")
            claims = arbitration_keys(r, ns, user, servers.imap_port)
            assert len(claims) == n and all(v.startswith("claimed:") for v, _ in claims.values()), \
                f"{len(claims)} claims outstanding after B's fifth look, expected {n}"
            assert r.llen(key) == 0 and not b.records("sending to deliverer"), "B delivered while A held the claims"
            t.add_note(f"A's {len(claims)} claims still held at B's fifth look")
            t0 = time.monotonic()
            a.kill()
            wait_drained(t, b, 30)
            took = time.monotonic() - t0
            t.add_note(f"A killed -> all {n} delivered by B in {took:.1f} s")
            assert took < 15, f"B took {took:.1f} s after the kill (claim_ttl 10 s, a look every 2.5 s)"
            b.stop_ok(timeout=30)
            assert not arbitration_keys(r, ns, user, servers.imap_port), "claims left after the drain"
            t.check()
    finally:
        w.close()


@pytest.mark.parametrize("instances", [2, 3])
def test_instances_share_a_mailbox(servers, user, workdir, mailroom, fault_table, drain_queue, instances):
    """k instances with redis arbitration start together on a full mailbox:
    every message is delivered exactly once."""
    msgs = shared_setup(servers, user, f"x{instances}")
    r = servers.r
    with Tally(fault_table, f"{instances} instances, one mailbox", msgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               quick=lambda: r.llen("queue:" + drain_queue)) as t:
        arb = arbitration(servers.redis_url)
        procs = []
        for k in range(instances):
            cfg = fault_mailbox(servers, user, workdir, f"mailroom{k}",
                                harness.sidekiq_delivery(servers.redis_url, drain_queue), arbitration=copy.deepcopy(arb))
            procs.append(mailroom(cfg, name=f"mailroom{k}"))
        wait_drained(t, procs[0], 60)
        for p in procs:
            assert p.alive(), p.diagnostics()
        for p in procs:
            p.stop_ok(timeout=30)
        per = [sum(1 for rec in p.log_records() if rec.get("action") == "sending to deliverer") for p in procs]
        t.add_note("deliveries per instance: " + "/".join(map(str, per)))
        t.check()


def test_oversize_message_left_in_mailbox(servers, user, workdir, mailroom, fault_table, drain_queue):
    """One message larger than max_message_size among normal ones: it is never
    delivered and stays in the mailbox, unseen, with the $MailroomOversize
    keyword; all the others are delivered."""
    n = 100
    msgs = make_batch(n, user, "oversize")
    big = make_message(0, user, subject="too big", msgid=f"<{uuid.uuid4().hex}.big@faults.mailroom.test>",
                       body=("y" * 78 + "\r\n") * 4000)  # ~320 KB
    assert len(big) > 200_000
    allmsgs = msgs[:n // 2] + [big] + msgs[n // 2:]
    servers.append(user, allmsgs)
    big_id = harness.message_id(big)
    r = servers.r
    with Tally(fault_table, "oversize message among 100", allmsgs,
               lambda: sidekiq_deliveries(r, drain_queue), lambda: mailbox_messages(servers.imap_port, user),
               deliverable=msgs) as t:
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            max_message_size=200_000)
        mr = mailroom(cfg)
        flagged = lambda: OVERSIZE_KEYWORD in mailbox_messages(servers.imap_port, user).get(big_id, set())  # noqa: E731
        try:
            wait_drained(t, mr, 60, expect_left=1, also=flagged)
        except AssertionError:
            if big_id in {d[0] for d in t.deliveries()}:
                raise AssertionError("the oversize message was delivered\n" + mr.diagnostics())
            raise
        left = mailbox_messages(servers.imap_port, user)
        assert set(left) == {big_id}, left
        assert "\\Seen" not in left[big_id] and OVERSIZE_KEYWORD in left[big_id], left[big_id]
        mr.stop_ok(timeout=30)
        t.add_note(f"the oversize one left with {sorted(left[big_id])}")
        t.check(expect_left=1)


def test_wrong_password_exits_at_startup(servers, user, workdir, mailroom, fault_table, drain_queue):
    """A rejected login at start-up: exit 1 with a clear message naming the
    mailbox (not the password), nothing delivered, every message still there."""
    n = 100
    msgs = make_batch(n, user, "wrongpw")
    servers.maildir_deliver(user, msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == n, 20, f"{n} messages in INBOX")
    r = servers.r
    secret = f"Wr0ng-{uuid.uuid4().hex[:10]}"
    with Tally(fault_table, "wrong password", msgs, lambda: sidekiq_deliveries(r, drain_queue),
               lambda: mailbox_messages(servers.imap_port, user), deliverable=[]) as t:
        cfg = fault_mailbox(servers, user, workdir, "mailroom", harness.sidekiq_delivery(servers.redis_url, drain_queue),
                            password=secret)
        mr = mailroom(cfg)
        rc, took = mr.wait_exit(30)
        out = mr.all_output()
        assert rc == 1, f"exit code {rc}\n" + mr.diagnostics()
        assert user in mr.stderr, "stderr does not name the mailbox\n" + mr.diagnostics()
        assert re.search(r"login|authenticat|credentials|password", mr.stderr, re.I), \
            "stderr does not say the login was rejected\n" + mr.diagnostics()
        assert secret not in out, "the password appears in the output"
        left = mailbox_messages(servers.imap_port, user)
        assert all("\\Seen" not in f for f in left.values()), "a message was marked \\Seen"
        last = (mr.stderr.strip().splitlines() or [""])[-1]
        t.add_note(f"exit {rc} after {took:.1f} s: {last[:120]}")
        t.check(expect_left=n)
