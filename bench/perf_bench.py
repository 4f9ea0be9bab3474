#!/usr/bin/env python3
"""Performance benchmark of the service (the numbers in bench/RESULTS.md).

Starts its own Dovecot and Redis (tests/servers, via core_bench's helpers;
PostgreSQL too for the que scenario),
raises Dovecot's connection limits in its private config, then runs:

* drain-4k:  10,000 messages of ~4 KB pre-loaded (Maildir files named with
  ",S=<size>,W=<CRLF size>" as Dovecot's LDA/LMTP names them, so RFC822.SIZE
  needs no read of the file; indexed before the clock starts), mailroom with sidekiq delivery + delete_after_delivery +
  expunge_deleted: wall time from process start until every job is in Redis
  and the mailbox is empty; messages/s, MB/s, peak RSS (VmHWM), CPU seconds
  (utime+stime) per 1,000 messages.
* drain-5m:  the same with 100 messages of ~5 MB; peak RSS compared with the
  RSS of the same process idling on an empty mailbox.
* limits, same run, same mailbox contents, same Redis: a minimal client that
  sends one pipelined `UID FETCH 1:* BODY.PEEK[]` and reads every literal, and
  pipelined LPUSH of the same job payloads (redis-py pipeline).
* pickup:    mailroom and a minimal raw IDLE client watch the SAME mailbox;
  N messages are APPENDed one at a time (one persistent connection, clock
  starts at the tagged OK): time to the job in Redis (BLPOP) and time to the
  raw client's `* n EXISTS` for the same message; p50/p90/p99/max.
* idle:      one process watching 1, 100, 1,000 and 10,000 mailboxes (no
  mail), over IMAPS by default (--idle-transport tls: Dovecot's IMAPS port,
  implicit TLS trusting $DOVECOT_CA; plain: the IMAP port): time until all
  are selected (/readiness 200 and every mailroom_mailbox_connected 1), then
  RSS, RSS per mailbox over the 1-mailbox run, CPU % over a window, and the
  time from SIGTERM to exit.  Next to it a raw asyncio client opens the same
  N sessions all at once (mailroom starts every watcher at once, no connect
  limit), LOGIN, SELECT INBOX, IDLE, timed until every "+ idling": once
  before mailroom (Dovecot's imap processes cold), then after it with one
  process and with one per core; the fastest is the comparison.
* que:       PostgreSQL 15 started with tests/servers/start-postgres.sh, one
  database per run with Que 2.x's que_jobs (tests/integration/fixtures/que/
  que2.sql); the same N x ~4 KB (N as drain-4k) drained by mailroom twice,
  with sidekiq delivery and with que delivery (one row per message, pool of
  4 connections), delete + expunge: seconds, messages/s, peak RSS, and the
  rows in que_jobs afterwards, which must be exactly the messages loaded
  (count and md5 of args[0]; exit status 1 otherwise).  mailroom only.
  About 15 s of the full run; skipped with a note when PostgreSQL is not
  installed, unless named in --only.
* optional:  the Ruby mail_room (Debian ruby-mail-room, /usr/bin/mail_room)
  on the same scenarios, when installed (--no-ruby to skip).

Next to the limits, two rows explain the gap (not limits): the raw client's
`UID STORE 1:* +FLAGS.SILENT (\\Seen \\Deleted)` + `UID EXPUNGE 1:*`, and the
same raw client replaying mailroom's IMAP commands (batches of 500: sizes,
bodies, STORE; one UID EXPUNGE) without delivering anything.

Full run: 10,000 x 4 KB, 100 x 5 MB, 200 pickups (Ruby: 50), idle 1 / 100 /
1,000 / 10,000 mailboxes (Ruby up to 1,000), about 10 minutes.  --quick:
2,000 x 4 KB, 20 x 5 MB, 20 pickups (Ruby: 10), idle up to 1,000: about 2
minutes; its numbers are indicative only.

Prints a Markdown table and writes JSON (--json, default build/bench-results.json;
bench/results.json keeps the run recorded in bench/RESULTS.md).

usage: bench/perf_bench.py [--quick] [--json FILE] [--bin build/mailroom]
                           [--no-ruby] [--only drain,pickup,idle,que]
                           [--idle-transport tls|plain] [--idle-sizes 1,100,1000,10000]
                           [--perf-record FILE]   (profile both drains)
                           [--idle-transport tls|plain]  (default tls)
"""
import argparse
import asyncio
import glob
import hashlib
import json
import os
import platform
import queue
import resource
import select
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core_bench import ROOT, mailinject, pct, redis, start  # noqa: E402

SERVERS = os.path.join(ROOT, "tests", "servers")
QUE_FIXTURES = os.path.join(ROOT, "tests", "integration", "fixtures", "que")
SCENARIOS = {"drain", "pickup", "idle", "que"}
CLK = os.sysconf("SC_CLK_TCK")
MAIL_ROOM_RUBY = "/usr/bin/mail_room"
FETCH_BYTES = 64 << 20  # mailroom's per-batch byte budget (watcher fetch_bytes)
FETCH_BATCH = 500  # mailroom's batch for Sidekiq delivery (src/app/coordinator.cpp)

# Appended to the private dovecot.conf that start-dovecot.sh generated, for
# the idle-mailbox scenarios only (Dovecot is restarted with it): one imap
# process serves up to 500 connections (otherwise 10,000 idle clients are
# 10,000 processes), high-performance login processes, limits raised.  The
# drain and pickup scenarios run on start-dovecot.sh's configuration as is.
DOVECOT_TUNING = """
# --- perf_bench.py: many concurrent connections ---
default_client_limit = 20000
default_process_limit = 1000
default_vsz_limit = 2G
service imap {
  service_count = 0
  client_limit = 500
  process_limit = 100
}
service imap-login {
  service_count = 0
  client_limit = 5000
  process_min_avail = 2
  process_limit = 8
}
service auth {
  client_limit = 20000
}
service anvil {
  client_limit = 20000
}
"""


