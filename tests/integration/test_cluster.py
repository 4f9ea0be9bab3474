"""The cluster mode (`:cluster:`) against real Dovecot and Redis: instances
split the mailboxes by leases, each mailbox watched by one live instance.

Every scenario counts the messages in and out (the fault table's Tally: none
lost, none delivered twice) and the IMAP sessions each instance holds, from
the operating system's side: the TCP connections to Dovecot's port owned by
each mailroom process (and, per user, the sessions Dovecot shows in IDLE).
"""
import json
import os
import signal
import time
import uuid

import pytest

import harness
from test_faults import FAST, Tally, digest, make_batch, mailbox_messages, sidekiq_deliveries

HOST = harness.HOST
MAILBOXES = 30
PER_MAILBOX = 10


# ---------------------------------------------------------------- sessions
def _socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(link[8:-1])
    except OSError:
        pass
    return out


def imap_sessions(pid, port):
    """Established TCP connections of process pid to 127.0.0.1:port."""
    inodes = _socket_inodes(pid)
    n = 0
    try:
        with open(f"/proc/{pid}/net/tcp") as fh:
            next(fh)
            for ln in fh:
                f = ln.split()
                remote, state, inode = f[2], f[3], f[9]
                if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                    n += 1
    except OSError:
        pass
    return n


# ---------------------------------------------------------------- setup
class Cluster:
    """30 users with PER_MAILBOX messages each, and the config of an instance
    watching all of them with :cluster: on a Redis of its own (which the
    Redis-restart scenario restarts)."""

    def __init__(self, servers, workdir, queue, lease_ttl=10, n_users=MAILBOXES):
        self.servers = servers
        self.workdir = workdir
        self.queue = queue
        self.lease_ttl = lease_ttl
        self.users = [servers.add_user() for _ in range(n_users)]
        self.redis = harness.RedisServer(str(workdir / "cluster-redis"))
        self.ns = f"cl{uuid.uuid4().hex[:6]}"
        self.injected = []

    def inject(self, tag, tally=None, n=PER_MAILBOX):
        """n messages into every mailbox; a tally made before counts them too."""
        for u in self.users:
            msgs = make_batch(n, u, tag)
            self.servers.maildir_deliver(u, msgs)
            self.injected += msgs
            for m in msgs if tally is not None else ():
                mid = harness.message_id(m)
                tally.originals[mid] = digest(m)
                tally.injected.append(mid)
                tally.deliverable.add(mid)

    def config(self, name, delivery=None):
        mbs = []
        for u in self.users:
            opts = dict(FAST)
            mb = harness.imap_mailbox(self.servers, u, delete=True, expunge=True,
                                      log_path=str(self.workdir / f"{name}.log"), **opts)
            mb.update(delivery or harness.sidekiq_delivery(self.servers.redis_url, self.queue))
            mb.update(harness.redis_arbitration(self.redis.url, self.ns))
            mbs.append(mb)
        return {"mailboxes": mbs,
                "cluster": {"redis_url": self.redis.url, "namespace": self.ns, "lease_ttl": self.lease_ttl}}

    def deliveries(self):
        return sidekiq_deliveries(self.servers.r, self.queue)

    def in_mailboxes(self):
        left = {}
        for u in self.users:
            left.update(mailbox_messages(self.servers.imap_port, u))
        return left

    def tally(self, fault_table, scenario):
        return Tally(fault_table, scenario, self.injected, self.deliveries, self.in_mailboxes,
                     quick=lambda: self.servers.r.llen("queue:" + self.queue))

    def sessions(self, procs):
        return [imap_sessions(p.proc.pid, self.servers.imap_port) for p in procs]

    def idle_counts(self):
        return {u: self.servers.idle_sessions(u) for u in self.users}

    def wait_spread(self, procs, timeout, desc):
        """Until every user has exactly one session in IDLE and the instances
        hold all of them between them, evenly (floor or ceil each)."""
        n = len(procs)
        lo, hi = len(self.users) // n, -(-len(self.users) // n)

        def even():
            s = self.sessions(procs)
            if sum(s) != len(self.users) or not all(lo <= k <= hi for k in s):
                return False
            return all(v == 1 for v in self.idle_counts().values())
        harness.wait_until(even, timeout, desc, interval=0.1, proc=procs[0])
        return self.sessions(procs)

    def wait_drained(self, tally, proc, timeout):
        total = len(self.injected)

        def done():
            if self.servers.r.llen("queue:" + self.queue) < total:
                return False
            return not self.in_mailboxes()
        harness.wait_until(done, timeout, f"all {total} messages delivered", interval=0.2, proc=proc)

    def close(self):
        self.redis.stop()


