"""OAuth2 for IMAP (auth_method xoauth2 / oauthbearer) end to end: mailroom gets
an access token from a token endpoint (oauth2_endpoint.OAuth2Endpoint, a fake
that mints HS256 JWTs) and logs into the test Dovecot with AUTHENTICATE XOAUTH2
or OAUTHBEARER; Dovecot's oauth2 passdb validates the JWT locally (signature,
exp, email = user) and only at login.

What the tests observe: jobs the real Sidekiq performed, webhook requests, the
endpoint's request records, mailroom's JSON log, and Dovecot's log
("Login: user=<u>, method=XOAUTH2", "oauth2(u,...): oauth2 failed: ...").
The only time-based wait is for a token's own lifetime to pass (the renewal and
rotation tests), since that is what they test."""
import json
import os
import re
import signal
import time

import pytest

import harness
from faultproxy import FaultProxy
from mailinject import make_message
from oauth2_endpoint import OAuth2Endpoint

HOST = harness.HOST
SCOPE = "https://mail.google.com/ offline_access"  # a space: must arrive form-encoded
JWT_HEAD = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # base64url of the endpoint's JWT header
SUBJECT = "OAuth2 Grüße ☃"


# ---------------------------------------------------------------- helpers
def signing_key(servers):
    key = servers.env.get("DOVECOT_OAUTH2_HS256_SECRET")
    if not key:
        pytest.fail("DOVECOT_OAUTH2_HS256_SECRET is not in the servers' env.sh: Dovecot was started "
                    "without the oauth2 passdb (tests/servers/start-all.sh sets it)")
    return key


@pytest.fixture
def endpoint(servers):
    ep = OAuth2Endpoint(signing_key(servers))
    yield ep
    ep.close()


def credentials(ep, user, **over):
    """A client and a refresh token of user at ep, as the mailbox's oauth2 hash."""
    cid, csec = ep.add_client()
    creds = {"token_url": ep.url(), "client_id": cid, "client_secret": csec,
             "refresh_token": ep.add_refresh_token(user, cid), "scope": SCOPE}
    creds.update(over)
    return creds


def use_oauth2(mb, creds, mech="xoauth2"):
    """Turn a mailbox entry (harness.imap_mailbox) into an OAuth2 one: no password."""
    mb.pop("password", None)
    mb["auth_method"] = mech
    mb["oauth2"] = creds
    return mb


def oauth2_config(servers, user, queue, workdir, creds, *, mech="xoauth2", transport="tls", port=None,
                  **mailbox):
    cfg = harness.sidekiq_config(servers, user, queue, workdir, transport=transport, **mailbox)
    mb = use_oauth2(cfg["mailboxes"][0], creds, mech)
    if port is not None:
        mb["port"] = port
    return cfg