# ---------------------------------------------------------------- helpers
def proc_cpu(pid):
    """utime + stime of pid, seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        rest = fh.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK


def proc_mem(pid):
    """{'VmRSS': bytes, 'VmHWM': bytes}"""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def mb(b):
    return b / 1e6


def sidekiq_yaml(rport, queue_name):
    """The delivery lines of a mailbox for sidekiq delivery into queue:<queue_name>."""
    return ["    :delivery_method: sidekiq",
            "    :delivery_options:",
            f"      :redis_url: redis://127.0.0.1:{rport}/0",
            f"      :queue: {queue_name}",
            "      :worker: EmailReceiverWorker"]


def mailbox_yaml(user, port, rport, queue_name, log_path=None, arbitration=False, delete=True, delivery=None,
                 transport="plain"):
    """delivery: the delivery lines (default: sidekiq_yaml(rport, queue_name)).
    transport: "plain" (port: Dovecot's IMAP port, no TLS, plaintext LOGIN
    allowed) or "tls" (port: Dovecot's IMAPS port, implicit TLS trusting the
    test CA $DOVECOT_CA, as tests/integration/harness.py imap_mailbox writes it)."""
    if transport == "plain":
        conn = [f"    :port: {port}", "    :ssl: false", "    :allow_plaintext_login: true"]
    elif transport == "tls":
        conn = [f"    :port: {port}", "    :ssl:", f"      :ca_file: {os.environ['DOVECOT_CA']}",
                "    :start_tls: false"]
    else:
        raise ValueError(transport)
    lines = [
        "  -",
        "    :host: 127.0.0.1",
        *conn,
        f"    :email: {user}",
        "    :password: secret",
        "    :name: inbox",
        "    :idle_timeout: 600",
        f"    :delete_after_delivery: {'true' if delete else 'false'}",
        f"    :expunge_deleted: {'true' if delete else 'false'}",
        *(delivery if delivery is not None else sidekiq_yaml(rport, queue_name)),
    ]
    if log_path:
        lines += ["    :logger:", f"      :log_path: {log_path}"]
    if arbitration:
        lines += ["    :arbitration_method: redis", "    :arbitration_options:",
                  f"      :redis_url: redis://127.0.0.1:{rport}/0", "      :namespace: bench"]
    return "\n".join(lines) + "\n"


def write_config(path, users, port, rport, queue_name, log_path=None, health_port=None, delivery=None,
                 transport="plain"):
    with open(path, "w") as fh:
        if health_port:
            fh.write(f":health_check:\n  :address: 127.0.0.1\n  :port: {health_port}\n")
        fh.write(":mailboxes:\n")
        for u in users:
            fh.write(mailbox_yaml(u, port, rport, queue_name, log_path, delivery=delivery, transport=transport))


class Impl:
    """How to start one implementation on a config file."""

    def __init__(self, name, argv):
        self.name, self.argv = name, argv

    def popen(self, cfg, log, wrap=()):
        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
        return subprocess.Popen([*wrap, *self.argv, "-c", cfg], stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=limits)


def stop(p, timeout=30):
    """SIGTERM, then SIGKILL after timeout s.  Returns (seconds from SIGTERM
    to exit, exit status), or (None, status) when it had already exited or
    needed the SIGKILL."""
    if p.poll() is not None:
        return None, p.returncode
    t0 = time.monotonic()
    p.terminate()
    try:
        p.wait(timeout)
        return time.monotonic() - t0, p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None, p.returncode


# ---------------------------------------------------------------- Dovecot setup
def tune_dovecot(ddir):
    conf = os.path.join(ddir, "dovecot.conf")
    with open(conf, "a") as fh:
        fh.write(DOVECOT_TUNING)
    subprocess.run([os.path.join(SERVERS, "stop-dovecot.sh"), ddir], check=True, capture_output=True)
    subprocess.run(["doveconf", "-c", conf, "-n"], check=True, capture_output=True)
    subprocess.run(["dovecot", "-c", conf], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = int(os.environ["DOVECOT_IMAP_PORT"])
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4) == b"* OK":
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("tuned dovecot did not come up; see " + ddir + "/log/dovecot.log")
        time.sleep(0.05)


def add_users(names):
    """Many users at once (mailinject.add_user appends one line per call; this
    creates the maildirs the same way and writes the lines in one go)."""
    users_file, mail_dir = os.environ["DOVECOT_USERS_FILE"], os.environ["DOVECOT_MAIL_DIR"]
    parent = os.stat(mail_dir)
    lines = []
    for u in names:
        home = os.path.join(mail_dir, u)
        for d in (home, f"{home}/Maildir", f"{home}/Maildir/cur", f"{home}/Maildir/new", f"{home}/Maildir/tmp"):
            os.makedirs(d, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(d, parent.st_uid, parent.st_gid)
        lines.append(f"{u}:{{PLAIN}}secret::::{home}\n")
    with open(users_file, "a") as fh:
        fh.write("".join(lines))


def load(user, msgs):
    mailinject.maildir_deliver(mailinject.user_maildir(user), msgs, size_hints=True)
    st = mailinject.status(user)  # Dovecot indexes them now, not on the clock
    assert st["MESSAGES"] == len(msgs), st


def make_messages(n, size, tag):
    line = "x" * 76 + "\r\n"
    body = line * max(1, size // len(line))
    return [mailinject.make_message(i, tag, body=body) for i in range(n)]


# ---------------------------------------------------------------- limits
class RawImap:
    """A minimal IMAP client: plain socket, literals skipped, not parsed."""

    def __init__(self, user, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf, self.pos = b"", 0
        self.line()
        self.cmd(b"a", f"LOGIN {user} secret".encode())
        self.cmd(b"b", b"SELECT INBOX")

    def fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("server closed")
        self.buf = self.buf[self.pos:] + d
        self.pos = 0

    def line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                ln = self.buf[self.pos:i]
                self.pos = i + 2
                return ln
            self.fill()

    def skip(self, n):
        have = len(self.buf) - self.pos
        if have >= n:
            self.pos += n
            return
        n -= have
        self.buf, self.pos = b"", 0
        while n > 0:
            d = self.s.recv(min(n, 1 << 20))
            if not d:
                raise EOFError("server closed")
            n -= len(d)

    def cmd(self, tag, text):
        self.s.sendall(tag + b" " + text + b"\r\n")
        out = []
        while True:
            ln = self.line()
            if ln.endswith(b"}") and b"{" in ln:
                self.skip(int(ln[ln.rindex(b"{") + 1:-1]))
            if ln.startswith(tag + b" "):
                if not ln.startswith(tag + b" OK"):
                    raise RuntimeError(ln)
                return out
            out.append(ln)

    def close(self):
        self.s.close()


def raw_fetch_limit(user, port):
    """Seconds for one pipelined UID FETCH 1:* BODY.PEEK[]; (seconds, messages, bytes)."""
    c = RawImap(user, port)
    t0 = time.monotonic()
    c.s.sendall(b"f UID FETCH 1:* BODY.PEEK[]\r\n")
    n = total = 0
    while True:
        ln = c.line()
        if ln.endswith(b"}"):
            size = int(ln[ln.rindex(b"{") + 1:-1])
            c.skip(size)
            n += 1
            total += size
        elif ln.startswith(b"f "):
            break
    t = time.monotonic() - t0
    # not part of the limit: what the same client needs to delete them (the
    # server-side cost of mailroom's STORE + EXPUNGE; Maildir renames/unlinks)
    t1 = time.monotonic()
    c.cmd(b"s", b"UID STORE 1:* +FLAGS.SILENT (\\Seen \\Deleted)")
    c.cmd(b"e", b"UID EXPUNGE 1:*")
    t_del = time.monotonic() - t1
    c.close()
    return t, n, total, t_del


def raw_batched(user, port, batch=FETCH_BATCH):
    """Not a limit: mailroom's IMAP conversation without delivery (per batch
    of 500: sizes, bodies, STORE \\Seen \\Deleted; one UID EXPUNGE at the
    end), one command at a time.  Seconds."""
    c = RawImap(user, port)
    t0 = time.monotonic()
    found = [ln for ln in c.cmd(b"s", b"UID SEARCH UNSEEN") if ln.startswith(b"* SEARCH")]
    uids = [int(u) for u in found[0].split()[2:]]
    for i in range(0, len(uids), batch):
        chunk = uids[i:i + batch]
        sset = b"%d:%d" % (chunk[0], chunk[-1])  # contiguous after a fresh load
        c.cmd(b"m", b"UID FETCH " + sset + b" (UID RFC822.SIZE FLAGS)")
        c.cmd(b"f", b"UID FETCH " + sset + b" (UID BODY.PEEK[])")
        c.cmd(b"t", b"UID STORE " + sset + b" +FLAGS.SILENT (\\Seen \\Deleted)")
    c.cmd(b"e", b"UID EXPUNGE %d:%d" % (uids[0], uids[-1]))
    t = time.monotonic() - t0
    c.close()
    return t


def job_payload(msg, queue_name, i):
    return json.dumps({"class": "EmailReceiverWorker", "args": [msg.decode("utf-8")], "queue": queue_name,
                       "jid": "%024x" % i, "retry": False, "enqueued_at": time.time()})


def lpush_limit(r, msgs, queue_name):
    payloads = [job_payload(m, queue_name, i) for i, m in enumerate(msgs)]
    key = f"queue:{queue_name}"
    r.delete(key)
    chunk = max(1, min(1000, (16 << 20) // max(1, len(payloads[0]))))
    t0 = time.monotonic()
    for i in range(0, len(payloads), chunk):
        p = r.pipeline(transaction=False)
        for pl in payloads[i:i + chunk]:
            p.lpush(key, pl)
        p.execute()
    t = time.monotonic() - t0
    assert r.llen(key) == len(payloads)
    r.delete(key)
    return t, sum(len(p) for p in payloads)


# ---------------------------------------------------------------- delivery targets
class SidekiqTarget:
    """The drains' default: jobs LPUSHed onto the Redis list queue:<queue_name>."""

    method = "sidekiq"
    poll = 0.005  # LLEN is O(1)

    def __init__(self, r, rport, queue_name):
        self.r, self.rport, self.queue_name = r, rport, queue_name
        self.key = f"queue:{queue_name}"

    def yaml(self):
        return sidekiq_yaml(self.rport, self.queue_name)

    def reset(self):
        self.r.delete(self.key)

    def count(self):
        return self.r.llen(self.key)

    def close(self):
        self.r.delete(self.key)


