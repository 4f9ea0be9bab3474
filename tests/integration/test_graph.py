"""Microsoft Graph inboxes (inbox_method: microsoft_graph) end to end: mailroom
gets an app-only token from a fake Azure AD, polls a fake Graph
(fake_graph.FakeGraph, one server for both) and delivers to the real Sidekiq
or to a webhook.

What the tests observe: the jobs the real Sidekiq performed (byte for byte),
the webhook's requests, the fake's request records and message store (isRead,
categories, folder), and mailroom's JSON log.  Each test counts messages in
and out: nothing lost, nothing doubled.  Time-based assertions are lower
bounds mailroom must respect (Retry-After), measured on the fake's clock, or
a token's own lifetime passing, since that is what they test."""
import collections
import copy
import datetime
import itertools
import json
import os
import re
import signal
import time
import uuid

import pytest

import harness
from fake_graph import FakeGraph
from mailinject import make_message

HOST = harness.HOST
TENANT = "tenant-1"
KEYWORD = "$MailroomOversize"
IMMUTABLE = 'IdType="ImmutableId"'
JWT_HEADER = "Gitlab-Mailroom-Api-Request"
TOKEN_PREFIX = "eyJ0eXAiOiJKV1Qi."  # every access token of the fake starts so
LIST_RE = r"/messages$"             # the listing (of a folder or of the mailbox)


# ---------------------------------------------------------------- helpers
@pytest.fixture
def graph():
    fg = FakeGraph()
    try:
        yield fg
    finally:
        fg.close()
    assert not fg.errors, "the fake itself failed:\n" + "\n".join(fg.errors)


def tenant_user(graph, permission=True):
    """A fresh mailbox user in TENANT and an app registration: (address, client_id, secret)."""
    addr = f"incoming-{uuid.uuid4().hex[:8]}@example.com"
    graph.add_user(addr, tenant=TENANT)
    cid, csec = graph.add_app(TENANT, permission=permission)
    return addr, cid, csec


def graph_mailbox(graph, addr, cid, csec, workdir, *, log="mailroom.log", tenant=TENANT, **extra):
    """A mailbox entry as mail_room writes a Graph inbox (name: the folder)."""
    mb = {"email": addr, "name": "inbox", "inbox_method": "microsoft_graph",
          "inbox_options": {"tenant_id": tenant, "client_id": cid, "client_secret": csec,
                            "poll_interval": 1, "azure_ad_endpoint": graph.url(),
                            "graph_endpoint": graph.url()},
          "delete_after_delivery": False,
          "logger": {"log_path": str(workdir / log)}}
    mb.update(extra)
    return mb


def config(mb, delivery, health_port=None):
    mb = dict(mb)
    mb.update(delivery)
    cfg = {}
    if health_port:
        cfg["health_check"] = {"address": HOST, "port": health_port}
    cfg["mailboxes"] = [mb]
    return cfg


def sidekiq(servers, queue):
    return harness.sidekiq_delivery(servers.redis_url, queue)


def postback(url, secret_path=None):
    opts = {"delivery_url": url, "content_type": "text/plain", "read_timeout": 60}
    if secret_path:
        opts.update(jwt_auth_header=JWT_HEADER, jwt_issuer="gitlab-mailroom", jwt_algorithm="HS256",
                    jwt_secret_path=secret_path)
    return {"delivery_method": "postback", "delivery_options": opts}


def messages(addr, tag, n, start=0):
    """n varied messages of 1-5 KB: UTF-8 subjects and bodies, a raw UTF-8 or
    an RFC 2047 sender, a trailing space, CRLF throughout."""
    local = addr.split("@")[0]
    senders = ["Jörg Müller <joerg@example.de>", "=?utf-8?q?Zo=C3=AB?= <zoe@example.net>",
               "Sender <sender@example.com>"]
    out = []
    for i in range(start, start + n):
        lines = "".join(f"{tag} {i} line {k}: lorem ipsum dolor sit amet, consectetur elit \r\n"
                        for k in range(12 + (i * 7) % 50))
        body = f"Zeile {i}: äöü ß € — 日本語 ✓\r\n{lines}-- \r\nsig\r\n"
        out.append(make_message(i, local, subject=f"Graph {tag} {i} Grüße ☃", body=body,
                                sender=senders[i % 3]))
    return out


