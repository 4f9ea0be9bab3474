"""The container image (Dockerfile, scripts/build-image.sh) run as GitLab's
Helm chart runs its mailroom image, against the real Dovecot (TLS), Redis and
Sidekiq.

Once per session the binary under test ($MAILROOM_BIN) is packaged with
scripts/build-deb.sh and the image is built from that package with
scripts/build-image.sh (podman; the Dockerfile's target runtime-from-deb; the
base image made from a debootstrapped Debian 12 root, kept in
<build dir>/container/ so that later sessions reuse it).

The container runs the image's default command (the chart sets none:
/usr/bin/mail_room -c /var/opt/gitlab/mail_room.yml --log-exit-as json) with
the chart's mounts: the configuration at /var/opt/gitlab/mail_room.yml, the
secrets under /etc/gitlab/mailroom/ (read with ERB), a CA bundle over
/etc/ssl/certs (as the chart's certificates volume); the chart's
`:ssl: true`, `:logger: {:log_path: "/dev/stdout"}` and Redis arbitration;
host networking, so that it reaches the test servers on 127.0.0.1, and the
restrictions of deploy/container/kubernetes.yaml (read-only root, no
capabilities, no-new-privileges).

Skipped only when podman is missing or cannot run a container on this machine
(build-image.sh tries the OCI runtimes and limits and says why each failed).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid

import pytest

import harness
from mailinject import make_message

CHART_COMMAND = ["/usr/bin/mail_room", "-c", "/var/opt/gitlab/mail_room.yml", "--log-exit-as", "json"]
IMAGE_TAG = "localhost/mailroom:integration-test"
# Nothing to build with may be in the image.
BUILD_PACKAGE = re.compile(r"(-dev|^gcc(-\d+)?|^g\+\+(-\d+)?|^cpp(-\d+)?|^clang.*|^llvm.*|^binutils.*|^make|"
                           r"^cmake.*|^build-essential|^libc-dev-bin|^libgcc-\d+-dev|^ccache|^pkg-config|"
                           r"^pkgconf)(:\w+)?$")


class Image:
    def __init__(self, env, build_seconds, log):
        self.name = env["IMAGE"]
        self.id = env["IMAGE_ID"]
        self.size = int(env["IMAGE_SIZE"])
        self.version = env["VERSION"]
        self.podman = shlex.split(env["PODMAN"])  # podman [--runtime runc]
        self.run_opts = shlex.split(env.get("RUN_OPTS", ""))  # --ulimit ... where needed
        self.build_seconds = build_seconds
        self.log = log

    def cmd(self, *args, timeout=60, check=True):
        cp = subprocess.run([*self.podman, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, timeout=timeout)
        out, err = cp.stdout.decode("utf-8", "replace"), cp.stderr.decode("utf-8", "replace")
        if check and cp.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {cp.returncode}:\n{err}{out}")
        return cp.returncode, out, err

    def inspect(self):
        return json.loads(self.cmd("image", "inspect", self.name)[1])[0]


def _parse_env(path):
    env = {}
    with open(path) as fh:
        for line in fh:
            key, _, value = line.rstrip("\n").partition("=")
            if key:
                env[key] = " ".join(shlex.split(value))  # printf %q quoting
    return env


@pytest.fixture(scope="session")
def image():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install-deps.sh installs podman and runc)")
    build_dir = os.path.dirname(harness.mailroom_binary())
    cache = os.path.join(build_dir, "container")
    os.makedirs(cache, exist_ok=True)
    t0 = time.monotonic()
    deb_dir = os.path.join(cache, "deb")
    shutil.rmtree(deb_dir, ignore_errors=True)
    cp = subprocess.run([os.path.join(harness.REPO, "scripts", "build-deb.sh"), "--build-dir", build_dir,
                         "--out", deb_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, timeout=300)
    out = cp.stdout.decode("utf-8", "replace")
    assert cp.returncode == 0, f"scripts/build-deb.sh failed:\n{out}"
    debs = [f for f in os.listdir(deb_dir) if f.endswith(".deb")]
    assert len(debs) == 1, (debs, out)
    env_file = os.path.join(cache, "image.env")
    if os.path.exists(env_file):
        os.unlink(env_file)
    cp = subprocess.run([os.path.join(harness.REPO, "scripts", "build-image.sh"), "--deb",
                         os.path.join(deb_dir, debs[0]), "--tag", IMAGE_TAG, "--cache", cache,
                         "--env-file", env_file],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=900)
    log = cp.stdout.decode("utf-8", "replace") + cp.stderr.decode("utf-8", "replace")
    if cp.returncode == 3:  # detected, not assumed: every attempt's error is in the message
        pytest.skip("podman cannot run containers on this machine:\n" + cp.stderr.decode("utf-8", "replace"))
    assert cp.returncode == 0, f"scripts/build-image.sh failed (exit {cp.returncode}):\n{log}"
    print(log)
    return Image(_parse_env(env_file), time.monotonic() - t0, log)


class Container:
    """One detached container of the image; removed by close()."""

    def __init__(self, image, name):
        self.image = image
        self.name = name
        self.returncode = None

    def start(self, args):
        self.image.cmd("run", "-d", "--name", self.name, *self.image.run_opts, *args, self.image.name)
        return self

    def state(self):
        rc, out, _ = self.image.cmd("container", "inspect", self.name, check=False)
        return json.loads(out)[0]["State"] if rc == 0 else None

    def alive(self):
        st = self.state()
        if st is None:
            return False
        if not st["Running"]:
            self.returncode = st["ExitCode"]
        return st["Running"]

    def logs(self):
        """(stdout, stderr) of the container so far."""
        _, out, err = self.image.cmd("logs", self.name, check=False)
        return out, err

    def diagnostics(self, tail=40):
        out, err = self.logs()
        t = lambda s: "\n".join(s.splitlines()[-tail:]) or "(empty)"  # noqa: E731
        return f"--- container {self.name} state {self.state()}\n--- stderr:\n{t(err)}\n--- stdout:\n{t(out)}"

    def wait_exit(self, timeout):
        rc, out, err = self.image.cmd("wait", self.name, timeout=timeout + 10, check=False)
        assert rc == 0, f"podman wait {self.name}: {err}"
        self.returncode = int(out.strip().splitlines()[-1])
        return self.returncode

    def close(self):
        self.image.cmd("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def container(image, request):
    made = []

    def run(*args):
        c = Container(image, f"mailroom-it-{uuid.uuid4().hex[:10]}")
        made.append(c)  # removed at the end even if it failed to start
        return c.start(args)
    yield run
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for c in made:
        if failed:
            print(c.diagnostics(80))
        c.close()


def chart_mounts(servers, workdir, password="secret"):
    """The chart's secrets (/etc/gitlab/mailroom/password_incoming_email, owned
    by the pod's fsGroup, 0400) and CA bundle (/etc/ssl/certs), as volume
    options."""
    secrets = workdir / "etc-gitlab"
    (secrets / "mailroom").mkdir(parents=True)
    pw = secrets / "mailroom" / "password_incoming_email"
    pw.write_text(password + "\n")
    os.chown(pw, 1000, 1000)
    pw.chmod(0o400)
    certs = workdir / "certs"
    certs.mkdir()
    shutil.copyfile(servers.ca, certs / "ca-certificates.crt")
    (certs / "ca-certificates.crt").chmod(0o644)
    return ["-v", f"{secrets}:/etc/gitlab:ro", "-v", f"{certs}:/etc/ssl/certs:ro"]


def chart_config(servers, user, queue, port, namespace):
    """GitLab's chart's mail_room.yml (charts/gitlab/charts/mailroom/templates/
    configmap.yaml) for one mailbox, with the password in the form the
    current chart writes (`"<%= File.read(...).strip.dump[1..-2] %>"`), the
    health check on a loopback port of the host and the test's queue."""
    return harness.to_yaml({
        "health_check": {"address": harness.HOST, "port": port},
        "mailboxes": [{
            "host": harness.HOST,
            "port": servers.imaps_port,
            "ssl": True,
            "start_tls": False,
            "email": user,
            "password": harness.Raw('"<%= File.read("/etc/gitlab/mailroom/password_incoming_email")'
                                    '.strip.dump[1..-2] %>"'),
            "idle_timeout": 60,
            "name": "inbox",
            "delete_after_delivery": True,
            "delivery_method": "sidekiq",
            "expunge_deleted": True,
            "logger": {"log_path": "/dev/stdout"},
            "delivery_options": {"redis_url": servers.redis_url, "queue": queue,
                                 "worker": "EmailReceiverWorker"},
            "arbitration_method": "redis",
            "arbitration_options": {"redis_url": servers.redis_url, "namespace": namespace},
        }],
    }) + "\n"