class Postgres:
    """The PostgreSQL that tests/servers/start-postgres.sh started (its
    MAILROOM_PG_* export lines, in os.environ after core_bench.start); SQL
    through psql, as tests/integration/conftest_pg.py does (no Python driver
    needed)."""

    SUPERUSER, USER, PASSWORD = "postgres", "mailroom", "secret"

    def __init__(self):
        e = os.environ
        self.host, self.port = e["MAILROOM_PG_HOST"], int(e["MAILROOM_PG_PORT"])
        self.socket_dir = e["MAILROOM_PG_SOCKET_DIR"]
        self.psql_path = shutil.which("psql") or os.path.join(e.get("MAILROOM_PG_BIN", ""), "psql")

    def _args(self, db, user):
        # the superuser over the Unix socket (trusted), mailroom over TCP with its password
        host = self.socket_dir if user == self.SUPERUSER else self.host
        return [self.psql_path, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(self.port),
                "-U", user, "-d", db]

    def _env(self, user):
        env = dict(os.environ, PGCONNECT_TIMEOUT="10", PGCLIENTENCODING="UTF8")
        env.pop("PGPASSWORD", None)
        if user == self.USER:
            env["PGPASSWORD"] = self.PASSWORD
        return env

    def psql(self, sql=None, db="postgres", user=SUPERUSER, file=None):
        args = self._args(db, user) + (["-f", file] if file else []) + (["-c", sql] if sql is not None else [])
        cp = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=self._env(user),
                            timeout=120)
        if cp.returncode != 0:
            raise RuntimeError(f"psql {' '.join(args[1:])} failed ({cp.returncode}):\n{cp.stderr}")
        return cp.stdout

    def create_que_database(self, name, schema):
        """A new database owned by mailroom with tests/integration/fixtures/que/<schema>.sql
        loaded as mailroom (as conftest_pg's que_database does)."""
        self.psql(f'CREATE DATABASE "{name}" OWNER "{self.USER}"')
        self.psql(db=name, user=self.USER, file=os.path.join(QUE_FIXTURES, f"{schema}.sql"))
        return name

    def session(self, db):
        """A psql kept open (one connection) for repeated small queries."""
        return PsqlSession(self._args(db, self.SUPERUSER), self._env(self.SUPERUSER))


class PsqlSession:
    """One psql process reading queries from a pipe: polling que_jobs costs a
    query on an open connection, not a psql start and a login. Every query
    must return exactly one row of one column (psql -q prints no command tags:
    a bare DELETE would print nothing)."""

    def __init__(self, args, env, timeout=30):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env)
        self.buf, self.timeout = b"", timeout

    def scalar(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";").encode() + b";\n")
        self.p.stdin.flush()
        fd = self.p.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"psql: no answer to {sql!r} within {self.timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.err.seek(0)
                raise RuntimeError(f"psql session ended: {self.err.read().strip()}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().strip()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


class QueTarget:
    """que delivery: one row per message in que_jobs of `db` (mailroom/secret
    over TCP, as tests/integration/test_que.py's que_config)."""

    method = "que"
    poll = 0.02  # count(*) is a (small) scan of the table: polled less often than LLEN

    def __init__(self, pg, db, queue_name, job_class="EmailReceiverJob", priority=100):
        self.pg, self.db, self.queue_name = pg, db, queue_name
        self.job_class, self.priority = job_class, priority
        self.s = pg.session(db)

    def yaml(self):
        return ["    :delivery_method: que",
                "    :delivery_options:",
                f"      :host: {self.pg.host}",
                f"      :port: {self.pg.port}",
                f"      :database: {self.db}",
                f"      :username: {self.pg.USER}",
                f"      :password: {self.pg.PASSWORD}",
                f"      :job_class: {self.job_class}",
                f"      :queue: {self.queue_name}",
                f"      :priority: {self.priority}"]

    def reset(self):
        self.s.scalar("WITH gone AS (DELETE FROM que_jobs RETURNING 1) SELECT count(*) FROM gone")

    def count(self):
        return int(self.s.scalar("SELECT count(*) FROM que_jobs"))

    def close(self):
        self.s.close()


# ---------------------------------------------------------------- drain
def drain(impl, d, user, msgs, port, rport, r, timeout, perf_record=None, target=None):
    """target: where the jobs go (default: SidekiqTarget on queue <impl>-<user>);
    the clock stops when target.count() reached len(msgs) and the mailbox is empty."""
    if target is None:
        target = SidekiqTarget(r, rport, f"{impl.name}-{user}")
    queue_name = f"{impl.name}-{user}"
    target.reset()
    load(user, msgs)
    cfg = os.path.join(d, f"{queue_name}.yml")
    write_config(cfg, [user], port, rport, queue_name, delivery=target.yaml())
    n = len(msgs)
    wrap = ()
    if perf_record == "env":  # debugging aid: PERF_BENCH_WRAP="strace -f -tt -o FILE"
        wrap = tuple(os.environ["PERF_BENCH_WRAP"].split())
    elif perf_record:
        wrap = ("perf", "record", "-g", "-F", "999", "-o", perf_record, "--")
    with open(os.path.join(d, f"{queue_name}.out"), "w") as log:
        t0 = time.monotonic()
        p = impl.popen(cfg, log, wrap)
        pid = p.pid
        if perf_record:  # the child of perf
            time.sleep(0.2)
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            pid = int(kids[0]) if kids else p.pid
        res = {"impl": impl.name, "delivery": target.method, "messages": n, "bytes": sum(len(m) for m in msgs)}
        try:
            while target.count() < n:
                if p.poll() is not None:
                    raise RuntimeError(f"{impl.name} exited with {p.returncode}")
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{target.count()} of {n} jobs after {timeout} s")
                time.sleep(target.poll)
            res["t_jobs"] = time.monotonic() - t0
            while mailinject.status(user)["MESSAGES"] != 0:
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"mailbox not empty after {timeout} s")
                time.sleep(0.01)
            res["t_empty"] = time.monotonic() - t0
            res["cpu_s"] = proc_cpu(pid)
            res.update(proc_mem(pid))
            res["delivered"] = target.count()
        except (RuntimeError, TimeoutError) as e:
            res["error"] = str(e)
            res["delivered"] = target.count()
            try:
                res["cpu_s"] = proc_cpu(pid)
                res.update(proc_mem(pid))
            except OSError:
                pass
        finally:
            if perf_record:
                os.kill(pid, 15)
                p.wait(60)
            stop(p)
    if target.method == "sidekiq":
        target.close()  # the Redis list; a que target's rows stay for the caller to check
    if "t_empty" in res:
        t = res["t_empty"]
        res["msg_per_s"] = n / t
        res["mb_per_s"] = mb(res["bytes"]) / t
        res["cpu_s_per_1000"] = res["cpu_s"] / n * 1000
    if "error" not in res:
        left = mailinject.status(user)["MESSAGES"]
        assert left == 0, left
    else:  # leave nothing for the next run
        subprocess.run(["doveadm", "-c", os.environ["DOVECOT_CONF"], "expunge", "-u", user,
                        "mailbox", "INBOX", "all"], capture_output=True)
    return res