def big_message(addr, tag, kb=100):
    body = ("y" * 78 + "\r\n") * (kb * 1024 // 80)
    return make_message(0, addr.split("@")[0], subject=f"big {tag}", body=body)


def mid(raw):
    return harness.message_id(raw).strip("<>")


def assert_same_messages(got, want):
    """got (raw messages delivered) holds each of want exactly once, byte for byte."""
    got_ids = collections.Counter(mid(r) for r in got)
    want_ids = collections.Counter(mid(r) for r in want)
    missing = sorted((want_ids - got_ids).elements())
    extra = sorted((got_ids - want_ids).elements())
    assert not missing and not extra, \
        f"{len(got)} delivered for {len(want)}: {len(missing)} missing {missing[:3]}, " \
        f"{len(extra)} extra/duplicated {extra[:3]}"
    want_by_id = {mid(r): r for r in want}
    changed = [i for i, r in {mid(r): r for r in got}.items() if r != want_by_id[i]]
    assert not changed, f"{len(changed)} message(s) not delivered byte for byte, e.g. {changed[:3]}"


def sent_ids(*procs):
    """Message-IDs of every "sending to deliverer" record of these processes."""
    return [r.get("message_id", "").strip("<>") for p in procs for r in p.records("sending to deliverer")]


def wait_polls(mr, k, timeout=30):
    """Wait until k more polls have begun than have begun now: every earlier
    pass is over (a poll begins after the previous one ended)."""
    n = len(mr.records("Processing started"))
    mr.wait_log("Processing started", n + k, timeout=timeout, desc=f"{k} more poll(s) after {n}")


def wait_all_read(graph, addr, mr, timeout=30, folder="inbox"):
    harness.wait_until(lambda: not graph.unread(addr, folder), timeout,
                       f"every message in {folder} marked read", proc=mr)


def per_message(recs):
    return collections.Counter(r["message"] for r in recs)


def assert_api_headers(graph):
    """Every Graph call carried a bearer token and Prefer: IdType="ImmutableId"."""
    api = graph.select(kind="api")
    assert api, "no Graph request at all"
    bad = [(r["method"], r["raw"][:100], r["prefer"], bool(r["token"])) for r in api
           if not r["token"] or IMMUTABLE not in (r["prefer"] or "")]
    assert not bad, f"{len(bad)} of {len(api)} Graph requests without the bearer token or {IMMUTABLE}: {bad[:5]}"


def assert_token_form(graph, cid, csec):
    for r in graph.select(op="token"):
        assert r["method"] == "POST" and r["path"] == f"/{TENANT}/oauth2/v2.0/token", r["raw"]
        want = {"grant_type": "client_credentials", "client_id": cid, "client_secret": csec,
                "scope": graph.scope}
        assert r["form"] == want, f"token request form {r['form']}, expected {want}"


def assert_no_secrets(text, graph, *extra):
    for s in list(graph.secrets()) + [x for x in extra if x]:
        assert s not in text, f"a secret was printed: {s[:8]}..."
    assert TOKEN_PREFIX not in text, "an access token was printed"


def assert_list_query(rec):
    """The listing mailroom asks for: unread only, ids and categories, the size
    property, a page size."""
    q = rec["query"]
    assert re.search(r"\bisRead eq false\b", q.get("$filter", "")), q
    assert {"id", "categories"} <= set(q.get("$select", "").split(",")), q
    assert re.fullmatch(r"singleValueExtendedProperties\(\$filter=id eq 'Integer 0x0?[eE]08'\)",
                        q.get("$expand", "")), q
    assert re.fullmatch(r"\d+", q.get("$top", "")), q


# ---------------------------------------------------------------- 1. drain
def test_drain_300_to_sidekiq_byte_for_byte(servers, queue, workdir, mailroom, graph, metric):
    """300 unread messages, listed 40 to a page (the fake pages whatever $top
    says): each performed by the real Sidekiq exactly once, byte for byte; each
    fetched once with $value and marked read once (PATCH {"isRead":true});
    nothing deleted; the first poll followed the nextLinks verbatim; every call
    had the token and the ImmutableId preference."""
    n = 300
    graph.page_cap = 40
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "drain", n)
    ids = graph.add_messages(addr, raws)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), sidekiq(servers, queue)))
    got = servers.performed(queue, n, timeout=240, proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 1)  # a poll after the last PATCH: it must find nothing to send
    mr.stop_ok()

    assert_same_messages(got, raws)
    jobs = servers.performed_jobs(queue)
    assert len(jobs) == n and all(j["class"] == "EmailReceiverWorker" for j in jobs), len(jobs)
    sent = sent_ids(mr)
    assert sorted(sent) == sorted(mid(r) for r in raws), f"{len(sent)} deliveries sent for {n} messages"
    assert servers.r.llen(servers.result_key(queue)) == 0, "a job performed twice"

    inbox = graph.folder(addr)
    assert len(inbox) == n and all(m["is_read"] for m in inbox)
    assert graph.folder(addr, "deleteditems") == [] and graph.count(method="DELETE") == 0
    assert per_message(graph.select(op="value", status=200)) == {i: 1 for i in ids}, "a body fetched twice"
    patches = graph.select(op="patch", status=200)
    assert per_message(patches) == {i: 1 for i in ids}, "a message marked read twice or not at all"
    assert all(r["json"] == {"isRead": True} for r in patches), {json.dumps(r["json"]) for r in patches}

    lists = graph.select(op="list")
    assert_list_query(lists[0])
    first_poll = [lists[0]] + list(itertools.takewhile(lambda r: "$skip" in r["query"], lists[1:]))
    assert len(first_poll) > 1, "the first poll did not follow the nextLink of its first page"
    followed = [r for r in lists if "$skip" in r["query"]]
    given = set(graph.next_links)
    assert all(graph.url(r["raw"]) in given for r in followed), \
        [graph.url(r["raw"]) for r in followed if graph.url(r["raw"]) not in given][:3]
    assert_api_headers(graph)
    assert_token_form(graph, cid, csec)
    assert graph.tokens_issued == 1, "a 1-hour token was renewed during a short drain"

    t0 = graph.select(op="token")[0]["time"]
    t1 = max(r["answered"] for r in patches)
    print(f"{len(lists)} list requests ({len(first_poll)} in the first poll), drain {t1 - t0:.1f} s")
    metric(f"Graph drain: {n} messages, token request -> last PATCH", n / (t1 - t0), unit="msg/s")
    assert_no_secrets(mr.all_output(), graph)


# ---------------------------------------------------------------- 2. delete_after_delivery
@pytest.mark.parametrize("id_style", ["urlsafe", "standard"])
def test_delete_after_delivery_moves_to_deleted_items(id_style, servers, queue, workdir, mailroom, graph):
    """delete_after_delivery: true: each message is delivered once, then
    DELETEd (Graph moves it to Deleted Items, keeping its immutable id).
    "standard": ids in standard base64, with '/' and '+' (a '/' that is not
    percent-encoded splits the path and the call fails)."""
    n = 30
    graph.id_style = id_style
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, f"delete-{id_style}", n)
    ids = graph.add_messages(addr, raws)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir, delete_after_delivery=True),
                         sidekiq(servers, queue)))
    got = servers.performed(queue, n, timeout=60, proc=mr)
    harness.wait_until(lambda: not graph.folder(addr) and len(graph.folder(addr, "deleteditems")) == n, 30,
                       "every message moved to Deleted Items", proc=mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    assert_same_messages(got, raws)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in raws)
    assert servers.r.llen(servers.result_key(queue)) == 0, "a job performed twice"
    deleted = graph.folder(addr, "deleteditems")
    assert sorted(m["id"] for m in deleted) == sorted(ids), "a DELETE without the ImmutableId preference " \
                                                            "gave a message a new id"
    assert per_message(graph.select(method="DELETE", status=204)) == {i: 1 for i in ids}
    assert graph.count(kind="api", status=404) == 0 and graph.count(kind="api", status=400) == 0, graph.summary()
    assert_api_headers(graph)


