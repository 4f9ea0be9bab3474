#!/usr/bin/env python3
"""Put messages into the test Dovecot (start-dovecot.sh).  Standard library only.
``imap_append`` also works against Cyrus and Courier (start-cyrus.sh,
start-courier.sh; pass their port); users for those: imapservers.py.

Two ways, both importable and usable from the command line:

* ``imap_append``: IMAP APPEND of every message over ONE connection, pipelined
  with LITERAL+ (about 500 messages/s; one at a time with synchronizing
  literals where the server lacks LITERAL+, as Courier does).  The realistic client path; every
  message gets its UID at once, and clients in IDLE see it within ~0.5 s.
* ``maildir_deliver``: write the files straight into ``Maildir/new`` (thousands
  per second).  Dovecot assigns UIDs at its next sync; an IDLE client is woken
  too.  As root the files are chowned to the maildir owner (dovecot).

``doveadm_save`` (one process per message, ~100/s) is the simplest way to make
a single message arrive as a local delivery would.

Command line (reads DOVECOT_* from the environment that start-dovecot.sh prints):

    mailinject.py append  --user alice FILE...        # raw RFC 5322 files
    mailinject.py append  --user alice --generate 50  # 50 generated messages
    mailinject.py maildir --user bob --generate 5000
    mailinject.py add-user dave [--password secret]
    mailinject.py status  --user alice                # MESSAGES / UNSEEN
"""
import argparse
import email.utils
import imaplib
import os
import re
import socket
import subprocess
import sys
import time
import uuid

HOST = "127.0.0.1"


def env_port(name, default=None):
    v = os.environ.get(name)
    return int(v) if v else default


def make_message(i=0, user="alice", subject=None, body=None, msgid=None,
                 sender="Sender <sender@example.com>", extra_headers=()):
    """A small CRLF-terminated RFC 5322 message as bytes (UTF-8 allowed)."""
    msgid = msgid or f"<{uuid.uuid4().hex}.{i}@mailroom.test>"
    subject = subject if subject is not None else f"test message {i}"
    body = body if body is not None else f"body of message {i}\r\n"
    lines = [f"From: {sender}", f"To: {user}@example.com", f"Subject: {subject}",
             f"Date: {email.utils.formatdate(localtime=False)}", f"Message-ID: {msgid}",
             "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
             "Content-Transfer-Encoding: 8bit", *extra_headers]
    text = "\r\n".join(lines) + "\r\n\r\n" + body
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode("utf-8")


class _Conn:
    """A minimal raw IMAP connection (imaplib cannot pipeline APPENDs)."""

    def __init__(self, host, port, tls_context=None, server_hostname=None):
        s = socket.create_connection((host, port), timeout=30)
        if tls_context is not None:
            s = tls_context.wrap_socket(s, server_hostname=server_hostname or host)
        self.s, self.buf = s, b""
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"IMAP greeting: {greeting!r}")

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("IMAP server closed the connection")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def tagged(self, tag):
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                return ln

    def close(self):
        try:
            self.s.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.s.close()


def _quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_append(messages, user, password="secret", host=HOST, port=None, folder="INBOX",
                flags="", tls_context=None, create=False, date=None):
    """APPEND every message (bytes) to folder over one connection; returns the
    APPENDUID UIDs.  flags: e.g. "\\\\Seen" (empty: the message arrives unseen).
    date: the INTERNALDATE to give them, a POSIX timestamp (None: now)."""
    port = port or env_port("DOVECOT_IMAP_PORT")
    c = _Conn(host, port, tls_context)
    try:
        c.s.sendall(b"a LOGIN " + _quote(user).encode() + b" " + _quote(password).encode() + b"\r\n")
        r = c.tagged(b"a")
        if not r.startswith(b"a OK"):
            raise RuntimeError(f"LOGIN {user}: {r!r}")
        if create:
            c.s.sendall(b"c CREATE " + _quote(folder).encode() + b"\r\n")
            c.tagged(b"c")  # ALREADYEXISTS is fine
        fl = f"({flags}) " if flags else ""
        if date is not None:
            # RFC 3501 §9 date-time, e.g. "05-Nov-2026 10:00:00 +0000"
            fl += time.strftime('"%d-%b-%Y %H:%M:%S +0000" ', time.gmtime(date))
        c.s.sendall(b"k CAPABILITY\r\n")
        caps = b""
        while True:
            ln = c.line()
            if ln.upper().startswith(b"* CAPABILITY "):
                caps = ln.upper()
            if ln.startswith(b"k "):
                break
        if b" LITERAL+" not in caps:
            # e.g. Courier: no LITERAL+, and a {n+} literal would be read as commands
            return _append_synchronizing(c, messages, folder, fl)
        uids, out = [], []
        for n, m in enumerate(messages):
            out.append(b"t%d APPEND %s %s{%d+}\r\n" % (n, _quote(folder).encode(), fl.encode(), len(m)))
            out.append(m + b"\r\n")
            if len(out) >= 200:
                c.s.sendall(b"".join(out)); out = []
        if out:
            c.s.sendall(b"".join(out))
        for n in range(len(messages)):
            r = c.tagged(b"t%d" % n)
            if not r.startswith(b"t%d OK" % n):
                raise RuntimeError(f"APPEND #{n}: {r!r}")
            m = re.search(rb"APPENDUID \d+ (\d+)", r)
            uids.append(int(m.group(1)) if m else None)
        return uids
    finally:
        c.close()