def baseline_rss(impl, d, user, port, rport, r):
    """RSS of the process idling on an empty mailbox (the 5 MB drain's baseline)."""
    cfg = os.path.join(d, f"{impl.name}-baseline.yml")
    logp = os.path.join(d, f"{impl.name}-baseline.log")
    with open(cfg, "w") as fh:
        fh.write(":mailboxes:\n" + mailbox_yaml(user, port, rport, "baseline", logp))
    with open(os.path.join(d, f"{impl.name}-baseline.out"), "w") as log:
        p = impl.popen(cfg, log)
        try:
            wait_log(logp, '"Idling"', 60, p)
            time.sleep(1)
            return proc_mem(p.pid)
        finally:
            stop(p)


def wait_log(path, text, timeout, p):
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path) and text in open(path, errors="replace").read():
            return
        if p.poll() is not None:
            raise RuntimeError(f"exited with {p.returncode} before {text}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text} in {path} after {timeout} s")
        time.sleep(0.01)


# ---------------------------------------------------------------- pickup
class RawIdle(threading.Thread):
    """Stays in IDLE; records the monotonic time of every '* n EXISTS' (n > 0)."""

    def __init__(self, user, port):
        super().__init__(daemon=True)
        self.c = RawImap(user, port)
        self.events = queue.Queue()
        self.flags = queue.Queue()  # times of '* n FETCH (FLAGS ...)' (mailroom's \\Seen)
        self.c.s.sendall(b"i IDLE\r\n")
        while not self.c.line().startswith(b"+"):
            pass

    def run(self):
        # like mailroom: on EXISTS, DONE and IDLE again (a client would fetch
        # in between); the other untagged lines (FETCH FLAGS) are ignored
        try:
            while True:
                ln = self.untagged()
                if ln.endswith(b" EXISTS") and not ln.startswith(b"* 0 "):
                    self.events.put(time.monotonic())
                    self.c.s.sendall(b"DONE\r\n")
                    while not self.untagged().startswith(b"i "):
                        pass
                    self.c.s.sendall(b"i IDLE\r\n")
                    while not self.untagged().startswith(b"+"):
                        pass
        except (OSError, EOFError):
            pass

    def untagged(self):
        ln = self.c.line()
        if b" FETCH (" in ln and b"FLAGS" in ln:
            self.flags.put(time.monotonic())
        return ln


def pickup(impl, d, user, port, rport, r, count):
    queue_name = f"{impl.name}-pickup"
    key = f"queue:{queue_name}"
    r.delete(key)
    logp = os.path.join(d, f"{queue_name}.log")
    cfg = os.path.join(d, f"{queue_name}.yml")
    with open(cfg, "w") as fh:
        # no delete: a message expunged before the raw client's session syncs
        # would never be announced to it (Dovecot folds append + expunge)
        fh.write(":mailboxes:\n" + mailbox_yaml(user, port, rport, queue_name, logp, delete=False))
    lat, raw, diff, enq = [], [], [], []
    with open(os.path.join(d, f"{queue_name}.out"), "w") as log:
        p = impl.popen(cfg, log)
        try:
            wait_log(logp, '"Idling"', 60, p)
            idle = RawIdle(user, port)
            idle.start()
            app = mailinject._Conn("127.0.0.1", port)
            app.s.sendall(f"a LOGIN {user} secret\r\n".encode())
            assert app.tagged(b"a").startswith(b"a OK")
            time.sleep(0.5)
            for i in range(count):
                for qq in (idle.events, idle.flags):
                    while not qq.empty():
                        qq.get_nowait()
                m = mailinject.make_message(i, user)
                app.s.sendall(b"t APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n")
                ok = app.tagged(b"t")
                t, t_wall = time.monotonic(), time.time()
                assert ok.startswith(b"t OK"), ok
                got = r.blpop(key, timeout=30)
                t_job = time.monotonic() - t
                if got is None:
                    raise RuntimeError(f"pickup {i}: no job within 30 s")
                t_raw = idle.events.get(timeout=30) - t
                lat.append(t_job)
                enq.append(json.loads(got[1])["enqueued_at"] - t_wall)
                raw.append(t_raw)
                diff.append(t_job - t_raw)
                # Quiet mailbox before the next append: the raw session is told
                # of mailroom's \\Seen (Dovecot delays that by ~500 ms); an append
                # during that delay would be reported early to the raw client only
                try:
                    idle.flags.get(timeout=1.5)
                except queue.Empty:
                    pass
                time.sleep(0.05)
            app.close()
            idle.c.close()
        finally:
            stop(p)
    r.delete(key)

    def summary(v):
        return {"p50": statistics.median(v), "p90": pct(v, 90), "p99": pct(v, 99), "max": max(v)}
    return {"impl": impl.name, "n": count, "job": summary(lat), "raw": summary(raw), "diff": summary(diff),
            "enqueued_at": summary(enq)}


# ---------------------------------------------------------------- idle
def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def idle_run(impl, d, users, port, rport, window, ready_timeout, transport="plain"):
    n = len(users)
    hport = free_port() if impl.name == "mailroom" else None
    cfg = os.path.join(d, f"{impl.name}-idle-{transport}-{n}.yml")
    write_config(cfg, users, port, rport, "idle", health_port=hport, transport=transport)
    res = {"impl": impl.name, "mailboxes": n, "transport": transport}
    with open(os.path.join(d, f"{impl.name}-idle-{transport}-{n}.out"), "w") as log:
        t0 = time.monotonic()
        p = impl.popen(cfg, log)
        try:
            last_cpu, still = -1.0, 0
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"exited with {p.returncode}")
                if time.monotonic() - t0 > ready_timeout:
                    raise TimeoutError(f"not ready after {ready_timeout} s")
                if hport:
                    code, _ = http_get(f"http://127.0.0.1:{hport}/readiness")
                    if code == 200:
                        _, metrics = http_get(f"http://127.0.0.1:{hport}/metrics")
                        connected = sum(float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                                        if ln.startswith("mailroom_mailbox_connected{"))
                        if connected == n:
                            res["connection_errors"] = sum(
                                float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                                if ln.startswith("mailroom_connection_errors_total{"))
                            res["tls_resumed"] = sum(
                                float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines()
                                if ln.startswith("mailroom_tls_sessions_resumed_total{"))
                            break
                    time.sleep(0.1)
                else:  # no readiness probe: CPU time stops moving for 2 s
                    cpu = proc_cpu(p.pid)
                    still = still + 1 if cpu == last_cpu else 0
                    last_cpu = cpu
                    if still >= 4:
                        break
                    time.sleep(0.5)
            res["t_ready"] = time.monotonic() - t0
            time.sleep(2)
            c0, w0 = proc_cpu(p.pid), time.monotonic()
            time.sleep(window)
            c1, w1 = proc_cpu(p.pid), time.monotonic()
            res["cpu_pct"] = (c1 - c0) / (w1 - w0) * 100
            res["window_s"] = w1 - w0
            res["startup_cpu_s"] = c0
            res.update(proc_mem(p.pid))
            who = subprocess.run(["doveadm", "-c", os.environ["DOVECOT_CONF"], "who"], capture_output=True,
                                 text=True, timeout=60).stdout
            res["dovecot_sessions"] = sum(1 for ln in who.splitlines() if ln.startswith("idle"))
            res["threads"] = int([ln for ln in open(f"/proc/{p.pid}/status")
                                  if ln.startswith("Threads:")][0].split()[1])
        except (RuntimeError, TimeoutError) as e:
            res["error"] = str(e)
            try:
                res.update(proc_mem(p.pid))
            except OSError:
                pass
        finally:
            res["sigterm_exit_s"], res["exit_status"] = stop(p, 60)
    return res