# ---------------------------------------------------------------- 3. webhook
def test_jwt_webhook_delivers_from_graph(workdir, mailroom, graph, webhook, jwt_secret):
    """Postback with GitLab's JWT header: the body is the raw MIME exactly as
    Graph's $value gave it, the JWT verifies, each message once, then read."""
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "jwt", 5)
    graph.add_messages(addr, raws)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), postback(webhook.url(), jwt_secret[0])))
    harness.wait_until(lambda: webhook.count(200) >= 5, 30, "5 webhook requests", proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    with webhook.lock:
        reqs = list(webhook.requests)
    assert sorted(r["body"] for r in reqs) == sorted(raws)
    nonces = set()
    for r in reqs:
        assert r["path"] == "/api/v4/internal/mail_room/incoming_email"
        assert r["headers"].get("content-type", "").split(";")[0].strip() == "text/plain"
        _, claims = harness.verify_hs256_jwt(r["headers"][JWT_HEADER.lower()], jwt_secret[1])
        assert claims.get("iss") == "gitlab-mailroom", claims
        nonces.add(claims.get("nonce"))
    assert len(nonces) == 5, "a JWT nonce was reused"
    assert len(mr.records("message pushed")) == 5
    assert_no_secrets(mr.all_output(), graph)


def test_failing_webhook_leaves_messages_unread_then_delivers_once(workdir, mailroom, graph, webhook):
    """The webhook answers 500: not a delivery. The messages stay unread (no
    PATCH at all) through two failed passes, each ending in a backoff; once it
    answers 200 every message is delivered exactly once, with the same
    Idempotency-Key on every try, and marked read."""
    webhook.status = 500
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "retry", 3)
    ids = graph.add_messages(addr, raws)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), postback(webhook.url())))
    harness.wait_until(lambda: webhook.count(500) >= 1, 30, "the first (failing) webhook request", proc=mr)
    for k in (1, 2):
        mr.wait_log("waiting to retry delivery", k, timeout=60, desc=f"failed pass {k} to end in a backoff")
        assert len(graph.unread(addr)) == 3, f"after failed pass {k}: {graph.counts(addr)}"
        assert graph.count(method="PATCH") == 0 and graph.count(method="DELETE") == 0, graph.summary()
    failed = mr.records("delivery failed")
    assert failed and all("500" in r.get("error", "") for r in failed), failed
    assert not mr.records("message pushed"), "'message pushed' logged for an HTTP 500"
    webhook.status = 200
    harness.wait_until(lambda: webhook.count(200) >= 3, 60, "3 successful deliveries", proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    with webhook.lock:
        reqs = list(webhook.requests)
    ok = [r for r in reqs if r["status"] == 200]
    assert sorted(r["body"] for r in ok) == sorted(raws), "not each message delivered exactly once"
    assert webhook.count(500) == len(mr.records("delivery failed")) >= 1
    keys = collections.defaultdict(set)
    for r in reqs:
        keys[mid(r["body"])].add(r["headers"].get("idempotency-key"))
    assert all(len(k) == 1 and None not in k for k in keys.values()), f"Idempotency-Key per message: {keys}"
    assert len({next(iter(k)) for k in keys.values()}) == 3, "two messages with the same Idempotency-Key"
    assert per_message(graph.select(op="patch", status=200)) == {i: 1 for i in ids}


# ---------------------------------------------------------------- 4. token renewal
def test_token_renewed_over_a_long_run_and_after_a_revocation(servers, queue, workdir, mailroom, graph, metric):
    """Tokens live 2 s.  One message at a time, each added once the previous
    one was read, until five tokens were issued and three lifetimes have
    passed since the first: every message is delivered once, every token
    request is the client-credentials form, and at least four renewals came
    before expiry (no 401 since the previous token).  Then
    a long-lived token is revoked: the next call gets 401, mailroom gets one
    new token and goes on (the message added after the revocation arrives)."""
    graph.expires_in = 2
    addr, cid, csec = tenant_user(graph)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), sidekiq(servers, queue)))
    t_start = time.monotonic()
    delivered = 0
    for i in itertools.count():
        # at least five tokens, and three lifetimes since the first one
        if graph.tokens_issued >= 5 and time.monotonic() - graph.issued[0]["time"] >= 3 * 2:
            break
        assert i < 60 and time.monotonic() - t_start < 120, \
            f"{i} messages, {time.monotonic() - t_start:.0f} s: only {graph.tokens_issued} tokens issued"
        raw = make_message(i, addr.split("@")[0], subject=f"long run {i} ☃")
        gid = graph.add_message(addr, raw)
        assert servers.performed(queue, 1, timeout=20, proc=mr) == [raw]
        harness.wait_until(lambda: graph.message(addr, gid)["is_read"], 20, f"message {i} marked read", proc=mr)
        delivered += 1
    tokens = graph.tokens_issued
    # Renewed before expires_in ran out: a token request with no 401 since
    # the previous one. (A 401 is still possible if the machine stalls for a
    # whole margin, 1 s here, between taking a token and the call; mailroom
    # then renews after the 401, which is tested below.)
    refused = graph.select(kind="api", status=401)
    grants = graph.select(op="token", status=200)
    proactive = [b for a, b in zip(grants, grants[1:])
                 if not any(a["time"] <= r["time"] <= b["time"] for r in refused)]
    assert len(proactive) >= 4, \
        f"{len(proactive)} of {len(grants) - 1} renewals before expiry; {len(refused)} call(s) refused"
    assert_token_form(graph, cid, csec)
    metric(f"Graph token renewal: tokens issued over {delivered} messages, "
           f"{time.monotonic() - t_start:.0f} s (2 s lifetime)", tokens, unit="tokens")

    # A token that would live an hour, in use, then revoked.
    graph.expires_in = 3600
    k = graph.tokens_issued  # tokens from index k on were issued after the change: they live an hour
    graph.wait_count(k + 1, 15, desc="a token with the new lifetime", proc=mr, op="token", status=200)
    long_token = graph.issued[k]["token"]
    harness.wait_until(lambda: any(r["token"] == long_token and r["status"] == 200
                                   for r in graph.select(kind="api")), 15, "a call made with the long token",
                       proc=mr)
    t_revoke = time.monotonic()
    graph.revoke_tokens()
    raw = make_message(99, addr.split("@")[0], subject="after the revocation")
    gid = graph.add_message(addr, raw)
    assert servers.performed(queue, 1, timeout=30, proc=mr) == [raw]
    harness.wait_until(lambda: graph.message(addr, gid)["is_read"], 20, "the last message marked read", proc=mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    api = graph.select(kind="api")
    rejected = [r for r in api if r["status"] == 401 and r["answered"] > t_revoke]
    assert rejected and rejected[0]["error"] == "InvalidAuthenticationToken", \
        "no call was refused after the revocation: the revoked token was not used"
    renewals = [r for r in graph.select(op="token") if r["time"] > t_revoke]
    assert len(renewals) == 1 and renewals[0]["status"] == 200, \
        f"{len(renewals)} token requests after the revocation (one was needed)"
    # Compared with the refused request's arrival: the fake notes "answered"
    # after writing the 401, and mailroom's token request can arrive first.
    assert renewals[0]["time"] >= rejected[0]["time"], "a new token asked for before any 401"
    late = [(r["method"], r["raw"][:80]) for r in api if r["time"] > renewals[0]["answered"] and r["status"] == 401]
    assert len(late) == 0, f"the revoked token was used again after the new one came: {late[:3]}"
    assert not mr.records("Giving up")
    assert sorted(sent_ids(mr)) == sorted([mid(j["args"][0].encode()) for j in servers.performed_jobs(queue)])
    assert len(sent_ids(mr)) == delivered + 1, "a message delivered twice"
    assert_no_secrets(mr.all_output(), graph)


# ---------------------------------------------------------------- 5. Retry-After
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status, servers, queue, workdir, mailroom, graph, metric):
    """The first listing is throttled (429, or 503 with Retry-After: 2): no
    Graph call reaches the fake until 2 s after the throttled request came
    (a lower bound on the fake's clock); then the messages are delivered,
    once."""
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, f"throttle-{status}", 5)
    ids = graph.add_messages(addr, raws)
    if status == 429:
        graph.throttle(1, retry_after=2, methods=["GET"], path_regex=LIST_RE)
    else:
        graph.fail(1, status=503, retry_after=2, methods=["GET"], path_regex=LIST_RE)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), sidekiq(servers, queue)))
    got = servers.performed(queue, 5, timeout=60, proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    assert_same_messages(got, raws)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in raws)
    [throttled] = graph.select(status=status)
    assert throttled["op"] == "list" and throttled["fault"], throttled["raw"]
    later = [r for r in graph.select(kind="api") if r["time"] > throttled["time"]]
    # From the throttled request's arrival: mailroom can only have read the
    # answer after that (the fake notes "answered" only after writing it).
    gap = later[0]["time"] - throttled["time"]
    assert gap >= 2.0, f"the next Graph call came {gap:.3f} s after a Retry-After: 2"
    warned = mr.records("Graph request failed")
    assert any(str(status) in r.get("error", "") and r.get("retry_in_ms", 0) >= 2000 for r in warned), warned
    assert per_message(graph.select(op="patch", status=200)) == {i: 1 for i in ids}
    metric(f"Graph: wait after {status} with Retry-After: 2", gap)


