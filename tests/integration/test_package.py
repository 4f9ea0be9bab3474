"""The Debian package (scripts/build-deb.sh) of the binary under test.

Built once per session from $MAILROOM_BIN (its build directory), then:

- its contents and control fields (dpkg-deb -I/-c): the stripped binary, the
  unit, the conffile, the man page, the monitoring files; Depends is exactly
  the packages of the libraries the binary links with, plus adduser;
- lintian: no error or warning (every tag is printed);
- systemd-analyze verify of the unit in the extracted package (ExecStart's
  binary and the man page of Documentation= must exist there);
- installed with apt into a fresh Debian 12 root (scripts/debian-root.sh, kept
  under the build directory and copied for each session), which must fetch the
  runtime libraries itself: the service user, the config's permissions, the
  unit not enabled, `mailroom --version`, ldd, `mailroom check` as the service
  user against the real test Dovecot (TLS) and Redis, `mailroom check` on the
  shipped example config (a connection error, not a configuration error), a
  reinstall over an edited config, and a purge.

Commands inside the root run in a private mount namespace (unshare) where /proc
and /dev are mounted for them: the mounts go away with the namespace, whatever
happens, and never show in the host's mount table.

Needs root, debootstrap, lintian, help2man, dpkg-dev and systemd (for
systemd-analyze); skipped without root or debootstrap. The size, Installed-Size
and Depends of the package and the timings appear in the closing measurements.
"""
import glob
import gzip
import os
import re
import shutil
import subprocess
import time

import pytest

import harness

BUILD_DEB = os.path.join(harness.REPO, "scripts", "build-deb.sh")
DEBIAN_ROOT = os.path.join(harness.REPO, "scripts", "debian-root.sh")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package into a chroot: needs root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None,
                       reason="debootstrap is not installed (apt-get install debootstrap)"),
]

UNIT = "lib/systemd/system/mailroom.service"
CONFFILE = "etc/mailroom/mail_room.yml"
EXPECTED_FILES = [
    "usr/bin/mailroom",
    UNIT,
    CONFFILE,
    "usr/share/man/man1/mailroom.1.gz",
    "usr/share/mailroom/mail_room.yml",
    "usr/share/mailroom/mailroom.rules.yml",
    "usr/share/mailroom/mailroom.json",
    "usr/share/doc/mailroom/copyright",
    "usr/share/doc/mailroom/changelog.gz",
    "usr/share/doc/mailroom/README.Debian",
    "usr/share/doc/mailroom/README.md.gz",
]
# The monitoring files come from deploy/ in the repository.
MONITORING = {"usr/share/mailroom/mailroom.rules.yml": "deploy/prometheus/mailroom.rules.yml",
              "usr/share/mailroom/mailroom.json": "deploy/grafana/mailroom.json"}

# Inside the root: a clean environment (not the test's SSL_CERT_FILE and such).
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb"}
ROOT_ENV.update({k: v for k, v in os.environ.items()
                 if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})  # for apt


def run(argv, timeout=120, check=True, **kw):
    """Run to completion (text output); with check, fail naming the command and its output."""
    t0 = time.monotonic()
    try:
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            timeout=timeout, text=True, errors="replace", **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(map(str, argv))} did not finish within {timeout} s\n"
                             f"stdout: {e.stdout}\nstderr: {e.stderr}")
    cp.elapsed = time.monotonic() - t0
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {cp.returncode}\n"
                             f"stdout:\n{cp.stdout[-6000:]}\nstderr:\n{cp.stderr[-6000:]}")
    return cp


def need(tool, package):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install {package}")


# ---------------------------------------------------------------- the package
class Deb:
    pass


