#!/usr/bin/env python3
"""The three test IMAP servers side by side: Dovecot (start-dovecot.sh), Cyrus
(start-cyrus.sh) and Courier (start-courier.sh).  Standard library only.

``endpoint(server, env)`` gives host, ports, CA, users and password of one server
from the export lines its start script printed (``env``: a dict such as
``os.environ`` or ``load_env(".../env.sh")``).  Servers: "dovecot", "cyrus",
"courier", and "courier-nouidplus" (the Courier listener without UIDPLUS).

``add_user(server, user, password, env)`` adds a user while the server runs and
returns once LOGIN works for it (polls LOGIN, no fixed sleep):

* dovecot: a passwd-file line + maildir (mailinject.add_user).  0.02-1 s:
           Dovecot re-reads the passwd-file at most once per second, and a LOGIN
           that fails meanwhile takes 0.5 s.
* cyrus:   saslpasswd2 into the server's sasldb, then LOGIN, which creates the
           INBOX (autocreate_quota: 0); 20-70 ms.
* courier: a userdb line + Maildir, makeuserdb (rewrites userdb.dat, which
           authdaemond re-reads); 20-50 ms.
``add_users(server, users, password, env)`` does the same for several users with
one makeuserdb run (Courier: about 15 ms per user in a batch of 10).

Command line:  imapservers.py add-user cyrus dave [--password secret] [--env DIR/env.sh]
"""
import argparse
import base64
import fcntl
import hashlib
import imaplib
import os
import re
import shlex
import ssl
import subprocess
import sys
import time

SERVERS = ("dovecot", "cyrus", "courier", "courier-nouidplus")


def load_env(path):
    """The NAME='value' pairs of an env.sh written by start-all.sh (export lines)."""
    env = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line.startswith("export "):
                continue
            for tok in shlex.split(line[len("export "):]):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    env[k] = v
    return env


def endpoint(server, env=None):
    """{'host', 'port', 'tls_port' (None if none), 'ca', 'users', 'password'} of a server."""
    env = os.environ if env is None else env
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r} (one of {', '.join(SERVERS)})")
    pre = "COURIER" if server.startswith("courier") else server.upper()
    port = env[f"{pre}_NOUIDPLUS_PORT"] if server == "courier-nouidplus" else env[f"{pre}_IMAP_PORT"]
    tls = None if server == "courier-nouidplus" else env.get(f"{pre}_IMAPS_PORT")
    return {"host": env.get(f"{pre}_HOST", "127.0.0.1"), "port": int(port),
            "tls_port": int(tls) if tls else None, "ca": env.get(f"{pre}_CA"),
            "users": env.get(f"{pre}_USERS", "").split(), "password": env.get(f"{pre}_PASSWORD", "secret")}


def tls_context(server, env=None):
    """An SSL context that trusts exactly the server's own CA."""
    return ssl.create_default_context(cafile=endpoint(server, env)["ca"])


def login(server, user, password=None, env=None, tls=None, timeout=10):
    """A logged-in imaplib connection.  tls: None (plain), "starttls" or "implicit"."""
    ep = endpoint(server, env)
    password = ep["password"] if password is None else password
    if tls == "implicit":
        m = imaplib.IMAP4_SSL(ep["host"], ep["tls_port"], ssl_context=tls_context(server, env), timeout=timeout)
    else:
        m = imaplib.IMAP4(ep["host"], ep["port"], timeout=timeout)
        if tls == "starttls":
            m.starttls(ssl_context=tls_context(server, env))
    try:
        m.login(user, password)
    except Exception:
        m.shutdown()
        raise
    return m