# ---------------------------------------------------------------- 6. 5xx burst
def test_5xx_burst_delivers_each_message_once(servers, queue, workdir, mailroom, graph):
    """Three 503s (no Retry-After) on the first calls, three 500s on the
    PATCHes that mark delivered messages read: mailroom backs off and tries
    again, logs "Graph request failed" each time, and delivers every message
    exactly once (redis arbitration records the delivery before the PATCH)."""
    n = 20
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "burst", n)
    ids = graph.add_messages(addr, raws)
    graph.fail(3, status=503)
    graph.fail(3, status=500, methods=["PATCH"])
    mb = graph_mailbox(graph, addr, cid, csec, workdir)
    mb.update(harness.redis_arbitration(servers.redis_url, f"graph-burst:{uuid.uuid4().hex[:8]}"))
    mr = mailroom(config(mb, sidekiq(servers, queue)))
    got = servers.performed(queue, n, timeout=120, proc=mr)
    wait_all_read(graph, addr, mr, timeout=90)
    wait_polls(mr, 1)
    mr.stop_ok()
    assert graph.faults_left() == 0
    assert graph.count(status=503) == 3 and graph.count(status=500) == 3, graph.summary()
    assert_same_messages(got, raws)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in raws), "a message sent twice (or not at all)"
    assert servers.r.llen(servers.result_key(queue)) == 0, "a job performed twice"
    assert set(per_message(graph.select(op="patch", status=200))) == set(ids)
    warned = mr.records("Graph request failed")
    assert all("error" in r for r in warned), warned
    unavailable = [r for r in warned if "503" in r["error"]]
    assert len(unavailable) == 3 and all(r.get("retry_in_ms", 0) > 0 for r in unavailable), warned
    assert any("500" in r["error"] for r in warned), warned
    assert not mr.records("Giving up")


# ---------------------------------------------------------------- 7. permanent errors at start-up
PERMANENT = [
    # id (what is broken), what stderr must say, what the fake answered (kind, status)
    ("wrong-client-secret", r"invalid_client|AADSTS7000215", ("token", 401)),
    ("unknown-tenant", r"AADSTS90002|[Tt]enant .*not found", ("token", 400)),
    ("no-permission", r"ErrorAccessDenied|403", ("api", 403)),
    ("unknown-user", r"ErrorInvalidUser|404", ("api", 404)),
    ("unknown-folder", r"ErrorInvalidIdMalformed|404", ("api", 404)),
]