RESTRICTED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def test_image_runs_the_charts_command_against_dovecot_and_redis(servers, user, queue, workdir, image,
                                                                 container, metric):
    metric("container image size", image.size / 1e6, "MB")
    metric("container image build (build-deb.sh + build-image.sh)", image.build_seconds)
    port = harness.free_port()
    namespace = f"mail_room:ctr-{uuid.uuid4().hex[:8]}"
    cfg = workdir / "mail_room.yml"
    cfg.write_text(chart_config(servers, user, queue, port, namespace))
    cfg.chmod(0o644)
    before = [make_message(i, user) for i in range(10)]
    servers.append(user, before)

    t0 = time.monotonic()
    c = container("--network", "host", *RESTRICTED, "-v", f"{cfg}:/var/opt/gitlab/mail_room.yml:ro",
                  *chart_mounts(servers, workdir))
    base = f"http://{harness.HOST}:{port}"
    harness.wait_http_status(base + "/readiness", 200, 30, "the container's /readiness 200", proc=c)
    metric("container start to /readiness 200", time.monotonic() - t0)

    # The process: the chart's command, not root, in the container.
    st = c.state()
    with open(f"/proc/{st['Pid']}/cmdline", "rb") as fh:
        assert fh.read().split(b"\0")[:-1] == [a.encode() for a in CHART_COMMAND]
    with open(f"/proc/{st['Pid']}/status") as fh:
        ids = {line.split(":")[0]: line.split()[1:] for line in fh if line.startswith(("Uid:", "Gid:"))}
    assert ids == {"Uid": ["1000"] * 4, "Gid": ["1000"] * 4}, ids
    _, top, _ = image.cmd("top", c.name, "user", "args")
    rows = [line.split(None, 1) for line in top.splitlines()[1:] if line.strip()]
    assert [(r[0], r[1].strip()) for r in rows] == [("mailroom", " ".join(CHART_COMMAND))], top

    after = [make_message(100 + i, user) for i in range(10)]
    servers.append(user, after)  # picked up by IDLE
    got = servers.performed(queue, 20, 60, proc=c)
    ids_in = sorted(harness.message_id(m) for m in before + after)
    assert sorted(harness.message_id(m) for m in got) == ids_in
    assert sorted(got) == sorted(before + after)  # byte for byte

    def delivered():
        r = harness.http_get(base + "/metrics", timeout=2)
        m = re.search(r'^mailroom_messages_delivered_total\{[^}]*\} (\S+)$', r[1].decode(), re.M)
        return m and float(m.group(1)) == 20
    harness.wait_until(delivered, 10, "mailroom_messages_delivered_total 20", proc=c)
    assert harness.http_get(base + "/liveness", timeout=2) == (200, b"OK\n")
    # the chart's readinessProbe
    rc, out, err = image.cmd("exec", c.name, "/scripts/healthcheck", check=False)
    assert rc == 0, (rc, out, err)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 20,
                       "the mailbox to be empty (delete_after_delivery, expunge_deleted)", proc=c)

    # SIGTERM (the image's STOPSIGNAL): a clean exit, well before podman's SIGKILL.
    t0 = time.monotonic()
    image.cmd("stop", "-t", "30", c.name, timeout=60)
    took = time.monotonic() - t0
    metric("container stop (SIGTERM to exit)", took)
    assert c.wait_exit(10) == 0, c.diagnostics()
    assert took < 25, f"podman stop took {took:.1f} s\n{c.diagnostics()}"

    # Exactly once: nothing more was queued or performed, one arbitration key per message.
    assert servers.r.llen("queue:" + queue) == 0
    assert servers.r.llen(servers.result_key(queue)) == 0
    assert len(servers.performed_jobs(queue)) == 20
    keys = list(servers.r.scan_iter(match=f"{namespace}:delivered:*", count=1000))
    assert len(keys) == 20, keys
    servers.r.delete(*keys)

    # The mailbox log went to /dev/stdout (as uid 1000), as JSON lines.
    out, err = c.logs()
    recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(r.get("context", {}).get("email") == user for r in recs), out[-2000:]
    assert not any(r.get("severity") == "fatal" for r in recs), out[-2000:]
    assert "fatal" not in err.lower(), err


