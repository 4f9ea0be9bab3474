"""A Gmail-like IMAP proxy for the integration tests (standard library only).

Gmail behaves differently from Dovecot, Cyrus and Courier in three ways that
matter to mailroom (docs: /work/shared/reference/providers-interop-operations.md
§1, Google's "IMAP client limits" help pages).  No local server can be made to
behave like that, so this proxy sits in front of a real server (Dovecot, plain
IMAP) and adds them:

* ``trash_on_expunge``: ``\\Deleted`` + ``EXPUNGE`` moves mail to the Trash
  (Gmail's "move the message to the Trash" setting).  When the client sends
  ``EXPUNGE`` or ``UID EXPUNGE <set>``, the proxy first copies the messages it
  would remove to ``trash_folder`` over a connection of its own (``UID COPY``;
  the copies lose ``\\Deleted``), then forwards the client's command.
* ``max_sessions``: at most N simultaneous sessions per user (Gmail: 15).  A
  LOGIN beyond that is answered with ``* BYE [ALERT] Too many simultaneous
  connections. (Failure)`` and the connection is closed; ``limit_reply="no"``
  answers the LOGIN with a tagged ``NO [ALERT] Too many simultaneous
  connections. (Failure)`` instead (the form captured from Gmail in
  zone-eu/wildduck#35 and reported by imaplib/libetpan users) and keeps the
  connection open.  A session counts from its LOGIN until its connection
  closes; a refused LOGIN takes no slot.
* ``idle_drop_after``: an IDLE is ended by the server after that many seconds
  (Gmail: about 10 minutes) with ``* BYE <idle_drop_text>`` and a close (the
  text is ours: Gmail's is not documented).

Every other byte is forwarded unchanged.  The proxy follows both streams line by
line (and skips literals), so it never cuts a response in the middle.

    p = GmailProxy("127.0.0.1", dovecot_port, max_sessions=2, idle_drop_after=2)
    ... mailroom connects to 127.0.0.1:<p.port> (plain, allow_plaintext_login) ...
    p.close()

Counters, safe to read from the test thread: ``accepted``, ``logins`` (LOGINs
answered OK), ``rejected`` (LOGINs refused for the session limit),
``idle_started`` (IDLEs the server confirmed with "+"), ``idle_dropped``,
``expunges`` (EXPUNGE commands intercepted), ``trashed`` (messages copied to
the Trash); ``sessions(user)``; ``events`` [(monotonic time, kind, conn id,
detail)].
"""
import asyncio
import imaplib
import re
import time

from faultproxy import LoopServer

LIMIT_TEXT = "[ALERT] Too many simultaneous connections. (Failure)"
IDLE_DROP_TEXT = "[UNAVAILABLE] Session timed out, please reconnect"

_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r?\n\Z")
_TAGGED = re.compile(rb"^([^\s+*]\S*) ")
_ASTRING = re.compile(rb'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"(){]+))')


def _unquote(m):
    if m.group(1) is not None:
        return re.sub(rb"\\(.)", rb"\1", m.group(1)).decode("utf-8", "replace")
    return m.group(2).decode("utf-8", "replace")


def _parse_login(args):
    """user, password of 'LOGIN <astring> <astring>' (quoted or atom; None if a literal)."""
    m1 = _ASTRING.match(args)
    if not m1:
        return None, None
    m2 = _ASTRING.match(args, m1.end())
    if not m2:
        return _unquote(m1), None
    return _unquote(m1), _unquote(m2)


class _Conn:
    def __init__(self, cid):
        self.id = cid
        self.cwriter = None
        self.swriter = None
        self.tasks = []
        self.closed = False
        self.user = None          # holds a session slot for this user
        self.password = None
        self.login_tag = None
        self.selected = "INBOX"
        self.idle_tag = None      # an IDLE was sent ...
        self.idling = False       # ... and the server answered "+"
        self.idle_timer = None
        self.drop_pending = False
        self.s2c_cont = False     # server stream: inside a response (after a literal)
        self.pending = set()      # tags sent to the server, not yet answered
        self.answered = None      # asyncio.Event: set while pending is empty


