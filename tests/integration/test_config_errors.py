"""Configuration errors: `mailroom -c bad.yml` exits 1 at once, and stderr says
where (<file>:<line>) and what (the key), one error per line:
    <file>:<line>: mailbox <email>/<name>: <key>: <message>
A password from the file never appears in the output."""
import os
import re

import pytest

import harness

PASSWORD = "pw-Zq8v3-never-print-me"

GOOD = """:mailboxes:
  -
    :host: "127.0.0.1"
    :port: 143
    :ssl: false
    :start_tls: false
    :allow_plaintext_login: true
    :email: "cfg-user@example.com"
    :password: "{password}"
    :name: "INBOX"
    :idle_timeout: 60
    :delete_after_delivery: true
    :delivery_method: sidekiq
    :delivery_options:
      :redis_url: "redis://127.0.0.1:6379"
      :queue: email_receiver
      :worker: EmailReceiverWorker
    :arbitration_method: redis
    :arbitration_options:
      :redis_url: "redis://127.0.0.1:6379"
      :namespace: mail_room:gitlab
"""


def _config(replace=None, drop=None):
    text = GOOD.format(password=PASSWORD)
    lines = text.splitlines()
    if drop:
        lines = [ln for ln in lines if drop not in ln]
    text = "\n".join(lines) + "\n"
    if replace:
        old, new = replace
        assert old in text
        text = text.replace(old, new)
    return text


# (id, config text, needle for the line the error must name (None: the "-" entry), key or None)
CASES = [
    ("missing-email", _config(drop=":email:"), None, "email"),
    ("missing-name", _config(drop=":name:"), None, "name"),
    ("idle-timeout-too-large", _config(replace=(":idle_timeout: 60", ":idle_timeout: 1800")),
     ":idle_timeout:", "idle_timeout"),
    ("unknown-delivery-method", _config(replace=(":delivery_method: sidekiq", ":delivery_method: carrier_pigeon")),
     ":delivery_method:", "delivery_method"),
    ("port-not-a-number", _config(replace=(":port: 143", ":port: imap")), ":port:", "port"),
    ("unsupported-erb", _config(replace=(':name: "INBOX"', ':name: <%= Kernel.exec("id") %>')),
     "<%=", None),
    ("yaml-syntax-error", _config(replace=(':name: "INBOX"', ':name: a: b')), ":name: a: b", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_config_error_names_file_line_and_key(case, workdir):
    name, text, needle, key = case
    path = os.path.join(str(workdir), "mail_room.yml")
    with open(path, "w") as fh:
        fh.write(text)
    cp = harness.run_cli(["-c", path], timeout=10)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, f"exit code {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    assert cp.elapsed < 5
    assert PASSWORD not in out, "the password was printed"
    if needle is None:
        entry = harness.line_of(text, "  -")
        lines = {entry, entry + 1}  # the "-" of the mailbox entry (or its first key)
    else:
        lines = {harness.line_of(text, needle)}
    where = re.compile(r"(?:%s|%s):(\d+):" % (re.escape(path), re.escape(os.path.basename(path))))
    errs = [ln for ln in cp.stderr.splitlines() if where.search(ln)]
    assert errs, f"no '<file>:<line>:' error on stderr:\n{cp.stderr}"
    named = [ln for ln in errs if int(where.search(ln).group(1)) in lines]
    assert named, f"no error names line {sorted(lines)}:\n{cp.stderr}"
    if key:
        assert any(re.search(r"\b%s\b" % key, ln) for ln in named), f"key {key!r} not named:\n{cp.stderr}"


@pytest.mark.parametrize("key,old,new", [
    ("idle_timeout", ":idle_timeout: 60", ":idle_timeout: 1800"),
    ("delivery_method", ":delivery_method: sidekiq", ":delivery_method: carrier_pigeon"),
])
def test_config_error_line_format(key, old, new, workdir):
    """The full shape: <file>:<line>: mailbox <email>/<name>: <key>: <message>."""
    text = _config(replace=(old, new))
    path = os.path.join(str(workdir), "mail_room.yml")
    with open(path, "w") as fh:
        fh.write(text)
    cp = harness.run_cli(["-c", path], timeout=10)
    assert cp.returncode == 1
    line = harness.line_of(text, old.split(":")[1])
    pat = re.compile(r"^%s:%d: mailbox cfg-user@example\.com/INBOX: %s: \S" % (re.escape(path), line, key))
    assert any(pat.search(ln) for ln in cp.stderr.splitlines()), cp.stderr


def test_several_errors_are_all_reported(workdir):
    text = _config(replace=(":idle_timeout: 60", ":idle_timeout: 1800"))
    text = text.replace(":delivery_method: sidekiq", ":delivery_method: carrier_pigeon")
    path = os.path.join(str(workdir), "mail_room.yml")
    with open(path, "w") as fh:
        fh.write(text)
    cp = harness.run_cli(["-c", path], timeout=10)
    assert cp.returncode == 1
    assert "idle_timeout" in cp.stderr and "delivery_method" in cp.stderr, cp.stderr


def test_missing_config_file(workdir):
    path = os.path.join(str(workdir), "does-not-exist.yml")
    cp = harness.run_cli(["-c", path], timeout=10)
    assert cp.returncode != 0
    assert "does-not-exist.yml" in cp.stderr