# The raw comparison for the idle scenario: N sessions opened at once (mailroom
# starts every watcher at start-up, with no limit on connects in flight: one
# coroutine per mailbox on one io_context, src/app/coordinator.cpp), each
# [TLS handshake,] greeting, LOGIN, SELECT INBOX, IDLE; done at "+ idling".
# asyncio in `procs` spawned processes (1 = one thread, like mailroom's I/O
# thread); each gets every procs-th user and starts them all at once.
async def _raw_idle_session(user, port, ctx, done, errors):
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, limit=1 << 16)
            if not (await r.readline()).startswith(b"* OK"):
                raise OSError("no greeting")
            for tag, cmd in ((b"a", b"LOGIN %s secret" % user.encode()), (b"b", b"SELECT INBOX")):
                w.write(tag + b" " + cmd + b"\r\n")
                while True:
                    ln = await r.readline()
                    if not ln:
                        raise OSError("closed")
                    if ln.startswith(tag + b" "):
                        break
                if not ln.startswith(tag + b" OK"):
                    raise OSError(ln.decode(errors="replace").strip())
            w.write(b"c IDLE\r\n")
            while True:
                ln = await r.readline()
                if not ln:
                    raise OSError("closed")
                if ln.startswith(b"+"):
                    break
            done.append(time.monotonic())
            return r, w
        except OSError as e:  # ssl.SSLError included
            errors.append(f"{user}: {e}")
            if len(errors) > 10 * 1000:
                raise
            await asyncio.sleep(0.05)


def _raw_idle_worker(conn, users, port, ca):
    ctx = ssl.create_default_context(cafile=ca) if ca else None

    async def main():
        done, errors = [], []
        cmd = conn.recv()  # "go": the parent's clock starts now
        assert cmd == "go"
        c0 = time.process_time()
        sessions = await asyncio.gather(*[_raw_idle_session(u, port, ctx, done, errors) for u in users])
        conn.send({"t_done": max(done) if done else None, "cpu_s": time.process_time() - c0,
                   "errors": len(errors), "first_errors": errors[:3]})
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "close"
        for r, w in sessions:
            w.close()
        conn.send("closed")
    asyncio.run(main())


def raw_idle_client(users, port, ca, procs=1):
    """{'t_ready': seconds from "go" until every session got "+ idling",
    'cpu_s': the client's CPU seconds in that time (all processes), ...}"""
    import multiprocessing
    mp = multiprocessing.get_context("spawn")
    procs = max(1, min(procs, len(users)))
    ps, pipes = [], []
    for i in range(procs):
        a, b = mp.Pipe()
        pr = mp.Process(target=_raw_idle_worker, args=(b, users[i::procs], port, ca), daemon=True)
        pr.start()
        ps.append(pr)
        pipes.append(a)
    time.sleep(1.0)  # interpreter start-up of the spawned workers, off the clock
    t0 = time.monotonic()
    for a in pipes:
        a.send("go")
    outs = [a.recv() for a in pipes]
    res = {"impl": f"raw asyncio client, {procs} process(es)", "mailboxes": len(users), "procs": procs,
           "transport": "tls" if ca else "plain"}
    if any(o["t_done"] is None for o in outs if o is not None):
        res["error"] = "no session ready"
    else:
        res["t_ready"] = max(o["t_done"] for o in outs) - t0
    res["cpu_s"] = sum(o["cpu_s"] for o in outs)
    res["errors"] = sum(o["errors"] for o in outs)
    res["first_errors"] = [e for o in outs for e in o["first_errors"]][:3]
    for a in pipes:
        a.send("close")
    for a in pipes:
        a.recv()
    for pr in ps:
        pr.join(10)
    return res


# ---------------------------------------------------------------- que
QUE_SCHEMA = "que2"  # tests/integration/fixtures/que/que2.sql: Que 2.x's que_jobs


def pg_installed():
    """Whether start-postgres.sh can find initdb (its own search)."""
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None


def que_scenario(impl, d, n, port, rport, r, t_start):
    """The same n x ~4 KB drained twice by mailroom, delete + expunge, plaintext
    IMAP: once with sidekiq delivery (Redis), once with que delivery (one
    que_jobs row per message, in a database created for this run with Que
    2.x's schema). Then every row is checked: as many rows as messages, and
    args[0] of the rows are exactly the messages loaded (md5 of each)."""
    pg = Postgres()
    x = {"size_label": "~4 KB", "schema": f"{QUE_SCHEMA}.sql", "errors": []}
    x["postgres_version"] = pg.psql("SHOW server_version").strip()
    db = pg.create_que_database(f"mailroom_bench_{os.getpid()}", QUE_SCHEMA)
    x["database"] = db
    print(f"[{time.monotonic() - t_start:6.1f}s] que: generating {n} messages", file=sys.stderr)
    msgs = make_messages(n, 4000, "que")
    x["message_bytes"] = len(msgs[0])
    timeout = 300
    for method, user in (("sidekiq", "qsidekiq"), ("que", "qque")):
        print(f"[{time.monotonic() - t_start:6.1f}s] que: {impl.name}, {method} delivery", file=sys.stderr)
        target = QueTarget(pg, db, "mailroom-bench") if method == "que" else None
        try:
            res = drain(impl, d, user, msgs, port, rport, r, timeout, target=target)
        finally:
            if target:
                target.close()
        x[method] = res
        print("   ", fmt_drain(res), file=sys.stderr)
        if "error" in res:
            x["errors"].append(f"{method} drain: {res['error']}")
    # the rows, after mailroom stopped
    rows = int(pg.psql("SELECT count(*) FROM que_jobs", db=db).strip())
    x["que"]["que_jobs_rows"] = rows
    if rows != n:
        x["errors"].append(f"{rows:,} rows in que_jobs after draining {n:,} messages")
    got = sorted(pg.psql("SELECT md5(args->>0) FROM que_jobs", db=db).split())
    want = sorted(hashlib.md5(m).hexdigest() for m in msgs)
    x["que"]["rows_match_messages"] = got == want
    if got != want:
        missing = len(set(want) - set(got))
        x["errors"].append(f"args[0] of que_jobs differ from the messages loaded ({missing} messages not found, "
                           f"{len(got) - len(set(got))} duplicate rows)")
    # job_class, queue and priority as configured (QueTarget's defaults), on every row
    groups = pg.psql("SELECT job_class, queue, priority, count(*) FROM que_jobs GROUP BY 1, 2, 3", db=db).split()
    x["que"]["rows_by_class_queue_priority"] = groups
    if groups != [f"EmailReceiverJob|mailroom-bench|100|{rows}"]:
        x["errors"].append(f"que_jobs rows by job_class|queue|priority|count: {groups}")
    return x


