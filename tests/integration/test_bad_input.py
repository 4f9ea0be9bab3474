"""Odd but legal messages flow like any other: invalid UTF-8, no Message-ID,
an empty body, a megabyte-long header line, bare LF line ends. Each one is
delivered exactly once, the job carries it, and the mailbox ends up empty."""
import json

import harness
from mailinject import make_message

ODD = {
    "invalid-utf8": b"From: a@example.com\r\nSubject: bytes \xff\xfe\xc3\x28\r\nMessage-ID: <bad-utf8@t>\r\n"
                    b"\r\nbody \x80\x81\xfe\xff end\r\n",
    "no-message-id": b"From: a@example.com\r\nSubject: no id\r\n\r\nthere is no Message-ID here\r\n",
    "empty-body": b"From: a@example.com\r\nSubject: empty\r\nMessage-ID: <empty@t>\r\n\r\n",
    "headers-only": b"From: a@example.com\r\nSubject: headers only\r\nMessage-ID: <hdr-only@t>\r\n",
    "long-header": b"From: a@example.com\r\nX-Long: " + b"x" * (1024 * 1024) + b"\r\nMessage-ID: <long@t>\r\n"
                   b"\r\nafter a 1 MiB header line\r\n",
    "bare-lf": b"From: a@example.com\nSubject: bare LF\nMessage-ID: <lf@t>\n\nline one\nline two\n",
}


def test_odd_messages_are_each_delivered_once(servers, user, workdir, mailroom):
    r = harness.RedisServer(str(workdir / "redis"))
    try:
        normal = [make_message(i, user) for i in range(3)]
        msgs = list(ODD.values()) + normal
        servers.append(user, msgs)
        cfg = harness.sidekiq_config(servers, user, "odd", workdir, redis_url=r.url, delete=True,
                                     expunge=True)
        mr = mailroom(cfg)
        c = r.client()
        harness.wait_until(lambda: c.llen("queue:odd") == len(msgs), 30,
                           f"{len(msgs)} jobs", proc=mr)
        harness.wait_until(lambda: servers.status(user)["MESSAGES"] == 0, 10, "an empty INBOX",
                           proc=mr)
        jobs = [json.loads(j) for j in c.lrange("queue:odd", 0, -1)]
        assert len({j["jid"] for j in jobs}) == len(msgs)
        bodies = [j["args"][0] for j in jobs]
        # Dovecot stores bare LF as CRLF; compare on the distinctive content
        for name, needle in [("invalid-utf8", "<bad-utf8@t>"), ("no-message-id", "there is no Message-ID"),
                             ("empty-body", "<empty@t>"), ("headers-only", "<hdr-only@t>"),
                             ("long-header", "after a 1 MiB header line"), ("bare-lf", "line two")]:
            assert sum(needle in b for b in bodies) == 1, name
        long_body = next(b for b in bodies if "after a 1 MiB header line" in b)
        assert "x" * (1024 * 1024) in long_body
        assert mr.alive()
        mr.stop_ok()
    finally:
        r.stop()
