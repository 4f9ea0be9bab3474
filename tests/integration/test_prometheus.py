"""mailroom's /metrics through a real Prometheus (/usr/bin/prometheus, Debian's
prometheus package) with the alerting rules of deploy/prometheus, and the
Grafana dashboard's queries against the same Prometheus.

- the unread-count alert (GitLab's MailroomUnreadMessagesPilingUp, its `for`
  shortened to a few seconds) fires while the webhook fails and resolves once
  the messages are delivered, each exactly once; the certificate alert follows
  the test server's certificate;
- a live /metrics page passes `promtool check metrics` (format and lint);
- every PromQL expression of the rules and of deploy/grafana/mailroom.json is
  accepted by Prometheus; the rules pass their promtool unit tests.

Prometheus runs per test on a free loopback port with its data in the test's
temp dir, scraping every second and evaluating every second; it is stopped at
the end of the test.
"""
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

import harness
from mailinject import make_message
from test_postback import postback_config

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
DEPLOY = os.path.join(harness.REPO, "deploy")
RULES = os.path.join(DEPLOY, "prometheus", "mailroom.rules.yml")
RULE_TESTS = os.path.join(DEPLOY, "prometheus", "mailroom.rules.test.yml")
PROMETHEUS_EXAMPLE = os.path.join(DEPLOY, "prometheus", "prometheus.example.yml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "mailroom.json")
OPERATIONS = os.path.join(harness.REPO, "docs", "operations.md")
JOB = "mailroom"  # the job name the rules expect (prometheus.example.yml)
UNREAD_ALERT = "MailroomUnreadMessagesPilingUp"

# The histogram buckets mailroom exports (upper bounds, seconds).
DELIVERY_LATENCY_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]
TARGET_RESPONSE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]


def need(binary):
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} is not installed (Debian package prometheus, installed by scripts/install-deps.sh)")


# ---------------------------------------------------------------- Prometheus
class Prometheus:
    """One Prometheus server on 127.0.0.1:<free port>, scraping `targets` as job
    "mailroom" every second and evaluating `rules_text` every second."""

    def __init__(self, directory, targets, rules_text):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.port = harness.free_port()
        self.url = f"http://{harness.HOST}:{self.port}"
        self.rules_path = os.path.join(directory, "mailroom.rules.yml")
        with open(self.rules_path, "w") as fh:
            fh.write(rules_text)
        self.config_path = os.path.join(directory, "prometheus.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [self.rules_path],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": list(targets)}]}],
        }
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        self.log_path = os.path.join(directory, "prometheus.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address={harness.HOST}:{self.port}", "--log.level=info"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                return harness.http_get(self.url + "/-/ready", timeout=2)[0] == 200
            except OSError:
                return False
        self.wait(ready, 60, "Prometheus /-/ready")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as fh:
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no prometheus log)"
        return "--- prometheus log:\n" + "\n".join(lines[-n:])

    def wait(self, cond, timeout, desc, proc=None):
        try:
            return harness.wait_until(cond, timeout, desc, interval=0.2, proc=proc)
        except harness.Timeout as e:
            raise harness.Timeout(f"{e}\n{self.log_tail()}") from None

    # -- HTTP API
    def api(self, path, **params):
        """(HTTP status, decoded JSON) of GET /api/v1/<path>; errors are returned."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, {"status": "error", "error": body.decode("utf-8", "replace")}

    def query(self, expr):
        """The instant vector of expr: a list of {"metric": {...}, "value": [t, "v"]}."""
        status, doc = self.api("query", query=expr)
        assert status == 200 and doc.get("status") == "success", f"query {expr!r}: {status} {doc}"
        return doc["data"]["result"]

    def value(self, expr):
        """The value of expr's single series (None when there is none)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr!r} has {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr, pred, timeout, desc, proc=None):
        """Wait until pred(value of expr) holds; returns the value.  Prometheus
        only knows what it scraped, so this waits at least for the next scrape."""
        seen = []

        def cond():
            v = self.value(expr)
            seen.append(v)
            return pred(v) and (v if v else True)
        try:
            self.wait(cond, timeout, f"{desc} ({expr})", proc=proc)
        except harness.Timeout as e:
            raise harness.Timeout(f"{e}\nlast values of {expr}: {seen[-5:]}") from None
        return seen[-1]

    def alerts(self, name, **labels):
        """The active (pending or firing) alerts called name with these labels."""
        status, doc = self.api("alerts")
        assert status == 200 and doc.get("status") == "success", doc
        return [a for a in doc["data"]["alerts"]
                if a["labels"].get("alertname") == name
                and all(a["labels"].get(k) == v for k, v in labels.items())]