def _append_synchronizing(c, messages, folder, fl):
    """APPEND one message at a time with synchronizing literals ({n}, wait for "+")."""
    uids = []
    for n, m in enumerate(messages):
        tag = b"t%d" % n
        c.s.sendall(tag + b" APPEND %s %s{%d}\r\n" % (_quote(folder).encode(), fl.encode(), len(m)))
        while True:
            ln = c.line()
            if ln.startswith(b"+"):
                break
            if ln.startswith(tag + b" "):
                raise RuntimeError(f"APPEND #{n}: {ln!r}")
        c.s.sendall(m + b"\r\n")
        r = c.tagged(tag)
        if not r.startswith(tag + b" OK"):
            raise RuntimeError(f"APPEND #{n}: {r!r}")
        mu = re.search(rb"APPENDUID \d+ (\d+)", r)
        uids.append(int(mu.group(1)) if mu else None)
    return uids


def maildir_deliver(maildir, messages, size_hints=False):
    """Write messages into maildir/new (tmp + rename, as an MDA does).  With
    size_hints the file names carry ",S=<size>,W=<size with CRLF>" as
    Dovecot's own LDA/LMTP writes them, so that RFC822.SIZE is known without
    reading the file."""
    st = os.stat(maildir)
    names = []
    for i, m in enumerate(messages):
        data = m.replace(b"\r\n", b"\n")  # maildir files use LF; IMAP serves CRLF
        name = f"{time.time_ns()}.M{i}P{os.getpid()}R{uuid.uuid4().hex[:8]}.mailroom-test"
        if size_hints:
            lines = data.count(b"\n")
            name += f",S={len(data)},W={len(data) + lines}"
        tmp = os.path.join(maildir, "tmp", name)
        with open(tmp, "wb") as fh:
            fh.write(data)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, os.path.join(maildir, "new", name))
        names.append(name)
    return names


def user_maildir(user, mail_dir=None):
    return os.path.join(mail_dir or os.environ["DOVECOT_MAIL_DIR"], user, "Maildir")


def doveadm_save(message, user, folder="INBOX", conf=None):
    subprocess.run(["doveadm", "-c", conf or os.environ["DOVECOT_CONF"], "save", "-u", user,
                    "-m", folder], input=message, check=True)


def add_user(user, password="secret", users_file=None, mail_dir=None):
    """Add a Dovecot user while the server runs (passwd-file is re-read)."""
    users_file = users_file or os.environ["DOVECOT_USERS_FILE"]
    mail_dir = mail_dir or os.environ["DOVECOT_MAIL_DIR"]
    if ":" in user or ":" in password or "\n" in user + password:
        raise ValueError("user/password must not contain ':' or newlines")
    home = os.path.join(mail_dir, user)
    parent = os.stat(mail_dir)
    for d in (home, f"{home}/Maildir", f"{home}/Maildir/cur", f"{home}/Maildir/new", f"{home}/Maildir/tmp"):
        os.makedirs(d, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(d, parent.st_uid, parent.st_gid)
    with open(users_file, "a") as fh:
        fh.write(f"{user}:{{PLAIN}}{password}::::{home}\n")
    return user


def imap_login(user, password="secret", host=HOST, port=None, tls_context=None, starttls=False):
    """An imaplib connection, logged in.  tls_context without starttls: implicit TLS
    (then port defaults to DOVECOT_IMAPS_PORT)."""
    if tls_context is not None and not starttls:
        m = imaplib.IMAP4_SSL(host, port or env_port("DOVECOT_IMAPS_PORT"), ssl_context=tls_context)
    else:
        m = imaplib.IMAP4(host, port or env_port("DOVECOT_IMAP_PORT"))
        if starttls:
            m.starttls(ssl_context=tls_context)
    m.login(user, password)
    return m


def status(user, password="secret", folder="INBOX", **kw):
    """{'MESSAGES': n, 'UNSEEN': n, 'UIDNEXT': n, 'UIDVALIDITY': n}"""
    m = imap_login(user, password, **kw)
    try:
        typ, data = m.status(_quote(folder), "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
        if typ != "OK":
            raise RuntimeError(f"STATUS {folder}: {data!r}")
        return {k.decode(): int(v) for k, v in re.findall(rb"(\w+) (\d+)", data[0].split(b"(", 1)[1])}
    finally:
        m.logout()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("append", "maildir", "status"):
        p = sub.add_parser(name)
        p.add_argument("--user", required=True)
        p.add_argument("--password", default=os.environ.get("DOVECOT_PASSWORD", "secret"))
        p.add_argument("--folder", default="INBOX")
        if name != "status":
            p.add_argument("--generate", type=int, default=0, help="generate N messages")
            p.add_argument("files", nargs="*", help="raw message files (LF or CRLF)")
    p = sub.add_parser("add-user")
    p.add_argument("user")
    p.add_argument("--password", default=os.environ.get("DOVECOT_PASSWORD", "secret"))
    a = ap.parse_args(argv)

    if a.cmd == "add-user":
        add_user(a.user, a.password)
        return 0
    if a.cmd == "status":
        print(" ".join(f"{k}={v}" for k, v in status(a.user, a.password, a.folder).items()))
        return 0
    msgs = []
    for f in a.files:
        with open(f, "rb") as fh:
            data = fh.read()
        msgs.append(re.sub(rb"\r?\n", b"\r\n", data))
    msgs += [make_message(i, a.user) for i in range(a.generate)]
    t0 = time.monotonic()
    if a.cmd == "append":
        imap_append(msgs, a.user, a.password, folder=a.folder)
    else:
        if a.folder != "INBOX":
            ap.error("maildir: only INBOX")
        maildir_deliver(user_maildir(a.user), msgs)
    print(f"{a.cmd}: {len(msgs)} message(s) for {a.user} in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
