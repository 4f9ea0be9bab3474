"""Helpers for mailroom's integration tests (real Dovecot, Redis, Sidekiq).

Everything here is plain standard library plus python3-redis, so the tests run
with Debian's /usr/bin/python3.  See docs/testing.md for the big picture.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVERS = os.path.join(REPO, "tests", "servers")
sys.path.insert(0, SERVERS)
import mailinject  # noqa: E402  (tests/servers/mailinject.py)
import imapservers  # noqa: E402  (tests/servers/imapservers.py)

HOST = "127.0.0.1"


# ---------------------------------------------------------------- waiting
# Tests wait for events they can observe (wait_until on a condition,
# Mailroom.wait_log for a log record, a gate's `held` event), never for time
# to pass. There is deliberately no "nothing happens for N seconds" helper: to
# show that something did not happen, wait for the event that proves the
# passes that could have done it happened (a log record, stop_ok() of the
# process), then count.
class Timeout(AssertionError):
    pass


def wait_until(cond, timeout, desc, interval=0.05, proc=None):
    """Poll cond() until it returns a truthy value (returned) or the deadline
    passes (AssertionError naming desc).  With proc (a Mailroom), fail at once
    if that process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and not proc.alive():
            raise AssertionError(f"mailroom exited (rc={proc.returncode}) while waiting for {desc}\n"
                                 + proc.diagnostics())
        if time.monotonic() >= deadline:
            extra = ("\n" + proc.diagnostics()) if proc is not None else ""
            raise Timeout(f"timed out after {timeout:.1f} s waiting for {desc}{extra}")
        time.sleep(interval)


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- servers
def parse_env_file(path):
    """The export lines written by tests/servers/start-*.sh -> dict."""
    return imapservers.load_env(path)