@pytest.fixture(scope="session")
def deb(tmp_path_factory):
    for tool, pkg in (("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"), ("help2man", "help2man"),
                      ("strip", "binutils")):
        need(tool, pkg)
    binary = harness.mailroom_binary()
    assert os.path.basename(binary) == "mailroom", \
        f"build-deb.sh packages <build dir>/mailroom; MAILROOM_BIN is {binary}"
    out = tmp_path_factory.mktemp("deb")
    cp = run([BUILD_DEB, "--build-dir", os.path.dirname(binary), "--out", str(out)], timeout=300)
    debs = glob.glob(str(out / "mailroom_*.deb"))
    assert len(debs) == 1, f"expected one .deb in {out}: {debs}\n{cp.stdout}{cp.stderr}"
    d = Deb()
    d.path = debs[0]
    d.build_seconds = cp.elapsed
    d.build_output = cp.stdout + cp.stderr
    d.version = run([binary, "--version"]).stdout.split()[-1]
    d.binary = binary
    d.fields = {}
    info = run(["dpkg-deb", "-f", d.path]).stdout
    for m in re.finditer(r"^([A-Za-z-]+): ?(.*(?:\n .*)*)", info, re.M):
        d.fields[m.group(1)] = m.group(2)
    d.listing = {}
    for line in run(["dpkg-deb", "-c", d.path]).stdout.splitlines():
        # drwxr-xr-x root/root         0 2026-12-05 15:31 ./usr/bin/
        parts = line.split(None, 5)
        d.listing[parts[5].removeprefix("./").rstrip("/")] = (parts[0], parts[1])
    d.tree = out / "tree"
    run(["dpkg-deb", "-x", d.path, str(d.tree)])
    return d


def depends_names(fields):
    return [re.split(r"[ (]", alt.strip())[0] for alt in fields["Depends"].split(",")]


def test_package_contents_and_fields(deb, metric):
    assert os.path.basename(deb.path) == f"mailroom_{deb.version}_amd64.deb"
    f = deb.fields
    assert (f["Package"], f["Version"], f["Architecture"]) == ("mailroom", deb.version, "amd64"), f
    assert (f["Section"], f["Priority"]) == ("mail", "optional"), f
    assert re.fullmatch(r"[^<>]+ <[^@\s]+@[^@\s]+\.[a-z]+>", f["Maintainer"]), f["Maintainer"]
    assert f["Description"].splitlines()[0].strip() and len(f["Description"].splitlines()) > 3

    missing = [p for p in EXPECTED_FILES if p not in deb.listing]
    assert not missing, f"not in the package: {missing}\nbuild-deb.sh said:\n{deb.build_output}"
    for path in MONITORING.values():
        assert os.path.exists(os.path.join(harness.REPO, path)), f"{path} is missing from the repository"
    mode, owner = deb.listing["usr/bin/mailroom"]
    assert (mode, owner) == ("-rwxr-xr-x", "root/root")
    assert all(o == "root/root" for _, o in deb.listing.values()), "every file belongs to root"

    # Stripped: no symbol table, no debug sections; and it still runs.
    binary = deb.tree / "usr/bin/mailroom"
    sections = run(["readelf", "-S", "-W", str(binary)]).stdout
    assert ".symtab" not in sections and ".debug_" not in sections, "the binary is not stripped"
    assert run([str(binary), "--version"]).stdout.split()[-1] == deb.version
    with open(deb.tree / "usr/share/mailroom/mail_room.yml", "rb") as a, open(deb.tree / CONFFILE, "rb") as b:
        assert a.read() == b.read(), "the example in /usr/share/mailroom is the shipped config"

    # Control archive: the conffile, executable maintainer scripts that parse.
    assert run(["dpkg-deb", "-I", deb.path, "conffiles"]).stdout.split() == ["/" + CONFFILE]
    ctrl = deb.tree.parent / "control"
    run(["dpkg-deb", "-e", deb.path, str(ctrl)])
    for script in ("postinst", "prerm", "postrm"):
        path = ctrl / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        run(["sh", "-n", str(path)])
    assert "deb-systemd-helper" in (ctrl / "postinst").read_text()

    # Depends: exactly the packages holding the libraries the binary needs, and
    # adduser (postinst); nothing for building.
    names = depends_names(f)
    assert not [n for n in names if n.endswith("-dev")], f["Depends"]
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        run(["readelf", "-d", str(binary)]).stdout)
    owners = set()
    for soname in needed:
        out = run(["dpkg-query", "-S", f"*/x86_64-linux-gnu/{soname}"]).stdout
        owners |= {line.split(":")[0] for line in out.splitlines() if line.strip()}
    assert set(names) == owners | {"adduser"}, (f["Depends"], sorted(owners))
    assert len(names) == len(set(names)), f["Depends"]

    # The man page renders without a warning and documents the subcommands.
    page = deb.tree / "usr/share/man/man1/mailroom.1.gz"
    cp = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)],
             env=dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80"))
    assert not cp.stderr.strip(), cp.stderr
    text = gzip.decompress(page.read_bytes()).decode()
    for needle in ('.SS "mailroom check"', '.SS "mailroom reingest"', "\\-\\-config", ".SH FILES"):
        assert needle in text, needle

    size = os.path.getsize(deb.path)
    metric("package size (.deb)", size / 1024, "KiB")
    metric("package Installed-Size", int(f["Installed-Size"]), "KiB")
    metric(f"package Depends: {f['Depends']}", len(names), "packages")
    metric("package build (build-deb.sh)", deb.build_seconds, "s")


