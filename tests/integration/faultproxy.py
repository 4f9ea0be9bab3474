"""A fault-injecting TCP proxy for the integration tests (standard library only).

    p = FaultProxy("127.0.0.1", servers.imap_port)   # listens on 127.0.0.1:<p.port>
    p.cut_in_literal(after_bytes=1000)               # cut the next FETCH BODY[] literal
    p.blackhole(); ...; p.restore()
    p.close()

One asyncio event loop runs in one background thread; every connection is a
pair of pump tasks (client -> server, server -> client).  Controls are called
from the test thread and take effect inside the loop before they return.

Faults:

* ``cut_in_literal(after_bytes, times=1, skip=0, action="close")``: watch the
  server -> client stream of every connection for an IMAP literal ``{N}\\r\\n``
  that belongs to a FETCH response and carries ``BODY[]``; pass ``skip`` such
  literals untouched, then forward exactly ``after_bytes`` bytes of the next one
  and close both sides of that connection (``action="close"``), or forward
  those bytes and black-hole the whole proxy (``action="blackhole"``; the rest
  is held and forwarded after ``restore()``).  ``times`` cuts (``None``: every
  time), each after another ``skip`` literals.  Literals of at most
  ``after_bytes`` bytes are never cut.
* ``blackhole()``: stop forwarding in both directions on existing and new
  connections; every socket stays open (new connections are still accepted),
  so TCP stays up and nothing arrives.  ``restore()`` resumes forwarding of
  everything held.
* ``drop_all()``: close every connection now (new ones are still accepted).

Gates (to hold a drain at a point the test chooses, do something, and let it
go on; nothing here depends on how fast the peers are):

* ``hold(pattern, direction="c2s", when="before", skip=0)``: watch one
  direction (``"c2s"``: client -> server, ``"s2c"``: server -> client) of every
  connection for ``pattern`` (bytes or str: a literal; a compiled ``re``
  pattern: a regular expression over a window of at most 4 KB); pass ``skip``
  occurrences, then stop that direction of the connection where the next one
  occurs: just ``"before"`` it (the bytes ahead of it are forwarded) or just
  ``"after"`` it.  Returns a ``Hold``: ``held`` (a ``threading.Event``, set
  once the stream is stopped), ``release()`` (forward the rest and go on),
  ``conn`` (the connection held).  One shot: a released hold does not fire
  again.  Bytes of a match that arrived in an earlier read may already have
  been forwarded ("before" then stops at the start of the read that completes
  the match); the receiver has an incomplete unit and waits.
* ``cut_in_literal(..., action="hold")``: like ``action="blackhole"`` but only
  the server -> client stream of that one connection stops; returns the
  ``Hold``.
* ``proxy.held`` / ``proxy.release()``: the event of the hold armed last, and
  release of every hold.

Counters: ``accepted`` (client connections accepted), ``cuts`` (faults fired
by ``cut_in_literal``), ``active`` (connections open now), ``bytes_s2c``.
"""
import asyncio
import re
import threading

_LITERAL_END = re.compile(rb"\{(\d+)\+?\}\r?\n\Z")


class _Scanner:
    """Follows the IMAP response stream of one connection (server -> client)
    far enough to know where FETCH BODY[] literals start and end."""

    MAX_LINE = 4096  # only a line's head (FETCH?) and tail ({N}) matter

    def __init__(self):
        self.line = bytearray()
        self.lit_left = 0        # bytes of the current literal still to come
        self.lit_pos = 0         # bytes of the current literal seen so far
        self.lit_is_body = False
        self.cut_at = None       # offset in the current body literal to cut at
        self.resp_is_fetch = False  # the response the current line belongs to is a FETCH
        self.continuation = False   # the current line segment follows a literal

    def _end_of_segment(self, seg, decide):
        if not self.continuation:
            head = seg[:64].upper()
            self.resp_is_fetch = head.startswith(b"* ") and b" FETCH " in head
        m = _LITERAL_END.search(seg)
        if m:
            self.lit_left = int(m.group(1))
            self.lit_pos = 0
            self.lit_is_body = self.resp_is_fetch and b"BODY[]" in seg.upper()
            # asked exactly once per body literal
            self.cut_at = decide(self.lit_left) if self.lit_is_body and self.lit_left else None
            self.continuation = True
        else:
            self.continuation = False

    def feed(self, data, decide=lambda size: None):
        """Scan data; returns the offset in data at which to cut, or None.
        decide(literal_size) is called once per FETCH BODY[] literal and returns
        the byte offset inside that literal to cut at, or None."""
        i, n = 0, len(data)
        while i < n:
            if self.lit_left:
                take = min(self.lit_left, n - i)
                if self.cut_at is not None and self.lit_pos <= self.cut_at < self.lit_pos + take:
                    step = self.cut_at - self.lit_pos
                    self.cut_at = None
                    self.lit_pos += step
                    self.lit_left -= step
                    return i + step
                self.lit_pos += take
                self.lit_left -= take
                i += take
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self._append(data[i:])
                break
            self._append(data[i:j + 1])
            i = j + 1
            seg = bytes(self.line)
            self.line.clear()
            self._end_of_segment(seg, decide)
        return None

    def _append(self, chunk):
        self.line += chunk
        if len(self.line) > self.MAX_LINE:
            # keep the head (FETCH?) and the tail ({N}\r\n)
            del self.line[256:len(self.line) - 256]