class Servers:
    """The running Dovecot + Redis + Sidekiq (from tests/servers/start-all.sh)."""

    def __init__(self, env):
        self.env = env
        self.dir = env["TEST_SERVERS_DIR"]
        self.imap_port = int(env["DOVECOT_IMAP_PORT"])
        self.imaps_port = int(env["DOVECOT_IMAPS_PORT"])
        self.lmtp_port = int(env["DOVECOT_LMTP_PORT"])
        self.ca = env["DOVECOT_CA"]
        self.redis_port = int(env["REDIS_PORT"])
        self.redis_url = f"redis://{HOST}:{self.redis_port}"
        self.sidekiq_pid = int(env["SIDEKIQ_PID"])
        self.result_prefix = env.get("SIDEKIQ_RESULT_PREFIX", "test:performed")
        self.queues = env.get("SIDEKIQ_QUEUES", "").split()
        self._redis = None
        self._fresh_users = []

    @classmethod
    def start(cls, directory):
        # output to a file, not a pipe: a daemon keeping an inherited pipe open
        # would make us wait for it
        log = os.path.join(directory, "start-all.log")
        with open(log, "w") as fh:
            rc = subprocess.run([os.path.join(SERVERS, "start-all.sh"), directory], stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120).returncode
        if rc != 0:
            with open(log) as fh:
                raise RuntimeError(f"start-all.sh failed:\n{fh.read()}")
        return cls(parse_env_file(os.path.join(directory, "env.sh")))

    def stop(self):
        subprocess.run([os.path.join(SERVERS, "stop-all.sh"), self.dir], timeout=120,
                       stdin=subprocess.DEVNULL)

    def redis(self, db=0):
        import redis  # python3-redis
        return redis.Redis(host=HOST, port=self.redis_port, db=db, socket_timeout=30)

    @property
    def r(self):
        if self._redis is None:
            self._redis = self.redis()
        return self._redis

    def tls_context(self):
        return ssl.create_default_context(cafile=self.ca)

    def sidekiq_alive(self):
        try:
            with open(f"/proc/{self.sidekiq_pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    # -- IMAP
    def add_user(self):
        """A fresh user (password "secret") with an empty INBOX.  Dovecot re-reads
        its passwd-file at most once a second, so users are created in batches
        and a batch is handed out once Dovecot knows it."""
        if not self._fresh_users:
            batch = [f"u{uuid.uuid4().hex[:10]}" for _ in range(40)]
            for u in batch:
                mailinject.add_user(u, "secret", self.env["DOVECOT_USERS_FILE"], self.env["DOVECOT_MAIL_DIR"])
            wait_until(lambda: self._can_login(batch[-1]), 10, "Dovecot to load the new users",
                       interval=0.2)
            self._fresh_users = batch
        return self._fresh_users.pop(0)

    def _can_login(self, user):
        try:
            self.imap(user).logout()
            return True
        except Exception:
            return False

    def append(self, user, messages, folder="INBOX", flags="", date=None):
        return mailinject.imap_append(messages, user, "secret", HOST, self.imap_port, folder, flags,
                                      date=date)

    def maildir_deliver(self, user, messages):
        return mailinject.maildir_deliver(mailinject.user_maildir(user, self.env["DOVECOT_MAIL_DIR"]),
                                          messages)

    def imap(self, user, password="secret"):
        return mailinject.imap_login(user, password, HOST, self.imap_port)

    def status(self, user, folder="INBOX"):
        return mailinject.status(user, "secret", folder, host=HOST, port=self.imap_port)

    def flags(self, user, folder="INBOX"):
        """{uid: set of flags} for every message, read without changing anything
        (EXAMINE is read-only)."""
        m = self.imap(user)
        try:
            typ, _ = m.select(mailinject._quote(folder), readonly=True)
            assert typ == "OK"
            typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
            res = {}
            for item in data or []:
                if not item:
                    continue
                if isinstance(item, tuple):
                    item = item[0]
                mm = re.search(rb"UID (\d+)", item)
                fl = re.search(rb"FLAGS \(([^)]*)\)", item)
                if mm and fl:
                    res[int(mm.group(1))] = set(fl.group(1).decode().split()) - {"\\Recent"}
            return res
        finally:
            m.logout()

    def folders(self, user):
        """The names of user's folders (LIST "" "*")."""
        m = self.imap(user)
        try:
            typ, data = m.list('""', "*")
            assert typ == "OK", data
            names = []
            for item in data or []:
                mm = re.search(rb'\) "[^"]*" (.*)$', item or b"")
                if mm:
                    names.append(mm.group(1).decode().strip('"'))
            return names
        finally:
            m.logout()

    def idle_sessions(self, user):
        """How many IMAP sessions of user are in IDLE right now (Dovecot's
        verbose_proctitle shows "[user 127.0.0.1 IDLE]")."""
        needle = f"[{user} {HOST} IDLE]".encode()
        n = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if needle in fh.read():
                        n += 1
            except OSError:
                pass
        return n

    # -- Sidekiq results
    def result_key(self, queue):
        return f"{self.result_prefix}:{queue}"

    def performed(self, queue, n, timeout, proc=None):
        """Collect n raw messages the Sidekiq worker performed from queue (BLPOP
        with a deadline); returns a list of bytes."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                extra = ("\n" + proc.diagnostics()) if proc is not None else ""
                raise Timeout(f"Sidekiq performed {len(got)} of {n} job(s) from queue {queue!r} "
                              f"within {timeout} s (sidekiq alive: {self.sidekiq_alive()}, "
                              f"queue:{queue} length {self.r.llen('queue:' + queue)}){extra}")
            item = self.r.blpop([self.result_key(queue)], timeout=min(1.0, max(left, 0.1)))
            if item:
                got.append(item[1])
            elif proc is not None and not proc.alive():
                raise AssertionError(f"mailroom exited (rc={proc.returncode}) after {len(got)} of {n} "
                                     f"deliveries\n" + proc.diagnostics())
        return got

    def performed_jobs(self, queue):
        return [json.loads(j) for j in self.r.lrange(self.result_key(queue) + ":jobs", 0, -1)]

    def clear_queue(self, queue):
        self.r.delete("queue:" + queue, self.result_key(queue), self.result_key(queue) + ":jobs")


class RedisServer:
    """A dedicated Redis primary for a test that stops and restarts it."""

    def __init__(self, directory, port=None):
        self.dir = directory
        self.port = port or free_port()
        self.start()

    def start(self):
        env = dict(os.environ, REDIS_PORT=str(self.port), REDIS_REPLICA="0", REDIS_SENTINEL="0")
        os.makedirs(self.dir, exist_ok=True)
        log = os.path.join(self.dir, "start-redis.log")
        with open(log, "w") as fh:
            rc = subprocess.run([os.path.join(SERVERS, "start-redis.sh"), self.dir], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60).returncode
        if rc != 0:
            with open(log) as fh:
                raise RuntimeError(f"start-redis.sh failed:\n{fh.read()}")

    def stop(self):
        subprocess.run([os.path.join(SERVERS, "stop-redis.sh"), self.dir, str(self.port)],
                       timeout=60, stdin=subprocess.DEVNULL)

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def client(self, db=0):
        import redis
        return redis.Redis(host=HOST, port=self.port, db=db, socket_timeout=10)


# ---------------------------------------------------------------- config files
class Raw(str):
    """A value written into the YAML as is (for deliberately odd configs)."""


def _scalar(v):
    if isinstance(v, Raw):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)  # a valid YAML double-quoted scalar


def _key(k):
    return k[1:] if k.startswith("!") else f":{k}"  # "!name": a plain string key


def to_yaml(obj, indent=0):
    """mail_room-style YAML: dict keys become Ruby symbols (":key:"), list items
    of hashes are written "-" on a line of their own, as GitLab's template does."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{_key(k)}:")
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                out.append(f"{pad}{_key(k)}: {{}}")
            elif isinstance(v, list):
                out.append(f"{pad}{_key(k)}: []")
            else:
                out.append(f"{pad}{_key(k)}: {_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)):
                out.append(f"{pad}-")
                out.append(to_yaml(v, indent + 2))
            else:
                out.append(f"{pad}- {_scalar(v)}")
    else:
        out.append(pad + _scalar(obj))
    return "\n".join(out)


def line_of(text, needle, start=1):
    """1-based number of the first line containing needle (from line start)."""
    for n, line in enumerate(text.splitlines(), 1):
        if n >= start and needle in line:
            return n
    raise ValueError(f"{needle!r} not in config")


def imap_mailbox(servers, user, *, transport="plain", name="INBOX", idle_timeout=600,
                 delete=False, expunge=False, log_path=None, password="secret", **extra):
    """The IMAP part of a mailbox entry.  transport: plain | tls | starttls."""
    mb = {"host": HOST}
    if transport == "plain":
        mb.update(port=servers.imap_port, ssl=False, start_tls=False, allow_plaintext_login=True)
    elif transport == "tls":
        mb.update(port=servers.imaps_port, ssl={"ca_file": servers.ca}, start_tls=False)
    elif transport == "starttls":
        # mail_room applies no ssl hash to STARTTLS; the CA comes from the default
        # trust store, which the test points at the Dovecot CA with SSL_CERT_FILE.
        mb.update(port=servers.imap_port, ssl=False, start_tls=True)
    else:
        raise ValueError(transport)
    mb.update(email=user, password=password, name=name, idle_timeout=idle_timeout,
              delete_after_delivery=delete, expunge_deleted=expunge)
    if log_path:
        mb["logger"] = {"log_path": log_path}
    mb.update(extra)
    return mb


def mailbox_label(email, port, name="INBOX", host=HOST):
    """How mailroom names a mailbox in metrics, /readiness, /liveness, status
    and check: "<email>/<name>@<host>:<port>" (host in lower case)."""
    return f"{email}/{name}@{host.lower()}:{port}"


def arbitration_key(namespace, email, port, uidvalidity, uid, name="INBOX", host=HOST):
    """The scoped arbitration key: <ns>:delivered:<email>/<FOLDER>@<host>:<port>:<uidvalidity>:<uid>
    (INBOX in upper case, the host in lower case)."""
    folder = "INBOX" if name.upper() == "INBOX" else name
    return f"{namespace}:delivered:{email}/{folder}@{host.lower()}:{port}:{uidvalidity}:{uid}"


def sidekiq_delivery(redis_url, queue, worker="EmailReceiverWorker", **extra):
    opts = {"redis_url": redis_url, "queue": queue, "worker": worker}
    opts.update(extra)
    return {"delivery_method": "sidekiq", "delivery_options": opts}


def redis_arbitration(redis_url, namespace, **extra):
    opts = {"redis_url": redis_url, "namespace": namespace}
    opts.update(extra)
    return {"arbitration_method": "redis", "arbitration_options": opts}


# ---------------------------------------------------------------- mailroom process
def mailroom_binary():
    # absolute: the process runs with the test's temp dir as its cwd
    return os.path.abspath(os.environ.get("MAILROOM_BIN") or os.path.join(REPO, "build", "mailroom"))


class Mailroom:
    """One `mailroom` process with stdout/stderr captured to files."""

    def __init__(self, workdir, args, env=None, name="mailroom"):
        self.workdir = workdir
        self.args = list(args)
        self.name = name
        self.stdout_path = os.path.join(workdir, f"{name}.stdout")
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.log_path = None  # the mailbox logger file, if the test set one
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self.returncode = None
        self.started_at = None
        self._log_seen = (None, 0)  # (path, bytes parsed) of the log read so far
        self._log_recs = []

    def start(self):
        binary = mailroom_binary()
        if not os.access(binary, os.X_OK):
            raise AssertionError(f"mailroom binary not found at {binary} (build it, or set MAILROOM_BIN)")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([binary, *self.args], stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=self.env, cwd=self.workdir)
        return self

    def alive(self):
        if self.proc is None:
            return False
        rc = self.proc.poll()
        if rc is not None:
            self.returncode = rc
            return False
        return True

    def wait_exit(self, timeout):
        """Wait for the process to exit by itself; returns (rc, seconds since start)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s\n" + self.diagnostics())
        return self.returncode, time.monotonic() - self.started_at

    def terminate(self, timeout=10):
        """SIGTERM; returns (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout} s of SIGTERM\n"
                                 + self.diagnostics())
        return self.returncode, time.monotonic() - t0

    def stop_ok(self, timeout=10):
        """SIGTERM and assert a clean exit (code 0) within timeout seconds."""
        assert self.alive(), f"{self.name} had already exited (rc={self.returncode})\n" + self.diagnostics()
        rc, took = self.terminate(timeout)
        assert rc == 0, f"{self.name} exited with {rc} after SIGTERM\n" + self.diagnostics()
        return took

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.returncode = self.proc.returncode

    def close(self):
        self.kill()
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()

    @staticmethod
    def _read(path):
        try:
            with open(path, "rb") as fh:
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def stdout(self):
        return self._read(self.stdout_path)

    @property
    def stderr(self):
        return self._read(self.stderr_path)

    @property
    def log(self):
        return self._read(self.log_path) if self.log_path else ""

    def log_records(self):
        """The structured log (JSON lines) as dicts; other lines are skipped.
        Read incrementally: only complete lines added since the last call are
        parsed (a drain writes thousands)."""
        path = self.log_path
        if not path:
            return []
        seen_path, pos = self._log_seen
        if seen_path != path:
            pos, self._log_recs = 0, []
        try:
            with open(path, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
        except OSError:
            return list(self._log_recs)
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    self._log_recs.append(json.loads(line))
                except ValueError:
                    pass
        self._log_seen = (path, pos + end)
        return list(self._log_recs)

    def records(self, action=None, where=None):
        """Log records with this action (any if None) for which where(rec) is true."""
        return [r for r in self.log_records()
                if (action is None or r.get("action") == action) and (where is None or where(r))]

    def wait_log(self, action, n=1, timeout=30, where=None, desc=None):
        """Wait until the log holds at least n records with this action (and
        where(rec) true); returns them.  Fails at once if the process exits."""
        return wait_until(lambda: (lambda rs: rs if len(rs) >= n else None)(self.records(action, where)),
                          timeout, desc or f"{n} log record(s) {action!r}", interval=0.05, proc=self)

    def wait_exit_ok(self, timeout):
        """Wait for the exit that follows a signal already sent; assert code 0.
        Returns the seconds waited."""
        t0 = time.monotonic()
        rc, _ = self.wait_exit(timeout)
        assert rc == 0, f"{self.name} exited with {rc}\n" + self.diagnostics()
        return time.monotonic() - t0

    def all_output(self):
        return self.stdout + self.stderr + self.log

    def diagnostics(self, tail=40):
        def t(s):
            lines = s.splitlines()
            return "\n".join(lines[-tail:]) if lines else "(empty)"
        parts = [f"--- {self.name} {' '.join(self.args)}",
                 f"--- stderr:\n{t(self.stderr)}", f"--- stdout:\n{t(self.stdout)}"]
        if self.log_path:
            parts.append(f"--- log {self.log_path}:\n{t(self.log)}")
        return "\n".join(parts)


def run_cli(args, timeout=15, env=None, cwd=None):
    """Run mailroom to completion; returns CompletedProcess (text)."""
    binary = mailroom_binary()
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"mailroom binary not found at {binary} (build it, or set MAILROOM_BIN)")
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.monotonic()
    try:
        cp = subprocess.run([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, timeout=timeout, env=e, cwd=cwd)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError(f"mailroom {' '.join(args)} did not exit within {timeout} s; "
                             f"stderr so far: {ex.stderr!r}")
    cp.elapsed = time.monotonic() - t0
    cp.stdout = cp.stdout.decode("utf-8", "replace")
    cp.stderr = cp.stderr.decode("utf-8", "replace")
    return cp


# ---------------------------------------------------------------- HTTP
def http_get(url, timeout=5):
    """(status, body bytes) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http_status(url, status, timeout, desc=None, proc=None):
    """Poll GET url until it answers `status`; returns (status, body)."""
    def probe():
        try:
            r = http_get(url, timeout=2)
        except OSError:
            return None
        return r if r[0] == status else None
    return wait_until(probe, timeout, desc or f"GET {url} -> {status}", interval=0.02, proc=proc)


def log_time(rec):
    """The "time" of a log record as a POSIX timestamp (float seconds)."""
    import datetime
    return datetime.datetime.fromisoformat(rec["time"]).timestamp()


# GitLab's answer to a message it will not take (gitlab-integration.md).
GITLAB_TOO_LARGE = (b'{"success":false,"message":"We couldn\'t process your email because it is too '
                    b'large. Please create your issue or comment through the web interface."}')


class WebhookReceiver:
    """A GitLab-like /api/v4/internal/mail_room/<type> endpoint in a thread.
    Records every request; answers with self.status (settable at any time).

    Hold mode, a gate for the test: after hold(), every request is recorded
    (status None until answered), `held` is set, and the answer waits until
    release(); it then carries the status in force at that moment."""

    def __init__(self, status=200):
        self.status = status
        # Optional: body -> status for this request (None: self.status).
        self.status_for = None
        self.requests = []  # dicts: path, headers (dict, lower-case names), body, status, time
        self.lock = threading.Lock()
        self.held = threading.Event()  # a request is being held
        self._gate = threading.Event()
        self._gate.set()
        self.holding = 0  # requests waiting for release() now
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.lock:
                    rec = {"path": self.path, "body": body, "status": None,
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "time": time.monotonic()}
                    outer.requests.append(rec)
                    gated = not outer._gate.is_set()
                    if gated:
                        outer.holding += 1
                        outer.held.set()
                if gated:
                    outer._gate.wait()
                with outer.lock:
                    if gated:
                        outer.holding -= 1
                    st = rec["status"] = (outer.status_for(body) if outer.status_for
                                          else None) or outer.status
                    rec["answered"] = time.monotonic()
                payload = (b'{"success":true}' if st == 200 else GITLAB_TOO_LARGE if st == 400
                           else b'{"message":"error"}')
                self.send_response(st)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/api/v4/internal/mail_room/incoming_email"):
        return f"http://{HOST}:{self.port}{path}"

    def count(self, status=None):
        with self.lock:
            return sum(1 for r in self.requests if status is None or r["status"] == status)

    def hold(self):
        """From now on, hold every answer until release()."""
        self.held.clear()
        self._gate.clear()

    def release(self):
        """Answer the held requests (with self.status) and stop holding."""
        self._gate.set()

    def close(self):
        self._gate.set()
        self.server.shutdown()
        self.server.server_close()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_hs256_jwt(token, key):
    """Verify an HS256 compact JWT with key (bytes); returns (header, claims)."""
    parts = token.split(".")
    assert len(parts) == 3, f"not a compact JWT: {token!r}"
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    assert header.get("alg") == "HS256", f"JWT header {header}"
    want = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(want, b64url_decode(parts[2])), "JWT signature does not verify"
    return header, claims


def sidekiq_config(servers, user, queue, workdir, *, transport="plain", worker="EmailReceiverWorker",
                   health_port=None, arbitration_namespace=None, redis_url=None, **mailbox):
    """A whole config (dict) for one mailbox: user's INBOX, Sidekiq delivery of
    worker to queue, a JSON log in workdir, optionally redis arbitration and a
    health check.  Extra keyword arguments go into the mailbox entry."""
    mb = imap_mailbox(servers, user, transport=transport, log_path=os.path.join(str(workdir), "mailroom.log"),
                      **mailbox)
    mb.update(sidekiq_delivery(redis_url or servers.redis_url, queue, worker))
    if arbitration_namespace:
        mb.update(redis_arbitration(servers.redis_url, arbitration_namespace))
    cfg = {}
    if health_port:
        cfg["health_check"] = {"address": HOST, "port": health_port}
    cfg["mailboxes"] = [mb]
    return cfg


def message_id(raw):
    m = re.search(rb"^Message-ID: *(\S+)", raw, re.M | re.I)
    return m.group(1).decode() if m else None