@pytest.mark.parametrize("case,reason,answer", PERMANENT, ids=[c[0] for c in PERMANENT])
def test_permanent_error_at_startup_exits_1(case, reason, answer, servers, queue, workdir, mailroom, graph):
    """A 4xx no retry can cure, at start-up: exit 1 within 20 s, stderr says
    why on a line naming the mailbox, "Giving up" is logged, the message is
    untouched, and no secret is printed anywhere."""
    addr, cid, csec = tenant_user(graph, permission=(case != "no-permission"))
    graph.add_message(addr, messages(addr, "permanent", 1)[0])
    mb = graph_mailbox(graph, addr, cid, csec, workdir)
    wrong = None
    if case == "wrong-client-secret":
        wrong = mb["inbox_options"]["client_secret"] = csec + "-wrong"
    elif case == "unknown-tenant":
        mb["inbox_options"]["tenant_id"] = "no-such-tenant"
    elif case == "unknown-user":
        mb["email"] = f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    elif case == "unknown-folder":
        mb["name"] = "NoSuchFolder"
    mr = mailroom(config(mb, sidekiq(servers, queue)))
    rc, _ = mr.wait_exit(20)
    assert rc == 1, f"exit code {rc}\n" + mr.diagnostics()
    kind, status = answer
    assert graph.count(kind=kind, status=status) >= 1, graph.summary()
    assert graph.count(kind=kind, status=status) <= 2, f"a permanent error retried: {graph.summary()}"
    naming = [ln for ln in mr.stderr.splitlines() if mb["email"] in ln and re.search(reason, ln)]
    assert naming, f"no stderr line names {mb['email']} and /{reason}/\n" + mr.diagnostics()
    assert mr.records("Giving up"), mr.diagnostics()
    assert len(graph.unread(addr)) == 1
    assert graph.count(method="PATCH") == graph.count(method="DELETE") == graph.count(op="value") == 0
    assert servers.r.llen("queue:" + queue) == 0
    assert_no_secrets(mr.all_output(), graph, wrong)


# ---------------------------------------------------------------- 8. two instances
def test_two_instances_with_redis_arbitration_deliver_each_once(servers, queue, workdir, mailroom, graph):
    """Two instances poll the same Graph mailbox with redis arbitration; 200
    messages arrive while both poll: each is performed exactly once in all."""
    n = 200
    addr, cid, csec = tenant_user(graph)
    mb = graph_mailbox(graph, addr, cid, csec, workdir, log="mailroom-a.log")
    mb.update(harness.redis_arbitration(servers.redis_url, f"graph-two:{uuid.uuid4().hex[:8]}"))
    a = mailroom(config(mb, sidekiq(servers, queue)), name="mailroom-a")
    mb_b = copy.deepcopy(mb)
    mb_b["logger"]["log_path"] = str(workdir / "mailroom-b.log")
    b = mailroom(config(mb_b, sidekiq(servers, queue)), name="mailroom-b")
    a.wait_log("Idling", 1, timeout=30, desc="instance a polling")
    b.wait_log("Idling", 1, timeout=30, desc="instance b polling")
    raws = messages(addr, "two", n)
    graph.add_messages(addr, raws)
    got = servers.performed(queue, n, timeout=180, proc=a)
    wait_all_read(graph, addr, a, timeout=60)
    assert b.alive(), b.diagnostics()
    wait_polls(a, 1)
    wait_polls(b, 1)
    a.stop_ok()
    b.stop_ok()
    assert_same_messages(got, raws)
    sent = sent_ids(a, b)
    assert sorted(sent) == sorted(mid(r) for r in raws), \
        f"{len(sent)} deliveries sent for {n} messages ({len(set(sent))} distinct)"
    assert servers.r.llen(servers.result_key(queue)) == 0, "a job performed twice"
    print(f"instance a sent {len(sent_ids(a))}, b sent {len(sent_ids(b))}")


# ---------------------------------------------------------------- 9. oversize
def oversize_setup(graph, addr):
    """10 small messages and 2 of 100 KB in between, the first big one with a
    category of its own: (small raws, big ids)."""
    small = messages(addr, "small", 10)
    graph.add_messages(addr, small[:5])
    big = [graph.add_message(addr, big_message(addr, 1), categories=["Blue category"])]
    graph.add_messages(addr, small[5:])
    big.append(graph.add_message(addr, big_message(addr, 2)))
    return small, big


def assert_big_never_fetched(graph, big):
    assert not [r for r in graph.select(op="value") if r["message"] in big], "a big message's body was fetched"


def test_oversize_messages_are_tagged_not_delivered(servers, queue, workdir, mailroom, graph):
    """max_message_size 20000 (oversize_action flag): the 10 small messages
    are delivered; the 2 of 100 KB are never fetched, get the category
    $MailroomOversize added to theirs (one PATCH each), stay unread in the
    inbox, and later polls skip them."""
    addr, cid, csec = tenant_user(graph)
    small, big = oversize_setup(graph, addr)
    mb = graph_mailbox(graph, addr, cid, csec, workdir, max_message_size=20000)
    health = harness.free_port()
    mr = mailroom(config(mb, sidekiq(servers, queue), health_port=health))
    got = servers.performed(queue, 10, timeout=60, proc=mr)
    harness.wait_until(lambda: all(KEYWORD in graph.message(addr, b)["categories"] for b in big), 30,
                       "both big messages tagged", proc=mr)
    harness.wait_until(lambda: [m["id"] for m in graph.unread(addr)] == big, 30,
                       "the small ones read, the big ones unread", proc=mr)
    wait_polls(mr, 2)
    # /metrics after a pass that found only the two set aside: they are the
    # unread ones, and the app's token was fetched.
    status, body = harness.http_get(f"http://{HOST}:{health}/metrics", timeout=5)
    assert status == 200
    page = body.decode()
    label = f'mailbox="{addr}/inbox@'
    samples = {line.split("{")[0]: line.rsplit(" ", 1)[1] for line in page.splitlines()
               if label in line and not line.startswith("#") and "_bucket" not in line}
    assert samples["mailroom_mailbox_unseen_messages"] == "2", page
    assert float(samples["mailroom_mailbox_last_pass_timestamp_seconds"]) > 0, page
    ok_renewals = [line for line in page.splitlines()
                   if line.startswith("mailroom_token_renewals_total{") and label in line and 'result="ok"' in line]
    assert ok_renewals and float(ok_renewals[0].rsplit(" ", 1)[1]) >= 1, page
    mr.stop_ok()
    assert_same_messages(got, small)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in small)
    assert graph.message(addr, big[0])["categories"] == ["Blue category", KEYWORD]
    assert graph.message(addr, big[1])["categories"] == [KEYWORD]
    assert all(graph.message(addr, b)["folder"] == "inbox" and not graph.message(addr, b)["is_read"] for b in big)
    assert_big_never_fetched(graph, big)
    tags = [r for r in graph.select(op="patch") if r["message"] in big]
    assert per_message(tags) == {b: 1 for b in big}, "a big message tagged more than once"
    assert all(set(r["json"]) == {"categories"} for r in tags), [r["json"] for r in tags]
    assert len(mr.records("message too large, not delivered")) == 2, mr.records("message too large, not delivered")