@pytest.fixture
def cluster(servers, workdir, drain_queue_c):
    c = Cluster(servers, workdir, drain_queue_c)
    yield c
    c.close()


@pytest.fixture
def drain_queue_c(servers):
    q = f"cluster_{uuid.uuid4().hex[:8]}"
    servers.r.delete("queue:" + q)
    yield q
    servers.r.delete("queue:" + q)


def lease_owners(cluster):
    """{mailbox label: instance id} from the lease keys."""
    r = cluster.redis.client()
    out = {}
    for k in r.scan_iter(match=f"{cluster.ns}:cluster:lease:*", count=1000):
        v = r.get(k)
        if v is not None:
            out[k.decode().split(":cluster:lease:", 1)[1]] = v.decode().rsplit(" ", 1)[0]
    return out


def longest_double_watch(procs, since):
    """The longest time two instances held a watcher on the same mailbox
    after `since` (POSIX seconds), from their own log lines: a watcher runs
    from "mailbox lease taken" until that instance's next "mailbox lease
    lost" or "handing the mailbox over" for the mailbox (or the end)."""
    intervals = {}  # mailbox -> [(start, end, instance)]
    end_of_run = time.time()
    for k, p in enumerate(procs):
        open_at = {}
        for rec in p.log_records():
            act, mb = rec.get("action"), rec.get("mailbox")
            if mb is None:
                continue
            if act == "mailbox lease taken":
                open_at[mb] = harness.log_time(rec)
            elif act in ("mailbox lease lost: closing the mailbox now", "handing the mailbox over") \
                    and mb in open_at:
                intervals.setdefault(mb, []).append((open_at.pop(mb), harness.log_time(rec), k))
        for mb, t0 in open_at.items():
            intervals.setdefault(mb, []).append((t0, end_of_run, k))
    longest = 0.0
    for spans in intervals.values():
        for i, (a0, a1, ka) in enumerate(spans):
            for b0, b1, kb in spans[i + 1:]:
                if ka != kb:
                    overlap = min(a1, b1) - max(a0, b0, since)
                    longest = max(longest, overlap)
    return longest


# ---------------------------------------------------------------- scenarios
def test_three_instances_split_thirty_mailboxes(cluster, mailroom, fault_table):
    """3 instances, 30 mailboxes of 10 messages: each instance holds 10 IMAP
    sessions, each mailbox has one session, each message is delivered once."""
    cluster.inject("split")
    with cluster.tally(fault_table, "cluster: 3 instances, 30 mailboxes") as t:
        procs = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(3)]
        cluster.wait_drained(t, procs[0], 90)
        per = cluster.wait_spread(procs, 60, "10 sessions per instance, one per mailbox")
        assert per == [10, 10, 10], per
        owners = lease_owners(cluster)
        assert len(owners) == MAILBOXES and len(set(owners.values())) == 3, owners
        t.add_note("IMAP sessions per instance: " + "/".join(map(str, per)))
        # `status --cluster` shows the same: 3 live instances, 10 mailboxes each.
        cp = harness.run_cli(["status", "-c", procs[0].config_path, "--cluster", "--json"])
        assert cp.returncode == 0, cp.stderr
        view = json.loads(cp.stdout)["cluster"]
        assert sorted(len(m["mailboxes"]) for m in view["members"]) == [10, 10, 10], view
        assert view["unowned"] == [], view
        assert {m["id"] for m in view["members"]} == set(owners.values())
        text = harness.run_cli(["status", "-c", procs[0].config_path, "--cluster"]).stdout
        assert "3 live instance(s)" in text and "without a live owner: 0" in text, text
        for p in procs:
            p.stop_ok(timeout=30)
        assert not lease_owners(cluster), "leases left after every instance stopped"
        t.check()