@pytest.fixture
def prometheus(workdir):
    """start(targets, rules_text) -> Prometheus, stopped after the test."""
    started = []

    def start(targets, rules_text):
        p = Prometheus(str(workdir / f"prometheus{len(started) or ''}"), targets, rules_text)
        started.append(p)
        return p.start()
    yield start
    for p in started:
        p.stop()


def load_rules():
    with open(RULES) as fh:
        return yaml.safe_load(fh)


def rules_with_short_unread_for(seconds):
    """mailroom.rules.yml with MailroomUnreadMessagesPilingUp's `for: 10m`
    replaced by `for: <seconds>s`, as YAML text."""
    doc = load_rules()
    changed = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == UNREAD_ALERT:
                assert rule.get("for") == "10m", f"{UNREAD_ALERT} no longer has `for: 10m`: {rule}"
                rule["for"] = f"{seconds}s"
                changed += 1
    assert changed == 1, f"{UNREAD_ALERT} found {changed} times in {RULES}"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- mailroom
def webhook_config(servers, user, workdir, url, secret_path, health_port, **mailbox):
    """One mailbox over implicit TLS (IMAPS, verified against the test CA)
    delivering to a GitLab-style webhook, with a health check (and /metrics)."""
    cfg = postback_config(servers, user, workdir, url, secret_path, transport="tls", **mailbox)
    cfg["health_check"] = {"address": harness.HOST, "port": health_port}
    return cfg