def write_config(workdir, name, cfg):
    path = os.path.join(str(workdir), name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(harness.to_yaml(cfg) + "\n")
    return path


class DovecotLog:
    """The test Dovecot's log, for one user (every test has its own)."""

    def __init__(self, servers):
        self.path = os.path.join(servers.env["DOVECOT_DIR"], "log", "dovecot.log")

    def lines(self, user):
        with open(self.path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        return [ln for ln in text.splitlines() if f"<{user}>" in ln or f"({user}," in ln or f"({user})" in ln]

    def logins(self, user, method=None):
        """Logins of user with method, or (None) with XOAUTH2 or OAUTHBEARER
        (the tests' own IMAP sessions log in with PLAIN)."""
        methods = [method] if method else ["XOAUTH2", "OAUTHBEARER"]
        return [ln for ln in self.lines(user) if f"Login: user=<{user}>," in ln
                and any(f"method={m}," in ln for m in methods)]

    def oauth2_failures(self, user):
        return [ln for ln in self.lines(user) if f"oauth2({user}," in ln and "oauth2 failed" in ln]

    def auth_failed_disconnects(self, user):
        return [ln for ln in self.lines(user) if "(auth failed" in ln]

    def wait_logins(self, user, n, timeout=10, proc=None):
        return harness.wait_until(lambda: (lambda ls: ls if len(ls) >= n else None)(self.logins(user)),
                                  timeout, f"{n} OAuth2 login(s) of {user} in Dovecot's log", proc=proc)


def assert_no_secrets(text, ep, *extra):
    """None of the endpoint's secrets (client secrets, refresh tokens, access
    tokens), nor extra strings, nor anything that looks like one of its JWTs."""
    for s in list(ep.secrets()) + [x for x in extra if x]:
        assert s not in text, f"a secret was printed: {s[:12]}..."
    assert JWT_HEAD not in text, "an access token (JWT) was printed"


def assert_token_request(rec, creds, grant="refresh_token"):
    assert rec["method"] == "POST" and rec["path"] == "/token", rec
    assert rec["content_type"].split(";")[0].strip() == "application/x-www-form-urlencoded", rec["content_type"]
    want = {"grant_type": grant, "client_id": creds["client_id"], "client_secret": creds["client_secret"],
            "scope": creds["scope"]}
    if grant == "refresh_token":
        want["refresh_token"] = creds["refresh_token"]
    assert rec["form"] == want, f"token request form {rec['form']}, expected {want}"


def wait_idle(servers, user, mr, timeout=20):
    harness.wait_until(lambda: servers.idle_sessions(user) == 1, timeout, "mailroom to enter IDLE", proc=mr)


def messages(user, tag, n, start=0):
    return [make_message(i, user, subject=f"{SUBJECT} {tag} {i}", body=f"Zeile {i}: äöü €\r\nline two \r\n")
            for i in range(start, start + n)]


# ---------------------------------------------------------------- a. drain + IDLE
@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_oauth2_drain_and_idle_over_tls(mech, servers, user, queue, workdir, mailroom, endpoint):
    """Implicit TLS, AUTHENTICATE <mech> with a token from the endpoint: three
    messages drained byte for byte to Sidekiq, a fourth appended while mailroom
    idles picked up; one token request in all (the form as RFC 6749 §6 says),
    one Dovecot login with that mechanism, no refused token."""
    creds = credentials(endpoint, user)
    raws = messages(user, "drain", 3)
    servers.append(user, raws)
    mr = mailroom(oauth2_config(servers, user, queue, workdir, creds, mech=mech))
    got = servers.performed(queue, 3, timeout=20, proc=mr)
    assert sorted(got) == sorted(raws)
    wait_idle(servers, user, mr)
    late = make_message(9, user, subject=f"{SUBJECT} idle")
    servers.append(user, [late])
    assert servers.performed(queue, 1, timeout=10, proc=mr) == [late]
    assert endpoint.count() == 1, endpoint.summary()
    [rec] = endpoint.answered()
    assert rec["status"] == 200
    assert_token_request(rec, creds)
    dv = DovecotLog(servers)
    dv.wait_logins(user, 1, proc=mr)
    assert len(dv.logins(user, mech.upper())) == 1 and len(dv.logins(user)) == 1, dv.lines(user)
    assert dv.oauth2_failures(user) == [], dv.lines(user)
    mr.stop_ok()
    assert not mr.records("Giving up")
    assert_no_secrets(mr.all_output(), endpoint)


# ---------------------------------------------------------------- b. webhook, client credentials, STARTTLS
def test_oauth2_client_credentials_webhook_over_starttls(servers, user, workdir, mailroom, endpoint):
    """XOAUTH2 after STARTTLS with a token of the client-credentials grant (no
    refresh token: an app-only registration), delivered to a GitLab-style
    webhook with its JWT header."""
    import base64
    hook = harness.WebhookReceiver()
    try:
        key = os.urandom(32)
        secret_path = os.path.join(str(workdir), "incoming_email_webhook_secret")
        with open(secret_path, "w") as fh:
            fh.write(base64.b64encode(key).decode() + "\n")
        os.chmod(secret_path, 0o600)
        cid, csec = endpoint.add_client(user=user)
        creds = {"token_url": endpoint.url(), "client_id": cid, "client_secret": csec, "scope": SCOPE}
        mb = harness.imap_mailbox(servers, user, transport="starttls",
                                  log_path=os.path.join(str(workdir), "mailroom.log"))
        use_oauth2(mb, creds, "xoauth2")
        mb["delivery_method"] = "postback"
        mb["delivery_options"] = {"delivery_url": hook.url(), "content_type": "text/plain",
                                  "jwt_auth_header": "Gitlab-Mailroom-Api-Request",
                                  "jwt_issuer": "gitlab-mailroom", "jwt_algorithm": "HS256",
                                  "jwt_secret_path": secret_path}
        raw = make_message(1, user, subject=SUBJECT)
        servers.append(user, [raw])
        mr = mailroom({"mailboxes": [mb]}, env={"SSL_CERT_FILE": servers.ca})
        harness.wait_until(lambda: hook.count(200) >= 1, 20, "the webhook request", proc=mr)
        req = hook.requests[0]
        assert req["path"] == "/api/v4/internal/mail_room/incoming_email"
        assert req["body"] == raw
        _, claims = harness.verify_hs256_jwt(req["headers"]["gitlab-mailroom-api-request"], key)
        assert claims.get("iss") == "gitlab-mailroom"
        assert endpoint.count() == 1, endpoint.summary()
        assert_token_request(endpoint.answered()[0], creds, grant="client_credentials")
        dv = DovecotLog(servers)
        dv.wait_logins(user, 1, proc=mr)
        assert len(dv.logins(user, "XOAUTH2")) == 1 and len(dv.logins(user)) == 1, dv.lines(user)
        mr.stop_ok()
        assert_no_secrets(mr.all_output(), endpoint)
    finally:
        hook.close()


# ---------------------------------------------------------------- c. renewal across reconnects
def test_token_renewed_for_each_login_after_expiry(servers, user, queue, workdir, mailroom, endpoint):
    """Tokens live 4 s (renewed 2 s before the end).  mailroom keeps running
    over several lifetimes; an established session outlives its token (Dovecot
    checks at login only), and mail appended after the token expired still
    arrives over it.  Three times the connection is cut (FaultProxy in front of
    Dovecot's implicit-TLS port) after the current token has expired: each new
    login gets a fresh token (one token request per reconnect, never the
    expired token: Dovecot refuses no token) and the message appended while
    mailroom was disconnected arrives once."""
    endpoint.expires_in = 4
    proxy = FaultProxy(HOST, servers.imaps_port, name="imaps-proxy")
    try:
        creds = credentials(endpoint, user)
        first = make_message(0, user, subject=f"{SUBJECT} first")
        servers.append(user, [first])
        mr = mailroom(oauth2_config(servers, user, queue, workdir, creds, port=proxy.port))
        assert servers.performed(queue, 1, timeout=20, proc=mr) == [first]
        wait_idle(servers, user, mr)
        dv = DovecotLog(servers)
        sent = [first]
        cycles = 3
        for k in range(1, cycles + 1):
            assert endpoint.count() == k, endpoint.summary()
            tok = endpoint.last_token()
            # the token's own lifetime: Dovecot would now refuse it
            harness.wait_until(lambda: time.time() >= tok["exp"] + 1, tok["exp"] - time.time() + 5,
                               "the access token to expire", interval=0.1, proc=mr)
            on_old = make_message(10 * k, user, subject=f"{SUBJECT} after expiry {k}")
            servers.append(user, [on_old])
            assert servers.performed(queue, 1, timeout=10, proc=mr) == [on_old]
            sent.append(on_old)
            assert endpoint.count() == k, "a token was requested with no login to use it"
            # flagged \Seen and back in IDLE before the cut (no arbitration here: a
            # message cut before its flag would be fetched again)
            harness.wait_until(lambda: servers.idle_sessions(user) == 1
                               and all("\\Seen" in f for f in servers.flags(user).values()),
                               10, "mailroom to flag the message and idle again", proc=mr)
            cut_at = time.monotonic()
            proxy.drop_all()
            mr.wait_log("Disconnected. Resetting...", k, desc=f"mailroom to notice cut {k}")
            between = make_message(10 * k + 1, user, subject=f"{SUBJECT} between {k}")
            servers.append(user, [between])
            assert servers.performed(queue, 1, timeout=20, proc=mr) == [between]
            sent.append(between)
            endpoint.wait_count(k + 1, 10, proc=mr)
            dv.wait_logins(user, k + 1, proc=mr)
            wait_idle(servers, user, mr)
            rec = endpoint.answered()[k]
            assert rec["status"] == 200 and rec["time"] > cut_at, rec
            assert_token_request(rec, creds)
        mr.stop_ok()
        renewals = endpoint.count() - 1
        print(f"token requests: {endpoint.count()} ({renewals} renewals over {cycles} reconnects); "
              f"Dovecot logins: {len(dv.logins(user))}; proxy connections: {proxy.accepted}")
        assert renewals == cycles, endpoint.summary()
        assert endpoint.count(status=200) == endpoint.count()
        assert len(dv.logins(user, "XOAUTH2")) == cycles + 1, dv.lines(user)
        assert dv.oauth2_failures(user) == [], "a login presented an expired token:\n" + "\n".join(dv.lines(user))
        assert not mr.records("Giving up")
        assert [r.get("permanent") for r in mr.records("Disconnected. Resetting...")] == [False] * cycles
        # every message exactly once
        assert servers.r.llen(servers.result_key(queue)) == 0
        jobs = servers.performed_jobs(queue)
        assert sorted(j["args"][0].encode() for j in jobs) == sorted(sent)
        assert_no_secrets(mr.all_output(), endpoint)
    finally:
        proxy.close()


# ---------------------------------------------------------------- d. a refused token
def test_refused_token_is_replaced_on_the_same_connection(servers, user, queue, workdir, mailroom, endpoint):
    """The first token is signed with a wrong key: Dovecot answers AUTHENTICATE
    NO; mailroom asks the endpoint again and logs in with the new token on the
    same connection (no reconnect, no Giving up) and delivers."""
    endpoint.issue_bad(1)
    creds = credentials(endpoint, user)
    raw = make_message(1, user, subject=SUBJECT)
    servers.append(user, [raw])
    mr = mailroom(oauth2_config(servers, user, queue, workdir, creds))
    assert servers.performed(queue, 1, timeout=20, proc=mr) == [raw]
    wait_idle(servers, user, mr)
    recs = endpoint.answered()
    assert [(r["status"], r["bad"]) for r in recs] == [(200, True), (200, False)], endpoint.summary()
    for r in recs:
        assert_token_request(r, creds)
    dv = DovecotLog(servers)
    dv.wait_logins(user, 1, proc=mr)
    harness.wait_until(lambda: dv.oauth2_failures(user), 10, "Dovecot to log the refused token")
    assert len(dv.logins(user, "XOAUTH2")) == 1, dv.lines(user)
    fails = dv.oauth2_failures(user)
    assert len(fails) == 1 and "signature" in fails[0], dv.lines(user)
    assert dv.auth_failed_disconnects(user) == [], "the retry was not on the same connection"
    assert not mr.records("Disconnected. Resetting...") and not mr.records("Giving up"), mr.diagnostics()
    mr.stop_ok()
    assert_no_secrets(mr.all_output(), endpoint)


def test_token_refused_twice_is_a_rejected_login(servers, user, queue, workdir, mailroom, endpoint):
    """Two bad tokens in a row: the second NO is the credentials' (a rejected
    login, permanent): exit 1 at start-up, nothing delivered."""
    endpoint.issue_bad(2)
    creds = credentials(endpoint, user)
    servers.append(user, [make_message(1, user)])
    mr = mailroom(oauth2_config(servers, user, queue, workdir, creds))
    rc, _ = mr.wait_exit(20)
    assert rc == 1, mr.diagnostics()
    assert endpoint.count() == 2, endpoint.summary()
    [give_up] = mr.records("Giving up")
    assert "AUTHENTICATE XOAUTH2 NO" in give_up["error"] and endpoint.url() in give_up["error"], give_up
    assert servers.flags(user) == {1: set()}
    assert servers.r.llen("queue:" + queue) == 0
    assert_no_secrets(mr.all_output(), endpoint)


# ---------------------------------------------------------------- e. rotation
def test_rotated_refresh_token_is_used_next(servers, user, queue, workdir, mailroom, endpoint):
    """The endpoint rotates refresh tokens (answers with a new one and
    invalidates the old one, as Microsoft may): the token request after the
    next reconnect presents the new refresh token, and succeeds."""
    endpoint.rotate = True
    endpoint.expires_in = 4
    proxy = FaultProxy(HOST, servers.imaps_port, name="imaps-proxy")
    try:
        creds = credentials(endpoint, user)
        mr = mailroom(oauth2_config(servers, user, queue, workdir, creds, port=proxy.port))
        wait_idle(servers, user, mr)
        [first] = endpoint.answered()
        assert first["status"] == 200 and first["refresh_token"], first
        assert first["form"]["refresh_token"] == creds["refresh_token"]
        tok = endpoint.last_token()
        harness.wait_until(lambda: time.time() >= tok["exp"] + 1, tok["exp"] - time.time() + 5,
                           "the access token to expire", interval=0.1, proc=mr)
        proxy.drop_all()
        endpoint.wait_count(2, 15, proc=mr)
        second = endpoint.answered()[1]
        assert second["form"]["refresh_token"] == first["refresh_token"] != creds["refresh_token"], \
            endpoint.summary()
        assert second["status"] == 200, endpoint.summary()
        raw = make_message(1, user, subject=SUBJECT)
        servers.append(user, [raw])
        assert servers.performed(queue, 1, timeout=20, proc=mr) == [raw]
        assert endpoint.refresh_tokens[creds["refresh_token"]]["state"] == "rotated"
        mr.stop_ok()
        assert endpoint.count() == 2, endpoint.summary()
        assert_no_secrets(mr.all_output(), endpoint)
    finally:
        proxy.close()


# ---------------------------------------------------------------- shared credentials
def test_mailboxes_with_the_same_credentials_share_one_token(servers, user, queue, workdir, mailroom, endpoint):
    """Two mailboxes (INBOX and another folder of the same account) with the
    same oauth2 credentials log in at the same time: one token request serves
    both sessions; mail in each folder is delivered."""
    m = servers.imap(user)
    assert m.create("Other")[0] == "OK"
    m.logout()
    creds = credentials(endpoint, user)
    cfg = oauth2_config(servers, user, queue, workdir, creds)
    other = dict(cfg["mailboxes"][0], name="Other",
                 logger={"log_path": os.path.join(str(workdir), "mailroom-other.log")})
    other["oauth2"] = dict(creds)
    cfg["mailboxes"].append(other)
    raws = [make_message(1, user, subject=f"{SUBJECT} inbox"), make_message(2, user, subject=f"{SUBJECT} other")]
    servers.append(user, raws[:1])
    servers.append(user, raws[1:], folder="Other")
    mr = mailroom(cfg)
    assert sorted(servers.performed(queue, 2, timeout=20, proc=mr)) == sorted(raws)
    harness.wait_until(lambda: servers.idle_sessions(user) == 2, 20, "both mailboxes to enter IDLE", proc=mr)
    dv = DovecotLog(servers)
    dv.wait_logins(user, 2, proc=mr)
    assert endpoint.count() == 1, endpoint.summary()
    assert_token_request(endpoint.answered()[0], creds)
    mr.stop_ok()
    assert_no_secrets(mr.all_output(), endpoint)


# ---------------------------------------------------------------- f. refused credentials at start-up
@pytest.mark.parametrize("case,error", [("revoked", "invalid_grant"), ("wrong-client-secret", "invalid_client")])
def test_refused_credentials_at_startup_exit_1(case, error, servers, user, queue, workdir, mailroom, endpoint):
    """A revoked refresh token (400 invalid_grant) or a wrong client secret
    (401 invalid_client) at start-up: exit 1, as a rejected login; stderr
    names the token endpoint and the error; no secret anywhere."""
    creds = credentials(endpoint, user)
    configured_secret = creds["client_secret"]
    if case == "revoked":
        endpoint.revoke(creds["refresh_token"])
    else:
        creds["client_secret"] = configured_secret + "-wrong"
    servers.append(user, [make_message(1, user)])
    mr = mailroom(oauth2_config(servers, user, queue, workdir, creds))
    rc, took = mr.wait_exit(20)
    assert rc == 1, mr.diagnostics()
    assert endpoint.count() == 1 and endpoint.count(status=400 if case == "revoked" else 401) == 1, \
        endpoint.summary()
    assert endpoint.url() in mr.stderr and error in mr.stderr, mr.diagnostics()
    assert mr.records("Giving up"), mr.diagnostics()
    assert_no_secrets(mr.all_output(), endpoint, creds["client_secret"], creds["refresh_token"])
    assert endpoint.issued == []
    assert servers.flags(user) == {1: set()}
    assert servers.r.llen("queue:" + queue) == 0


# ---------------------------------------------------------------- g. endpoint down at start-up
@pytest.mark.parametrize("outage", ["http-503", "connection-refused"])
def test_token_endpoint_down_at_startup_is_retried(outage, servers, user, queue, workdir, mailroom):
    """The token endpoint answers 503, or refuses connections (its port bound
    but not listening): mailroom does not exit, it logs "Disconnected.
    Resetting..." with a non-permanent error naming the endpoint and retries
    with the reconnect backoff; once the endpoint works the message arrives."""
    ep = OAuth2Endpoint(signing_key(servers), listen=(outage == "http-503"))
    try:
        if outage == "http-503":
            ep.outage(503)
        creds = credentials(ep, user)
        raw = make_message(1, user, subject=SUBJECT)
        servers.append(user, [raw])
        mr = mailroom(oauth2_config(servers, user, queue, workdir, creds))
        recs = mr.wait_log("Disconnected. Resetting...", 2, timeout=20,
                           desc="two failed attempts to get a token")
        for r in recs:
            assert r.get("permanent") is False, r
            assert ep.url() in r.get("error", ""), r
        if outage == "http-503":
            assert "503" in recs[0]["error"], recs[0]
            assert ep.count(status=503) >= 2
            ep.recover()
        else:
            assert ep.requests == []
            ep.start_listening()
        assert servers.performed(queue, 1, timeout=30, proc=mr) == [raw]
        assert ep.count(ok=True) == 1, ep.summary()
        assert not mr.records("Giving up")
        mr.stop_ok()
        assert_no_secrets(mr.all_output(), ep)
    finally:
        ep.close()


def test_sigterm_while_token_request_hangs_exits_at_once(servers, user, queue, workdir, mailroom, endpoint):
    """The token endpoint holds its answer (a slow identity provider) while
    mailroom logs in; SIGTERM then abandons the login (nothing is in flight
    before SELECT) instead of waiting for the request's 30 s timeout: exit 0
    promptly, the message untouched for the next start."""
    creds = credentials(endpoint, user)
    raw = make_message(0, user, subject="waits for the next start")
    assert servers.append(user, [raw]) == [1]
    endpoint.hold()
    mr = mailroom(oauth2_config(servers, user, queue, workdir, creds))
    try:
        assert endpoint.held.wait(15), "no token request\n" + mr.diagnostics()
        mr.proc.send_signal(signal.SIGTERM)
        rc, _ = mr.wait_exit(5)
        assert rc == 0, mr.diagnostics()
        assert mr.records("Quitting connection..."), mr.diagnostics()
    finally:
        endpoint.release()
    assert servers.flags(user) == {1: set()}


# ---------------------------------------------------------------- h. operator commands
def test_check_and_status_with_oauth2(servers, user, workdir, endpoint):
    """`mailroom check`: the imap line says how it authenticated; with a
    revoked refresh token it is a FAIL line naming invalid_grant (exit 1, no
    secret printed).  `mailroom status` reads an OAuth2 mailbox."""
    creds = credentials(endpoint, user)
    servers.append(user, messages(user, "ops", 3))
    m = servers.imap(user)
    m.select("INBOX")
    m.uid("STORE", "1", "+FLAGS.SILENT", "(\\Seen)")
    m.logout()
    label = re.escape(harness.mailbox_label(user, servers.imaps_port))
    url = re.escape(endpoint.url())
    paths = {}
    for mech in ("xoauth2", "oauthbearer"):
        mb = use_oauth2(harness.imap_mailbox(servers, user, transport="tls"), creds, mech)
        mb.update(harness.sidekiq_delivery(servers.redis_url, "oauth2_unpolled"))
        paths[mech] = write_config(workdir, f"{mech}.yml", {"mailboxes": [mb]})
        cp = harness.run_cli(["check", "-c", paths[mech]], timeout=30)
        assert cp.returncode == 0, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
        assert re.search(rf"^ok\s+{label}\s+imap: .*authenticated as {re.escape(user)} with {mech.upper()} "
                         rf"\(OAuth2 token from {url}\), EXAMINE INBOX", cp.stdout, re.M), cp.stdout
        assert_no_secrets(cp.stdout + cp.stderr, endpoint)
    assert endpoint.count(ok=True) == 2

    cp = harness.run_cli(["status", "-c", paths["xoauth2"], "--json"], timeout=30)
    assert cp.returncode == 0, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    [s] = json.loads(cp.stdout)
    assert s["imap"]["reachable"] is True, s
    assert (s["total"], s["unseen"]) == (3, 2), s
    cp = harness.run_cli(["status", "-c", paths["xoauth2"]], timeout=30)
    assert cp.returncode == 0 and "3 total, 2 unseen" in cp.stdout, cp.stdout + cp.stderr
    assert_no_secrets(cp.stdout + cp.stderr, endpoint)

    endpoint.revoke(creds["refresh_token"])
    cp = harness.run_cli(["check", "-c", paths["xoauth2"]], timeout=30)
    assert cp.returncode == 1, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert re.search(rf"^FAIL\s+{label}\s+imap: .*invalid_grant", cp.stdout, re.M), cp.stdout
    assert endpoint.url() in cp.stdout, cp.stdout
    assert_no_secrets(cp.stdout + cp.stderr, endpoint)
    cp = harness.run_cli(["status", "-c", paths["xoauth2"], "--json"], timeout=30)
    [s] = json.loads(cp.stdout)
    assert s["imap"]["reachable"] is False and "invalid_grant" in s["imap"]["error"], s
    assert_no_secrets(cp.stdout + cp.stderr, endpoint)


# ---------------------------------------------------------------- i. configuration errors
CFG_SECRET = "csec-Cfg-never-print-me"
CFG_REFRESH = "1//rt-Cfg-never-print-me"
CFG_PASSWORD = "pw-Cfg-never-print-me"


def _cfg_text(mutate):
    mb = {"host": HOST, "port": 993, "ssl": True, "email": "cfg-user@example.com", "name": "INBOX",
          "auth_method": "xoauth2",
          "oauth2": {"token_url": "https://oauth2.example.com/token", "client_id": "cfg-client",
                     "client_secret": CFG_SECRET, "refresh_token": CFG_REFRESH},
          "idle_timeout": 60}
    mb.update(harness.sidekiq_delivery("redis://127.0.0.1:6379", "email_receiver"))
    mutate(mb)
    return harness.to_yaml({"mailboxes": [mb]}) + "\n"


def _with_password(mb):
    mb["password"] = CFG_PASSWORD


def _http_remote(mb):
    mb["oauth2"]["token_url"] = "http://oauth2.example.com/token"


def _http_host(host):
    def mutate(mb):
        mb["oauth2"]["token_url"] = f"http://{host}/token"
    return mutate


def _microsoft_without_tenant(mb):
    del mb["oauth2"]["token_url"]
    mb["oauth2"] = {"provider": "microsoft", **mb["oauth2"]}


CONFIG_CASES = [
    # id, mutation, lines the error may name (needles), key, a word of the message
    ("password-with-oauth2", _with_password, [":password:"], "password", "oauth2|OAuth2"),
    ("http-token-url-remote", _http_remote, [":token_url:"], "token_url", "loopback"),
    ("microsoft-without-tenant", _microsoft_without_tenant, [":oauth2:", ":provider:"], "tenant_id", "microsoft"),
    # a DNS name that merely starts with "127." is not a loopback host
    ("http-token-url-127-dns-name", _http_host("127.attacker.example"), [":token_url:"], "token_url",
     "loopback"),
]


@pytest.mark.parametrize("case", CONFIG_CASES,
                         ids=[c[0] if isinstance(c, tuple) else c.id for c in CONFIG_CASES])
def test_oauth2_config_errors(case, workdir):
    name, mutate, needles, key, word = case
    text = _cfg_text(mutate)
    path = os.path.join(str(workdir), "mail_room.yml")
    with open(path, "w") as fh:
        fh.write(text)
    # a config error exits at once; a config taken for good would run (and
    # retry the unreachable server) until this timeout
    cp = harness.run_cli(["-c", path], timeout=4)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, f"exit code {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    for s in (CFG_SECRET, CFG_REFRESH, CFG_PASSWORD):
        assert s not in out, f"a secret was printed:\n{out}"
    lines = {harness.line_of(text, n) for n in needles}
    where = re.compile(r"^(?:%s|%s):(\d+): " % (re.escape(path), re.escape(os.path.basename(path))))
    errs = [ln for ln in cp.stderr.splitlines() if where.search(ln)]
    named = [ln for ln in errs if int(where.search(ln).group(1)) in lines
             and re.search(rf"\b{key}\b", ln) and re.search(word, ln)]
    assert named, f"no error naming line {sorted(lines)} and {key!r}:\n{cp.stderr}\n--- config:\n{text}"