def test_image_config_error_exits_1_with_the_json_fatal_line(servers, workdir, image, container):
    """--log-exit-as json (the chart's command): an invalid configuration is
    exit code 1, the problem on stderr and mail_room's CrashHandler line on
    stdout, so that Kubernetes restarts the container and the log says why."""
    cfg = workdir / "mail_room.yml"
    cfg.write_text(":mailboxes:\n  -\n    :host: 127.0.0.1\n    :port: nonsense\n")
    cfg.chmod(0o644)
    c = container("--network", "none", *RESTRICTED, "-v", f"{cfg}:/var/opt/gitlab/mail_room.yml:ro")
    assert c.wait_exit(30) == 1, c.diagnostics()
    out, err = c.logs()
    fatal = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(fatal) == 1 and fatal[0]["severity"] == "fatal", out
    assert "mail_room.yml" in err, err


def test_image_holds_the_service_and_its_runtime_only(image, metric):
    """Debian packages: mailroom, its Depends, ca-certificates and procps on
    the base system; no compiler, no -dev package. And the metadata the chart
    relies on."""
    _, out, _ = image.cmd("run", "--rm", "--network", "none", *image.run_opts, "--entrypoint", "dpkg-query",
                          image.name, "-W", "-f", "${Package} ${Status}\\n")
    installed = [line.split()[0] for line in out.splitlines() if line.endswith(" installed")]
    assert {"mailroom", "ca-certificates", "openssl", "procps", "libssl3"} <= set(installed), installed
    build = [p for p in installed if BUILD_PACKAGE.search(p)]
    assert not build, f"build packages in the image: {build}"
    _, out, _ = image.cmd("run", "--rm", "--network", "none", *image.run_opts, "--entrypoint", "sh", image.name,
                          "-c", "for c in cc c++ gcc g++ clang ld as make cmake; do command -v $c; done; "
                                "readlink /usr/bin/mail_room; id -u; id -g; ls -A /var/lib/apt/lists | wc -l; "
                                "test -x /scripts/healthcheck && command -v pkill")
    # no compiler or linker; the chart's command; uid/gid 1000; no apt lists; the chart's probe and preStop
    assert out.split() == ["mailroom", "1000", "1000", "0", "/usr/bin/pkill"], out
    metric("container image packages", len(installed), "")

    cfg = image.inspect()["Config"]
    assert cfg["User"] == "1000:1000"
    assert cfg["Entrypoint"] + cfg["Cmd"] == CHART_COMMAND
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["Labels"]["org.opencontainers.image.version"] == image.version