def test_sigkill_one_of_three_mailboxes_taken_over(cluster, mailroom, fault_table):
    """3 instances; the victim delivers to a webhook that holds its answers, so
    it holds claims with deliveries running when it is SIGKILLed.  The other
    two take its mailboxes over and deliver every message, each once, within
    15 s of the kill (lease_ttl and claim_ttl at their defaults, 10 s)."""
    w = harness.WebhookReceiver()
    try:
        with cluster.tally(fault_table, "cluster: SIGKILL of 1 of 3 instances mid-drain") as t:
            w.hold()
            webhook = {"delivery_method": "postback",
                       "delivery_options": {"delivery_url": w.url(), "content_type": "text/plain",
                                            "read_timeout": 60}}
            victim = mailroom(cluster.config("victim", webhook), name="victim")
            others = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(2)]
            per = cluster.wait_spread([victim] + others, 60, "10 sessions each before the mail")
            t.add_note("sessions before the kill: " + "/".join(map(str, per)))
            # Mail for all 30: the victim's deliveries hang at the webhook, with
            # their claims held.
            cluster.inject("kill", t)
            harness.wait_until(w.held.is_set, 30, "the victim's first webhook request to be held", proc=victim)
            t0 = time.monotonic()
            victim.kill()
            per = cluster.wait_spread(others, 30, "the victim's mailboxes taken over")
            took_over = time.monotonic() - t0
            cluster.wait_drained(t, others[0], 30)
            took = time.monotonic() - t0
            t.add_note(f"kill -> all 30 mailboxes watched by the others {took_over:.1f} s "
                       f"(sessions {'/'.join(map(str, per))}); kill -> all delivered {took:.1f} s")
            t.fields["takeover_s"] = round(took_over, 1)
            assert took < 15, f"{took:.1f} s from the kill until every message was delivered"
            for p in others:
                p.stop_ok(timeout=30)
            t.check()
    finally:
        w.close()


def owners(procs):
    """mailbox -> the instances holding its lease, from their logs ("mailbox
    lease taken" and "handing the mailbox over" records, in order)."""
    held = {}
    for k, p in enumerate(procs):
        mine = set()
        for r in p.records():
            if r.get("action") == "mailbox lease taken":
                mine.add(r["mailbox"])
            elif r.get("action") == "handing the mailbox over":
                mine.discard(r["mailbox"])
        for mb in mine:
            held.setdefault(mb, set()).add(k)
    return held


def test_a_fourth_instance_is_given_its_share_nothing_doubled(cluster, mailroom, fault_table):
    """3 instances hold 10 mailboxes each; mail arrives while a 4th joins: the
    mailboxes are rebalanced to 8/8/7/7 (each handed over after its watcher
    finished), every message delivered once, and no mailbox moves more than
    once (from its owner among 3 to its owner among 4)."""
    with cluster.tally(fault_table, "cluster: a 4th instance joins mid-drain") as t:
        procs = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(3)]
        cluster.wait_spread(procs, 60, "10 sessions per instance")
        cluster.inject("join", t)
        # Per instance: the records of each grow at its own end.
        handed = lambda p: [r["mailbox"] for r in p.records("handing the mailbox over")]
        handed_before = [len(handed(p)) for p in procs]
        before = owners(procs)
        assert len(before) == 30 and all(len(o) == 1 for o in before.values()), before
        procs.append(mailroom(cluster.config("node3"), name="node3"))
        t0 = time.monotonic()
        per = cluster.wait_spread(procs, 60, "the mailboxes spread over 4 instances")
        t.add_note(f"rebalanced in {time.monotonic() - t0:.1f} s: sessions " + "/".join(map(str, per)))
        assert sorted(per) == [7, 7, 8, 8], per
        cluster.wait_drained(t, procs[0], 60)
        after = owners(procs)
        assert len(after) == 30 and all(len(o) == 1 for o in after.values()), after
        changed = sorted(mb for mb in before if before[mb] != after[mb])
        moves = [mb for k, p in enumerate(procs[:3]) for mb in handed(p)[handed_before[k]:]]
        moves += handed(procs[3])
        t.add_note(f"{len(moves)} mailboxes handed over")
        # 7 or 8 go to the new instance; bounded load may move some more
        # between the others, as many as the labels make it. Each of them
        # moves once: no mailbox is handed over twice or back and forth.
        assert sorted(moves) == changed, (moves, changed)
        assert len(changed) >= 7 and sum(3 in after[mb] for mb in changed) == per[3], (changed, per)
        for p in procs:
            p.stop_ok(timeout=30)
        t.check()


