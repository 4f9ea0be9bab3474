"""A fake Microsoft Graph (mail) and Azure AD token endpoint for the
integration tests (standard library only).

One ThreadingHTTPServer on 127.0.0.1 (port 0), HTTP/1.1, Content-Length on
every answer, serves both, so a mailbox's inbox_options use the same URL for
``azure_ad_endpoint`` and ``graph_endpoint``:

    fg = FakeGraph()
    fg.add_user("incoming@example.com")                    # tenant "tenant-1"
    cid, csec = fg.add_app()                                 # Mail.ReadWrite on every user of tenant-1
    ids = fg.add_messages("incoming@example.com", [raw1, raw2])
    fg.url()                                                 # http://127.0.0.1:<port>
    fg.scope                                                 # <url()>/.default, the scope to ask for
    ...
    fg.close()

Token (Microsoft identity platform v2.0, client credentials grant):
``POST /{tenant}/oauth2/v2.0/token`` with an application/x-www-form-urlencoded
form ``grant_type=client_credentials``, ``client_id``, ``client_secret`` (or
the client in an HTTP Basic Authorization header, as mail_room may send it)
and ``scope`` = ``<url()>/.default``.  Answers
``200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":..}``
(N = ``expires_in``, an opaque random token valid until issue time + N on the
monotonic clock), or an AAD error ``{"error", "error_description":
"AADSTSnnn: ..", "error_codes": [nnn], ...}``:

* 400 ``invalid_request`` AADSTS90002: unknown tenant; AADSTS900144: a missing
  parameter; a form that does not parse, a parameter given twice, a wrong
  Content-Type;
* 400 ``unsupported_grant_type`` AADSTS70003 (anything but client_credentials);
* 400 ``unauthorized_client`` AADSTS700016: no such application in the tenant;
* 401 ``invalid_client`` AADSTS7000215: wrong client secret;
* 400 ``invalid_scope`` AADSTS1002012: scope is not ``<url()>/.default``.

Graph, v1.0, app-only (``/me`` is refused as Graph refuses it); ``{user}`` is
the mailbox's address (one path segment, percent-decoded, case-insensitive);
every call needs ``Authorization: Bearer <token>``:

* ``GET /v1.0/users/{u}/mailFolders/{f}/messages`` (also ``/users/{u}/messages``,
  every folder): ``$filter`` ``isRead eq false|true``, optionally after
  ``receivedDateTime ge|gt|le|lt <ISO 8601>`` joined with ``and``;
  ``$orderby=receivedDateTime [asc|desc]``; ``$select`` (a comma list; ``id``
  always comes); ``$top`` (default 10, at most 1000); ``$skip``; ``$count=true``;
  ``$expand=singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')``,
  which adds ``"singleValueExtendedProperties":[{"id":"Integer 0xe08",
  "value":"<size>"}]`` (Graph's own spelling of the id; the value a decimal
  string).  Answer ``{"@odata.context", "value": [...], "@odata.nextLink"}``,
  the link (absolute, under url(), the request's query with ``$skip``) only
  while more remain.  Each page is evaluated when it is asked for (a message
  marked read in between shifts what ``$skip`` skips, as on Graph).  Like
  Graph, a ``$filter`` with an ``$orderby`` whose properties do not come first
  in the filter, in the same order, is refused: 400 ``InefficientFilter``
  ("The restriction or sort order is too complex for this operation."), so
  ``$filter=isRead eq false&$orderby=receivedDateTime asc`` fails and
  ``$filter=receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false``
  works (``strict_orderby = False`` turns the rule off).  ``page_cap``: at most
  that many messages per page whatever ``$top`` says (server-driven paging).
* ``GET .../messages/{id}/$value``: the raw MIME exactly as stored,
  Content-Type text/plain.
* ``GET .../messages/{id}``: the message's JSON (``$select`` as above).
* ``PATCH .../messages/{id}`` (Content-Type application/json, else 415):
  ``isRead`` (bool) and ``categories`` (list of str) only, anything else 400;
  200 with the message.
* ``DELETE .../messages/{id}``: 204; the message moves to ``deleteditems``
  (from ``deleteditems`` it is purged).
* ``POST .../messages/{id}/move`` ``{"destinationId": ..}``: 201 with the moved
  message.  The destination is a well-known name, a folder id or (while
  ``folder_names_as_ids``, the default; Graph itself does not) a display name.
* ``GET /v1.0/users/{u}/mailFolders[/{f}[/childFolders]]``: folders with
  ``totalItemCount`` and ``unreadItemCount``; ``$filter=displayName eq '..'``.

Message paths may also name the folder (``.../mailFolders/{f}/messages/{id}``).
A message keeps its id when it moves (DELETE, move) if the request carried
``Prefer: IdType="ImmutableId"`` (answered with ``Preference-Applied``),
otherwise it gets a new one and the old id is 404, as Graph's default ids do.
Ids look like Graph's (URL-safe base64, ~40 characters, with ``-`` and ``_``,
ending in ``=``); ``id_style = "standard"`` makes them standard base64 with
``+`` and ``/`` (a client must percent-encode the ``/``).  Folders: the
well-known ``inbox``, ``deleteditems``, ``archive``, ``drafts``,
``sentitems``, ``junkemail`` (case-insensitive), their ids, and folders made
with ``add_folder``.

Graph errors are ``{"error": {"code", "message", "innerError"}}``: 401
``InvalidAuthenticationToken`` (no, unknown, expired or revoked token; with
WWW-Authenticate), 403 ``ErrorAccessDenied`` (an app without the permission),
404 ``ErrorInvalidUser`` (unknown user, or one of another tenant), 404
``ErrorInvalidIdMalformed`` (unknown folder), 404 ``ErrorItemNotFound``
(unknown message), 400 ``BadRequest`` / ``RequestBroker--ParseUri`` /
``ErrorInvalidUrlQueryFilter`` (a query or segment the fake does not know).

Store: ``add_user(user, tenant="tenant-1")``, ``add_app(tenant="tenant-1",
permission=True) -> (client_id, client_secret)``, ``set_permission(client_id,
bool)``, ``add_folder(user, name, parent=None) -> folder id``,
``add_message(user, raw, folder="inbox", is_read=False, received=None,
categories=None, size=None) -> id``, ``add_messages(user, raws, **same) ->
ids``, ``remove_message(user, id)`` (another client purging it),
``set_read(user, id, flag)``; reading: ``message(user, id)`` (by current or
first id) and ``folder(user, folder)``, ``unread(user, folder="inbox")``: dicts
with id, key (the first id), raw, is_read, categories, folder (well-known or
display name), folder_id, received (datetime), size; ``counts(user)``:
{folder: {"total", "unread"}}; ``folder_id(user, folder)``.

Knobs (safe to call from the test thread at any time):

* ``expires_in``: the lifetime (seconds) of tokens issued from now on (3600);
* ``revoke_tokens()``: every token issued so far answers 401 from now on;
* ``throttle(n, retry_after=2, methods=None, path_regex=None)``: the next n
  matching API requests answer 429 with ``Retry-After`` and
  ``{"error":{"code":"TooManyRequests",..}}``;
* ``fail(n, status=503, retry_after=None, methods=None, path_regex=None)``:
  the next n matching API requests answer status (503: ServiceNotAvailable,
  else UnknownError), with Retry-After when given; ``faults_left()``;
* ``hold(methods=None, path_regex=None)`` / ``release()``: a gate: matching
  requests (token requests too) are recorded, ``held`` (a threading.Event) is
  set, ``holding`` counts them, and each is answered, from the state of that
  moment, once release() (or close()) is called;
* ``token_outage(status=503)`` / ``token_recover()``;
* ``strict_orderby``, ``page_cap``, ``folder_names_as_ids``, ``id_style``.

Faults and holds match on method (a list) and ``re.search`` of path_regex on
the decoded path (no query); faults queue up in the order given, each request
takes the first one that matches.

Records: ``requests``, dicts: time (monotonic, when it arrived), wall, answered
(monotonic, once answered), method, raw (the request target as sent), path
(decoded), query (dict), headers (lower-case names), body (bytes), json (the
parsed body or None), kind ("token" | "api"), op (token, list, message, value,
patch, delete, move, folder, folders, other), user, message (the message's
key: its first id), prefer, token (the bearer token or None), status,
error (Graph's error code or AAD's error), fault (True for a knob's answer),
retry_after, next_link, count (messages listed), form, tenant, client_id,
access_token (token requests).  ``issued`` (token, tenant, client_id, time,
exp, expires_in).  ``count(method=None, path_regex=None, status=None, op=None,
kind=None)`` and ``select(..same)`` (answered requests only),
``wait_count(n, timeout, desc=None, proc=None, **same)``, ``tokens_issued``,
``next_links`` (every nextLink given out), ``pending()`` (recorded, not yet
answered: held), ``secrets()`` (every client secret
and access token, to assert that none is printed), ``errors`` (exceptions in
the fake itself: must stay empty), ``summary()``, ``close()``.
"""
import base64
import datetime
import email.parser
import email.policy
import hmac
import http.server
import itertools
import json
import re
import secrets as _secrets
import threading
import time
import traceback
import urllib.parse
import uuid