def wait_login(server, user, password, env=None, timeout=10.0):
    """Poll LOGIN + SELECT INBOX until both succeed (or raise after timeout s)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            m = login(server, user, password, env)
            try:
                typ, data = m.select("INBOX")
                if typ == "OK":
                    return
                last = f"SELECT INBOX: {typ} {data!r}"
            finally:
                m.logout()
        except (imaplib.IMAP4.error, OSError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server}: LOGIN as {user} still fails after {timeout} s: {last}")
        time.sleep(0.02)


def _check_name(user, password):
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", user) or len(user) > 64:
        raise ValueError(f"user name {user!r}: letters, digits, _ . + - only")
    if any(c in password for c in "\0\r\n|"):
        raise ValueError("password must not contain NUL, CR, LF or |")


def _cyrus_add(users, password, env):
    sasldb, realm = env["CYRUS_SASLDB"], env.get("CYRUS_REALM", "localhost")
    # one at a time: saslpasswd2 opens the Berkeley DB without a lock environment
    for u in users:
        subprocess.run(["saslpasswd2", "-c", "-p", "-f", sasldb, "-u", realm, u],
                       input=password.encode(), check=True, capture_output=True)


def _courier_add(users, password, env):
    userdb = env["COURIER_USERDB"]
    mail_dir = env["COURIER_MAIL_DIR"]
    st = os.stat(mail_dir)
    pw = "{SHA256}" + base64.b64encode(hashlib.sha256(password.encode()).digest()).decode()
    lines = []
    for u in users:
        home = os.path.join(mail_dir, u)
        for d in (home, f"{home}/Maildir", f"{home}/Maildir/cur", f"{home}/Maildir/new", f"{home}/Maildir/tmp"):
            os.makedirs(d, mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(d, st.st_uid, st.st_gid)
        lines.append(f"{u}\tuid={st.st_uid}|gid={st.st_gid}|home={home}|mail={home}/Maildir|systempw={pw}\n")
    # makeuserdb takes the same lock; hold it from the append on, so concurrent
    # add_user calls never lose a line
    with open(userdb + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(userdb) as fh:
            kept = [ln for ln in fh if ln.split("\t", 1)[0] not in set(users)]
        with open(userdb + ".new", "w") as fh:
            fh.writelines(kept + lines)
        os.chmod(userdb + ".new", 0o600)
        os.replace(userdb + ".new", userdb)
    subprocess.run(["makeuserdb", "-f", userdb], check=True, capture_output=True)


def add_users(server, users, password="secret", env=None, timeout=10.0):
    """Add users to a running server; return once LOGIN works for each."""
    env = os.environ if env is None else env
    users = list(users)
    for u in users:
        _check_name(u, password)
    if server == "dovecot":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import mailinject
        for u in users:
            mailinject.add_user(u, password, users_file=env["DOVECOT_USERS_FILE"], mail_dir=env["DOVECOT_MAIL_DIR"])
    elif server == "cyrus":
        _cyrus_add(users, password, env)
    elif server in ("courier", "courier-nouidplus"):
        server = "courier"
        _courier_add(users, password, env)
    else:
        raise ValueError(f"add_user: unknown server {server!r}")
    for u in users:
        wait_login(server, u, password, env, timeout)
    return users


def add_user(server, user, password="secret", env=None, timeout=10.0):
    """Add one user to a running server ("dovecot", "cyrus", "courier"); return
    once LOGIN (and SELECT INBOX) works for it."""
    add_users(server, [user], password, env, timeout)
    return user


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("add-user", help="add users to a running server")
    p.add_argument("server", choices=("dovecot", "cyrus", "courier"))
    p.add_argument("users", nargs="+")
    p.add_argument("--password", default=None)
    p.add_argument("--env", help="an env.sh from start-all.sh (default: the environment)")
    a = ap.parse_args(argv)
    env = load_env(a.env) if a.env else os.environ
    pw = a.password if a.password is not None else endpoint(a.server, env)["password"]
    t0 = time.monotonic()
    add_users(a.server, a.users, pw, env)
    print(f"{a.server}: added {' '.join(a.users)} in {time.monotonic() - t0:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
