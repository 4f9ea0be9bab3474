#!/usr/bin/python3
"""Smoke test of the same IMAP scenario against Dovecot, Cyrus, Courier and the
Courier listener without UIDPLUS, as started by start-all.sh.  Standard library
only; prints what each server answers, so differences are visible.

    /usr/bin/python3 tests/servers/smoke-interop.py [ENV_SH] [--only cyrus,courier]
                                                    [--idle-rounds 3] [--idle-settle 0.3]

ENV_SH defaults to $TEST_SERVERS_DIR/env.sh.  For every server, with a fresh user
(imapservers.add_user):
  * CAPABILITY before and after login; LOGIN over plain, over STARTTLS and over
    implicit TLS, the certificate verified against the server's own CA; what a
    wrong password answers;
  * the UIDVALIDITY of INBOX and of a new mailbox, PERMANENTFLAGS;
  * APPEND of 3 messages (raw 8-bit UTF-8 headers, an ISO-8859-1 body, plain
    ASCII), with LITERAL+ where offered; UID SEARCH UNSEEN; UID FETCH BODY.PEEK[]
    byte for byte; a keyword; UID STORE +FLAGS (\\Seen \\Deleted); UID EXPUNGE
    where UIDPLUS is offered, else EXPUNGE;
  * IDLE: a second connection APPENDs, the latency until the idling one sees
    "* n EXISTS";
  * a non-synchronizing literal where LITERAL+ is NOT offered; LOGOUT's answer.
Exit status 0 when every check passed.
"""
import argparse
import os
import re
import socket
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imapservers  # noqa: E402

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"    FAIL: {what}")
    return cond


class Conn:
    """A raw IMAP connection: shows every response line, handles literals."""

    def __init__(self, host, port, ctx=None, timeout=15):
        s = socket.create_connection((host, port), timeout=timeout)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.s, self.buf, self.n = s, b"", 0
        self.greeting = self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("server closed the connection")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def response(self):
        """One response: a line plus its literals -> (line with {n} markers, [literal bytes])."""
        ln = self.line()
        lits = []
        while True:
            m = re.search(rb"\{(\d+)\}$", ln)
            if not m:
                return ln, lits
            n = int(m.group(1))
            while len(self.buf) < n:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError("server closed the connection in a literal")
                self.buf += d
            lits.append(self.buf[:n])
            self.buf = self.buf[n:]
            ln = ln + b"<literal>" + self.line()

    def cmd(self, text, literals=(), nonsync=False):
        """Send a command; literals are appended as {n} (waiting for '+') or {n+}.
        Returns (tagged line, [(untagged line, literals)])."""
        self.n += 1
        tag = b"t%d" % self.n
        parts = text.encode() if isinstance(text, str) else text
        untagged = []
        if not literals:
            self.s.sendall(tag + b" " + parts + b"\r\n")
        else:
            first = tag + b" " + parts
            for i, lit in enumerate(literals):
                marker = b"{%d+}" % len(lit) if nonsync else b"{%d}" % len(lit)
                self.s.sendall((first if i == 0 else b"") + marker + b"\r\n")
                if not nonsync:
                    while True:
                        ln, lits = self.response()
                        if ln.startswith(b"+"):
                            break
                        if ln.startswith(tag + b" "):
                            return ln, untagged
                        untagged.append((ln, lits))
                self.s.sendall(lit)
            self.s.sendall(b"\r\n")
        while True:
            ln, lits = self.response()
            if ln.startswith(tag + b" "):
                return ln, untagged
            untagged.append((ln, lits))

    def starttls(self, ctx):
        tagged, _ = self.cmd("STARTTLS")
        if not tagged.split()[1] == b"OK":
            raise RuntimeError(f"STARTTLS: {tagged!r}")
        assert self.buf == b"", "data after STARTTLS OK (injection?)"
        self.s = ctx.wrap_socket(self.s, server_hostname="localhost")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ok(tagged):
    return tagged.split(b" ", 2)[1] == b"OK"


def caps_of(tagged, untagged, greeting=b""):
    for ln, _ in untagged:
        if ln.upper().startswith(b"* CAPABILITY "):
            return ln[len(b"* CAPABILITY "):].decode().split()
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", tagged) or re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting)
    return m.group(1).decode().split() if m else []


def code(untagged, name):
    for ln, _ in untagged:
        m = re.search(rb"\[" + name.encode() + rb" ([^\]]*)\]", ln)
        if m:
            return m.group(1).decode()
    return None