def test_refused_and_too_old_messages_are_tagged(servers, workdir, mailroom, graph, webhook):
    """A webhook 400 for one message: it gets the category $MailroomRejected,
    stays unread, and is not sent again; two messages received 30 days ago
    (max_message_age 7d) get $MailroomTooOld and are never fetched; the
    others are delivered and marked read."""
    addr, cid, csec = tenant_user(graph)
    old_time = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(days=30)
    old = graph.add_messages(addr, messages(addr, "old", 2), received=old_time)
    raws = messages(addr, "new", 4)
    refused_raw = raws[2]
    new = graph.add_messages(addr, raws)
    webhook.status_for = lambda body: 400 if mid(refused_raw).encode() in body else None
    mb = graph_mailbox(graph, addr, cid, csec, workdir, max_message_age="7d")
    mr = mailroom(config(mb, postback(webhook.url())))
    harness.wait_until(lambda: "$MailroomRejected" in graph.message(addr, new[2])["categories"], 30,
                       "the refused message tagged", proc=mr)
    harness.wait_until(lambda: all("$MailroomTooOld" in graph.message(addr, o)["categories"] for o in old), 30,
                       "the old messages tagged", proc=mr)
    harness.wait_until(lambda: sorted(m["id"] for m in graph.unread(addr)) == sorted(old + [new[2]]), 30,
                       "the others read", proc=mr)
    wait_polls(mr, 2)
    mr.stop_ok()
    assert webhook.count(200) == 3 and webhook.count(400) == 1
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in raws)
    assert_big_never_fetched(graph, old)
    assert len(mr.records("message older than max_message_age, not delivered")) == 2
    assert len(mr.records("delivery refused for good")) == 1


@pytest.mark.parametrize("dest", ["id", "name"])
def test_oversize_messages_are_moved(dest, servers, queue, workdir, mailroom, graph):
    """oversize_action move to a folder made for it: the big ones end up
    there, unread, with the same (immutable) id, never fetched; the small
    ones are delivered.  "id": oversize_folder is the folder's id and the
    fake, like Graph, accepts only ids and well-known names as destinationId;
    "name": its display name "Oversize", which the fake also accepts (real
    Graph does not: a client must look the id up)."""
    addr, cid, csec = tenant_user(graph)
    fid = graph.add_folder(addr, "Oversize")
    if dest == "id":
        graph.folder_names_as_ids = False
    small, big = oversize_setup(graph, addr)
    mb = graph_mailbox(graph, addr, cid, csec, workdir, max_message_size=20000, oversize_action="move",
                       oversize_folder=fid if dest == "id" else "Oversize")
    mr = mailroom(config(mb, sidekiq(servers, queue)))
    got = servers.performed(queue, 10, timeout=60, proc=mr)
    harness.wait_until(lambda: len(graph.folder(addr, fid)) == 2, 30, "both big messages moved", proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    assert_same_messages(got, small)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in small)
    moved = graph.folder(addr, fid)
    assert sorted(m["id"] for m in moved) == sorted(big), "a moved message got a new id"
    assert not any(m["is_read"] for m in moved)
    assert per_message(graph.select(op="move", status=201)) == {b: 1 for b in big}
    assert_big_never_fetched(graph, big)
    assert len(graph.folder(addr)) == 10


def test_after_delivery_move_keeps_each_message_read_in_the_folder(servers, queue, workdir, mailroom, graph):
    """after_delivery: move (move_to: the folder's id): each message is
    delivered once, marked read, then moved there with its immutable id; a
    move that Graph refuses (a folder that is gone) leaves the message read
    where it is, logged, and the mailbox goes on."""
    addr, cid, csec = tenant_user(graph)
    fid = graph.add_folder(addr, "Processed")
    graph.folder_names_as_ids = False
    raws = messages(addr, "after-move", 6)
    ids = graph.add_messages(addr, raws)
    mb = graph_mailbox(graph, addr, cid, csec, workdir, after_delivery="move", move_to=fid)
    mr = mailroom(config(mb, sidekiq(servers, queue)))
    got = servers.performed(queue, 6, timeout=60, proc=mr)
    harness.wait_until(lambda: len(graph.folder(addr, fid)) == 6, 30, "all six moved", proc=mr)
    wait_polls(mr, 1)
    mr.stop_ok()
    assert_same_messages(got, raws)
    moved = graph.folder(addr, fid)
    assert sorted(m["id"] for m in moved) == sorted(ids), "a moved message got a new id"
    assert all(m["is_read"] for m in moved) and graph.folder(addr) == []
    patches = graph.select(op="patch", status=200)
    moves = graph.select(op="move", status=201)
    assert per_message(patches) == {i: 1 for i in ids} and per_message(moves) == {i: 1 for i in ids}
    for i in ids:  # read before moved
        assert [r["time"] for r in patches if r["message"] == i][0] < \
            [r["time"] for r in moves if r["message"] == i][0]

    # The destination refused: read, left in the inbox, no redelivery.
    more = messages(addr, "after-move-refused", 2, start=6)
    more_ids = graph.add_messages(addr, more)
    mb2 = graph_mailbox(graph, addr, cid, csec, workdir, log="refused.log", after_delivery="move",
                        move_to="no-such-folder-id")
    mr2 = mailroom(config(mb2, sidekiq(servers, queue)), name="refused")
    got2 = servers.performed(queue, 2, timeout=60, proc=mr2)
    harness.wait_until(lambda: all(graph.message(addr, i)["is_read"] for i in more_ids), 30,
                       "both marked read", proc=mr2)
    mr2.wait_log("cannot move delivered messages; they stay in the folder, read", 2)
    wait_polls(mr2, 1)
    mr2.stop_ok()
    assert_same_messages(got2, more)
    assert sorted(m["id"] for m in graph.folder(addr)) == sorted(more_ids)
    assert not mr2.records("Graph request failed") and not mr2.records("Giving up")