def test_redis_restarted_no_mailbox_watched_twice_longer_than_a_ttl(cluster, mailroom, fault_table):
    """The cluster's Redis is restarted (its leases gone): each mailbox may be
    watched by two instances for at most one lease TTL, and the cluster comes
    back to one session per mailbox; mail sent before and after is delivered
    once."""
    cluster.lease_ttl = 6
    cluster.inject("before")
    with cluster.tally(fault_table, "cluster: its Redis restarted") as t:
        procs = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(3)]
        cluster.wait_spread(procs, 60, "10 sessions per instance")
        cluster.wait_drained(t, procs[0], 60)
        t_restart = time.time()
        cluster.redis.stop()
        cluster.redis.start()
        # The test Redis keeps nothing on disk: every lease key present now
        # was taken after the restart. Each owner's next renewal finds its
        # old key missing and closes the mailbox before taking it again.
        harness.wait_until(lambda: len(lease_owners(cluster)) == MAILBOXES, 30,
                           "all 30 leases taken again after the restart", proc=procs[0])
        per = cluster.wait_spread(procs, 60, "one session per mailbox again")
        lost = sum(len(p.records("mailbox lease lost: closing the mailbox now")) for p in procs)
        longest = longest_double_watch(procs, since=t_restart)
        t.add_note(f"{lost} leases found lost; longest double watch {longest:.1f} s (lease_ttl {cluster.lease_ttl} s); "
                   f"sessions after: {'/'.join(map(str, per))}")
        assert longest <= cluster.lease_ttl, f"a mailbox watched twice for {longest:.1f} s"
        cluster.inject("after", t)
        cluster.wait_drained(t, procs[0], 60)
        for p in procs:
            p.stop_ok(timeout=30)
        t.check()


def test_a_stopped_instance_hands_its_mailboxes_over_at_once(cluster, mailroom, fault_table):
    """SIGTERM to one of two instances: it releases its leases and leaves the
    cluster, and the other takes all 30 mailboxes well within a lease TTL."""
    with cluster.tally(fault_table, "cluster: SIGTERM of 1 of 2, handover") as t:
        procs = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(2)]
        cluster.wait_spread(procs, 60, "15 sessions per instance")
        t0 = time.monotonic()
        procs[0].stop_ok(timeout=30)
        cluster.wait_spread(procs[1:], 30, "all 30 mailboxes on the remaining instance")
        took = time.monotonic() - t0
        t.add_note(f"SIGTERM -> all 30 on the other instance in {took:.1f} s")
        assert took < cluster.lease_ttl, f"{took:.1f} s: the leases were not released"
        cluster.inject("after", t)
        cluster.wait_drained(t, procs[1], 60)
        procs[1].stop_ok(timeout=30)
        t.check()


def test_a_paused_instance_closes_its_mailboxes_when_it_wakes(cluster, mailroom, fault_table):
    """SIGSTOP one of 3 instances for longer than lease_ttl: the other two
    take its mailboxes (its frozen TCP sessions still open on Dovecot's side),
    mail sent meanwhile is delivered once; on SIGCONT it finds each of its
    leases expired and closes those sessions at once, leaving one session per
    mailbox."""
    cluster.lease_ttl = 6
    with cluster.tally(fault_table, "cluster: 1 of 3 paused past its leases") as t:
        procs = [mailroom(cluster.config(f"node{k}"), name=f"node{k}") for k in range(3)]
        cluster.wait_spread(procs, 60, "10 sessions per instance")
        frozen, others = procs[0], procs[1:]
        mine = cluster.sessions([frozen])[0]
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            # The others hold all 30 leases (the frozen sessions stay open).
            harness.wait_until(lambda: sum(cluster.sessions(others)) == MAILBOXES, 30,
                               "the paused instance's mailboxes taken by the others", proc=others[0])
            t.add_note(f"taken over {time.monotonic() - t0:.1f} s after SIGSTOP")
            cluster.inject("paused", t)
            cluster.wait_drained(t, others[0], 60)
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        t1 = time.monotonic()
        lost = lambda: len(frozen.records("mailbox lease lost: closing the mailbox now"))
        harness.wait_until(lambda: lost() >= mine and cluster.sessions([frozen])[0] == 0, 30,
                           "the woken instance to close its mailboxes", proc=frozen)
        t.add_note(f"closed its {mine} sessions {time.monotonic() - t1:.1f} s after SIGCONT")
        per = cluster.wait_spread(procs, 60, "the three instances even again")
        t.add_note("sessions after: " + "/".join(map(str, per)))
        for p in procs:
            p.stop_ok(timeout=30)
        t.check()