HOST = "127.0.0.1"

WELL_KNOWN = {  # well-known name -> display name
    "inbox": "Inbox",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "junkemail": "Junk Email",
}
SIZE_TAG = 0x0E08  # PR_MESSAGE_SIZE
DEFAULT_SELECT = ["id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
                  "receivedDateTime", "hasAttachments", "internetMessageId", "subject", "bodyPreview",
                  "parentFolderId", "isRead"]
KNOWN_PROPERTIES = set(DEFAULT_SELECT)
GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
ACCESS_DENIED = "Access is denied. Check credentials and try again."
EXPIRED = "Lifetime validation failed, the token is expired."
NOT_FOUND_ITEM = "The specified object was not found in the store."


class _Answer(Exception):
    """A Graph or AAD error answer, raised from deep inside a handler."""

    def __init__(self, status, payload, headers=None):
        super().__init__(status)
        self.status, self.payload, self.headers = status, payload, headers or {}


def _iso(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(s):
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def _matches(rec, method, path_regex):
    if method is not None:
        methods = [method] if isinstance(method, str) else list(method)
        if rec["method"] not in [m.upper() for m in methods]:
            return False
    return path_regex is None or re.search(path_regex, rec["path"]) is not None


class FakeGraph:
    def __init__(self, *, expires_in=3600, page_cap=None, strict_orderby=True, folder_names_as_ids=True,
                 id_style="urlsafe"):
        self.expires_in = expires_in
        self.page_cap = page_cap
        self.strict_orderby = strict_orderby
        self.folder_names_as_ids = folder_names_as_ids
        self.id_style = id_style
        self.tenants = {}   # tenant -> {"apps": {client_id: {"secret", "permission"}}}
        self.users = {}     # lower-case address -> user dict
        self.tokens = {}    # token -> {"tenant", "client_id", "time", "exp", "revoked"}
        self.requests = []
        self.issued = []
        self.next_links = []
        self.errors = []
        self.token_outage_status = None
        self._faults = []   # dicts: status, n, retry_after, methods, path_regex
        self._seq = itertools.count()
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self.held = threading.Event()
        self.holding = 0
        self._gate = threading.Event()
        self._gate.set()
        self._hold_filter = (None, None)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self):
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _serve(self):
                body = self._read_body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec = outer._record(self.command, self.path, headers, body)
                if outer._should_hold(rec):
                    with outer.lock:
                        outer.holding += 1
                    outer.held.set()
                    outer._gate.wait()
                    with outer.lock:
                        outer.holding -= 1
                try:
                    status, extra_headers, data, ctype = outer._handle(rec)
                except Exception:  # a bug in the fake: answer 500, and keep it for the test to see
                    tb = traceback.format_exc()
                    with outer.lock:
                        outer.errors.append(tb)
                    status, extra_headers, ctype = 500, {}, "text/plain"
                    data = ("fake_graph internal error:\n" + tb).encode()
                    rec["status"] = 500
                self.send_response(status)
                if status != 204:
                    self.send_header("Content-Type", ctype)
                self.send_header("request-id", str(uuid.uuid4()))
                cri = headers.get("client-request-id")
                if cri:
                    self.send_header("client-request-id", cri)
                for k, v in extra_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:  # the client gave up (a held answer, a killed process)
                    self.close_connection = True
                with outer._changed:
                    rec["answered"] = time.monotonic()
                    outer._changed.notify_all()

            do_GET = _serve  # noqa: N815
            do_POST = _serve  # noqa: N815
            do_PATCH = _serve  # noqa: N815
            do_DELETE = _serve  # noqa: N815
            do_PUT = _serve  # noqa: N815

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-graph")
        self.thread.start()

    # ------------------------------------------------------------ set-up
    def url(self, path=""):
        return f"http://{HOST}:{self.port}{path}"

    @property
    def scope(self):
        return self.url("/.default")

    def _tenant(self, tenant):
        return self.tenants.setdefault(tenant, {"apps": {}})

    def add_app(self, tenant="tenant-1", permission=True, client_id=None, secret=None):
        """An app registration in tenant; permission: Mail.ReadWrite (application)
        on every user of the tenant.  Returns (client_id, client_secret)."""
        client_id = client_id or str(uuid.uuid4())
        secret = secret or f"Gx8Q~{_secrets.token_urlsafe(27)}"
        with self.lock:
            self._tenant(tenant)["apps"][client_id] = {"secret": secret, "permission": permission}
        return client_id, secret

    def set_permission(self, client_id, permission):
        with self.lock:
            for t in self.tenants.values():
                if client_id in t["apps"]:
                    t["apps"][client_id]["permission"] = permission
                    return
        raise KeyError(client_id)

    def add_user(self, user, tenant="tenant-1"):
        with self.lock:
            self._tenant(tenant)
            key = user.lower()
            if key in self.users:
                return
            folders = {}
            for wk, name in WELL_KNOWN.items():
                fid = self._new_folder_id()
                folders[fid] = {"id": fid, "name": name, "well_known": wk, "parent": None}
            self.users[key] = {"address": user, "tenant": tenant, "folders": folders, "messages": {}}

    def add_folder(self, user, name, parent=None):
        """A folder with display name `name` (under the root, or under parent,
        a folder of the user); returns its id."""
        with self.lock:
            u = self._user_for_test(user)
            parent_id = self._folder_locked(u, parent)["id"] if parent else None
            fid = self._new_folder_id()
            u["folders"][fid] = {"id": fid, "name": name, "well_known": None, "parent": parent_id}
            return fid

    def folder_id(self, user, folder):
        with self.lock:
            return self._folder_locked(self._user_for_test(user), folder)["id"]

    def add_message(self, user, raw, folder="inbox", is_read=False, received=None, categories=None, size=None):
        """Store raw (bytes) in the user's folder; returns the message's id."""
        if not isinstance(raw, (bytes, bytearray)):
            raise TypeError("raw must be bytes")
        with self.lock:
            u = self._user_for_test(user)
            f = self._folder_locked(u, folder)
            seq = next(self._seq)
            if received is None:
                received = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
            mid = self._new_id()
            u["messages"][mid] = {"id": mid, "key": mid, "raw": bytes(raw), "is_read": is_read,
                                  "categories": list(categories or []), "folder_id": f["id"],
                                  "received": received, "seq": seq,
                                  "size": len(raw) if size is None else size,
                                  "change": 0}
            return mid

    def add_messages(self, user, raws, **kw):
        return [self.add_message(user, raw, **kw) for raw in raws]

    def remove_message(self, user, id):
        """Purge a message (another client deleting it for good)."""
        with self.lock:
            u = self._user_for_test(user)
            m = self._find_for_test(u, id)
            del u["messages"][m["id"]]

    def set_read(self, user, id, is_read=True):
        with self.lock:
            self._find_for_test(self._user_for_test(user), id)["is_read"] = is_read

    # ------------------------------------------------------------ knobs
    def revoke_tokens(self):
        with self.lock:
            for t in self.tokens.values():
                t["revoked"] = True

    def throttle(self, n, retry_after=2, methods=None, path_regex=None):
        self._add_fault(n, 429, retry_after, methods, path_regex)

    def fail(self, n, status=503, retry_after=None, methods=None, path_regex=None):
        self._add_fault(n, status, retry_after, methods, path_regex)

    def _add_fault(self, n, status, retry_after, methods, path_regex):
        with self.lock:
            self._faults.append({"n": n, "status": status, "retry_after": retry_after,
                                 "methods": methods, "path_regex": path_regex})

    def faults_left(self):
        with self.lock:
            return sum(f["n"] for f in self._faults)

    def hold(self, methods=None, path_regex=None):
        """From now on, hold every matching request until release()."""
        self._hold_filter = (methods, path_regex)
        self.held.clear()
        self._gate.clear()

    def release(self):
        self._gate.set()

    def token_outage(self, status=503):
        with self.lock:
            self.token_outage_status = status

    def token_recover(self):
        with self.lock:
            self.token_outage_status = None

    def close(self):
        self._gate.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ reading the store
    def _public(self, u, m):
        f = u["folders"][m["folder_id"]]
        return {"id": m["id"], "key": m["key"], "raw": m["raw"], "is_read": m["is_read"],
                "categories": list(m["categories"]), "folder": f["well_known"] or f["name"],
                "folder_id": f["id"], "received": m["received"], "size": m["size"]}

    def message(self, user, id):
        """The message with this id (current or first), or None."""
        with self.lock:
            u = self._user_for_test(user)
            m = u["messages"].get(id) or next((x for x in u["messages"].values() if x["key"] == id), None)
            return self._public(u, m) if m else None

    def folder(self, user, folder="inbox"):
        with self.lock:
            u = self._user_for_test(user)
            fid = self._folder_locked(u, folder)["id"]
            return [self._public(u, m) for m in self._ordered(u, fid)]

    def unread(self, user, folder="inbox"):
        return [m for m in self.folder(user, folder) if not m["is_read"]]

    def counts(self, user):
        with self.lock:
            u = self._user_for_test(user)
            out = {}
            for f in u["folders"].values():
                ms = [m for m in u["messages"].values() if m["folder_id"] == f["id"]]
                out[f["well_known"] or f["name"]] = {"total": len(ms),
                                                     "unread": sum(1 for m in ms if not m["is_read"])}
            return out

    # ------------------------------------------------------------ records
    def select(self, method=None, path_regex=None, status=None, op=None, kind=None):
        """Answered requests matching every filter given."""
        with self.lock:
            return self._select_locked(method, path_regex, status, op, kind)

    def _select_locked(self, method=None, path_regex=None, status=None, op=None, kind=None):
        return [r for r in self.requests
                if "answered" in r and _matches(r, method, path_regex)
                and (status is None or r["status"] == status)
                and (op is None or r["op"] == op)
                and (kind is None or r["kind"] == kind)]

    def count(self, method=None, path_regex=None, status=None, op=None, kind=None):
        return len(self.select(method, path_regex, status, op, kind))

    def wait_count(self, n, timeout, desc=None, proc=None, **filters):
        """Wait until count(**filters) >= n; fails at once if proc (a
        harness.Mailroom) has exited.  Returns the count."""
        deadline = time.monotonic() + timeout
        what = desc or f"{n} request(s) {filters or ''}"
        with self._changed:
            while True:
                c = len(self._select_locked(**filters))
                if c >= n:
                    return c
                if proc is not None and not proc.alive():
                    raise AssertionError(f"mailroom exited (rc={proc.returncode}) while waiting for {what} "
                                         f"({c} so far)\n" + proc.diagnostics())
                left = deadline - time.monotonic()
                if left <= 0:
                    extra = ("\n" + proc.diagnostics()) if proc is not None else ""
                    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({c} so far; "
                                         f"last requests: {self._summary_locked()}){extra}")
                self._changed.wait(min(left, 0.1))

    @property
    def tokens_issued(self):
        with self.lock:
            return len(self.issued)

    def secrets(self):
        """Every client secret and access token this fake knows."""
        with self.lock:
            return ([a["secret"] for t in self.tenants.values() for a in t["apps"].values()]
                    + [t["token"] for t in self.issued])

    def summary(self, n=30):
        with self.lock:
            return self._summary_locked(n)

    def _summary_locked(self, n=30):
        return [(r["method"], r["raw"][:120], r["status"]) for r in self.requests[-n:]]

    # ------------------------------------------------------------ internals
    def _new_id(self):
        if self.id_style == "standard":
            s = list(base64.b64encode(_secrets.token_bytes(27)).decode())  # 36 characters
            extra = "+/"
        else:
            s = list(base64.urlsafe_b64encode(_secrets.token_bytes(27)).decode())
            extra = "-_"
        # every id carries both special characters somewhere after the prefix
        a, b = _secrets.randbelow(17), 17 + _secrets.randbelow(18)
        s[a], s[b] = extra[0], extra[1]
        return "AAMkAG" + "".join(s) + "="

    def _new_folder_id(self):
        return "AAMkAGFld" + base64.urlsafe_b64encode(_secrets.token_bytes(24)).decode().rstrip("=") + "AAA="

    def _user_for_test(self, user):
        u = self.users.get(user.lower())
        if u is None:
            raise KeyError(f"no user {user!r}: add_user() first")
        return u

    def _find_for_test(self, u, id):
        m = u["messages"].get(id) or next((x for x in u["messages"].values() if x["key"] == id), None)
        if m is None:
            raise KeyError(f"no message {id!r}")
        return m

    def _folder_locked(self, u, folder, strict=False):
        """A folder by well-known name (any case), id, or (unless strict) display name."""
        if folder is None:
            return None
        low = folder.lower()
        for f in u["folders"].values():
            if f["well_known"] == low or f["id"] == folder:
                return f
        if not strict:
            for f in u["folders"].values():
                if f["well_known"] is None and f["name"] == folder:
                    return f
        raise KeyError(folder)

    def _ordered(self, u, folder_id=None, reverse=False):
        ms = [m for m in u["messages"].values() if folder_id is None or m["folder_id"] == folder_id]
        ms.sort(key=lambda m: (m["received"], m["seq"]), reverse=reverse)
        return ms

    def _record(self, method, target, headers, body):
        split = urllib.parse.urlsplit(target)
        rec = {"time": time.monotonic(), "wall": time.time(), "method": method, "raw": target,
               "path": urllib.parse.unquote(split.path), "raw_path": split.path, "query_string": split.query,
               "query": {}, "headers": headers, "body": body, "json": None, "kind": "api", "op": "other",
               "user": None, "message": None, "prefer": headers.get("prefer"), "token": None,
               "status": None, "error": None, "fault": False, "retry_after": None, "next_link": None,
               "count": None, "form": None, "tenant": None, "client_id": None, "access_token": None}
        for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            rec["query"].setdefault(k, v)
        if re.fullmatch(r"/[^/]+/oauth2/v2\.0/token", split.path):
            rec["kind"] = rec["op"] = "token"
        else:
            rec["op"] = self._classify(method, split.path)
        auth = headers.get("authorization") or ""
        if rec["kind"] == "api" and auth[:7].lower() == "bearer ":
            rec["token"] = auth[7:].strip()
        with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        return rec

    @staticmethod
    def _classify(method, raw_path):
        """The op of an API request, from the shape of its path (known before
        the request is answered, e.g. while it is held)."""
        low = [urllib.parse.unquote(x).lower() for x in raw_path.split("/")[1:]]
        if len(low) < 4 or low[0] != "v1.0" or low[1] != "users":
            return "other"
        rest = low[3:]
        if rest[0] == "mailfolders":
            if len(rest) == 1 or (len(rest) == 3 and rest[2] == "childfolders"):
                return "folders"
            if len(rest) == 2:
                return "folder"
            rest = rest[2:]
        if rest[0] != "messages":
            return "other"
        if len(rest) == 1:
            return "list"
        if len(rest) == 2:
            return {"GET": "message", "PATCH": "patch", "DELETE": "delete"}.get(method, "other")
        if len(rest) == 3 and rest[2] in ("$value", "move"):
            return "value" if rest[2] == "$value" else "move"
        return "other"

    def pending(self):
        """Requests recorded but not answered yet (held ones, say)."""
        with self.lock:
            return [r for r in self.requests if "answered" not in r]

    def _should_hold(self, rec):
        if self._gate.is_set():
            return False
        methods, path_regex = self._hold_filter
        return _matches(rec, methods, path_regex)

    def _handle(self, rec):
        """(status, headers, body bytes, content type) of a recorded request."""
        with self.lock:
            try:
                if rec["kind"] == "token":
                    status, payload = self._token(rec)
                    data = json.dumps(payload).encode()
                    rec["status"] = status
                    rec["error"] = payload.get("error")
                    hdrs = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
                    return status, hdrs, data, "application/json; charset=utf-8"
                status, hdrs, data, ctype = self._api(rec)
            except _Answer as a:
                status, hdrs = a.status, dict(a.headers)
                payload = a.payload
                if rec["kind"] == "api" and isinstance(payload.get("error"), dict):
                    rec["error"] = payload["error"].get("code")
                    payload["error"].setdefault("innerError", {
                        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                        "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())})
                elif rec["kind"] == "token":
                    rec["error"] = payload.get("error")
                data = json.dumps(payload).encode()
                ctype = GRAPH_JSON if rec["kind"] == "api" else "application/json; charset=utf-8"
            rec["status"] = status
            return status, hdrs, data, ctype

    # ---------------------------------------------------------------- token endpoint
    @staticmethod
    def _aad_error(status, error, code, description):
        return _Answer(status, {"error": error, "error_description": f"AADSTS{code}: {description}",
                                "error_codes": [code],
                                "timestamp": datetime.datetime.now(datetime.timezone.utc)
                                .strftime("%Y-%m-%d %H:%M:%SZ"),
                                "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())})

    def _token(self, rec):
        if self.token_outage_status is not None:
            raise self._aad_error(self.token_outage_status, "temporarily_unavailable", 90033,
                                  "A transient error has occurred. Please try again.")
        tenant = rec["tenant"] = rec["path"].split("/")[1]
        if rec["method"] != "POST":
            raise self._aad_error(400, "invalid_request", 900561,
                                  "The endpoint only accepts POST requests. Received a " + rec["method"] + " request.")
        ctype = (rec["headers"].get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise self._aad_error(400, "invalid_request", 900144,
                                  "The request body must contain the following parameter: 'grant_type'.")
        try:
            pairs = urllib.parse.parse_qsl(rec["body"].decode("ascii"), keep_blank_values=True,
                                           strict_parsing=bool(rec["body"]), errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise self._aad_error(400, "invalid_request", 900144, "The request body is not a valid form.")
        form = {}
        for k, v in pairs:
            if k in form:
                raise self._aad_error(400, "invalid_request", 90015, f"Requested query string is too long "
                                      f"or contains a duplicate parameter '{k}'.")
            form[k] = v
        rec["form"] = form
        if tenant not in self.tenants:
            raise self._aad_error(400, "invalid_request", 90002,
                                  f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                                  "and are signing into the correct cloud.")
        auth = rec["headers"].get("authorization") or ""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, csec = base64.b64decode(auth[6:], validate=True).decode().partition(":")
            except ValueError:
                raise self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
            client_id, client_secret = urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(csec)
        for key, v in (("grant_type", form.get("grant_type")), ("client_id", client_id),
                       ("scope", form.get("scope"))):
            if not v:
                raise self._aad_error(400, "invalid_request", 900144,
                                      f"The request body must contain the following parameter: '{key}'.")
        rec["client_id"] = client_id
        if form["grant_type"] != "client_credentials":
            raise self._aad_error(400, "unsupported_grant_type", 70003,
                                  "The app requested an unsupported grant type "
                                  f"'{form['grant_type']}'.")
        app = self.tenants[tenant]["apps"].get(client_id)
        if app is None:
            raise self._aad_error(400, "unauthorized_client", 700016,
                                  f"Application with identifier '{client_id}' was not found in the directory "
                                  f"'{tenant}'.")
        if not client_secret:
            raise self._aad_error(401, "invalid_client", 7000218,
                                  "The request body must contain the following parameter: 'client_assertion' "
                                  "or 'client_secret'.")
        if not hmac.compare_digest(app["secret"].encode(), client_secret.encode()):
            raise self._aad_error(401, "invalid_client", 7000215,
                                  "Invalid client secret provided. Ensure the secret being sent in the request "
                                  f"is the client secret value, not the client secret ID, for a secret added to "
                                  f"app '{client_id}'.")
        if form["scope"] != self.scope:
            raise self._aad_error(400, "invalid_scope", 1002012,
                                  f"The provided value for scope {form['scope']} is not valid. Client credential "
                                  "flows must have a scope value with /.default suffixed to the resource "
                                  "identifier (application ID URI).")
        lifetime = int(self.expires_in)
        now = time.monotonic()
        token = "eyJ0eXAiOiJKV1Qi." + _secrets.token_urlsafe(48)
        entry = {"token": token, "tenant": tenant, "client_id": client_id, "time": now, "exp": now + lifetime,
                 "expires_in": lifetime, "revoked": False}
        self.tokens[token] = entry
        self.issued.append(entry)
        rec["access_token"] = token
        return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                     "access_token": token}

    # ---------------------------------------------------------------- Graph
    @staticmethod
    def _graph_error(status, code, message, headers=None):
        return _Answer(status, {"error": {"code": code, "message": message}}, headers)

    def _fault(self, rec):
        for f in self._faults:
            if f["n"] > 0 and _matches(rec, f["methods"], f["path_regex"]):
                f["n"] -= 1
                self._faults = [x for x in self._faults if x["n"] > 0]
                rec["fault"] = True
                hdrs = {}
                if f["retry_after"] is not None:
                    hdrs["Retry-After"] = str(f["retry_after"])
                    rec["retry_after"] = f["retry_after"]
                st = f["status"]
                if st == 429:
                    return self._graph_error(429, "TooManyRequests", "Please retry again later.", hdrs)
                if st == 503:
                    return self._graph_error(503, "ServiceNotAvailable",
                                             "The service is temporarily unavailable. Please retry later.", hdrs)
                return self._graph_error(st, "UnknownError", f"An internal server error occurred ({st}).", hdrs)
        return None

    def _authenticate(self, rec):
        tok = rec["token"]
        www = {"WWW-Authenticate": 'Bearer realm="", authorization_uri='
                                   '"https://login.microsoftonline.com/common/oauth2/authorize", '
                                   'client_id="00000003-0000-0000-c000-000000000000"'}
        if not tok:
            raise self._graph_error(401, "InvalidAuthenticationToken", "Access token is empty.", www)
        entry = self.tokens.get(tok)
        if entry is None:
            raise self._graph_error(401, "InvalidAuthenticationToken",
                                    "IDX14100: JWT is not well formed, there are no dots (.).", www)
        if entry["revoked"] or time.monotonic() >= entry["exp"]:
            raise self._graph_error(401, "InvalidAuthenticationToken", EXPIRED, www)
        return entry

    def _api(self, rec):
        fault = self._fault(rec)
        if fault is not None:
            raise fault
        segs = [urllib.parse.unquote(s) for s in rec["raw_path"].split("/")[1:]]
        if not segs or segs[0] != "v1.0":
            raise self._graph_error(400, "BadRequest", f"Invalid version: {segs[0] if segs else ''}")
        entry = self._authenticate(rec)
        rest = segs[1:]
        if rest and rest[0].lower() == "me":
            raise self._graph_error(400, "BadRequest",
                                    "/me request is only valid with delegated authentication flow.")
        if len(rest) < 2 or rest[0].lower() != "users":
            raise self._graph_error(400, "BadRequest",
                                    f"Resource not found for the segment '{rest[0] if rest else ''}'.")
        app = self.tenants[entry["tenant"]]["apps"].get(entry["client_id"])
        if app is None or not app["permission"]:
            raise self._graph_error(403, "ErrorAccessDenied", ACCESS_DENIED)
        addr = rest[1]
        u = self.users.get(addr.lower())
        if u is None or u["tenant"] != entry["tenant"]:
            raise self._graph_error(404, "ErrorInvalidUser", f"The requested user '{addr}' is invalid.")
        rec["user"] = u["address"]
        rest = rest[2:]
        immutable = "idtype=\"immutableid\"" in (rec["prefer"] or "").replace(" ", "").lower()
        hdrs = {"Preference-Applied": 'IdType="ImmutableId"'} if immutable else {}
        dup = self._duplicate_query_option(rec)
        if dup:
            raise self._graph_error(400, "BadRequest", f"Query option '{dup}' was specified more than once, "
                                    "but it must be specified at most once.")

        low = [s.lower() for s in rest]
        folder = None
        if low[:1] == ["mailfolders"]:
            if len(rest) == 1:
                return self._list_folders(rec, u, None, hdrs)
            folder = self._path_folder(u, rest[1])
            if len(rest) == 2:
                self._only(rec, "GET")
                return 200, hdrs, self._json(self._folder_json(u, folder)), GRAPH_JSON
            if low[2] == "childfolders" and len(rest) == 3:
                return self._list_folders(rec, u, folder, hdrs)
            rest, low = rest[2:], low[2:]
        if low[:1] != ["messages"]:
            raise self._graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[0] if rest else ''}'.")
        if len(rest) == 1:
            self._only(rec, "GET")
            return self._list_messages(rec, u, folder, hdrs)
        m = u["messages"].get(rest[1])
        if m is not None:
            rec["message"] = m["key"]
        if m is None or (folder is not None and m["folder_id"] != folder["id"]):
            raise self._graph_error(404, "ErrorItemNotFound", NOT_FOUND_ITEM)
        if len(rest) == 2:
            if rec["method"] == "GET":
                return 200, hdrs, self._json(self._message_json(u, m, self._select(rec))), GRAPH_JSON
            if rec["method"] == "PATCH":
                return self._patch(rec, u, m, hdrs)
            if rec["method"] == "DELETE":
                self._delete(u, m, immutable)
                return 204, hdrs, b"", GRAPH_JSON
            raise self._graph_error(405, "BadRequest", f"The HTTP method '{rec['method']}' is not allowed.")
        if len(rest) == 3 and rest[2] == "$value":
            self._only(rec, "GET")
            return 200, hdrs, m["raw"], "text/plain"
        if len(rest) == 3 and low[2] == "move":
            self._only(rec, "POST")
            return self._move(rec, u, m, immutable, hdrs)
        raise self._graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[2]}'.")

    @staticmethod
    def _duplicate_query_option(rec):
        seen = set()
        for k, _ in urllib.parse.parse_qsl(rec["query_string"], keep_blank_values=True):
            if k in seen:
                return k
            seen.add(k)
        return None

    def _only(self, rec, method):
        if rec["method"] != method:
            raise self._graph_error(405, "BadRequest", f"The HTTP method '{rec['method']}' is not allowed.")

    @staticmethod
    def _json(payload):
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")

    def _path_folder(self, u, name):
        try:
            return self._folder_locked(u, name, strict=not self.folder_names_as_ids)
        except KeyError:
            raise self._graph_error(404, "ErrorInvalidIdMalformed", "Id is malformed.")

    def _folder_json(self, u, f):
        ms = [m for m in u["messages"].values() if m["folder_id"] == f["id"]]
        return {"id": f["id"], "displayName": f["name"], "parentFolderId": f["parent"] or "AAMkAGRoot=",
                "childFolderCount": sum(1 for g in u["folders"].values() if g["parent"] == f["id"]),
                "unreadItemCount": sum(1 for m in ms if not m["is_read"]), "totalItemCount": len(ms),
                "isHidden": False}

    def _list_folders(self, rec, u, parent, hdrs):
        self._only(rec, "GET")
        pid = parent["id"] if parent else None
        fs = [f for f in u["folders"].values() if f["parent"] == pid]
        flt = rec["query"].get("$filter")
        if flt is not None:
            mm = re.fullmatch(r"\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*", flt)
            if not mm:
                raise self._graph_error(400, "ErrorInvalidUrlQueryFilter",
                                        "The query filter contains one or more invalid nodes.")
            want = mm.group(1).replace("''", "'")
            fs = [f for f in fs if f["name"] == want]
        value = [self._folder_json(u, f) for f in fs]
        return 200, hdrs, self._json({"@odata.context": self.url(f"/v1.0/$metadata#users('{u['address']}')/mailFolders"),
                                      "value": value}), GRAPH_JSON

    def _select(self, rec):
        sel = rec["query"].get("$select")
        if sel is None:
            return list(DEFAULT_SELECT)
        props = [p.strip() for p in sel.split(",") if p.strip()]
        for p in props:
            if p not in KNOWN_PROPERTIES:
                raise self._graph_error(400, "RequestBroker--ParseUri",
                                        f"Could not find a property named '{p}' on type 'microsoft.graph.message'.")
        return ["id"] + [p for p in props if p != "id"]

    def _message_json(self, u, m, select, expand_size=False):
        out = {"@odata.etag": f'W/"CQAAABYAAAA{m["change"]:04d}"'}
        headers = None
        for p in select:
            if p == "id":
                out["id"] = m["id"]
            elif p == "categories":
                out["categories"] = list(m["categories"])
            elif p == "isRead":
                out["isRead"] = m["is_read"]
            elif p in ("receivedDateTime", "createdDateTime", "lastModifiedDateTime"):
                out[p] = _iso(m["received"])
            elif p == "parentFolderId":
                out[p] = m["folder_id"]
            elif p == "changeKey":
                out[p] = f"CQAAABYAAAA{m['change']:04d}"
            elif p == "hasAttachments":
                out[p] = False
            elif p == "bodyPreview":
                out[p] = ""
            elif p in ("subject", "internetMessageId"):
                if headers is None:
                    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(m["raw"])
                out[p] = str(headers.get("Subject" if p == "subject" else "Message-ID") or "")
        if expand_size:
            out["singleValueExtendedProperties"] = [{"id": f"Integer 0x{SIZE_TAG:x}", "value": str(m["size"])}]
        return out

    def _expand(self, rec):
        exp = rec["query"].get("$expand")
        if exp is None:
            return False
        mm = re.fullmatch(r"singleValueExtendedProperties\(\$filter=id eq '([^']*)'\)", exp.strip())
        if not mm:
            raise self._graph_error(400, "BadRequest", f"Parsing OData Select and Expand failed: '{exp}'.")
        pm = re.fullmatch(r"(?i)integer\s+0x([0-9a-f]{1,8})", mm.group(1).strip())
        if not pm:
            raise self._graph_error(400, "ErrorInvalidProperty", f"The property '{mm.group(1)}' is invalid.")
        return int(pm.group(1), 16) == SIZE_TAG

    def _filter(self, rec):
        """[(property, op, value)] of $filter; raises for anything else."""
        flt = rec["query"].get("$filter")
        if flt is None:
            return []
        clauses = []
        for part in re.split(r"\s+and\s+", flt.strip(), flags=re.I):
            m1 = re.fullmatch(r"isRead\s+eq\s+(true|false)", part.strip())
            m2 = re.fullmatch(r"receivedDateTime\s+(ge|gt|le|lt)\s+(\S+)", part.strip())
            if m1:
                clauses.append(("isRead", "eq", m1.group(1) == "true"))
            elif m2:
                try:
                    clauses.append(("receivedDateTime", m2.group(1), _parse_iso(m2.group(2))))
                except ValueError:
                    raise self._graph_error(400, "BadRequest", f"Invalid date: {m2.group(2)}")
            else:
                raise self._graph_error(400, "ErrorInvalidUrlQueryFilter",
                                        "The query filter contains one or more invalid nodes.")
        return clauses

    def _orderby(self, rec):
        ob = rec["query"].get("$orderby")
        if ob is None:
            return None
        mm = re.fullmatch(r"\s*receivedDateTime(?:\s+(asc|desc))?\s*", ob)
        if not mm:
            raise self._graph_error(400, "BadRequest", f"The $orderby '{ob}' is not supported by this fake.")
        return mm.group(1) or "asc"

    def _int_option(self, rec, name, default, lo, hi=None):
        v = rec["query"].get(name)
        if v is None:
            return default
        if not re.fullmatch(r"\d+", v) or int(v) < lo:
            raise self._graph_error(400, "BadRequest", f"Invalid value '{v}' for query option '{name}'.")
        return int(v) if hi is None else min(int(v), hi)

    def _list_messages(self, rec, u, folder, hdrs):
        for k in rec["query"]:
            if k.startswith("$") and k not in ("$filter", "$select", "$orderby", "$top", "$skip", "$expand",
                                               "$count"):
                raise self._graph_error(400, "BadRequest", f"Query option '{k}' is not supported by this fake.")
        clauses = self._filter(rec)
        order = self._orderby(rec)
        if self.strict_orderby and order is not None and clauses and clauses[0][0] != "receivedDateTime":
            raise self._graph_error(400, "InefficientFilter",
                                    "The restriction or sort order is too complex for this operation.")
        select = self._select(rec)
        expand = self._expand(rec)
        top = self._int_option(rec, "$top", 10, 1, 1000)
        skip = self._int_option(rec, "$skip", 0, 0)
        page = min(top, self.page_cap) if self.page_cap else top
        ms = self._ordered(u, folder["id"] if folder else None, reverse=(order == "desc"))
        for prop, op, val in clauses:
            if prop == "isRead":
                ms = [m for m in ms if m["is_read"] == val]
            else:
                cmp = {"ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
                       "le": lambda a, b: a <= b, "lt": lambda a, b: a < b}[op]
                ms = [m for m in ms if cmp(m["received"], val)]
        chosen = ms[skip:skip + page]
        where = f"/mailFolders('{folder['id']}')" if folder else ""
        sel = ",".join(select) + (",singleValueExtendedProperties()" if expand else "")
        payload = {"@odata.context": self.url(f"/v1.0/$metadata#users('{u['address']}'){where}/messages({sel})")}
        if rec["query"].get("$count") == "true":
            payload["@odata.count"] = len(ms)
        payload["value"] = [self._message_json(u, m, select, expand) for m in chosen]
        rec["count"] = len(chosen)
        if skip + page < len(ms):
            q = [p for p in rec["query_string"].split("&") if p and not re.match(r"(?:\$|%24)skip=", p, re.I)]
            q.append(f"%24skip={skip + page}")
            link = self.url(rec["raw_path"] + "?" + "&".join(q))
            payload["@odata.nextLink"] = link
            rec["next_link"] = link
            self.next_links.append(link)
        return 200, hdrs, self._json(payload), GRAPH_JSON

    def _body_json(self, rec):
        ctype = (rec["headers"].get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise self._graph_error(415, "UnsupportedMediaType",
                                    f"A supported MIME type could not be found that matches the content type "
                                    f"of the request '{ctype}'.")
        try:
            body = json.loads(rec["body"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        if not isinstance(body, dict):
            raise self._graph_error(400, "BadRequest", "The request payload must be a JSON object.")
        rec["json"] = body
        return body

    def _patch(self, rec, u, m, hdrs):
        body = self._body_json(rec)
        for k, v in body.items():
            if k == "isRead" and isinstance(v, bool):
                continue
            if k == "categories" and isinstance(v, list) and all(isinstance(c, str) for c in v):
                continue
            raise self._graph_error(400, "BadRequest", f"The property '{k}' cannot be set by this fake "
                                    f"(or has a value of the wrong type).")
        if "isRead" in body:
            m["is_read"] = body["isRead"]
        if "categories" in body:
            m["categories"] = list(body["categories"])
        m["change"] += 1
        return 200, hdrs, self._json(self._message_json(u, m, DEFAULT_SELECT)), GRAPH_JSON

    def _relocate(self, u, m, folder, immutable):
        m["folder_id"] = folder["id"]
        m["change"] += 1
        if not immutable:
            del u["messages"][m["id"]]
            m["id"] = self._new_id()
            u["messages"][m["id"]] = m

    def _delete(self, u, m, immutable):
        deleted = self._folder_locked(u, "deleteditems")
        if m["folder_id"] == deleted["id"]:
            del u["messages"][m["id"]]
        else:
            self._relocate(u, m, deleted, immutable)

    def _move(self, rec, u, m, immutable, hdrs):
        body = self._body_json(rec)
        dest = body.get("destinationId")
        if set(body) != {"destinationId"} or not isinstance(dest, str) or not dest:
            raise self._graph_error(400, "ErrorInvalidParameter", "The body must be {\"destinationId\": \"..\"}.")
        try:
            folder = self._folder_locked(u, dest, strict=not self.folder_names_as_ids)
        except KeyError:
            raise self._graph_error(404, "ErrorInvalidIdMalformed", "Id is malformed.")
        self._relocate(u, m, folder, immutable)
        return 201, hdrs, self._json(self._message_json(u, m, DEFAULT_SELECT)), GRAPH_JSON