class Hold:
    """One gate armed with FaultProxy.hold() or cut_in_literal(action="hold")."""

    WINDOW = 4096  # bytes kept from earlier reads, for a match across reads

    def __init__(self, proxy, regex, direction, when, skip):
        self._proxy = proxy
        self.regex = regex
        self.direction = direction
        self.when = when
        self.skip = skip
        self.skipped = 0
        self.counted = set()       # (connection, end offset) of the matches passed
        self.fired = False
        self.conn = None           # id of the connection held
        self.held = threading.Event()
        self.released = False
        self._go = None            # asyncio.Event, created in the loop when it fires

    def release(self):
        """Let the held stream go on (no-op if it never fired or was released,
        or the proxy is closed: closing releases every hold)."""
        if self._proxy._closed:
            return
        self._proxy._call(self._release)

    def _release(self):
        self.released = True
        if self._go is not None:
            self._go.set()

    def __repr__(self):
        return (f"Hold({self.regex.pattern!r}, {self.direction}, {self.when}, skip={self.skip}, "
                f"held={self.held.is_set()}, released={self.released}, conn={self.conn})")


class _Stream:
    """One direction of one connection: what the holds need to know."""

    def __init__(self):
        self.tail = b""  # the last Hold.WINDOW bytes forwarded
        self.pos = 0     # bytes forwarded so far


class _Conn:
    def __init__(self, cid):
        self.id = cid
        self.writers = []
        self.tasks = []
        self.scanner = _Scanner()
        self.closed = False
        self.streams = {"c2s": _Stream(), "s2c": _Stream()}