class GmailProxy(LoopServer):
    def __init__(self, target_host, target_port, *, max_sessions=None, limit_reply="bye",
                 trash_on_expunge=False, trash_folder="Trash", idle_drop_after=None,
                 idle_drop_text=IDLE_DROP_TEXT, host="127.0.0.1", name="gmail-proxy"):
        if limit_reply not in ("bye", "no"):
            raise ValueError(limit_reply)
        self.target = (target_host, int(target_port))
        self.host = host
        self.max_sessions = max_sessions
        self.limit_reply = limit_reply
        self.trash_on_expunge = trash_on_expunge
        self.trash_folder = trash_folder
        self.idle_drop_after = idle_drop_after
        self.idle_drop_text = idle_drop_text
        self.name = name
        self.accepted = 0
        self.logins = 0
        self.rejected = 0
        self.idle_started = 0
        self.idle_dropped = 0
        self.expunges = 0
        self.trashed = 0
        self.events = []
        self.errors = []  # exceptions inside the proxy (a test should assert this stays empty)
        self._sessions = {}
        self._conns = {}
        self._next_id = 0
        self._start(host, name)

    # ------------------------------------------------------------ test side
    def sessions(self, user):
        """Sessions of user holding a slot now (LOGIN sent, connection open)."""
        return self._sessions.get(user.lower(), 0)

    def count(self, kind):
        return sum(1 for e in list(self.events) if e[1] == kind)

    def __repr__(self):
        return (f"GmailProxy(:{getattr(self, 'port', '?')} -> {self.target[0]}:{self.target[1]}, "
                f"accepted={self.accepted}, logins={self.logins}, rejected={self.rejected}, "
                f"idle_started={self.idle_started}, idle_dropped={self.idle_dropped}, "
                f"expunges={self.expunges}, trashed={self.trashed}, sessions={dict(self._sessions)})")

    # ------------------------------------------------------------ loop side
    def _event(self, kind, conn, detail=""):
        self.events.append((time.monotonic(), kind, conn.id if conn else None, detail))

    async def _handle(self, creader, cwriter):
        self.accepted += 1
        conn = _Conn(self._next_id)
        self._next_id += 1
        self._conns[conn.id] = conn
        conn.cwriter = cwriter
        self._event("accept", conn)
        try:
            sreader, swriter = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, asyncio.TimeoutError) as e:
            self._event("upstream-failed", conn, repr(e))
            self._close_conn(conn)
            return
        conn.swriter = swriter
        conn.answered = asyncio.Event()
        conn.answered.set()
        if conn.closed:  # the proxy closed meanwhile
            swriter.transport.abort()
            return
        up = asyncio.ensure_future(self._c2s(conn, creader))
        down = asyncio.ensure_future(self._s2c(conn, sreader))
        conn.tasks = [up, down]
        try:
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in conn.tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    self.errors.append(t.exception())
        finally:
            self._close_conn(conn)

    def _close_conn(self, conn, flush_client=False):
        """Close both sides.  flush_client: the client first gets what was
        written to it (a BYE), then a FIN."""
        if conn.closed:
            return
        conn.closed = True
        self._event("close", conn)
        if conn.user is not None:
            self._release_slot(conn)
        if conn.idle_timer is not None:
            conn.idle_timer.cancel()
            conn.idle_timer = None
        for t in conn.tasks:
            if not t.done() and t is not asyncio.current_task():
                t.cancel()
        for w in (conn.cwriter, conn.swriter):
            if w is not None:
                try:
                    if flush_client and w is conn.cwriter:
                        w.close()
                    else:
                        w.transport.abort()
                except Exception:  # noqa: BLE001
                    pass
        self._conns.pop(conn.id, None)

    def _release_slot(self, conn):
        u = conn.user
        conn.user = None
        n = self._sessions.get(u, 0) - 1
        if n > 0:
            self._sessions[u] = n
        else:
            self._sessions.pop(u, None)

    async def _write(self, writer, data):
        writer.write(data)
        await writer.drain()

    # client -> server
    async def _c2s(self, conn, reader):
        buf = b""
        lit_left = 0
        continuation = False  # the next line continues a command (after a literal)
        while True:
            data = await reader.read(65536)
            if not data:
                return
            buf += data
            out = bytearray()
            while buf:
                if lit_left:
                    take = min(lit_left, len(buf))
                    out += buf[:take]
                    buf = buf[take:]
                    lit_left -= take
                    continue
                i = buf.find(b"\n")
                if i < 0:
                    break  # wait for the rest of the line
                line, buf = buf[:i + 1], buf[i + 1:]
                m = _LITERAL_END.search(line)
                first = not continuation
                continuation = bool(m)
                if m:
                    lit_left = int(m.group(1))
                if not first:
                    out += line
                    continue
                verdict = await self._client_command(conn, line, out)
                if verdict == "close":
                    return
                if verdict == "drop":
                    continue
                out += line
            if out:
                await self._write(conn.swriter, bytes(out))

    async def _client_command(self, conn, line, out):
        """Look at one client command line; returns "forward", "drop" or "close".
        `out` holds what precedes it, not yet sent (flushed here when the
        command must wait for something)."""
        text = line.rstrip(b"\r\n")
        if conn.idle_tag is not None and text.upper() == b"DONE":
            if conn.idle_timer is not None:
                conn.idle_timer.cancel()
                conn.idle_timer = None
            return "forward"
        parts = text.split(b" ", 2)
        if len(parts) < 2:
            return "forward"
        tag, verb = parts[0], parts[1].upper()
        rest = parts[2] if len(parts) > 2 else b""
        if verb == b"UID" and rest:
            sub = rest.split(b" ", 1)
            verb = b"UID " + sub[0].upper()
            rest = sub[1] if len(sub) > 1 else b""
        if verb == b"LOGIN":
            user, password = _parse_login(rest)
            key = (user or "").lower()
            if self.max_sessions is not None and self._sessions.get(key, 0) >= self.max_sessions:
                self.rejected += 1
                self._event("reject", conn, key)
                if out:
                    await self._write(conn.swriter, bytes(out))
                    out.clear()
                if self.limit_reply == "bye":
                    await self._write(conn.cwriter, f"* BYE {LIMIT_TEXT}\r\n".encode())
                    self._close_conn(conn, flush_client=True)
                    return "close"
                await self._write(conn.cwriter, tag + f" NO {LIMIT_TEXT}\r\n".encode())
                return "drop"
            conn.user, conn.password, conn.login_tag = key, password, tag
            self._sessions[key] = self._sessions.get(key, 0) + 1
        elif verb in (b"SELECT", b"EXAMINE"):
            m = _ASTRING.match(rest)
            conn.selected = _unquote(m) if m else "INBOX"
        elif verb == b"IDLE":
            conn.idle_tag = tag
            conn.idling = False
        elif verb in (b"EXPUNGE", b"UID EXPUNGE") and self.trash_on_expunge:
            self.expunges += 1
            if out:  # what the client sent before (e.g. the STORE) must reach the server first
                await self._write(conn.swriter, bytes(out))
                out.clear()
            # ... and be done there: the copy must see the \Deleted flags it set
            await conn.answered.wait()
            uid_set = rest.strip().decode() if verb == b"UID EXPUNGE" else None
            try:
                n = await asyncio.get_running_loop().run_in_executor(
                    None, self._copy_to_trash, conn.user, conn.password, conn.selected, uid_set)
            except Exception as e:  # noqa: BLE001  (the test sees it in errors)
                self.errors.append(e)
                self._event("trash-failed", conn, repr(e))
            else:
                self.trashed += n
                self._event("trash", conn, f"{n} from {conn.selected}")
        conn.pending.add(tag)
        conn.answered.clear()
        return "forward"

    def _copy_to_trash(self, user, password, folder, uid_set):
        """Copy the \\Deleted messages of folder (within uid_set) to the Trash,
        without \\Deleted; runs in a worker thread, own connection."""
        if folder == self.trash_folder:
            return 0
        m = imaplib.IMAP4(*self.target, timeout=30)
        try:
            m.login(user, password)
            typ, data = m.select('"%s"' % folder)
            if typ != "OK":
                raise RuntimeError(f"SELECT {folder}: {data!r}")
            crit = f"UID {uid_set} DELETED" if uid_set else "DELETED"
            typ, data = m.uid("SEARCH", crit)
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            if not uids:
                return 0
            typ, data = m.uid("COPY", b",".join(uids).decode(), '"%s"' % self.trash_folder)
            if typ != "OK":
                raise RuntimeError(f"UID COPY to {self.trash_folder}: {data!r}")
            typ, data = m.select('"%s"' % self.trash_folder)
            if typ == "OK":
                m.store("1:*", "-FLAGS.SILENT", "(\\Deleted)")
            return len(uids)
        finally:
            try:
                m.logout()
            except Exception:  # noqa: BLE001
                pass

    # server -> client
    async def _s2c(self, conn, reader):
        line = bytearray()  # a line not complete yet: held back
        lit_left = 0
        while True:
            data = await reader.read(65536)
            if not data:
                return
            out = bytearray()
            i, n = 0, len(data)
            while i < n:
                if lit_left:
                    take = min(lit_left, n - i)
                    out += data[i:i + take]
                    i += take
                    lit_left -= take
                    continue
                j = data.find(b"\n", i)
                if j < 0:
                    line += data[i:]
                    break
                line += data[i:j + 1]
                i = j + 1
                seg = bytes(line)
                line.clear()
                starts_response = not conn.s2c_cont
                m = _LITERAL_END.search(seg)
                conn.s2c_cont = bool(m)
                if m:
                    lit_left = int(m.group(1))
                if starts_response:
                    self._server_line(conn, seg)
                out += seg
            # complete lines and literal bytes go on; a partial line waits
            if out:
                await self._write(conn.cwriter, bytes(out))
            if conn.drop_pending and not conn.s2c_cont:
                await self._drop_idle_now(conn)
                return

    def _server_line(self, conn, seg):
        m = _TAGGED.match(seg)
        if m and m.group(1) in conn.pending:
            conn.pending.discard(m.group(1))
            if not conn.pending:
                conn.answered.set()
        if conn.login_tag is not None and m and m.group(1) == conn.login_tag:
            conn.login_tag = None
            if seg[len(m.group(0)):].upper().startswith(b"OK"):
                self.logins += 1
                self._event("login", conn, conn.user)
            elif conn.user is not None:
                self._release_slot(conn)
        if conn.idle_tag is not None:
            if not conn.idling and seg.startswith(b"+"):
                conn.idling = True
                self.idle_started += 1
                self._event("idle", conn)
                if self.idle_drop_after is not None:
                    conn.idle_timer = asyncio.get_running_loop().call_later(
                        self.idle_drop_after, self._drop_idle, conn)
            elif m and m.group(1) == conn.idle_tag:
                conn.idle_tag = None
                conn.idling = False
                if conn.idle_timer is not None:
                    conn.idle_timer.cancel()
                    conn.idle_timer = None

    def _drop_idle(self, conn):
        conn.idle_timer = None
        if conn.closed or not conn.idling:
            return
        if conn.s2c_cont:
            conn.drop_pending = True  # the s2c pump drops at the next response boundary
            return
        asyncio.ensure_future(self._drop_idle_now(conn))

    async def _drop_idle_now(self, conn):
        if conn.closed:
            return
        self.idle_dropped += 1
        self._event("idle-drop", conn)
        try:
            await self._write(conn.cwriter, f"* BYE {self.idle_drop_text}\r\n".encode())
        except OSError:
            pass
        self._close_conn(conn, flush_client=True)