def test_lintian_has_no_error_or_warning(deb):
    need("lintian", "lintian")
    cp = run(["lintian", "--display-info", "--pedantic", "--show-overrides", "--fail-on", "error,warning", deb.path],
             timeout=600, check=False)
    tags = [ln for ln in cp.stdout.splitlines() if re.match(r"^[A-Z]: ", ln)]
    print("lintian:\n" + "\n".join(tags))
    bad = [t for t in tags if t[0] in "EW"]
    assert not bad and cp.returncode == 0, f"lintian exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"


def test_systemd_unit_verifies(deb, tmp_path, metric):
    need("systemd-analyze", "systemd")
    unit = (deb.tree / UNIT).read_text()
    service = {}
    for line in unit.split("[Service]", 1)[1].split("[Install]", 1)[0].splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            service.setdefault(k.strip(), []).append(v.strip())
    one = {k: v[-1] for k, v in service.items()}
    assert one["ExecStart"] == "/usr/bin/mailroom -c /etc/mailroom/mail_room.yml --log-exit-as json"
    assert (one["User"], one["Restart"], one["KillSignal"]) == ("mailroom", "on-failure", "SIGTERM")
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"),
                       ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
                       ("ProtectControlGroups", "yes"), ("RestrictNamespaces", "yes"),
                       ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"),
                       ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                       ("SystemCallFilter", "@system-service"), ("CapabilityBoundingSet", ""),
                       ("LogsDirectory", "mailroom"), ("StateDirectory", "mailroom")]:
        assert value in service.get(key, []), f"{key}={value} missing from the unit"
    # mailroom closes connections 25 s after SIGTERM; systemd must not kill it first.
    stop = re.fullmatch(r"(\d+)s?", one["TimeoutStopSec"])
    assert stop and int(stop.group(1)) > 30, one["TimeoutStopSec"]
    assert "WantedBy=multi-user.target" in unit

    # Verify the unit as shipped, in a root holding the package's files plus the
    # host's targets (the unit's dependencies); man finds the page there too.
    root = tmp_path / "root"
    shutil.copytree(deb.tree, root, symlinks=True)
    units = root / "lib/systemd/system"
    for target in glob.glob("/lib/systemd/system/*.target"):
        dst = units / os.path.basename(target)
        if not dst.exists():
            shutil.copy(target, dst)
    env = dict(os.environ, MANPATH=str(root / "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    cp = run(["systemd-analyze", "verify", f"--root={root}", "mailroom.service"], env=env, check=False)
    print(f"systemd-analyze verify: exit {cp.returncode}\n{cp.stdout}{cp.stderr}")
    assert cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(), cp.stdout + cp.stderr
    cp = run(["systemd-analyze", "security", "--offline=yes", f"--root={root}", "--no-pager",
              "mailroom.service"], env=env, check=False)
    m = re.search(r"Overall exposure level for mailroom\.service: ([\d.]+)", cp.stdout + cp.stderr)
    assert m, cp.stdout + cp.stderr
    metric("unit exposure (systemd-analyze security, 0 best, 10 worst)", float(m.group(1)), "")
    assert float(m.group(1)) < 3.0, cp.stdout


# ---------------------------------------------------------------- a fresh Debian 12
_IN_ROOT = r'''
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
exec chroot "$@"
'''


class Root:
    """A Debian root; run() executes a command in it, with /proc and /dev
    mounted in a private mount namespace that ends with the command."""

    def __init__(self, path):
        self.path = str(path)

    def host(self, p):
        return os.path.join(self.path, p.lstrip("/"))

    def run(self, argv, user=None, timeout=120, check=True):
        chroot = []
        if user is not None:
            uid, gid = self.ids(user)
            chroot = [f"--userspec={uid}:{gid}", f"--groups={gid}"]
        return run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", _IN_ROOT, "sh",
                    self.path, *chroot, self.path, *argv], timeout=timeout, check=check, env=ROOT_ENV)

    def ids(self, user):
        with open(self.host("/etc/passwd")) as fh:
            for line in fh:
                f = line.split(":")
                if f[0] == user:
                    return int(f[2]), int(f[3])
        raise AssertionError(f"no user {user} in {self.path}/etc/passwd")

    def gid(self, group):
        with open(self.host("/etc/group")) as fh:
            for line in fh:
                f = line.split(":")
                if f[0] == group:
                    return int(f[2])
        raise AssertionError(f"no group {group} in {self.path}/etc/group")

    def mounted(self):
        with open("/proc/self/mounts") as fh:
            return [ln.split()[1] for ln in fh if ln.split()[1].startswith(self.path.rstrip("/") + "/")]


