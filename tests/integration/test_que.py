"""que delivery end to end: Dovecot -> mailroom -> PostgreSQL que_jobs, for
the que_jobs of Que 0.x, 1.x and 2.x as their migrations create it
(tests/integration/fixtures/que/que{0,1,2}.sql), on a real PostgreSQL
(tests/servers/start-postgres.sh, conftest_pg.py).

Where mailroom differs from mail_room (which writes its default queue ''
explicitly and cannot write to a Que 2 table at all): an unset queue is left
to the table's default ('' on Que 0.x, 'default' on Que 1.x and 2.x, the
queue their workers work), and on Que 2.x the row carries
job_schema_version 2 and kwargs {}.
"""
import json
import os
import time

import pytest

import harness
from conftest_pg import SCHEMAS, own_postgres, postgres, que_database  # noqa: F401  (fixtures)
from faultproxy import FaultProxy
from mailinject import make_message

HOST = harness.HOST
N = 50
K = 20  # jobs inserted before the gate closes, in the restart scenario
INSERT = b"INSERT INTO que_jobs"  # in the Parse message of every INSERT mailroom sends
UTF8_SUBJECT = "Grüße aus Köln ☃ — 日本語"


def que_config(servers, user, workdir, database, port, queue=None, **mailbox):
    """A whole config (dict) for one mailbox: user's INBOX, que delivery to
    `database` on 127.0.0.1:`port` as mailroom/secret, a JSON log in workdir."""
    mb = harness.imap_mailbox(servers, user, log_path=os.path.join(str(workdir), "mailroom.log"), **mailbox)
    opts = {"host": HOST, "port": port, "database": database, "username": "mailroom",
            "password": "secret", "job_class": "EmailReceiverWorker", "priority": 7}
    if queue is not None:
        opts["queue"] = queue
    mb.update(delivery_method="que", delivery_options=opts)
    return {"mailboxes": [mb]}


def batch(user, tag, n=N):
    """n messages, each with its own Message-ID, some non-ASCII and CR LF."""
    run = os.urandom(6).hex()
    return [make_message(i, user, subject=f"{UTF8_SUBJECT} {tag} {i}",
                         body=f"{tag} message {i}\r\nZeile zwei: äöü \"quoted\" \\ / \t\r\n",
                         msgid=f"<{run}.{i}.{tag}@que.mailroom.test>") for i in range(n)]


def unseen(servers, user):
    return servers.status(user)["UNSEEN"]


def delivered(pg, db):
    """The raw messages in que_jobs (args[0] of each row), in row order."""
    return [r["row"]["args"][0] for r in pg.jobs(db)]