def get_metrics(port):
    try:
        status, body = harness.http_get(f"http://{harness.HOST}:{port}/metrics", timeout=2)
    except OSError:
        return None
    return body.decode("utf-8") if status == 200 else None


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text):
    """[(name, {label: value}, float)] of a Prometheus text page."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = {k: re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def sample(samples, name, **labels):
    """The value of the one sample called name with (at least) these labels."""
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == val for k, val in labels.items())]
    assert len(found) <= 1, f"{name}{labels}: {len(found)} samples"
    return found[0] if found else None


def declared_types(text):
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def server_certificate_not_after(servers):
    """notAfter (Unix time) of the certificate Dovecot presents on its IMAPS port."""
    ctx = servers.tls_context()
    with socket.create_connection((harness.HOST, servers.imaps_port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=harness.HOST) as tls:
            return ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"])


# ---------------------------------------------------------------- the alert, end to end
def test_unread_alert_fires_while_the_webhook_fails_and_resolves_once_delivered(
        servers, user, workdir, mailroom, webhook, jwt_secret, prometheus):
    """N messages arrive while the webhook answers 500: Prometheus sees
    mailroom_mailbox_unseen_messages reach N and MailroomUnreadMessagesPilingUp
    fire. Once the webhook answers 200, the gauge falls to 0, the alert
    resolves, mailroom_messages_delivered_total reaches N, and the webhook got
    each of the N messages exactly once."""
    need(PROMETHEUS)
    n = 5
    health = harness.free_port()
    webhook.status = 500
    # idle_timeout bounds the retry backoff: after the switch to 200 the next
    # pass comes within 5 s
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url(), jwt_secret[0], health, idle_timeout=5))
    label = harness.mailbox_label(user, servers.imaps_port)
    harness.wait_until(lambda: get_metrics(health), 20, "mailroom's /metrics", proc=mr)

    prom = prometheus([f"{harness.HOST}:{health}"], rules_with_short_unread_for(3))
    sel = f'{{job="{JOB}",mailbox="{label}"}}'
    prom.wait_value(f'up{{job="{JOB}"}}', lambda v: v == 1, 30, "the mailroom target up", proc=mr)
    prom.wait_value(f"mailroom_mailbox_connected{sel}", lambda v: v == 1, 30, "the folder selected", proc=mr)
    assert not prom.alerts(UNREAD_ALERT), "the alert is active before any mail arrived"

    messages = [make_message(i, user, subject=f"prometheus {i}") for i in range(n)]
    servers.append(user, messages)
    harness.wait_until(lambda: webhook.count(500) >= 1, 30, "a failing webhook request", proc=mr)

    prom.wait_value(f"mailroom_mailbox_unseen_messages{sel}", lambda v: v == n, 60,
                    f"{n} unseen messages in Prometheus", proc=mr)
    firing = prom.wait(lambda: [a for a in prom.alerts(UNREAD_ALERT, mailbox=label) if a["state"] == "firing"],
                       60, f"{UNREAD_ALERT} firing", proc=mr)
    alert = firing[0]
    assert alert["labels"] == {"alertname": UNREAD_ALERT, "mailbox": label, "severity": "warning"}, alert
    assert float(alert["value"]) == n, alert
    assert alert["annotations"]["summary"] == f"Unread messages are piling up in {label}", alert
    assert alert["annotations"]["runbook"] == "docs/operations.md#mailroomunreadmessagespilingup", alert
    assert prom.value(f"mailroom_delivery_failures_total{sel}") >= 1
    assert prom.value(f"mailroom_mailbox_target_ok{sel}") == 0
    # The rules have been evaluated on mailroom's series many times by now.
    # The certificate alert is active (pending: its `for` is 10 minutes) iff
    # the test server's certificate expires within 14 days.
    left = server_certificate_not_after(servers) - time.time()
    if abs(left - 14 * 86400) > 3600:
        cert = prom.alerts("MailroomTLSCertificateExpiringSoon", mailbox=label)
        assert bool(cert) == (left < 14 * 86400), (left, cert)
    assert prom.value(f"mailroom_messages_delivered_total{sel}") == 0
    assert webhook.count(200) == 0

    webhook.status = 200
    prom.wait_value(f"mailroom_messages_delivered_total{sel}", lambda v: v == n, 60,
                    f"{n} deliveries in Prometheus", proc=mr)
    prom.wait_value(f"mailroom_mailbox_unseen_messages{sel}", lambda v: v == 0, 60,
                    "no unseen message left in Prometheus", proc=mr)
    prom.wait(lambda: not prom.alerts(UNREAD_ALERT, mailbox=label), 60, f"{UNREAD_ALERT} resolved", proc=mr)
    assert prom.value(f"mailroom_mailbox_target_ok{sel}") == 1
    assert servers.status(user)["UNSEEN"] == 0

    mr.stop_ok()
    ok = [r for r in webhook.requests if r["status"] == 200]
    sent = sorted(harness.message_id(m) for m in messages)
    got = sorted(harness.message_id(r["body"]) for r in ok)
    assert got == sent, f"the webhook accepted {got}, expected each of {sent} once"
    assert all(r["body"] in messages for r in webhook.requests)


# ---------------------------------------------------------------- /metrics passes promtool
def test_live_metrics_page_passes_promtool_check_metrics(servers, user, workdir, mailroom, webhook, jwt_secret):
    """After one delivery over TLS (so the histograms have samples and the
    certificate is known), /metrics passes `promtool check metrics` without a
    single remark, and carries what the rules and the dashboard use."""
    need(PROMTOOL)
    health = harness.free_port()
    t0 = time.time()
    mr = mailroom(webhook_config(servers, user, workdir, webhook.url(), jwt_secret[0], health))
    label = harness.mailbox_label(user, servers.imaps_port)
    raw = make_message(1, user, subject="metrics")
    servers.append(user, [raw])
    harness.wait_until(lambda: webhook.count(200) == 1, 30, "the delivery", proc=mr)

    def delivered_and_counted():
        text = get_metrics(health)
        if not text:
            return None
        s = parse_samples(text)
        return (sample(s, "mailroom_messages_delivered_total", mailbox=label) == 1
                and sample(s, "mailroom_mailbox_unseen_messages", mailbox=label) == 0 and text)
    text = harness.wait_until(delivered_and_counted, 20, "1 delivery and 0 unseen in /metrics", proc=mr)

    cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert cp.returncode == 0 and not cp.stdout.strip() and not cp.stderr.strip(), (
        f"promtool check metrics exited {cp.returncode}:\n{cp.stdout.decode()}{cp.stderr.decode()}")

    s = parse_samples(text)
    version = harness.run_cli(["--version"]).stdout.split()[-1]
    assert re.search(r'^mailroom_build_info\{version="%s"\} 1$' % re.escape(version), text, re.M), (
        f"no mailroom_build_info{{version=\"{version}\"}} 1 in\n{text}")
    start = sample(s, "process_start_time_seconds")
    assert start is not None and t0 - 5 <= start <= time.time(), start

    # the histograms, with the documented buckets
    for name, bounds in (("mailroom_delivery_latency_seconds", DELIVERY_LATENCY_BUCKETS),
                         ("mailroom_target_response_seconds", TARGET_RESPONSE_BUCKETS)):
        assert declared_types(text).get(name) == "histogram", f"# TYPE {name} histogram missing"
        les = [ls["le"] for n, ls, _ in s if n == name + "_bucket" and ls.get("mailbox") == label]
        assert [float(x) for x in les] == [float(b) for b in bounds] + [float("inf")], f"{name} buckets: {les}"
        assert sample(s, name + "_count", mailbox=label) == 1, f"{name}_count"
        assert sample(s, name + "_bucket", mailbox=label, le="+Inf") == 1
    # the message arrived moments ago: a latency well below an hour
    assert 0 <= sample(s, "mailroom_delivery_latency_seconds_sum", mailbox=label) < 3600

    assert sample(s, "mailroom_message_bytes_total", mailbox=label) >= len(raw)
    assert sample(s, "mailroom_mailbox_oldest_unseen_age_seconds", mailbox=label) == 0
    last_pass = sample(s, "mailroom_mailbox_last_pass_timestamp_seconds", mailbox=label)
    assert last_pass is not None and t0 - 1 <= last_pass <= time.time() + 1, last_pass
    assert sample(s, "mailroom_login_failures_total", mailbox=label) == 0
    assert sample(s, "mailroom_mailbox_owned", mailbox=label) == 1
    assert sample(s, "mailroom_mailbox_connected", mailbox=label) == 1

    # the certificate's notAfter, as the server presents it
    not_after = server_certificate_not_after(servers)
    expiry = sample(s, "mailroom_tls_certificate_expiry_timestamp_seconds", mailbox=label)
    assert expiry is not None and abs(expiry - not_after) < 1, (expiry, not_after)

    # every metric the rules and the dashboard use is declared on the page
    types = declared_types(text)
    missing = []
    for name in sorted(referenced_metrics()):
        base = re.sub(r"_(bucket|count|sum)$", "", name) if types.get(name) is None else name
        if base == "up":  # Prometheus' own
            continue
        if base == "mailroom_token_renewals_total" and base not in types:
            continue  # OAuth2 / Graph only: a password mailbox may have no such series
        if base not in types:
            missing.append(name)
    assert not missing, f"metrics used by the rules or the dashboard but not on /metrics: {missing}"
    mr.stop_ok()


# ---------------------------------------------------------------- the expressions parse
GRAFANA_VARIABLES = {"job": JOB, "instance": ".+", "mailbox": ".+", "__rate_interval": "1m",
                     "__interval": "1m", "__range": "1h"}


def grafana_substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown dashboard variable ${name} in {expr!r}"
        return GRAFANA_VARIABLES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as fh:
        return json.load(fh)


def all_panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(dash):
    return [(p["title"], t["expr"]) for p in all_panels(dash) for t in p.get("targets", []) if "expr" in t]


def dashboard_variable_queries(dash):
    out = []
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((v["name"], q))
    return out


def rule_exprs():
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in load_rules()["groups"] for r in g["rules"]]


def referenced_metrics():
    names = set()
    for _, expr in rule_exprs() + dashboard_exprs(dashboard()):
        names.update(re.findall(r"\b(mailroom_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(?=\s*[{\[)\s,]|$)", expr))
    for _, q in dashboard_variable_queries(dashboard()):
        names.update(re.findall(r"\b(mailroom_[a-z0-9_]+)\b", q))
    return names


def test_every_rule_and_dashboard_expression_is_accepted_by_prometheus(workdir, prometheus):
    need(PROMETHEUS)
    with open(RULES) as fh:
        prom = prometheus([], fh.read())
    alerts = [name for name, _ in rule_exprs()]

    # the rules file loads, and every rule has been evaluated without an error
    def evaluated():
        status, doc = prom.api("rules")
        assert status == 200, doc
        rules = [r for g in doc["data"]["groups"] for r in g["rules"]]
        assert [r["name"] for r in rules] == alerts, rules
        bad = [r for r in rules if r.get("health") == "err"]
        assert not bad, f"rules failing to evaluate: {bad}"
        return all(r.get("health") == "ok" for r in rules)
    prom.wait(evaluated, 30, "every rule evaluated once")

    errors = []
    for name, expr in rule_exprs():
        status, doc = prom.api("query", query=expr)
        if status != 200 or doc.get("status") != "success":
            errors.append(f"rule {name}: {expr!r}: {doc.get('error')}")
    dash = dashboard()
    for title, expr in dashboard_exprs(dash):
        q = grafana_substitute(expr)
        status, doc = prom.api("query", query=q)
        if status != 200 or doc.get("status") != "success":
            errors.append(f"panel {title!r}: {q!r}: {doc.get('error')}")
    for name, q in dashboard_variable_queries(dash):
        m = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", q.strip())
        if not m:
            errors.append(f"variable {name}: not label_values(): {q!r}")
            continue
        params = {"match[]": grafana_substitute(m.group(1))} if m.group(1) else {}
        status, doc = prom.api(f"label/{m.group(2)}/values", **params)
        if status != 200 or doc.get("status") != "success":
            errors.append(f"variable {name}: {q!r}: {doc.get('error')}")
    assert not errors, "\n".join(errors)


# ---------------------------------------------------------------- promtool and file checks
def test_alert_rules_pass_promtool_check_and_unit_tests():
    need(PROMTOOL)
    for args in (["check", "rules", RULES], ["check", "config", PROMETHEUS_EXAMPLE]):
        cp = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, f"promtool {' '.join(args)}:\n{cp.stdout}{cp.stderr}"
    tests = sorted(os.path.join(os.path.dirname(RULES), f) for f in os.listdir(os.path.dirname(RULES))
                   if f.endswith(".test.yml"))
    assert RULE_TESTS in tests
    cp = subprocess.run([PROMTOOL, "test", "rules", *tests], capture_output=True, text=True, timeout=120,
                        cwd=os.path.dirname(RULES))
    assert cp.returncode == 0 and "SUCCESS" in cp.stdout, f"promtool test rules:\n{cp.stdout}{cp.stderr}"


def github_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_every_alert_is_documented_labelled_and_unit_tested():
    """Each alert has a severity, a summary and a description naming what it is
    about, a runbook link to its section of docs/operations.md (which exists),
    and promtool cases where it fires and where it must not."""
    with open(RULE_TESTS) as fh:
        unit = yaml.safe_load(fh)
    fires, quiet = set(), set()
    for case in unit["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    with open(OPERATIONS, encoding="utf-8") as fh:
        anchors = github_anchors(fh.read())
    problems = []
    for group in load_rules()["groups"]:
        assert group["name"] == "mailroom"
        for r in group["rules"]:
            name = r.get("alert")
            if not name:
                continue
            ann, labels = r.get("annotations", {}), r.get("labels", {})
            if labels.get("severity") not in ("warning", "critical"):
                problems.append(f"{name}: severity {labels.get('severity')!r}")
            for key in ("summary", "description", "runbook"):
                if not ann.get(key):
                    problems.append(f"{name}: no {key} annotation")
            per_mailbox = "mailbox" in r["expr"] or "mailroom_mailbox" in r["expr"]
            if per_mailbox and "$labels.mailbox" not in ann.get("summary", "") + ann.get("description", ""):
                problems.append(f"{name}: the annotations do not name the mailbox")
            runbook = ann.get("runbook", "")
            if runbook != f"docs/operations.md#{name.lower()}":
                problems.append(f"{name}: runbook {runbook!r}")
            elif name.lower() not in anchors:
                problems.append(f"{name}: docs/operations.md has no section #{name.lower()}")
            if name not in fires:
                problems.append(f"{name}: no promtool case where it fires")
            if name not in quiet:
                problems.append(f"{name}: no promtool case where it must not fire")
    assert not problems, "\n".join(problems)


def test_grafana_dashboard_is_importable():
    """Well-formed JSON with the fields Grafana's import needs, one Prometheus
    data-source variable that every panel uses, and the mailbox variable."""
    dash = dashboard()
    assert dash["schemaVersion"] >= 37
    assert dash["uid"] == "mailroom" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("DS_PROMETHEUS")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    mailbox = variables.get("mailbox")
    assert mailbox and mailbox["type"] == "query", mailbox
    q = mailbox["query"]["query"] if isinstance(mailbox["query"], dict) else mailbox["query"]
    assert re.fullmatch(r"label_values\(mailroom_mailbox_owned(\{[^}]*\})?, mailbox\)", q), q
    assert mailbox["multi"] and mailbox["includeAll"], "multi-value: Grafana then regex-escapes the mailbox names"

    ids = [p["id"] for p in all_panels(dash)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"] and t["refId"], (p["title"], t)
            if "mailbox" in t["expr"]:
                assert 'mailbox=~"$mailbox"' in t["expr"], (p["title"], t["expr"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, (p["title"], g)

    used = " ".join(expr for _, expr in dashboard_exprs(dash))
    for metric in ("mailroom_mailbox_unseen_messages", "mailroom_mailbox_oldest_unseen_age_seconds",
                   "mailroom_messages_delivered_total", "mailroom_delivery_failures_total",
                   "mailroom_delivery_latency_seconds_bucket", "mailroom_target_response_seconds_bucket",
                   "mailroom_mailbox_connected", "mailroom_mailbox_owned", "mailroom_connection_errors_total",
                   "mailroom_login_failures_total", "mailroom_message_bytes_total",
                   "mailroom_tls_certificate_expiry_timestamp_seconds", "mailroom_token_renewals_total"):
        assert metric in used, f"no panel shows {metric}"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(mailroom_delivery_latency_seconds_bucket" in used