@pytest.fixture(scope="module")
def debian12(deb, tmp_path_factory):
    """A fresh Debian 12 root with the package installed by apt (and timings)."""
    for tool, pkg in (("unshare", "util-linux"), ("chroot", "coreutils")):
        need(tool, pkg)
    build_dir = os.path.dirname(deb.binary)
    cache = os.path.join(build_dir, "debian12-root-cache")
    archives = os.path.join(build_dir, "debian12-apt-archives")  # downloaded .debs, kept between runs
    t0 = time.monotonic()
    cp = run([DEBIAN_ROOT, cache], timeout=1200)
    print(cp.stdout + cp.stderr)
    made = time.monotonic() - t0

    root = Root(tmp_path_factory.mktemp("debian12") / "root")
    t0 = time.monotonic()
    run(["cp", "-a", "--reflink=auto", cache, root.path], timeout=300)
    copied = time.monotonic() - t0
    try:
        shutil.copy("/etc/resolv.conf", root.host("/etc/resolv.conf"))  # apt resolves deb.debian.org
        os.makedirs(archives, exist_ok=True)
        for d in glob.glob(os.path.join(archives, "*.deb")):
            shutil.copy(d, root.host("/var/cache/apt/archives/"))
        shutil.copy(deb.path, root.host("/tmp/"))
        root.deb = "/tmp/" + os.path.basename(deb.path)

        t0 = time.monotonic()
        root.run(["apt-get", "-q", "update"], timeout=600)
        updated = time.monotonic() - t0
        t0 = time.monotonic()
        # As the README says: apt installs the package and fetches its dependencies.
        root.install = root.run(["apt-get", "-q", "-y", "install", root.deb], timeout=900)
        installed = time.monotonic() - t0
        for d in glob.glob(root.host("/var/cache/apt/archives/*.deb")):
            if not os.path.exists(os.path.join(archives, os.path.basename(d))):
                shutil.copy(d, archives)
        root.timings = {"root made or reused (debian-root.sh)": made, "root copied": copied,
                        "apt-get update": updated, "apt-get install ./mailroom_*.deb": installed}
        yield root
    finally:
        left = root.mounted()
        assert not left, f"file systems still mounted below {root.path}: {left}"
        shutil.rmtree(root.path, ignore_errors=True)


def test_apt_installs_package_and_its_libraries(deb, debian12, metric):
    for name, seconds in debian12.timings.items():
        metric(f"package test: {name}", seconds, "s")
    status = debian12.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", "mailroom"]).stdout
    assert status == f"install ok installed {deb.version}", status
    for lib in depends_names(deb.fields):
        debian12.run(["dpkg-query", "-W", lib])  # every dependency was installed
    assert "Setting up mailroom" in debian12.install.stdout, debian12.install.stdout
    version = debian12.run(["mailroom", "--version"]).stdout
    assert version.split() == ["mailroom", deb.version], version
    ldd = debian12.run(["ldd", "/usr/bin/mailroom"]).stdout
    assert "not found" not in ldd, ldd


def test_service_user_config_permissions_and_unit_not_enabled(debian12):
    uid, gid = debian12.ids("mailroom")
    assert 0 < uid < 1000 and gid == debian12.gid("mailroom"), (uid, gid)
    pw = debian12.run(["getent", "passwd", "mailroom"]).stdout.strip().split(":")
    assert pw[6] in ("/usr/sbin/nologin", "/bin/false"), pw
    st = os.stat(debian12.host("/" + CONFFILE))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, gid, 0o640), \
        f"{CONFFILE}: {st.st_uid}:{st.st_gid} {oct(st.st_mode & 0o7777)}"
    over = debian12.run(["dpkg-statoverride", "--list", "/" + CONFFILE]).stdout.split()
    assert len(over) == 4 and (over[0], over[1], int(over[2], 8), over[3]) == \
        ("root", "mailroom", 0o640, "/" + CONFFILE), over
    # Installed, neither enabled nor started: the shipped config is an example.
    assert os.path.exists(debian12.host("/" + UNIT))
    wants = debian12.host("/etc/systemd/system/multi-user.target.wants/mailroom.service")
    assert not os.path.lexists(wants), "the unit was enabled on install"


