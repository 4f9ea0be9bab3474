"""PostgreSQL for the que delivery tests (tests/servers/start-postgres.sh).

The session's server is the one start-all.sh started (MAILROOM_PG_* in its
env file, found through the `servers` fixture), else one this session starts
under /tmp and stops at the end.  Tests that stop and restart PostgreSQL get
a server of their own (PgServer.start), so the session's one never goes away.

Fixtures:
  postgres       the session's PgServer (skips the test when PostgreSQL is
                 not installed and none was started)
  que_database   make(schema=None) -> a new database owned by `mailroom`,
                 with tests/integration/fixtures/que/<schema>.sql loaded
                 (que0, que1, que2; None: empty); dropped after the test

A test module imports them (from conftest_pg import postgres, que_database),
or conftest.py registers this module: pytest_plugins = ["conftest_pg"].

psql only (no Python driver needed): queries come back as JSON.
"""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures", "que")
SCHEMAS = ("que0", "que1", "que2")
USER = "mailroom"
PASSWORD = "secret"
SUPERUSER = "postgres"


def pg_bin_dir():
    """PostgreSQL's bin dir (initdb, pg_ctl), the newest of Debian's, or None
    when not installed."""
    def version(d):
        v = os.path.basename(os.path.dirname(d))
        return int(v) if v.isdigit() else 0
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if found:
        return max(found, key=version)
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PgError(AssertionError):
    pass


class PgServer:
    """A PostgreSQL started by tests/servers/start-postgres.sh (env: its
    export lines)."""

    def __init__(self, env, owned=False):
        self.env = dict(env)
        self.dir = env["MAILROOM_PG_DIR"]
        self.host = env.get("MAILROOM_PG_HOST", harness.HOST)
        self.port = int(env["MAILROOM_PG_PORT"])
        self.bin = env.get("MAILROOM_PG_BIN") or pg_bin_dir() or ""
        self.owned = owned
        self.psql_path = shutil.which("psql") or os.path.join(self.bin, "psql")

    # -- lifecycle
    @classmethod
    def start(cls, directory, port=None):
        """A new server in directory (under /tmp: the postgres user must
        traverse it when the tests run as root)."""
        env = cls._run_start(directory, port)
        return cls(env, owned=True)

    @staticmethod
    def _run_start(directory, port):
        os.makedirs(directory, exist_ok=True)
        env = dict(os.environ, MAILROOM_PG_PORT=str(port or 0))
        envfile = directory.rstrip("/") + ".env"
        log = directory.rstrip("/") + ".start.log"
        with open(envfile, "w") as out, open(log, "w") as err:
            rc = subprocess.run([os.path.join(harness.SERVERS, "start-postgres.sh"), directory], env=env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=120).returncode
        if rc != 0:
            with open(log) as fh:
                raise RuntimeError(f"start-postgres.sh failed:\n{fh.read()}")
        return harness.parse_env_file(envfile)

    def stop(self):
        """Fast shutdown (sessions ended, open transactions rolled back); the
        data stays for start_again()."""
        subprocess.run([os.path.join(harness.SERVERS, "stop-postgres.sh"), self.dir],
                       env=dict(os.environ, MAILROOM_PG_BIN=self.bin), timeout=120,
                       stdin=subprocess.DEVNULL)

    def start_again(self):
        """Start the stopped server again: same directory, same port, same databases."""
        self._run_start(self.dir, self.port)

    def alive(self):
        try:
            with open(os.path.join(self.dir, "data", "postmaster.pid")) as fh:
                pid = int(fh.readline())
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, ValueError):
            return False

    # -- SQL through psql
    def psql(self, sql=None, db="postgres", user=SUPERUSER, file=None, check=True, timeout=60):
        """Run psql (-X -At, ON_ERROR_STOP); returns the CompletedProcess (text).
        `user` mailroom logs in with its password over TCP; the superuser is trusted."""
        args = [self.psql_path, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                "-p", str(self.port), "-U", user, "-d", db]
        if file:
            args += ["-f", file]
        if sql is not None:
            args += ["-c", sql]
        env = dict(os.environ, PGCONNECT_TIMEOUT="10", PGCLIENTENCODING="UTF8")
        env.pop("PGPASSWORD", None)
        if user == USER:
            env["PGPASSWORD"] = PASSWORD
        cp = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, timeout=timeout)
        cp.stdout = cp.stdout.decode("utf-8", "replace")
        cp.stderr = cp.stderr.decode("utf-8", "replace")
        if check and cp.returncode != 0:
            raise PgError(f"psql {' '.join(args[1:])} failed ({cp.returncode}):\n{cp.stderr}")
        return cp

    def query(self, db, sql, user=SUPERUSER):
        """The rows of `sql` as a list of dicts (through json_agg, so strings
        come back exactly, CR LF included)."""
        out = self.psql(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t", db=db, user=user).stdout
        return json.loads(out)

    def scalar(self, db, sql, user=SUPERUSER):
        return self.psql(sql, db=db, user=user).stdout.strip()

    def create_database(self, owner=USER):
        name = f"que_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name

    def drop_database(self, name):
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)

    def load(self, db, schema):
        """tests/integration/fixtures/que/<schema>.sql, as mailroom (the owner
        of what it creates, as in an application's database)."""
        self.psql(db=db, user=USER, file=os.path.join(FIXTURES, f"{schema}.sql"))

    # -- que_jobs
    def jobs(self, db):
        """Every que_jobs row: to_jsonb of the row (all its columns, args as
        JSON) plus args_text, the args column's text as stored."""
        return self.query(db, "SELECT to_jsonb(q) AS row, q.args::text AS args_text FROM que_jobs q")

    def job_count(self, db):
        return int(self.scalar(db, "SELECT count(*) FROM que_jobs"))


def _owned_server(tmp_root="/tmp"):
    d = tempfile.mkdtemp(prefix="mailroom-pg.", dir=tmp_root)
    os.chmod(d, 0o755)
    return PgServer.start(os.path.join(d, "pg")), d


@pytest.fixture(scope="session")
def postgres(servers, request):
    """The session's PostgreSQL (see the module docstring)."""
    if servers.env.get("MAILROOM_PG_PORT"):
        yield PgServer(servers.env)
        return
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (postgresql-15) and start-all.sh started none")
    pg, d = _owned_server()
    yield pg
    if not request.config.getoption("--keep-servers"):
        pg.stop()
        if request.session.testsfailed == 0:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def own_postgres(request):
    """A PostgreSQL for this test alone (one it may stop and start again)."""
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (postgresql-15)")
    pg, d = _owned_server()
    yield pg
    pg.stop()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if not failed:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def que_database(postgres):
    """make(schema=None, server=postgres) -> the name of a new database with
    fixtures/que/<schema>.sql loaded; dropped after the test."""
    made = []

    def make(schema=None, server=None):
        pg = server or postgres
        name = pg.create_database()
        made.append((pg, name))
        if schema:
            pg.load(name, schema)
        return name

    yield make
    for pg, name in made:
        if pg.alive():
            pg.drop_database(name)