def ruby_json_dump(value):
    """JSON.dump as mail_room's Ruby writes it for [String]: compact, non-ASCII
    raw, "/" not escaped; control characters escaped as Python does."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- the drain
@pytest.mark.parametrize("queue", [None, "mail"], ids=["queue-unset", "queue-mail"])
@pytest.mark.parametrize("schema", SCHEMAS)
def test_que_delivers_each_message_once(schema, queue, servers, user, workdir, postgres, que_database,
                                        mailroom, metric):
    db = que_database(schema)
    msgs = batch(user, f"{schema}-{queue or 'unset'}")
    servers.append(user, msgs)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == N, 20, f"{N} messages in INBOX")
    t0 = time.monotonic()
    mr = mailroom(que_config(servers, user, workdir, db, postgres.port, queue=queue))
    harness.wait_until(lambda: postgres.job_count(db) >= N and unseen(servers, user) == 0, 60,
                       f"{N} rows in que_jobs and no unseen message", proc=mr, interval=0.2)
    metric(f"que {schema} drain of {N}", time.monotonic() - t0)
    rows = postgres.jobs(db)
    assert len(rows) == N, f"{len(rows)} rows for {N} messages"

    want_queue = queue if queue is not None else ("" if schema == "que0" else "default")
    for r in rows:
        row = r["row"]
        assert isinstance(row["args"], list) and len(row["args"]) == 1, row["args"]
        assert row["job_class"] == "EmailReceiverWorker"
        assert row["priority"] == 7
        assert row["queue"] == want_queue, row["queue"]
        if schema == "que2":
            assert row["job_schema_version"] == 2
            assert row["kwargs"] == {}
        else:
            assert "kwargs" not in row
        if schema == "que0":
            # json, stored as sent: exactly the text mail_room's JSON.dump writes
            assert r["args_text"] == ruby_json_dump(row["args"]), r["args_text"][:200]
    assert sorted(r["row"]["args"][0] for r in rows) == sorted(m.decode("utf-8") for m in msgs)

    flags = servers.flags(user)
    assert len(flags) == N and all("\\Seen" in f for f in flags.values()), flags
    layouts = mr.records("que_jobs layout read")
    assert layouts and layouts[0]["layout"] == {"que0": "Que 0.x", "que1": "Que 1.x", "que2": "Que 2.x"}[schema]
    assert len(mr.records("message pushed")) >= N
    mr.stop_ok()


def test_que2_fixture_refuses_mail_rooms_insert(postgres, que_database):
    """The reason mail_room cannot deliver to Que 2: its INSERT leaves out
    job_schema_version, NOT NULL without a default there."""
    db = que_database("que2")
    cp = postgres.psql("INSERT INTO que_jobs (priority, job_class, queue, args) "
                       "VALUES (100, 'EmailReceiverWorker', '', '[\"m\"]')", db=db, user="mailroom", check=False)
    assert cp.returncode != 0
    assert 'null value in column "job_schema_version"' in cp.stderr, cp.stderr
    for schema in ("que0", "que1"):
        other = que_database(schema)
        postgres.psql("INSERT INTO que_jobs (priority, job_class, queue, args) "
                      "VALUES (100, 'EmailReceiverWorker', '', '[\"m\"]')", db=other, user="mailroom")


# ---------------------------------------------------------------- faults
def test_que_missing_table_keeps_messages_then_delivers(servers, user, workdir, postgres, que_database,
                                                       mailroom):
    """No que_jobs in the database: every delivery fails, naming the table;
    the messages stay unseen and mailroom keeps running.  Once the table is
    created (Que's migrations run), they are delivered, without a restart."""
    db = que_database(None)
    msgs = batch(user, "notable", n=3)
    servers.append(user, msgs)
    mr = mailroom(que_config(servers, user, workdir, db, postgres.port, idle_timeout=5))
    failed = mr.wait_log("delivery failed", where=lambda rec: "que_jobs" in rec.get("error", ""),
                         desc="a delivery failing on the missing que_jobs")
    assert "does not exist" in failed[0]["error"], failed[0]
    assert "secret" not in failed[0]["error"]
    mr.wait_log("waiting to retry delivery", desc="the failed pass to end in a backoff")
    assert mr.alive()
    flags = servers.flags(user)
    assert len(flags) == 3 and not any("\\Seen" in f for f in flags.values()), flags
    assert not mr.records("message pushed")

    postgres.load(db, "que1")
    harness.wait_until(lambda: postgres.job_count(db) >= 3 and unseen(servers, user) == 0, 30,
                       "the messages delivered once que_jobs exists", proc=mr, interval=0.2)
    assert sorted(delivered(postgres, db)) == sorted(m.decode("utf-8") for m in msgs)
    mr.stop_ok()


def test_que_postgres_restarted_mid_drain(servers, user, workdir, own_postgres, que_database, mailroom,
                                          fault_table):
    """PostgreSQL stopped (fast shutdown) in the middle of a drain and
    started again on the same port: no message lost, none inserted twice, the
    same mailroom process throughout.  The gate: a FaultProxy between mailroom
    and PostgreSQL holds the INSERT after K, so K rows are committed and the
    next INSERT is in flight; PostgreSQL is stopped while it holds.  It is
    started again once mailroom has shown it noticed (a failed pass ending in
    "waiting to retry delivery"); meanwhile the undelivered messages stay
    unseen."""
    pg = own_postgres
    db = que_database("que2", server=pg)
    gatekeeper = FaultProxy(HOST, pg.port, name="pg-proxy")
    row = {"scenario": "postgres restarted mid-drain (que)", "injected": N}
    t0 = time.monotonic()
    try:
        msgs = batch(user, "pgrestart")
        servers.append(user, msgs)
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == N, 20, f"{N} messages in INBOX")
        gate = gatekeeper.hold(INSERT, "c2s", when="before", skip=K)
        mr = mailroom(que_config(servers, user, workdir, db, gatekeeper.port, idle_timeout=5))
        pid = mr.proc.pid
        harness.wait_until(gate.held.is_set, 60, f"the drain to reach its gate (INSERT {K + 1})", proc=mr)
        harness.wait_until(lambda: pg.job_count(db) >= K, 20, f"the first {K} rows committed", proc=mr,
                           interval=0.2)
        left = unseen(servers, user)
        assert left > 0, "the drain had finished at the gate: it did not hold"

        pg.stop()
        assert not pg.alive()
        gate.release()  # its connection died with the server
        failed = mr.wait_log("delivery failed", desc="a delivery failing while PostgreSQL is down")
        mr.wait_log("waiting to retry delivery", desc="the failed pass to end in a backoff")
        assert mr.alive() and mr.proc.pid == pid
        assert unseen(servers, user) > 0, "messages were flagged while PostgreSQL was down"
        assert all("secret" not in rec.get("error", "") for rec in failed)

        pg.start_again()
        harness.wait_until(lambda: pg.job_count(db) >= N and unseen(servers, user) == 0, 90,
                           f"all {N} messages in que_jobs after the restart", proc=mr, interval=0.2)
        got = delivered(pg, db)
        want = [m.decode("utf-8") for m in msgs]
        ids = [harness.message_id(m.encode("utf-8")) for m in got]
        row.update(delivered=len(got), distinct=len(set(ids)), duplicates=len(got) - len(set(ids)),
                   lost=len(set(harness.message_id(m) for m in msgs) - set(ids)), left_in_mailbox=0,
                   note=f"stopped with {K} rows committed and INSERT {K + 1} held; "
                        f"{len(failed)} delivery(ies) failed")
        assert sorted(got) == sorted(want), "lost or doubled messages"
        assert len(got) == N
        assert mr.alive() and mr.proc.pid == pid, "mailroom restarted"
        assert all("job_schema_version" in r["row"] and r["row"]["job_schema_version"] == 2
                   for r in pg.jobs(db))
        mr.stop_ok(timeout=30)
        row["outcome"] = "pass"
    except BaseException:
        row["outcome"] = "FAIL"
        raise
    finally:
        row["seconds"] = time.monotonic() - t0
        fault_table(**row)
        gatekeeper.close()


# ---------------------------------------------------------------- mailroom check
def test_check_reads_the_que_jobs_layout(servers, user, workdir, postgres, que_database):
    """`mailroom check` connects and names the que_jobs layout it found; a
    database without que_jobs fails the check, naming the table."""
    for schema, want in (("que2", "Que 2.x"), ("que0", "Que 0.x"), (None, None)):
        db = que_database(schema)
        path = workdir / f"check-{schema}.yml"
        path.write_text(harness.to_yaml(que_config(servers, user, workdir, db, postgres.port)) + "\n")
        cp = harness.run_cli(["check", "-c", str(path)])
        line = [ln for ln in cp.stdout.splitlines() if " que " in f" {ln} " or "que:" in ln]
        assert line, cp.stdout + cp.stderr
        if want:
            assert cp.returncode == 0 and want in line[0], cp.stdout + cp.stderr
        else:
            assert cp.returncode != 0 and "que_jobs" in line[0], cp.stdout + cp.stderr
        assert "secret" not in cp.stdout + cp.stderr
