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


class _Conn:
    def __init__(self, cid):
        self.id = cid
        self.writers = []
        self.tasks = []
        self.scanner = _Scanner()
        self.closed = False


class FaultProxy:
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
        self._loop = asyncio.new_event_loop()
        self._flowing = None  # asyncio.Event, created in the loop
        self._server = None
        self._closed = False
        ready = threading.Event()
        err = []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start())
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
            raise RuntimeError("fault proxy did not start")
        self.port = self._server.sockets[0].getsockname()[1]

    # ------------------------------------------------------------ loop side
    async def _start(self):
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, self.host, 0)

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

    async def _forward(self, writer, data, s2c):
        writer.write(data)
        await writer.drain()
        if s2c:
            self.bytes_s2c += len(data)
        else:
            self.bytes_c2s += len(data)

    async def _pump(self, conn, reader, writer, s2c):
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    return
                while data:
                    await self._flowing.wait()  # black-holed meanwhile: hold it
                    off = conn.scanner.feed(data, self._should_cut) if s2c else None
                    if off is None:
                        await self._forward(writer, data, s2c)
                        break
                    action = self._fire_cut(conn)
                    # exactly `off` more bytes reach the client, flushed before we go on
                    writer.transport.set_write_buffer_limits(high=0)
                    await self._forward(writer, data[:off], s2c)
                    writer.transport.set_write_buffer_limits()
                    if action == "close":
                        return
                    data = data[off:]  # held until restore(), then scanned on
        except (OSError, asyncio.IncompleteReadError):
            return

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
        c = self._cut
        self.cuts += 1
        self.events.append(("cut-" + (c["action"] if c else "close"), conn.id))
        action = c["action"] if c else "close"
        if c is not None:
            c["skipped"] = 0
            if c["times"] is not None:
                c["times"] -= 1
                if c["times"] <= 0:
                    self._cut = None
        if action == "blackhole":
            self._flowing.clear()
        return action

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
    def _call(self, fn, *args):
        if self._closed:
            raise RuntimeError("fault proxy is closed")

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def cut_in_literal(self, after_bytes=1000, times=1, skip=0, action="close"):
        """Arm a cut (see the module docstring).  times=None: every time."""
        if action not in ("close", "blackhole"):
            raise ValueError(action)
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")

        def arm():
            self._cut = {"after_bytes": int(after_bytes), "times": times, "skip": int(skip),
                         "action": action, "skipped": 0}
        self._call(arm)

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

    def close(self):
        """Close the listener and every connection, stop the loop, join the
        thread (raises if it does not end)."""
        if self._closed:
            return
        loop = self._loop

        async def shutdown():
            self._cut = None
            self._flowing.set()
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
            raise RuntimeError("fault proxy thread did not end")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"FaultProxy(:{getattr(self, 'port', '?')} -> {self.target[0]}:{self.target[1]}, "
                f"accepted={self.accepted}, cuts={self.cuts}, active={self.active}, "
                f"blackholed={self.blackholed})")
