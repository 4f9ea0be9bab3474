"""Postback (webhook) delivery as GitLab configures it: POST the raw message to
/api/v4/internal/mail_room/<type> with Content-Type text/plain and the
Gitlab-Mailroom-Api-Request JWT (HS256, issuer gitlab-mailroom)."""
import re
import time

import harness
from mailinject import make_message

JWT_HEADER = "Gitlab-Mailroom-Api-Request"


def postback_config(servers, user, workdir, url, secret_path, **mailbox):
    mb = harness.imap_mailbox(servers, user, log_path=str(workdir / "mailroom.log"), **mailbox)
    mb["delivery_method"] = "postback"
    mb["delivery_options"] = {
        "delivery_url": url,
        "content_type": "text/plain",
        "jwt_auth_header": JWT_HEADER,
        "jwt_issuer": "gitlab-mailroom",
        "jwt_algorithm": "HS256",
        "jwt_secret_path": secret_path,
    }
    return {"mailboxes": [mb]}


def test_postback_sends_raw_message_with_gitlab_jwt(servers, user, workdir, mailroom, webhook, jwt_secret):
    raw = make_message(1, user, subject="Grüße ☃", body="body äöü\r\n")
    servers.append(user, [raw])
    mr = mailroom(postback_config(servers, user, workdir, webhook.url(), jwt_secret[0],
                                  delete=True, expunge=True))
    harness.wait_until(lambda: webhook.count() >= 1, 20, "the webhook request", proc=mr)
    req = webhook.requests[0]
    assert req["path"] == "/api/v4/internal/mail_room/incoming_email"
    assert req["headers"].get("content-type", "").split(";")[0].strip() == "text/plain"
    assert req["body"] == raw
    token = req["headers"].get(JWT_HEADER.lower())
    assert token, f"no {JWT_HEADER} header: {req['headers']}"
    _, claims = harness.verify_hs256_jwt(token, jwt_secret[1])
    assert claims.get("iss") == "gitlab-mailroom"
    assert re.fullmatch(r"[0-9a-f]{24}", str(claims.get("nonce"))), claims
    assert isinstance(claims.get("iat"), int) and abs(claims["iat"] - time.time()) < 60, claims
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX", proc=mr)
    assert webhook.count() == 1
    mr.stop_ok()


def test_each_postback_gets_a_fresh_nonce(servers, user, workdir, mailroom, webhook, jwt_secret):
    servers.append(user, [make_message(i, user) for i in range(2)])
    mr = mailroom(postback_config(servers, user, workdir, webhook.url(), jwt_secret[0]))
    harness.wait_until(lambda: webhook.count() >= 2, 20, "two webhook requests", proc=mr)
    nonces = {harness.verify_hs256_jwt(r["headers"][JWT_HEADER.lower()], jwt_secret[1])[1]["nonce"]
              for r in webhook.requests}
    assert len(nonces) == 2
    mr.stop_ok()


def test_webhook_error_keeps_message_unseen_then_delivers_once(servers, user, workdir, mailroom, webhook,
                                                               jwt_secret):
    """A 500 answer is not a delivery: the message stays in the mailbox, unseen
    and not deleted; once the endpoint answers 200 it is delivered exactly once
    and removed."""
    webhook.status = 500
    raw = make_message(1, user, subject="retry me")
    uid = servers.append(user, [raw])[0]
    mr = mailroom(postback_config(servers, user, workdir, webhook.url(), jwt_secret[0],
                                  idle_timeout=5, delete=True, expunge=True))
    harness.wait_until(lambda: webhook.count(500) >= 1, 20, "the first (failing) webhook request", proc=mr)
    # The failed pass is over once its backoff begins; then the retry (2 s
    # later) fails too and ends in the next backoff. After each, the message
    # is still there, unseen and not deleted.
    for n in (1, 2):
        mr.wait_log("waiting to retry delivery", n, desc=f"failed pass {n} to end in a backoff")
        assert servers.flags(user) == {uid: set()}, f"after failed pass {n}: {servers.flags(user)}"
    failed = mr.records("delivery failed")
    assert failed and all(r["error"].startswith("delivery rejected by the target: HTTP 500: ")
                          and '"message":"error"' in r["error"] and r["uid"] == uid for r in failed), failed
    assert not mr.records("message pushed"), "'message pushed' logged for an HTTP 500"
    webhook.status = 200
    harness.wait_until(lambda: webhook.count(200) >= 1, 60, "a successful retry", proc=mr)
    harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX", proc=mr)
    mr.stop_ok()
    assert webhook.count(200) == 1
    assert all(r["body"] == raw for r in webhook.requests)
    # one request per pass (one message), every failure logged, one success
    assert webhook.count(500) == len(mr.records("delivery failed")) >= 2
    pushed = mr.records("message pushed")
    assert len(pushed) == 1 and pushed[0]["status_code"] == 200, pushed
    keys = {r["headers"].get("idempotency-key") for r in webhook.requests}
    assert len(keys) == 1 and None not in keys, f"Idempotency-Key must be the same on every retry: {keys}"