def test_check_against_real_servers_as_service_user(debian12, servers, user):
    shutil.copy(servers.ca, debian12.host("/etc/mailroom/test-ca.pem"))
    os.chmod(debian12.host("/etc/mailroom/test-ca.pem"), 0o644)
    mb = harness.imap_mailbox(servers, user, transport="tls")
    mb["ssl"] = {"ca_file": "/etc/mailroom/test-ca.pem"}
    mb.update(harness.sidekiq_delivery(servers.redis_url, "package_check"))
    mb.update(harness.redis_arbitration(servers.redis_url, f"pkg:{user}"))
    path = debian12.host("/etc/mailroom/check.yml")
    with open(path, "w") as fh:
        fh.write(harness.to_yaml({"mailboxes": [mb]}) + "\n")
    os.chown(path, 0, debian12.gid("mailroom"))
    os.chmod(path, 0o640)
    cp = debian12.run(["mailroom", "check", "-c", "/etc/mailroom/check.yml"], user="mailroom",
                      timeout=120, check=False)
    out = cp.stdout
    assert cp.returncode == 0, f"exit {cp.returncode}\n{out}\n{cp.stderr}"
    lines = [ln for ln in out.splitlines() if re.match(r"^(ok|FAIL)\s", ln)]
    assert lines and all(ln.startswith("ok") for ln in lines), out
    label = re.escape(harness.mailbox_label(user, servers.imaps_port))
    for what in ("imap:", "sidekiq redis:", "arbitration redis:"):
        assert re.search(rf"^ok\s+{label}\s+{what}", out, re.M), f"no ok line for {what}\n{out}"
    assert re.search(r"^ok\s+config\s+load:", out, re.M), out
    assert re.search(r"\b0 failed\b", out), out


def test_check_on_shipped_config_is_connection_error(debian12):
    cp = debian12.run(["mailroom", "check", "-c", "/" + CONFFILE], user="mailroom", timeout=120,
                      check=False)
    out, err = cp.stdout, cp.stderr
    assert cp.returncode == 1, f"exit {cp.returncode}\n{out}\n{err}"
    assert "invalid configuration" not in err, f"the shipped config is not valid:\n{err}"
    assert re.search(r"^ok\s+config\s+load: /etc/mailroom/mail_room\.yml parsed, 1 mailbox", out, re.M), out
    assert re.search(r"^FAIL\s+incoming@example\.com/inbox@imap\.example\.com:993\s+imap: .*connection failed",
                     out, re.M), out


def test_reinstall_keeps_edited_config(debian12):
    conf = debian12.host("/" + CONFFILE)
    with open(conf, "a") as fh:
        fh.write("# edited by the administrator\n")
    uid = debian12.ids("mailroom")
    # The same version again: dpkg runs the upgrade path (prerm upgrade, postinst configure <old>).
    debian12.run(["dpkg", "-i", "--force-confold", "--force-confdef", debian12.deb], timeout=300)
    assert open(conf).read().endswith("# edited by the administrator\n")
    st = os.stat(conf)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, debian12.gid("mailroom"), 0o640)
    assert debian12.ids("mailroom") == uid


def test_purge_removes_package_and_config(debian12):
    debian12.run(["apt-get", "-q", "-y", "purge", "mailroom"], timeout=300)
    cp = debian12.run(["dpkg-query", "-W", "-f", "${Status}", "mailroom"], check=False)
    assert cp.returncode != 0 or "not-installed" in cp.stdout, cp.stdout
    for p in ("/usr/bin/mailroom", "/" + UNIT, "/etc/mailroom/mail_room.yml"):
        assert not os.path.exists(debian12.host(p)), f"{p} left after purge"
    assert debian12.run(["dpkg-statoverride", "--list", "/" + CONFFILE], check=False).stdout == ""
    debian12.ids("mailroom")  # the system user stays, as usual in Debian
