#!/usr/bin/env python3
"""Core service figures: drain rate and pickup latency under IDLE.

Starts its own Dovecot and Redis (tests/servers), then:

* drain: N messages of ~4 KB pre-loaded into a mailbox, mailroom started with
  sidekiq delivery + delete_after_delivery + expunge_deleted; wall time from
  process start until the mailbox is empty and N jobs are in Redis.
* pickup: mailroom idling on an empty mailbox; M messages appended one at a
  time; time from the APPEND's OK to the job being in Redis (BLPOP).  Next to
  it, the same measurement for a minimal raw IDLE client (time from APPEND OK
  to the "* n EXISTS" line): Dovecot's own notification delay.

Prints a table.  usage: bench/core_bench.py [--messages 1000] [--pickups 50]
                                           [--bin build/mailroom]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "servers"))
import mailinject  # noqa: E402
import redis  # noqa: E402  (Debian python3-redis)


def start(script, d):
    out = subprocess.run([os.path.join(ROOT, "tests", "servers", script), d], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("export "):
            for part in line[len("export "):].split(" "):
                if "=" in part:
                    k, v = part.split("=", 1)
                    os.environ[k] = v.strip("'")


def write_config(path, user, port, redis_port, queue, log_path):
    with open(path, "w") as fh:
        fh.write(f""":mailboxes:
  -
    :host: 127.0.0.1
    :port: {port}
    :ssl: false
    :allow_plaintext_login: true
    :email: {user}
    :password: secret
    :name: inbox
    :idle_timeout: 600
    :delete_after_delivery: true
    :expunge_deleted: true
    :logger:
      :log_path: {log_path}
    :delivery_method: sidekiq
    :delivery_options:
      :redis_url: redis://127.0.0.1:{redis_port}/0
      :queue: {queue}
      :worker: EmailReceiverWorker
    :arbitration_method: redis
    :arbitration_options:
      :redis_url: redis://127.0.0.1:{redis_port}/0
      :namespace: bench
""")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def raw_idle_latency(user, port, count):
    """APPEND OK -> '* n EXISTS' seen by a bare IDLE client."""
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(f"a LOGIN {user} secret\r\nb SELECT INBOX\r\n".encode())
    while not f.readline().startswith(b"b "):
        pass
    out = []
    for i in range(count):
        s.sendall(b"i IDLE\r\n")
        while not f.readline().startswith(b"+"):
            pass
        mailinject.imap_append([mailinject.make_message(i, user)], user)
        t0 = time.monotonic()
        while True:
            line = f.readline()
            if line.endswith(b"EXISTS\r\n"):
                out.append(time.monotonic() - t0)
                break
        s.sendall(b"DONE\r\n")
        while not f.readline().startswith(b"i "):
            pass
    s.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--pickups", type=int, default=50)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "mailroom"))
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="mailroom-bench.", dir="/tmp")
    os.chmod(d, 0o755)
    os.environ["DOVECOT_USERS"] = "drain pickup rawidle"
    try:
        start("start-dovecot.sh", os.path.join(d, "dovecot"))
        start("start-redis.sh", os.path.join(d, "redis"))
        port = int(os.environ["DOVECOT_IMAP_PORT"])
        rport = int(os.environ["REDIS_PORT"])
        r = redis.Redis(port=rport)

        # --- drain ---
        body = ("x" * 76 + "\r\n") * 50  # ~4 KB
        msgs = [mailinject.make_message(i, "drain", body=body) for i in range(a.messages)]
        mailinject.maildir_deliver(mailinject.user_maildir("drain"), msgs)
        assert mailinject.status("drain")["MESSAGES"] == a.messages
        cfg = os.path.join(d, "drain.yml")
        write_config(cfg, "drain", port, rport, "drain", os.path.join(d, "drain.log"))
        t0 = time.monotonic()
        p = subprocess.Popen([a.bin, "-c", cfg])
        while r.llen("queue:drain") < a.messages:
            if time.monotonic() - t0 > 300:
                raise SystemExit("drain did not finish in 300 s")
            time.sleep(0.005)
        t_jobs = time.monotonic() - t0
        while mailinject.status("drain")["MESSAGES"] != 0:
            time.sleep(0.005)
        t_empty = time.monotonic() - t0
        p.terminate()
        p.wait(30)

        # --- pickup under IDLE ---
        cfg = os.path.join(d, "pickup.yml")
        write_config(cfg, "pickup", port, rport, "pickup", os.path.join(d, "pickup.log"))
        p = subprocess.Popen([a.bin, "-c", cfg])
        # ready when it idles (the log says so)
        deadline = time.monotonic() + 30
        while '"Idling"' not in open(os.path.join(d, "pickup.log")).read() if os.path.exists(
                os.path.join(d, "pickup.log")) else True:
            if time.monotonic() > deadline:
                raise SystemExit("mailroom did not reach IDLE")
            time.sleep(0.01)
        lat = []
        for i in range(a.pickups):
            mailinject.imap_append([mailinject.make_message(i, "pickup")], "pickup")
            t = time.monotonic()
            got = r.blpop("queue:pickup", timeout=30)
            if got is None:
                raise SystemExit(f"pickup {i}: no job within 30 s")
            lat.append(time.monotonic() - t)
        p.terminate()
        p.wait(30)
        raw = raw_idle_latency("rawidle", port, a.pickups)
    finally:
        subprocess.run([os.path.join(ROOT, "tests", "servers", "stop-redis.sh"),
                        os.path.join(d, "redis")], capture_output=True)
        subprocess.run([os.path.join(ROOT, "tests", "servers", "stop-dovecot.sh"),
                        os.path.join(d, "dovecot")], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)

    ms = lambda v: f"{v * 1000:.1f}"  # noqa: E731
    print()
    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| drain: {a.messages} x ~4 KB, sidekiq + delete + expunge, jobs in Redis | "
          f"{t_jobs:.2f} s ({a.messages / t_jobs:.0f} msg/s) |")
    print(f"| drain: until the mailbox is empty | {t_empty:.2f} s ({a.messages / t_empty:.0f} msg/s) |")
    print(f"| pickup under IDLE, APPEND OK -> job in Redis, n={len(lat)} | "
          f"p50 {ms(statistics.median(lat))} ms, p90 {ms(pct(lat, 90))} ms, max {ms(max(lat))} ms |")
    print(f"| raw IDLE client, APPEND OK -> EXISTS, n={len(raw)} | "
          f"p50 {ms(statistics.median(raw))} ms, p90 {ms(pct(raw, 90))} ms, max {ms(max(raw))} ms |")


if __name__ == "__main__":
    main()