def messages(user):
    mid = uuid.uuid4().hex
    m1 = ("From: J\u00f6rg M\u00fcller <joerg@example.com>\r\nTo: " + user + "@example.com\r\n"
          "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2603\r\nMessage-ID: <" + mid + ".1@smoke>\r\n"
          "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
          "Content-Transfer-Encoding: 8bit\r\n\r\nRaw UTF-8 in the headers: \u00e9\u00e8\u00ea \u2603\r\n").encode("utf-8")
    m2 = ("From: a@example.com\r\nTo: " + user + "@example.com\r\nSubject: latin-1 body\r\n"
          "Message-ID: <" + mid + ".2@smoke>\r\nMIME-Version: 1.0\r\n"
          "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
          "Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade, \u00a3 \u00b5 \u00ff\r\n").encode("latin-1")
    m3 = ("From: b@example.com\r\nTo: " + user + "@example.com\r\nSubject: plain ascii\r\n"
          "Message-ID: <" + mid + ".3@smoke>\r\n\r\nline one\r\nline two\r\n").encode()
    return [m1, m2, m3]


def show(label, value):
    print(f"  {label:<26} {value}")


def run(server, env, idle_rounds, idle_settle):
    ep = imapservers.endpoint(server, env)
    base = "courier" if server.startswith("courier") else server
    ctx = imapservers.tls_context(server, env)
    print(f"\n=== {server}: {ep['host']}:{ep['port']} (TLS port {ep['tls_port']})")
    user = f"smoke{uuid.uuid4().hex[:8]}"
    pw = ep["password"]
    t0 = time.monotonic()
    imapservers.add_user(base, user, pw, env)
    show("add_user", f"{user} in {(time.monotonic() - t0) * 1000:.0f} ms")

    # --- plain: capabilities, wrong password, LOGIN ---
    c = Conn(ep["host"], ep["port"])
    show("greeting", c.greeting.decode(errors="replace"))
    tagged, untagged = c.cmd("CAPABILITY")
    pre = caps_of(tagged, untagged)
    show("CAPABILITY before login", " ".join(pre))
    t = time.monotonic()
    tagged, untagged = c.cmd(f"LOGIN {q(user)} {q('wrong-' + pw)}")
    show("wrong password", f"{tagged.decode(errors='replace')} ({(time.monotonic() - t) * 1000:.0f} ms)"
         + "".join(f" | {u.decode(errors='replace')}" for u, _ in untagged))
    check(not ok(tagged), f"{server}: wrong password accepted")
    try:
        tagged, untagged = c.cmd(f"LOGIN {q(user)} {q(pw)}")
    except EOFError:
        show("after a failed LOGIN", "the server closed the connection; reconnecting")
        c.close()
        c = Conn(ep["host"], ep["port"])
        tagged, untagged = c.cmd(f"LOGIN {q(user)} {q(pw)}")
    check(ok(tagged), f"{server}: plain LOGIN: {tagged!r}")
    show("LOGIN (plain)", tagged.decode(errors="replace"))
    tagged, untagged = c.cmd("CAPABILITY")
    post = caps_of(tagged, untagged)
    show("CAPABILITY after login", " ".join(post))
    caps = set(x.upper() for x in pre + post)
    show("offered", " ".join(f"{k}={'yes' if k in caps else 'no'}" for k in
                              ("IDLE", "UIDPLUS", "MOVE", "ENABLE", "LITERAL+", "CONDSTORE", "ESEARCH", "SASL-IR")))
    if "ENABLE" in caps:
        tagged, untagged = c.cmd("ENABLE CONDSTORE")
        show("ENABLE CONDSTORE", " | ".join([u.decode() for u, _ in untagged] + [tagged.decode()]))
    tagged, untagged = c.cmd('LIST "" ""')
    show("LIST \"\" \"\"", " | ".join(u.decode() for u, _ in untagged))
    m = re.search(rb'\(([^)]*)\) (?:"(.)"|NIL)', untagged[0][0]) if untagged else None
    sep = m.group(2).decode() if m and m.group(2) else "/"
    tagged, untagged = c.cmd("NAMESPACE")
    show("NAMESPACE", " | ".join(u.decode() for u, _ in untagged))
    prefix = ""
    mns = re.match(rb'\* NAMESPACE \(\("([^"]*)"', untagged[0][0]) if untagged else None
    if mns:
        prefix = mns.group(1).decode()
    newbox = f"{prefix}smoke-{uuid.uuid4().hex[:6]}"
    tagged, _ = c.cmd(f"CREATE {q(newbox)}")
    check(ok(tagged), f"{server}: CREATE {newbox}: {tagged!r}")
    tagged, untagged = c.cmd(f"STATUS {q(newbox)} (UIDVALIDITY UIDNEXT MESSAGES)")
    show("new mailbox STATUS", " | ".join(u.decode() for u, _ in untagged) + f"  (separator {sep!r})")

    # --- SELECT, APPEND, SEARCH, FETCH, STORE, EXPUNGE ---
    tagged, untagged = c.cmd("SELECT INBOX")
    check(ok(tagged), f"{server}: SELECT INBOX")
    show("SELECT INBOX", tagged.decode())
    for ln, _ in untagged:
        show("", ln.decode())
    show("INBOX UIDVALIDITY", code(untagged, "UIDVALIDITY"))
    msgs = messages(user)
    uids = []
    nonsync = "LITERAL+" in caps
    for i, msg in enumerate(msgs):
        tagged, untagged = c.cmd("APPEND INBOX ", [msg], nonsync=nonsync)
        check(ok(tagged), f"{server}: APPEND #{i}: {tagged!r}")
        show(f"APPEND #{i + 1} ({'{n+}' if nonsync else '{n}'})",
             tagged.decode() + "".join(f" | {u.decode()}" for u, _ in untagged))
        mu = re.search(rb"APPENDUID \d+ (\d+)", tagged)
        uids.append(int(mu.group(1)) if mu else None)
    tagged, untagged = c.cmd("NOOP")
    tagged, untagged = c.cmd("UID SEARCH UNSEEN")
    found = []
    for ln, _ in untagged:
        if ln.startswith(b"* SEARCH"):
            found = [int(x) for x in ln.split()[2:]]
    show("UID SEARCH UNSEEN", found)
    check(len(found) == 3, f"{server}: UID SEARCH UNSEEN found {found}")
    if all(uids):
        check(found == uids, f"{server}: APPENDUIDs {uids} != SEARCH {found}")
    for uid, msg in zip(found, msgs):
        tagged, untagged = c.cmd(f"UID FETCH {uid} (BODY.PEEK[] FLAGS)")
        body = [lits[0] for ln, lits in untagged if lits]
        same = bool(body) and body[0] == msg
        check(same, f"{server}: UID {uid}: fetched bytes differ")
        if not same and body:
            show(f"  UID {uid} got", body[0][:300])
        show(f"UID FETCH {uid} BODY.PEEK[]", f"{'identical' if same else 'DIFFERENT'} ({len(msg)} bytes) "
             + " ".join(ln.decode(errors='replace') for ln, _ in untagged))
    tagged, untagged = c.cmd(f"UID STORE {found[0]} +FLAGS ($Forwarded mailroom-kw)")
    show("UID STORE +FLAGS keyword", tagged.decode() + "".join(f" | {u.decode()}" for u, _ in untagged))
    allset = ",".join(map(str, found))
    tagged, untagged = c.cmd(f"UID STORE {allset} +FLAGS (\\Seen \\Deleted)")
    check(ok(tagged), f"{server}: UID STORE: {tagged!r}")
    show("UID STORE +FLAGS", tagged.decode() + "".join(f" | {u.decode()}" for u, _ in untagged))
    tagged, untagged = c.cmd("UID SEARCH UNSEEN")
    left = [ln.decode() for ln, _ in untagged]
    check(any(x.strip() == "* SEARCH" for x in left), f"{server}: still unseen after STORE: {left}")
    if "UIDPLUS" in caps:
        tagged, untagged = c.cmd(f"UID EXPUNGE {allset}")
        show("UID EXPUNGE", tagged.decode() + "".join(f" | {u.decode()}" for u, _ in untagged))
    else:
        tagged, untagged = c.cmd("EXPUNGE")
        show("EXPUNGE (no UIDPLUS)", tagged.decode() + "".join(f" | {u.decode()}" for u, _ in untagged))
    check(ok(tagged), f"{server}: expunge: {tagged!r}")
    tagged, untagged = c.cmd("STATUS INBOX (MESSAGES UIDNEXT)")
    show("STATUS INBOX after", " | ".join(u.decode() for u, _ in untagged) + " " + tagged.decode())
    tagged, untagged = c.cmd("LOGOUT")
    show("LOGOUT", " | ".join([u.decode() for u, _ in untagged] + [tagged.decode()]))
    try:
        rest = c.s.recv(100)
        show("after LOGOUT", "connection closed" if rest == b"" else repr(rest))
    except OSError as e:
        show("after LOGOUT", repr(e))
    c.close()

    # --- STARTTLS and implicit TLS, certificate verified ---
    c = Conn(ep["host"], ep["port"])
    c.starttls(ctx)
    tagged, untagged = c.cmd("CAPABILITY")
    show("CAPABILITY after STARTTLS", " ".join(caps_of(tagged, untagged)))
    tagged, _ = c.cmd(f"LOGIN {q(user)} {q(pw)}")
    check(ok(tagged), f"{server}: LOGIN after STARTTLS: {tagged!r}")
    show("LOGIN (STARTTLS)", f"{tagged.decode()}  [{c.s.version()}]")
    c.cmd("LOGOUT")
    c.close()
    if ep["tls_port"]:
        c = Conn(ep["host"], ep["tls_port"], ctx)
        tagged, _ = c.cmd(f"LOGIN {q(user)} {q(pw)}")
        check(ok(tagged), f"{server}: LOGIN over implicit TLS: {tagged!r}")
        show("LOGIN (implicit TLS)", f"{tagged.decode()}  [{c.s.version()}]")
        c.cmd("LOGOUT")
        c.close()

    # --- IDLE latency: another connection APPENDs ---
    idler = Conn(ep["host"], ep["port"])
    idler.cmd(f"LOGIN {q(user)} {q(pw)}")
    tagged, untagged = idler.cmd("SELECT INBOX")
    exists = [int(ln.split()[1]) for ln, _ in untagged if ln.endswith(b" EXISTS")]
    n = exists[-1] if exists else 0
    writer = Conn(ep["host"], ep["port"])
    writer.cmd(f"LOGIN {q(user)} {q(pw)}")
    lat = []
    idler.n += 1
    itag = b"t%d" % idler.n
    idler.s.sendall(itag + b" IDLE\r\n")
    cont = idler.line()
    check(cont.startswith(b"+"), f"{server}: IDLE answered {cont!r}")
    # a real client idles long before mail arrives; --idle-settle 0 tests an APPEND
    # right after the "+ idling" answer
    time.sleep(idle_settle)
    for r in range(idle_rounds):
        msg = messages(user)[2]
        t = time.monotonic()
        tagged, _ = writer.cmd("APPEND INBOX ", [msg])
        t_ok = time.monotonic()
        got = None
        idler.s.settimeout(70)
        while True:
            ln = idler.line()
            if ln.endswith(b" EXISTS"):
                got = int(ln.split()[1])
                if got > n:
                    break
        dt = time.monotonic() - t
        n = got
        lat.append(dt)
        show(f"IDLE round {r + 1}", f"EXISTS {got} after {dt * 1000:.0f} ms (APPEND took {(t_ok - t) * 1000:.0f} ms)")
        time.sleep(0.2)
    idler.s.sendall(b"DONE\r\n")
    while True:
        ln = idler.line()
        if ln.startswith(itag + b" "):
            show("IDLE DONE", ln.decode())
            break
    check(max(lat) < 1.5, f"{server}: IDLE latency {max(lat):.2f} s")
    idler.cmd("LOGOUT"); idler.close()
    writer.cmd("LOGOUT"); writer.close()

    # --- a non-synchronizing literal where LITERAL+ is not offered ---
    if "LITERAL+" not in caps:
        c = Conn(ep["host"], ep["port"])
        c.cmd(f"LOGIN {q(user)} {q(pw)}")
        c.s.settimeout(3)
        try:
            c.s.sendall(b"x1 APPEND INBOX {11+}\r\nFrom: a\r\n\r\n\r\nx2 NOOP\r\n")
            lines = []
            while True:
                ln = c.line()
                lines.append(ln.decode(errors="replace"))
                if ln.startswith(b"x2 ") or len(lines) > 6:
                    break
        except (socket.timeout, EOFError) as e:
            lines.append(repr(e))
        show("{n+} without LITERAL+", " | ".join(lines))
        c.close()
    return {"server": server, "pre": pre, "post": post, "idle_ms": [round(x * 1000) for x in lat]}


def main():
    ap = argparse.ArgumentParser(description="IMAP interop smoke test")
    ap.add_argument("env_sh", nargs="?")
    ap.add_argument("--only", default=",".join(imapservers.SERVERS))
    ap.add_argument("--idle-rounds", type=int, default=3)
    ap.add_argument("--idle-settle", type=float, default=0.3, help="seconds between IDLE and the first APPEND")
    a = ap.parse_args()
    path = a.env_sh or os.path.join(os.environ.get("TEST_SERVERS_DIR", ""), "env.sh")
    env = imapservers.load_env(path)
    results = []
    for server in a.only.split(","):
        try:
            results.append(run(server, env, a.idle_rounds, a.idle_settle))
        except Exception as e:  # noqa: BLE001 - report and go on with the next server
            FAILURES.append(f"{server}: {e!r}")
            print(f"    FAIL: {server}: {e!r}")
    print("\n=== summary")
    for r in results:
        print(f"  {r['server']:<18} IDLE latency ms {r['idle_ms']}")
    if FAILURES:
        print("FAILED:\n  " + "\n  ".join(FAILURES))
        return 1
    print("SMOKE-INTEROP OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
