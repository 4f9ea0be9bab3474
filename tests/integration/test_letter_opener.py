"""letter_opener delivery against real Dovecot: each message becomes
<location>/<time>_<id>/message.eml (the raw bytes) plus an index.html, read
back here; odd mail still gets both files; `mailroom check` looks at the
location."""
import glob
import os

import harness
from mailinject import make_message

MULTIPART = (
    b"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.de>\r\n"
    b"To: incoming@example.com\r\n"
    b"Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=\r\n"
    b"Message-ID: <lo1@mailroom.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Sch=F6ne Gr=FC=DFe <script>alert(1)</script>\r\n"
    b"--b1\r\n"
    b'Content-Type: application/pdf; name="bericht.pdf"\r\n'
    b'Content-Disposition: attachment; filename="bericht.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--b1--\r\n")

NO_HEADERS = b"just some text without any header\r\n\xff\xfe invalid utf-8\r\n"


def config(servers, user, workdir, location):
    mb = harness.imap_mailbox(servers, user, log_path=str(workdir / "mailroom.log"))
    mb["delivery_method"] = "letter_opener"
    mb["location"] = location
    return {"mailboxes": [mb]}


def test_letter_opener_writes_eml_and_index(servers, user, workdir, mailroom):
    location = str(workdir / "letters" / "inbox")  # created by mailroom
    plain = make_message(1, user, subject="plain one")
    raws = [MULTIPART, plain, NO_HEADERS]
    uids = servers.append(user, raws)
    mr = mailroom(config(servers, user, workdir, location))
    harness.wait_until(lambda: all("\\Seen" in servers.flags(user).get(u, set()) for u in uids), 30,
                       "the 3 messages delivered", proc=mr)
    dirs = sorted(glob.glob(os.path.join(location, "*")))
    assert len(dirs) == 3, dirs
    emls = {}
    for d in dirs:
        assert sorted(os.listdir(d)) == ["index.html", "message.eml"], os.listdir(d)
        with open(os.path.join(d, "message.eml"), "rb") as fh:
            eml = fh.read()
        with open(os.path.join(d, "index.html"), encoding="utf-8") as fh:
            emls[eml] = fh.read()
    assert sorted(emls) == sorted(raws), "message.eml differs from the message"
    html = emls[MULTIPART]
    assert "Grüße aus Köln" in html and "Jörg Müller" in html
    assert "Schöne Grüße" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "bericht.pdf" in html
    assert "plain one" in emls[plain]
    assert "just some text" in emls[NO_HEADERS]
    mr.stop_ok()


def test_check_reports_the_letter_opener_location(servers, user, workdir, mailroom):
    blocker = workdir / "a-file"
    blocker.write_text("not a directory\n")
    for location, ok in ((str(workdir / "new" / "dir"), True), (str(blocker / "sub"), False)):
        path = workdir / ("ok.yml" if ok else "bad.yml")
        path.write_text(harness.to_yaml(config(servers, user, workdir, location)) + "\n")
        cp = harness.run_cli(["check", "-c", str(path)])
        line = [ln for ln in cp.stdout.splitlines() if "letter_opener" in ln]
        assert line, cp.stdout + cp.stderr
        assert (cp.returncode == 0) == ok, cp.stdout + cp.stderr
        assert ("will be created" in line[0]) == ok, line