# ---------------------------------------------------------------- 10. SIGTERM
def test_sigterm_with_webhook_requests_in_flight(workdir, mailroom, graph, webhook):
    """SIGTERM while 4 webhook requests are held (a webhook mailbox sends at
    most 4 at once): they finish (answered 200 after the signal) and their
    messages are marked read; nothing else is sent; exit 0. The rest stay
    unread and the next start delivers them: each message exactly once."""
    n = 40
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "sigterm", n)
    ids = graph.add_messages(addr, raws)
    gid = dict(zip((mid(r) for r in raws), ids))
    webhook.hold()

    def cfg(health, log):
        return config(graph_mailbox(graph, addr, cid, csec, workdir, log=log), postback(webhook.url()),
                      health_port=health)

    health = harness.free_port()
    mr = mailroom(cfg(health, "mailroom-held.log"), name="mailroom-held")
    harness.wait_until(webhook.held.is_set, 30, "a webhook request held", proc=mr)
    harness.wait_until(lambda: webhook.holding == 4, 30, "4 requests held at the receiver", proc=mr)
    mr.proc.send_signal(signal.SIGTERM)
    harness.wait_http_status(f"http://{HOST}:{health}/liveness", 500, 10, "/liveness 500: SIGTERM taken", proc=mr)
    webhook.release()
    mr.wait_exit_ok(30)
    assert webhook.count() == 4 and webhook.count(200) == 4, \
        f"{webhook.count()} requests ({webhook.count(200)} answered 200): none may be sent after SIGTERM"
    with webhook.lock:
        first = [gid[mid(r["body"])] for r in webhook.requests]
    read = sorted(m["id"] for m in graph.folder(addr) if m["is_read"])
    assert read == sorted(first), "the messages read are not the ones the webhook acknowledged"
    assert len(graph.unread(addr)) == n - 4
    assert len(mr.records("message pushed")) == 4
    assert mr.records("Quitting connection..."), mr.diagnostics()

    mr2 = mailroom(cfg(harness.free_port(), "mailroom-rest.log"), name="mailroom-rest")
    wait_all_read(graph, addr, mr2, timeout=60)
    wait_polls(mr2, 1)
    mr2.stop_ok()
    with webhook.lock:
        reqs = list(webhook.requests)
    assert all(r["status"] == 200 for r in reqs), [r["status"] for r in reqs]
    assert sorted(mid(r["body"]) for r in reqs) == sorted(mid(r) for r in raws), \
        f"{len(reqs)} requests for {n} messages"
    assert per_message(graph.select(op="patch", status=200)) == {i: 1 for i in ids}


