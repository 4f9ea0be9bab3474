#!/usr/bin/env python3
"""Throughput of the operator commands on a large mailbox.

Loads N messages (default 10,000, ~1 KB each, varied senders) into a fresh
Dovecot user, then times, as an operator would run them:

* unseen --json           list every unseen message (headers fetched with PEEK)
* mark-seen --all         UID STORE +FLAGS (\\Seen) on all of them
* mark-seen --from REGEX  the same after clearing \\Seen, with a header filter
                          (fetch + decode + match + store)
* expunge --all           after flagging all of them \\Deleted

Each rate is messages / wall time of the whole `mailroom` process (start,
connect, login, work, logout). Servers: reuses the test servers when
MAILROOM_TEST_ENV (an env.sh) or TEST_SERVERS_DIR is set, else starts its own
(tests/servers/start-all.sh) and stops them at the end.

usage: bench/ops_bench.py [--messages 10000] [--bin build/mailroom] [--keep]
"""
import argparse
import email.utils
import imaplib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "servers"))
import mailinject  # noqa: E402

HOST = "127.0.0.1"


def parse_env(path):
    env = {}
    with open(path) as fh:
        for line in fh:
            if line.startswith("export "):
                for item in shlex.split(line[len("export "):]):
                    k, _, v = item.partition("=")
                    env[k] = v
    return env


def servers():
    """(env, directory we own or None)."""
    env_file = os.environ.get("MAILROOM_TEST_ENV")
    if not env_file and os.environ.get("TEST_SERVERS_DIR"):
        env_file = os.path.join(os.environ["TEST_SERVERS_DIR"], "env.sh")
    if env_file:
        return parse_env(env_file), None
    d = tempfile.mkdtemp(prefix="mailroom-opsbench.", dir="/tmp")
    os.chmod(d, 0o755)
    subprocess.run([os.path.join(ROOT, "tests", "servers", "start-all.sh"), d], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return parse_env(os.path.join(d, "env.sh")), d


def imap(env, user):
    m = imaplib.IMAP4(HOST, int(env["DOVECOT_IMAP_PORT"]))
    m.login(user, "secret")
    m.select("INBOX")
    return m


def timed(binary, args):
    t0 = time.monotonic()
    cp = subprocess.run([binary, *args], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    if cp.returncode != 0:
        raise SystemExit(f"mailroom {' '.join(args)} failed (rc={cp.returncode}):\n{cp.stderr}")
    return cp, took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--bin", default=os.environ.get("MAILROOM_BIN", os.path.join(ROOT, "build", "mailroom")))
    ap.add_argument("--keep", action="store_true", help="keep servers this script started")
    a = ap.parse_args()
    n = a.messages
    env, owned = servers()
    os.environ.update(env)
    user = f"bench{int(time.time())}"
    mailinject.add_user(user, "secret", env["DOVECOT_USERS_FILE"], env["DOVECOT_MAIL_DIR"])
    deadline = time.monotonic() + 10
    while True:  # Dovecot re-reads its passwd-file at most once a second
        try:
            imap(env, user).logout()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    workdir = tempfile.mkdtemp(prefix="opsbench.")
    try:
        now = time.time()
        senders = ["Alice <alice@example.com>", "=?UTF-8?Q?J=C3=B6rg?= <joerg@example.de>",
                   "noreply@ci.example.org", "Bot <bot@example.net>"]
        body = ("x" * 70 + "\r\n") * 10
        msgs = []
        for i in range(n):
            m = mailinject.make_message(i, user, sender=senders[i % 4], body=body)
            date = email.utils.formatdate(now - (i % 100) * 3600).encode()
            msgs.append(m.replace(b"Date: ", b"Date: " + date + b"\r\nX-Old-Date: ", 1))
        t0 = time.monotonic()
        mailinject.maildir_deliver(mailinject.user_maildir(user, env["DOVECOT_MAIL_DIR"]), msgs)
        while mailinject.status(user, port=int(env["DOVECOT_IMAP_PORT"]))["MESSAGES"] < n:
            time.sleep(0.2)
        load = time.monotonic() - t0

        cfg = os.path.join(workdir, "ops.yml")
        with open(cfg, "w") as fh:
            fh.write(f""":mailboxes:
  -
    :host: {HOST}
    :port: {env['DOVECOT_IMAP_PORT']}
    :ssl: false
    :start_tls: false
    :allow_plaintext_login: true
    :email: {user}
    :password: secret
    :name: INBOX
    :delivery_method: noop
""")
        rows = []
        cp, took = timed(a.bin, ["unseen", "-c", cfg, "--json"])
        listed = len(json.loads(cp.stdout))
        assert listed == n, f"unseen listed {listed} of {n}"
        rows.append(("unseen --json", listed, took))

        cp, took = timed(a.bin, ["mark-seen", "-c", cfg, "--all"])
        assert f"marked {n} of {n}" in cp.stdout, cp.stdout
        rows.append(("mark-seen --all", n, took))

        m = imap(env, user)
        m.uid("STORE", "1:*", "-FLAGS.SILENT", "(\\Seen)")
        m.logout()
        cp, took = timed(a.bin, ["mark-seen", "-c", cfg, "--from", "alice|joerg|noreply|bot"])
        assert f"marked {n} of {n}" in cp.stdout, cp.stdout
        rows.append(("mark-seen --from REGEX", n, took))

        m = imap(env, user)
        m.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Deleted)")
        m.logout()
        cp, took = timed(a.bin, ["expunge", "-c", cfg, "--all"])
        assert f"expunged {n} " in cp.stdout, cp.stdout
        rows.append(("expunge --all", n, took))
        left = mailinject.status(user, port=int(env["DOVECOT_IMAP_PORT"]))["MESSAGES"]
        assert left == 0, f"{left} messages left after expunge"

        print(f"ops_bench: {n} messages of ~{len(msgs[0])} bytes, loaded in {load:.1f} s "
              f"(Dovecot maildir, {a.bin})")
        print(f"{'command':<26} {'messages':>9} {'wall s':>8} {'msg/s':>9}")
        for name, count, t in rows:
            print(f"{name:<26} {count:>9} {t:>8.3f} {count / t:>9.0f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if owned and not a.keep:
            subprocess.run([os.path.join(ROOT, "tests", "servers", "stop-all.sh"), owned],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(owned, ignore_errors=True)


if __name__ == "__main__":
    main()