class LoopServer:
    """A TCP listener on ``host``:0 served by one asyncio loop in a background
    thread (``self._handle(reader, writer)`` per connection), with the
    plumbing the proxies share: start-up, ``_call`` (run a function inside
    the loop and return its result), and ``close()`` (listener and every
    connection closed, tasks cancelled, thread joined).  Subclasses set
    ``self._conns`` (id -> connection) and define ``_close_conn(conn)``,
    ``_start_loop()`` (async, before the listener opens) and
    ``_before_close()`` (inside the loop, first thing in ``close()``)."""

    def _start(self, host, name):
        self._closed = False
        self._server = None
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        err = []

        async def start():
            await self._start_loop()
            self._server = await asyncio.start_server(self._handle, host, 0)

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(start())
            except BaseException as e:  # noqa: BLE001  (reported to the constructor)
                err.append(e)
                ready.set()
                self._loop.close()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"{name}-loop", daemon=True)
        self._thread.start()
        ready.wait(10)
        if err:
            self._thread.join(5)
            raise err[0]
        if self._server is None:
            raise RuntimeError(f"{name} did not start")
        self.port = self._server.sockets[0].getsockname()[1]

    async def _start_loop(self):
        pass

    def _before_close(self):
        pass

    def _call(self, fn, *args):
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def close(self):
        """Close the listener and every connection, stop the loop, join the
        thread (raises if it does not end)."""
        if self._closed:
            return
        loop = self._loop

        async def shutdown():
            self._before_close()
            self._server.close()
            for conn in list(self._conns.values()):
                self._close_conn(conn)
            await self._server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            self._closed = True
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} thread did not end")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FaultProxy(LoopServer):
    def __init__(self, target_host, target_port, host="127.0.0.1", connect_timeout=10.0, name="faultproxy"):
        self.target = (target_host, int(target_port))
        self.host = host
        self.connect_timeout = connect_timeout
        self.name = name
        # counters (written by the loop thread only)
        self.accepted = 0
        self.cuts = 0
        self.bytes_s2c = 0
        self.bytes_c2s = 0
        self.events = []  # (kind, connection id) in order, for diagnostics
        self._conns = {}
        self._next_id = 0
        self._cut = None  # dict(after_bytes, times, skip, action, skipped) while armed
        self._holds = []  # Hold objects armed or held (pattern holds)
        self._last_hold = None
        self._flowing = None  # asyncio.Event, created in the loop
        self._start(host, name)

    # ------------------------------------------------------------ loop side
    async def _start_loop(self):
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def _handle(self, creader, cwriter):
        self.accepted += 1
        cid = self._next_id
        self._next_id += 1
        conn = _Conn(cid)
        self._conns[cid] = conn
        conn.writers.append(cwriter)
        self.events.append(("accept", cid))
        try:
            sreader, swriter = await asyncio.wait_for(asyncio.open_connection(*self.target),
                                                      self.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            self.events.append(("upstream-failed", cid))
            self._close_conn(conn)
            return
        conn.writers.append(swriter)
        if conn.closed:  # dropped while connecting
            self._close_conn(conn)
            return
        up = asyncio.ensure_future(self._pump(conn, creader, swriter, s2c=False))
        down = asyncio.ensure_future(self._pump(conn, sreader, cwriter, s2c=True))
        conn.tasks = [up, down]
        try:
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._close_conn(conn)

    async def _forward(self, writer, data, s2c, stream=None, flush=False):
        if flush:  # the bytes must reach the peer before we stop
            writer.transport.set_write_buffer_limits(high=0)
        writer.write(data)
        await writer.drain()
        if flush:
            writer.transport.set_write_buffer_limits()
        if s2c:
            self.bytes_s2c += len(data)
        else:
            self.bytes_c2s += len(data)
        if stream is not None:
            stream.pos += len(data)
            stream.tail = (stream.tail + data)[-Hold.WINDOW:]

    async def _pump(self, conn, reader, writer, s2c):
        stream = conn.streams["s2c" if s2c else "c2s"]
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                while data:
                    await self._flowing.wait()  # black-holed meanwhile: hold it
                    hoff, hold = self._hold_point(conn, stream, data, s2c)
                    part = data if hoff is None else data[:hoff]
                    off = conn.scanner.feed(part, self._should_cut) if s2c else None
                    if off is None:
                        if part:
                            await self._forward(writer, part, s2c, stream, flush=hold is not None)
                        data = data[len(part):]
                        if hold is not None:
                            await self._engage(hold, conn)
                        continue
                    action, cut_hold = self._fire_cut(conn)
                    # exactly `off` more bytes reach the client, flushed before we go on
                    await self._forward(writer, part[:off], s2c, stream, flush=True)
                    if action == "close":
                        return
                    data = data[off:]  # held until restore() / release(), then scanned on
                    if cut_hold is not None:
                        await self._engage(cut_hold, conn)
        except (OSError, asyncio.IncompleteReadError):
            return

    def _hold_point(self, conn, stream, data, s2c):
        """(offset in data, Hold) of the first armed hold to fire in data, or
        (None, None).  Matches passed over are counted once each (by their
        end offset in the stream), however often the bytes are scanned."""
        direction = "s2c" if s2c else "c2s"
        best = (None, None)
        for h in self._holds:
            if h.fired or h.direction != direction:
                continue
            buf = stream.tail + data
            base = stream.pos - len(stream.tail)  # stream offset of buf[0]
            for m in h.regex.finditer(buf):
                if m.end() <= len(stream.tail):
                    continue  # wholly forwarded before
                key = (conn.id, base + m.end())
                if key in h.counted:
                    continue
                if h.skipped < h.skip:
                    h.skipped += 1
                    h.counted.add(key)
                    continue
                off = max((m.start() if h.when == "before" else m.end()) - len(stream.tail), 0)
                if best[0] is None or off < best[0]:
                    best = (off, h)
                break
        return best

    async def _engage(self, hold, conn):
        """Stop this stream here until hold is released (or the connection ends)."""
        hold.fired = True
        hold.conn = conn.id
        if hold._go is None:
            hold._go = asyncio.Event()
        if hold.released:
            hold._go.set()
        self.events.append(("hold", conn.id))
        hold.held.set()
        await hold._go.wait()
        self.events.append(("hold-released", conn.id))

    def _should_cut(self, literal_size):
        """Called at the start of each body literal while a cut is armed:
        returns the byte offset to cut at, or None to let it pass."""
        c = self._cut
        if c is None or literal_size <= c["after_bytes"]:
            return None
        if c["skipped"] < c["skip"]:
            c["skipped"] += 1
            return None
        return c["after_bytes"]

    def _fire_cut(self, conn):
        """Returns (action, the Hold to engage for action "hold" or None)."""
        c = self._cut
        self.cuts += 1
        self.events.append(("cut-" + (c["action"] if c else "close"), conn.id))
        action = c["action"] if c else "close"
        hold = None
        if c is not None:
            c["skipped"] = 0
            hold = c.get("hold")
            if c["times"] is not None:
                c["times"] -= 1
                if c["times"] <= 0:
                    self._cut = None
        if action == "blackhole":
            self._flowing.clear()
        return action, hold

    def _close_conn(self, conn):
        if not conn.closed:
            conn.closed = True
            self.events.append(("close", conn.id))
        for t in conn.tasks:
            if not t.done():
                t.cancel()
        for w in conn.writers:
            try:
                w.transport.abort()
            except Exception:  # noqa: BLE001
                pass
        self._conns.pop(conn.id, None)

    # ------------------------------------------------------------ test side
    def cut_in_literal(self, after_bytes=1000, times=1, skip=0, action="close"):
        """Arm a cut (see the module docstring).  times=None: every time.
        action="hold" (times must be 1) returns the Hold."""
        if action not in ("close", "blackhole", "hold"):
            raise ValueError(action)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if action == "hold" and times != 1:
            raise ValueError('action="hold" fires once (times=1)')
        hold = Hold(self, re.compile(b"(?!)"), "s2c", "after", 0) if action == "hold" else None

        def arm():
            self._cut = {"after_bytes": int(after_bytes), "times": times, "skip": int(skip),
                         "action": action, "skipped": 0, "hold": hold}
            if hold is not None:
                self._last_hold = hold
        self._call(arm)
        return hold

    def hold(self, pattern, direction="c2s", when="before", skip=0):
        """Arm a gate (see the module docstring); returns the Hold."""
        if direction not in ("c2s", "s2c"):
            raise ValueError(direction)
        if when not in ("before", "after"):
            raise ValueError(when)
        if isinstance(pattern, str):
            pattern = pattern.encode()
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        if isinstance(regex.pattern, str):
            raise TypeError("the pattern must be bytes")
        h = Hold(self, regex, direction, when, int(skip))

        def arm():
            self._holds.append(h)
            self._last_hold = h
        self._call(arm)
        return h

    @property
    def held(self):
        """The threading.Event of the hold armed last (None if none was)."""
        h = self._last_hold
        return h.held if h is not None else None

    def release(self):
        """Release every hold (those not yet fired are disarmed)."""
        def rel():
            for h in self._holds:
                h.fired = True
                h._release()
            self._holds.clear()
            c = self._cut
            if c is not None and c.get("hold") is not None:
                self._cut = None
            if self._last_hold is not None:
                self._last_hold._release()
        self._call(rel)

    def disarm(self):
        self._call(lambda: setattr(self, "_cut", None))

    @property
    def armed(self):
        return self._cut is not None

    def blackhole(self):
        self._call(lambda: self._flowing.clear())

    def restore(self):
        self._call(lambda: self._flowing.set())

    @property
    def blackholed(self):
        return self._flowing is not None and not self._flowing.is_set()

    def drop_all(self):
        def drop():
            for conn in list(self._conns.values()):
                self._close_conn(conn)
        self._call(drop)

    @property
    def active(self):
        return len(self._conns)

    def _before_close(self):
        self._cut = None
        for h in self._holds + ([self._last_hold] if self._last_hold else []):
            h._release()
        self._holds.clear()
        self._flowing.set()

    def __repr__(self):
        return (f"FaultProxy(:{getattr(self, 'port', '?')} -> {self.target[0]}:{self.target[1]}, "
                f"accepted={self.accepted}, cuts={self.cuts}, active={self.active}, "
                f"blackholed={self.blackholed})")