def fmt_que(x):
    n = x["sidekiq"]["messages"]
    out = [f"que delivery (one `que_jobs` row per message, Que 2.x schema, PostgreSQL {x['postgres_version']}, fsync and synchronous_commit on) "
           f"vs sidekiq, mailroom only, the same {n:,} x {x['size_label']} ({x['message_bytes']:,} bytes each), "
           "delete + expunge, plaintext IMAP:", "",
           "| delivery | messages | seconds | msg/s | peak RSS | CPU s/1000 msg | delivered |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for method in ("sidekiq", "que"):
        y = x.get(method)
        if y is None:
            continue
        if method == "que":
            where = (f"{y['que_jobs_rows']:,} rows in `que_jobs`" if "que_jobs_rows" in y else "?")
            if y.get("rows_match_messages") is False:
                where += " (NOT the messages loaded)"
        else:
            where = f"{y.get('delivered', 0):,} jobs in Redis"
        if "error" in y:
            out.append(f"| {method} | {y['messages']:,} | FAILED: {y['error']} | | | | {where} |")
            continue
        out.append(f"| {method} | {y['messages']:,} | {y['t_empty']:.2f} | {y['msg_per_s']:,.0f} | "
                   f"{mb(y['VmHWM']):.1f} MB | {y['cpu_s_per_1000']:.3f} | {where} |")
    if all(m in x and "error" not in x[m] for m in ("sidekiq", "que")):
        out.append(f"| que / sidekiq | | | {x['que']['msg_per_s'] / x['sidekiq']['msg_per_s'] * 100:.0f} % | | | |")
    return "\n".join(out)


# ---------------------------------------------------------------- report
def fmt_drain(x):
    if "error" in x:
        return f"FAILED: {x['error']}"
    return (f"{x['t_empty']:.2f} s, {x['msg_per_s']:,.0f} msg/s, {x['mb_per_s']:.1f} MB/s, "
            f"peak RSS {mb(x['VmHWM']):.1f} MB, {x['cpu_s_per_1000']:.3f} CPU s/1000 msg")


def ms(v):
    return f"{v * 1000:.1f}"


def fmt_lat(s):
    return f"p50 {ms(s['p50'])}, p90 {ms(s['p90'])}, p99 {ms(s['p99'])}, max {ms(s['max'])} ms"


def report(R, a):
    out = []
    w = out.append
    w(f"mode: {'quick' if a.quick else 'full'}; "
      f"{R['machine']['cpu']} x {R['machine']['cores']} cores; {R['date']}")
    w("")
    if any(k in R for k in ("drain_4k", "drain_5m", "pickup", "idle")):
        w("| scenario | mailroom | mail_room (Ruby) |")
        w("| --- | --- | --- |")
    ruby_note = R.get("ruby_note", "not run")
    for key, label in (("drain_4k", "drain"), ("drain_5m", "drain")):
        if key not in R:
            continue
        x = R[key]
        mr = x["mailroom"]
        rb = x.get("mail_room")
        w(f"| {label}: {mr['messages']:,} x {x['size_label']}, sidekiq + delete + expunge | {fmt_drain(mr)} | "
          f"{fmt_drain(rb) if rb else ruby_note} |")
        lim = x["limits"]
        w(f"| limit: raw `UID FETCH 1:* BODY.PEEK[]` ({x['size_label']}) | {lim['fetch_s']:.2f} s, "
          f"{lim['fetch_msg_per_s']:,.0f} msg/s, {lim['fetch_mb_per_s']:.1f} MB/s | |")
        w(f"| (not a limit) the raw client's `UID STORE 1:* +FLAGS.SILENT (\\Seen \\Deleted)` + `UID EXPUNGE 1:*` "
          f"({x['size_label']}) | {lim['store_expunge_s']:.2f} s | |")
        w(f"| (not a limit) raw client, mailroom's IMAP commands without delivery (batches of {FETCH_BATCH}) "
          f"({x['size_label']}) | {lim['batched_imap_s']:.2f} s, {x['mailroom']['messages'] / lim['batched_imap_s']:,.0f} msg/s | |")
        w(f"| limit: pipelined LPUSH of the jobs ({x['size_label']}) | {lim['lpush_s']:.2f} s, "
          f"{lim['lpush_msg_per_s']:,.0f} msg/s, {lim['lpush_mb_per_s']:.1f} MB/s | |")
        if "error" not in mr:
            rbp = (f"{rb['msg_per_s'] / lim['slower_msg_per_s'] * 100:.0f} %" if rb and "error" not in rb else "—")
            w(f"| drain vs slower limit ({x['size_label']}) | {mr['msg_per_s'] / lim['slower_msg_per_s'] * 100:.0f} % "
              f"| {rbp} |")
    if "drain_5m" in R and "baseline" in R["drain_5m"]:
        x = R["drain_5m"]
        w(f"| 5 MB drain: peak RSS - idle baseline ({mb(x['baseline']['VmRSS']):.1f} MB) | "
          f"{mb(x['peak_delta']):.1f} MB = {x['copies_per_batch']:.2f} x the largest batch "
          f"({x['batch_messages']} x {mb(x['message_bytes']):.2f} MB) | |")
    if "pickup" in R:
        for p in R["pickup"]:
            w(f"| pickup under IDLE, APPEND OK -> job in Redis, n={p['n']} ({p['impl']}) | {fmt_lat(p['job'])} | |")
            w(f"| the same from the job's own `enqueued_at` (wall clock at LPUSH) | {fmt_lat(p['enqueued_at'])} | |")
            w(f"| raw IDLE client on the same mailbox, APPEND OK -> EXISTS | {fmt_lat(p['raw'])} | |")
            w(f"| difference per message (job - raw EXISTS) | {fmt_lat(p['diff'])} | |")
    for x in R.get("idle", []):
        rb = [y for y in R.get("idle_ruby", []) if y["mailboxes"] == x["mailboxes"]]
        def f(y):
            if "error" in y:
                return f"FAILED: {y['error']}" + (f" (RSS {mb(y['VmRSS']):.1f} MB)" if "VmRSS" in y else "")
            return (f"RSS {mb(y['VmRSS']):.1f} MB (peak {mb(y['VmHWM']):.1f})"
                    + (f", {y['rss_per_mailbox'] / 1e3:.1f} KB per mailbox ({y['rss_per_mailbox_basis']})"
                       if "rss_per_mailbox" in y else "")
                    + f", CPU {y['cpu_pct']:.2f} % over {y['window_s']:.0f} s; ready after {y['t_ready']:.2f} s"
                    + (f" (raw client {y['raw_t_ready']:.2f} s, x{y['ready_vs_raw']:.2f})" if "raw_t_ready" in y else "")
                    + f"; {y.get('dovecot_sessions', '?'):,} sessions in Dovecot"
                    + (f", {y['connection_errors']:.0f} connection errors retried" if y.get("connection_errors") else "")
                    + (f"; SIGTERM -> exit {y['sigterm_exit_s']:.2f} s" if y.get("sigterm_exit_s") is not None else ""))
        rbn = ruby_note if "ruby_note" in R else "not run (two Ruby threads per mailbox; stops at 1,000)"
        tr = x.get("transport", "plain")
        w(f"| idle ({'IMAPS' if tr == 'tls' else 'plain IMAP'}): {x['mailboxes']:,} mailbox(es) | {f(x)} | "
          f"{f(rb[0]) if rb else rbn} |")
        for y in R.get("idle_raw", []):
            if y["mailboxes"] == x["mailboxes"]:
                w(f"| raw asyncio client ({y['procs']} process(es), {y.get('order', '')}): {y['mailboxes']:,} "
                  f"sessions to \"+ idling\" | "
                  + (f"FAILED: {y['error']}" if "error" in y else
                     f"{y['t_ready']:.2f} s, client CPU {y['cpu_s']:.2f} s"
                     + (f", {y['errors']} connection errors retried" if y["errors"] else ""))
                  + " | |")
    if "que" in R:
        if len(out) > 2:
            w("")
        w(fmt_que(R["que"]))
    return "\n".join(out)


def targets(R):
    t = []
    for key in ("drain_4k", "drain_5m"):
        if key in R and "error" not in R[key]["mailroom"]:
            x = R[key]
            ratio = x["mailroom"]["msg_per_s"] / x["limits"]["slower_msg_per_s"]
            t.append((f"drain {x['size_label']} >= 70 % of the slower limit", ratio >= 0.7, f"{ratio * 100:.0f} %"))
    for p in R.get("pickup", []):
        if p["impl"] == "mailroom":
            d = p["job"]["p99"] - p["raw"]["p99"]
            t.append(("pickup p99 within 5 ms of the raw IDLE client", d <= 0.005,
                      f"p99 {ms(p['job']['p99'])} vs {ms(p['raw']['p99'])} ms ({d * 1000:+.1f} ms); "
                      f"per-message difference p99 {ms(p['diff']['p99'])} ms"))
    MiB = 1024 * 1024
    for x in R.get("idle", []):
        tls = x.get("transport") == "tls"
        kind = "IMAPS" if tls else "plaintext"
        if x["mailboxes"] == 1000 and "error" not in x:
            if tls:  # issue 12's targets over TLS
                t.append(("1,000 idle IMAPS mailboxes <= 64 MiB RSS, ~0 CPU",
                          x["VmRSS"] <= 64 * MiB and x["cpu_pct"] < 1,
                          f"{x['VmRSS'] / MiB:.1f} MiB ({mb(x['VmRSS']):.1f} MB), {x['cpu_pct']:.2f} %"))
                if "ready_vs_raw" in x:
                    t.append(("1,000 IMAPS mailboxes all idling within x1.5 of a raw client",
                              x["ready_vs_raw"] <= 1.5,
                              f"{x['t_ready']:.2f} s vs {x['raw_t_ready']:.2f} s, x{x['ready_vs_raw']:.2f}"))
                t.append(("SIGTERM with 1,000 IMAPS mailboxes: exit < 1 s",
                          x.get("sigterm_exit_s", 99) < 1 and x.get("exit_status") == 0,
                          f"{x.get('sigterm_exit_s', 0):.2f} s, exit status {x.get('exit_status')}"))
            else:
                ok = x["VmRSS"] <= 100e6 and x["cpu_pct"] < 1
                t.append(("1,000 idle mailboxes <= 100 MB RSS, ~0 CPU", ok,
                          f"{mb(x['VmRSS']):.1f} MB, {x['cpu_pct']:.2f} %"))
        if x["mailboxes"] == 10000:
            if tls:
                ok = "error" not in x and x["VmRSS"] <= 500 * MiB and x["cpu_pct"] < 1
                t.append(("10,000 idle IMAPS mailboxes in one process <= 500 MiB RSS, ~0 CPU", ok,
                          x.get("error") or f"{x['VmRSS'] / MiB:.1f} MiB, {x['cpu_pct']:.2f} %, "
                                            f"ready in {x['t_ready']:.1f} s"))
            else:
                t.append((f"10,000 {kind} mailboxes in one process", "error" not in x,
                          x.get("error") or f"{mb(x['VmRSS']):.1f} MB, {x['cpu_pct']:.2f} %, ready in {x['t_ready']:.1f} s"))
    if "drain_5m" in R and "copies_per_batch" in R["drain_5m"]:
        c = R["drain_5m"]["copies_per_batch"]
        t.append(("5 MB message held in <= ~2 copies (peak RSS over baseline / batch bytes)", c <= 2.5, f"{c:.2f} copies"))
    if not t:
        return ""
    lines = ["", "| target | reached | measured |", "| --- | --- | --- |"]
    for name, ok, val in t:
        lines.append(f"| {name} | {'yes' if ok else 'NO'} | {val} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, under ~2 minutes")
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench-results.json"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailroom"))
    ap.add_argument("--no-ruby", action="store_true")
    ap.add_argument("--only", help="comma-separated scenarios: drain, pickup, idle, que (default: all; que "
                    "is skipped with a note when PostgreSQL is not installed, unless named here)")
    ap.add_argument("--idle-sizes", help="comma-separated mailbox counts of the idle scenario "
                    "(default: 1,100,1000,10000; --quick: 1,100,1000)")
    ap.add_argument("--idle-transport", choices=("tls", "plain"), default="tls",
                    help="the idle scenario's connections: tls (default; Dovecot's IMAPS port, implicit TLS, "
                    "the test CA) or plain (the IMAP port, no TLS); the drain, pickup and que scenarios "
                    "are always plain")
    ap.add_argument("--perf-record", help="run mailroom's drains under `perf record -g` into FILE.drain_4k, "
                    "FILE.drain_5m (their timings are then not representative)")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else set(SCENARIOS)
    if only - SCENARIOS:
        ap.error(f"--only: unknown scenario(s) {', '.join(sorted(only - SCENARIOS))} "
                 f"(known: {', '.join(sorted(SCENARIOS))})")
    sys.setswitchinterval(0.0002)  # the raw IDLE thread must not delay the main thread's clock
    if a.quick:
        n_small, n_large, n_pick, idle_sizes, window = 2000, 20, 20, [1, 100, 1000], 3
    else:
        n_small, n_large, n_pick, idle_sizes, window = 10000, 100, 200, [1, 100, 1000, 10000], 10
    if a.idle_sizes:
        idle_sizes = [int(v) for v in a.idle_sizes.split(",")]
    if not os.access(a.bin, os.X_OK):
        raise SystemExit(f"{a.bin} not found: build it first (cmake --build build)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))  # inherited by Dovecot and Redis

    impls = [Impl("mailroom", [a.bin])]
    R = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mode": "quick" if a.quick else "full",
         "machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                  if ln.startswith("model name")), platform.processor()),
                     "cores": os.cpu_count(), "kernel": platform.release()},
         "command": " ".join(["bench/run.sh"] + sys.argv[1:])}
    if not a.no_ruby and os.access(MAIL_ROOM_RUBY, os.X_OK):
        impls.append(Impl("mail_room", ["ruby", MAIL_ROOM_RUBY]))
        ver = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ruby-mail-room"],
                             capture_output=True, text=True).stdout
        R["ruby_version"] = ver
    else:
        R["ruby_note"] = "skipped (--no-ruby)" if a.no_ruby else "not installed (ruby-mail-room)"

    if "que" in only and not pg_installed():
        if a.only:
            raise SystemExit("--only que: PostgreSQL is not installed (postgresql-15; scripts/install-deps.sh)")
        only.discard("que")
        R["que_note"] = "que scenario skipped: PostgreSQL is not installed (postgresql-15)"

    d = tempfile.mkdtemp(prefix="mailroom-perf.", dir="/tmp")
    os.chmod(d, 0o755)
    os.environ["DOVECOT_USERS"] = "small large limsmall limlarge pickup rbpickup base qsidekiq qque"
    t_start = time.monotonic()
    pg_dir = None
    try:
        start("start-dovecot.sh", os.path.join(d, "dovecot"))
        start("start-redis.sh", os.path.join(d, "redis"))
        port, rport = int(os.environ["DOVECOT_IMAP_PORT"]), int(os.environ["REDIS_PORT"])
        r = redis.Redis(port=rport)
        r.config_set("maxclients", 15000)

        if "drain" in only:
            for key, n, size, label in (("drain_4k", n_small, 4000, "~4 KB"),
                                        ("drain_5m", n_large, 5_000_000, "~5 MB")):
                print(f"[{time.monotonic() - t_start:6.1f}s] {key}: generating {n} messages", file=sys.stderr)
                msgs = make_messages(n, size, key)
                x = R[key] = {"size_label": label, "message_bytes": len(msgs[0])}
                # the limits, same contents, same Redis
                lu = "limsmall" if key == "drain_4k" else "limlarge"
                load(lu, msgs)
                ft, fn, fb, fdel = raw_fetch_limit(lu, port)
                assert fn == n, (fn, n)
                assert mailinject.status(lu)["MESSAGES"] == 0
                load(lu, msgs)
                fbat = raw_batched(lu, port)
                assert mailinject.status(lu)["MESSAGES"] == 0
                lt, lb = lpush_limit(r, msgs, "limit")
                x["limits"] = {"fetch_s": ft, "fetch_msg_per_s": n / ft, "fetch_mb_per_s": mb(fb) / ft,
                               "store_expunge_s": fdel, "batched_imap_s": fbat, "lpush_s": lt, "lpush_msg_per_s": n / lt, "lpush_mb_per_s": mb(lb) / lt}
                x["limits"]["slower_msg_per_s"] = min(n / ft, n / lt)
                user = "small" if key == "drain_4k" else "large"
                for impl in impls:
                    print(f"[{time.monotonic() - t_start:6.1f}s] {key}: {impl.name}", file=sys.stderr)
                    timeout = 300 if impl.name == "mail_room" and not a.quick else 120
                    prof = a.perf_record or ("env" if os.environ.get("PERF_BENCH_WRAP") else None)
                    if prof and prof != "env":
                        prof = f"{prof}.{key}"
                    x[impl.name] = drain(impl, d, user, msgs, port, rport, r, timeout,
                                         prof if impl.name == "mailroom" else None)
                    print("   ", fmt_drain(x[impl.name]), file=sys.stderr)
                if key == "drain_5m":
                    x["baseline"] = baseline_rss(impls[0], d, "base", port, rport, r)
                    batch = max(1, min(FETCH_BATCH, FETCH_BYTES // len(msgs[0])))
                    x["batch_messages"] = batch
                    if "error" not in x["mailroom"]:
                        x["peak_delta"] = x["mailroom"]["VmHWM"] - x["baseline"]["VmRSS"]
                        x["copies_per_batch"] = x["peak_delta"] / (batch * len(msgs[0]))
                del msgs

        if "que" in only:
            # PostgreSQL only for this scenario; stopped in the finally below
            pg_dir = os.path.join(d, "postgres")
            print(f"[{time.monotonic() - t_start:6.1f}s] que: starting PostgreSQL", file=sys.stderr)
            # fsync and synchronous commit on: every INSERT waits for its
            # WAL flush, as on a production server
            os.environ["MAILROOM_PG_DURABLE"] = "1"
            start("start-postgres.sh", pg_dir)
            R["que"] = que_scenario(impls[0], d, n_small, port, rport, r, t_start)
            for e in R["que"].get("errors", []):
                R.setdefault("errors", []).append(f"que: {e}")

        if "pickup" in only:
            R["pickup"] = []
            for impl in impls:
                # Ruby: fewer (each pickup costs ~1 s of Dovecot's delay)
                n = n_pick if impl.name == "mailroom" else (10 if a.quick else 50)
                print(f"[{time.monotonic() - t_start:6.1f}s] pickup: {impl.name} x {n}", file=sys.stderr)
                user = "pickup" if impl.name == "mailroom" else "rbpickup"
                try:
                    R["pickup"].append(pickup(impl, d, user, port, rport, r, n))
                except (RuntimeError, TimeoutError, AssertionError) as e:
                    R.setdefault("errors", []).append(f"pickup {impl.name}: {e}")
                print("   ", R["pickup"][-1] if R["pickup"] else "", file=sys.stderr)

        if "idle" in only:
            all_users = [f"idle{i:05d}" for i in range(max(idle_sizes))]
            add_users(all_users)
            tune_dovecot(os.path.join(d, "dovecot"))
            tr = a.idle_transport
            iport = int(os.environ["DOVECOT_IMAPS_PORT"]) if tr == "tls" else port
            ca = os.environ["DOVECOT_CA"] if tr == "tls" else None
            R["idle_transport"] = tr
            R["idle"], R["idle_ruby"], R["idle_raw"] = [], [], []
            for n in idle_sizes:
                # the raw client once before mailroom too: Dovecot keeps its
                # imap processes (service_count = 0) between runs, so whoever
                # comes first may pay for their start
                print(f"[{time.monotonic() - t_start:6.1f}s] idle ({tr}): raw client x {n}, 1 proc, before mailroom",
                      file=sys.stderr)
                rr = raw_idle_client(all_users[:n], iport, ca, 1)
                rr["order"] = "before mailroom"
                print("   ", rr, file=sys.stderr)
                R["idle_raw"].append(rr)
                time.sleep(1)
                for impl in impls:
                    if impl.name == "mail_room" and n > 1000:
                        continue  # two Ruby threads per mailbox; stop at 1,000
                    print(f"[{time.monotonic() - t_start:6.1f}s] idle ({tr}): {impl.name} x {n}", file=sys.stderr)
                    res = idle_run(impl, d, all_users[:n], iport, rport, window,
                                   ready_timeout=60 + n * 0.015, transport=tr)
                    (R["idle"] if impl.name == "mailroom" else R["idle_ruby"]).append(res)
                    print("   ", res, file=sys.stderr)
                # per mailbox: over the 1-mailbox run's RSS (the process's own baseline)
                one = next((y for y in R["idle"] if y["mailboxes"] == 1 and "error" not in y), None)
                x = R["idle"][-1]
                if "VmRSS" in x:
                    x["rss_per_mailbox"] = ((x["VmRSS"] - one["VmRSS"]) / (n - 1) if one and n > 1
                                            else x["VmRSS"] / n)
                    x["rss_per_mailbox_basis"] = "over 1-mailbox RSS" if one and n > 1 else "RSS / N"
                # the raw client: one process (one thread, as mailroom), and one
                # per core in case Python's own speed is the limit
                time.sleep(1)
                best = None
                for procs in sorted({1, min(n, os.cpu_count() or 1)}):
                    print(f"[{time.monotonic() - t_start:6.1f}s] idle ({tr}): raw client x {n}, {procs} proc",
                          file=sys.stderr)
                    rr = raw_idle_client(all_users[:n], iport, ca, procs)
                    rr["order"] = "after mailroom"
                    print("   ", rr, file=sys.stderr)
                    R["idle_raw"].append(rr)
                    time.sleep(1)
                for rr in R["idle_raw"]:
                    if rr["mailboxes"] == n and "t_ready" in rr and (best is None or rr["t_ready"] < best["t_ready"]):
                        best = rr
                if best and "t_ready" in x:
                    x["raw_t_ready"] = best["t_ready"]
                    x["raw_procs"] = best["procs"]
                    x["ready_vs_raw"] = x["t_ready"] / best["t_ready"]
    finally:
        R["elapsed_s"] = time.monotonic() - t_start
        if pg_dir:
            subprocess.run([os.path.join(SERVERS, "stop-postgres.sh"), pg_dir], capture_output=True)
        subprocess.run([os.path.join(SERVERS, "stop-redis.sh"), os.path.join(d, "redis")], capture_output=True)
        subprocess.run([os.path.join(SERVERS, "stop-dovecot.sh"), os.path.join(d, "dovecot")], capture_output=True)
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump(R, fh, indent=2, default=str)
        if os.environ.get("PERF_BENCH_KEEP"):
            print(f"kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)

    print()
    print(report(R, a))
    t = targets(R)
    if t:
        print(t)
    if "que_note" in R:
        print("\n" + R["que_note"])
    for e in R.get("errors", []):
        print("error:", e)
    print(f"\n{R['elapsed_s']:.0f} s; JSON in {a.json}")
    if "que" in R and R["que"].get("errors"):
        sys.exit("que scenario FAILED: " + "; ".join(R["que"]["errors"]))


if __name__ == "__main__":
    main()