# ---------------------------------------------------------------- 11. operator commands
def write_config(workdir, name, cfg):
    path = os.path.join(str(workdir), name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(harness.to_yaml(cfg) + "\n")
    return path


def test_operator_commands_on_a_graph_mailbox(servers, workdir, graph):
    """`check` gets a token and reads the folder (exit 0; the line names the
    mailbox, the token and the unread count); `status` shows the unread
    count; the IMAP-only commands refuse the Graph mailbox, saying so, and
    change nothing."""
    addr, cid, csec = tenant_user(graph)
    ids = graph.add_messages(addr, messages(addr, "ops", 5))
    graph.set_read(addr, ids[0])
    graph.set_read(addr, ids[1])  # 5 in all, 3 unread
    mb = graph_mailbox(graph, addr, cid, csec, workdir)
    mb.update(harness.redis_arbitration(servers.redis_url, f"graph-ops:{uuid.uuid4().hex[:8]}"))
    path = write_config(workdir, "graph-ops.yml", config(mb, harness.sidekiq_delivery(servers.redis_url,
                                                                                      "graph_unpolled")))
    label = harness.mailbox_label(addr, graph.port, name="inbox")
    unread3 = re.compile(r"\b3\b[^\n]*unread|unread[^\n]*\b3\b", re.I)

    cp = harness.run_cli(["check", "-c", path], timeout=30)
    assert cp.returncode == 0, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    lines = [ln for ln in cp.stdout.splitlines() if label in ln or addr in ln]
    assert lines and all(ln.startswith("ok") for ln in lines), cp.stdout
    assert any(re.search(r"token", ln, re.I) for ln in lines), f"no line says a token was obtained:\n{cp.stdout}"
    assert any(unread3.search(ln) for ln in lines), f"no line gives the unread count (3):\n{cp.stdout}"
    assert graph.count(op="token", status=200) >= 1
    assert_no_secrets(cp.stdout + cp.stderr, graph)

    cp = harness.run_cli(["status", "-c", path], timeout=30)
    assert cp.returncode == 0, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert unread3.search(cp.stdout), cp.stdout
    assert_no_secrets(cp.stdout + cp.stderr, graph)

    for args in (["unseen"], ["mark-seen", "--all"], ["expunge", "--all"], ["reingest", "--all"]):
        cp = harness.run_cli([args[0], "-c", path, *args[1:]], timeout=30)
        assert cp.returncode != 0, f"{args[0]} on a Graph mailbox exited 0:\n{cp.stdout}\n{cp.stderr}"
        assert "IMAP" in cp.stdout + cp.stderr, f"{args[0]}: no word of IMAP:\n{cp.stdout}\n{cp.stderr}"
        assert_no_secrets(cp.stdout + cp.stderr, graph)
    assert graph.count(method="PATCH") == graph.count(method="DELETE") == graph.count(op="move") == 0
    assert len(graph.unread(addr)) == 3 and len(graph.folder(addr)) == 5


# ---------------------------------------------------------------- 12. configuration errors
CFG_SECRET = "Gx8Q~cfg-secret-never-print-me"


def cfg_text(mutate):
    mb = {"email": "cfg@example.com", "name": "inbox", "inbox_method": "microsoft_graph",
          "inbox_options": {"tenant_id": "tenant-1", "client_id": "cfg-client", "client_secret": CFG_SECRET,
                            "poll_interval": 1, "azure_ad_endpoint": "https://login.microsoftonline.com",
                            "graph_endpoint": "https://graph.microsoft.com"},
          "delete_after_delivery": False}
    mb.update(harness.sidekiq_delivery("redis://127.0.0.1:6379", "email_receiver"))
    mutate(mb)
    return harness.to_yaml({"mailboxes": [mb]}) + "\n"


def _drop(key):
    def mutate(mb):
        del mb["inbox_options"][key]
    return mutate


def _set(key, value):
    def mutate(mb):
        mb["inbox_options"][key] = value
    return mutate


CONFIG_ERRORS = [
    # id, mutation, lines the error may name (needles; None: the inbox_options key or its first entry),
    # the key it must name, a word of the message
    ("missing-tenant-id", _drop("tenant_id"), None, "inbox_options.tenant_id", "required"),
    ("missing-client-id", _drop("client_id"), None, "inbox_options.client_id", "required"),
    ("missing-client-secret", _drop("client_secret"), None, "inbox_options.client_secret", "required"),
    ("http-graph-endpoint", _set("graph_endpoint", "http://graph.example.com"), [":graph_endpoint:"],
     "inbox_options.graph_endpoint", "loopback"),
    ("http-azure-ad-endpoint", _set("azure_ad_endpoint", "http://login.example.com"), [":azure_ad_endpoint:"],
     "inbox_options.azure_ad_endpoint", "loopback"),
]


@pytest.mark.parametrize("case", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_graph_config_errors_name_key_and_line(case, workdir):
    """A config error exits 1 at once, stderr says <file>:<line>: ... <key>: ...
    and the client secret is never printed."""
    name, mutate, needles, key, word = case
    text = cfg_text(mutate)
    path = os.path.join(str(workdir), "mail_room.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    # a config taken for good would run (and retry the unreachable endpoints) until this timeout
    cp = harness.run_cli(["-c", path], timeout=5)
    assert cp.returncode == 1, f"exit code {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    assert CFG_SECRET not in cp.stdout + cp.stderr, "the client secret was printed"
    if needles is None:
        at = harness.line_of(text, ":inbox_options:")
        lines = {at, at + 1}
    else:
        lines = {harness.line_of(text, n) for n in needles}
    where = re.compile(r"^(?:%s|%s):(\d+): " % (re.escape(path), re.escape(os.path.basename(path))))
    errs = [ln for ln in cp.stderr.splitlines() if where.search(ln) and "warning:" not in ln]
    named = [ln for ln in errs if int(where.search(ln).group(1)) in lines and key in ln and re.search(word, ln)]
    assert named, f"no error naming line {sorted(lines)}, {key!r} and {word!r}:\n{cp.stderr}\n--- config:\n{text}"


def test_unknown_inbox_option_is_warned_about(servers, workdir, graph):
    """An inbox_options key mailroom does not know is a warning (file, line,
    the key) and nothing more: `check` still passes."""
    addr, cid, csec = tenant_user(graph)
    mb = graph_mailbox(graph, addr, cid, csec, workdir)
    mb["inbox_options"]["bogus_option"] = 5
    cfg = config(mb, harness.sidekiq_delivery(servers.redis_url, "graph_unpolled"))
    path = write_config(workdir, "graph-warn.yml", cfg)
    text = open(path, encoding="utf-8").read()
    cp = harness.run_cli(["check", "-c", path], timeout=30)
    assert cp.returncode == 0, f"rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    line = harness.line_of(text, ":bogus_option:")
    pat = re.compile(r"^(?:%s|%s):%d: warning: .*inbox_options.*bogus_option"
                     % (re.escape(path), re.escape(os.path.basename(path)), line))
    assert any(pat.search(ln) for ln in cp.stderr.splitlines()), cp.stderr
    assert_no_secrets(cp.stdout + cp.stderr, graph)


# ---------------------------------------------------------------- more faults
def test_message_gone_before_its_body_is_fetched(servers, queue, workdir, mailroom, graph):
    """A message listed, then purged by another client before mailroom asks
    for its $value (404 ErrorItemNotFound): it is skipped, the others are
    delivered once, and mailroom goes on polling (no Giving up)."""
    addr, cid, csec = tenant_user(graph)
    raws = messages(addr, "gone", 3)
    ids = graph.add_messages(addr, raws)
    graph.hold(methods=["GET"], path_regex=r"/\$value$")
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), sidekiq(servers, queue)))
    try:
        harness.wait_until(graph.held.is_set, 30, "a $value request held", proc=mr)
        victim = next(r for r in graph.pending() if r["op"] == "value")
        gone = victim["path"].split("/")[-2]
        assert gone in ids, victim["path"]
        graph.remove_message(addr, gone)
    finally:
        graph.release()
    rest = [r for r, i in zip(raws, ids) if i != gone]
    got = servers.performed(queue, 2, timeout=30, proc=mr)
    wait_all_read(graph, addr, mr)
    wait_polls(mr, 2)
    mr.stop_ok()
    assert_same_messages(got, rest)
    assert sorted(sent_ids(mr)) == sorted(mid(r) for r in rest)
    assert graph.count(op="value", status=404) >= 1
    assert not mr.records("Giving up")


def test_token_endpoint_outage_at_startup_is_retried(servers, queue, workdir, mailroom, graph):
    """The token endpoint answers 503 at start-up: a passing failure, not a
    permanent one: mailroom keeps asking (with a backoff), and once the
    endpoint recovers the message is delivered."""
    addr, cid, csec = tenant_user(graph)
    raw = messages(addr, "outage", 1)[0]
    graph.add_message(addr, raw)
    graph.token_outage(503)
    mr = mailroom(config(graph_mailbox(graph, addr, cid, csec, workdir), sidekiq(servers, queue)))
    graph.wait_count(2, 30, desc="two token requests answered 503", proc=mr, op="token", status=503)
    graph.token_recover()
    assert servers.performed(queue, 1, timeout=60, proc=mr) == [raw]
    wait_all_read(graph, addr, mr)
    mr.stop_ok()
    assert graph.tokens_issued == 1
    assert not mr.records("Giving up")
    assert_no_secrets(mr.all_output(), graph)
