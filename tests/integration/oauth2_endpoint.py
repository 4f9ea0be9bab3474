"""A fake OAuth2 token endpoint for the integration tests (standard library only).

It mints access tokens the test Dovecot accepts for AUTHENTICATE XOAUTH2 /
OAUTHBEARER: compact HS256 JWTs ({"alg":"HS256","typ":"JWT"}) signed with the
key Dovecot validates locally ($DOVECOT_OAUTH2_HS256_SECRET), with the claims
Dovecot wants: sub, email (= the IMAP user name) and exp.

    ep = OAuth2Endpoint(servers.env["DOVECOT_OAUTH2_HS256_SECRET"])
    client_id, client_secret = ep.add_client()               # a confidential client
    rt = ep.add_refresh_token(user, client_id)                 # refresh-token grant for user
    cid, csec = ep.add_client(user=user)                       # client credentials -> user
    ep.url()                                                   # http://127.0.0.1:<port>/token
    ...
    ep.close()

POST <url> with application/x-www-form-urlencoded (RFC 6749 §4.4, §6):

* ``grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..[&scope=..]``
* ``grant_type=client_credentials&client_id=..&client_secret=..[&scope=..]``

answers ``200 {"access_token", "token_type": "Bearer", "expires_in", "scope"
[, "refresh_token"]}``, or an RFC 6749 §5.2 error:

* 400 ``invalid_request``: wrong method/path/Content-Type, a form that does not
  parse, a parameter given twice, a missing parameter;
* 400 ``unsupported_grant_type``;
* 401 ``invalid_client``: unknown client or wrong client secret (client
  credentials also in an HTTP Basic Authorization header, RFC 6749 §2.3.1);
* 400 ``invalid_grant`` ("Token has been expired or revoked.", as Google says):
  an unknown, revoked or rotated-away refresh token, or one of another client;
* 400 ``unauthorized_client``: client credentials for a client mapped to no user.

Knobs (plain attributes and methods, safe to change at any time from the test):

* ``expires_in``: the lifetime (seconds) of the tokens minted from now on;
* ``rotate``: answer a refresh-token grant with a new refresh token and
  invalidate the one presented (Microsoft does this);
* ``revoke(refresh_token)``;
* ``issue_bad(n)``: the next n access tokens are signed with a wrong key, so
  Dovecot refuses them (``bad_tokens`` says how many are still to come);
* ``outage(status=503)`` / ``recover()``: answer every request with that status
  and ``{"error":"temporarily_unavailable"}``;
* ``hold()`` / ``release()``: a gate: from hold() on, every request is
  recorded, ``held`` (a threading.Event) is set, and the answer waits until
  release() (or close());
* ``listen=False`` at construction: the port is bound but not listening, so a
  connection is refused (ECONNREFUSED) until ``start_listening()``.

Records: ``requests`` (dicts: time (monotonic), wall (epoch), method, path,
headers (lower-case names), content_type, body (bytes), form (dict, or None),
grant_type, status, error, access_token, refresh_token (a rotated one issued),
bad (a deliberately bad token)); ``issued`` (every access token: token, user,
client_id, iat, exp, bad).  ``count(...)``, ``wait_count(...)``,
``tokens_issued``, ``last_token()``, ``secrets()`` (every secret this endpoint
knows, to assert that none of them is printed).
"""
import base64
import hashlib
import hmac
import http.server
import json
import secrets as _secrets
import threading
import time
import urllib.parse
import uuid

HOST = "127.0.0.1"

REVOKED_DESCRIPTION = "Token has been expired or revoked."


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_hs256(claims, key):
    """A compact JWS (HS256) of claims, signed with key (str or bytes)."""
    if isinstance(key, str):
        key = key.encode()
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def jwt_claims(token):
    """The claims of a compact JWT (unverified)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class OAuth2Endpoint:
    def __init__(self, signing_key, *, expires_in=3600, rotate=False, path="/token", listen=True):
        if not signing_key:
            raise ValueError("no signing key: is DOVECOT_OAUTH2_HS256_SECRET set (tests/servers/start-all.sh)?")
        self.signing_key = signing_key
        self.expires_in = expires_in
        self.rotate = rotate
        self.path = path
        self.bad_tokens = 0
        self.outage_status = None
        self.clients = {}         # client_id -> {"secret": str, "user": str or None}
        self.refresh_tokens = {}  # token -> {"user", "client_id", "state": valid|revoked|rotated, "successor"}
        self.requests = []
        self.issued = []
        self.lock = threading.Lock()
        self.held = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._changed = threading.Condition(self.lock)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if not outer._gate.is_set():
                    outer.held.set()
                    outer._gate.wait()
                status, payload, rec = outer._handle(self.command, self.path,
                                                     {k.lower(): v for k, v in self.headers.items()}, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Pragma", "no-cache")
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a held answer, a killed process)
                    self.close_connection = True
                with outer._changed:
                    rec["answered"] = time.monotonic()
                    outer._changed.notify_all()

            do_POST = _serve  # noqa: N815
            do_GET = _serve  # noqa: N815
            do_PUT = _serve  # noqa: N815

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.allow_reuse_address = False
        self.server.server_bind()  # bound: the port is ours; not yet listening: connections are refused
        self.port = self.server.server_address[1]
        self.thread = None
        self.listening = False
        if listen:
            self.start_listening()

    # ------------------------------------------------------------ set-up
    def start_listening(self):
        """Start accepting connections (after listen=False)."""
        if self.listening:
            return
        self.server.server_activate()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="oauth2-endpoint")
        self.thread.start()
        self.listening = True

    def url(self, path=None):
        return f"http://{HOST}:{self.port}{path or self.path}"

    def add_client(self, client_id=None, secret=None, user=None):
        """A confidential client; user: the user its client-credentials tokens are for."""
        client_id = client_id or f"client-{uuid.uuid4().hex[:12]}.apps.example.test"
        secret = secret or f"csec-{_secrets.token_urlsafe(18)}"
        with self.lock:
            self.clients[client_id] = {"secret": secret, "user": user}
        return client_id, secret

    def add_refresh_token(self, user, client_id, token=None):
        token = token or f"1//rt-{_secrets.token_urlsafe(24)}"
        with self.lock:
            self.refresh_tokens[token] = {"user": user, "client_id": client_id, "state": "valid",
                                          "successor": None}
        return token

    def revoke(self, refresh_token):
        with self.lock:
            self.refresh_tokens[refresh_token]["state"] = "revoked"

    def issue_bad(self, n=1):
        """The next n access tokens are signed with a wrong key (Dovecot refuses them)."""
        with self.lock:
            self.bad_tokens += n

    def outage(self, status=503):
        with self.lock:
            self.outage_status = status

    def recover(self):
        with self.lock:
            self.outage_status = None

    def hold(self):
        """Hold every answer from now on until release()."""
        self.held.clear()
        self._gate.clear()

    def release(self):
        self._gate.set()

    def close(self):
        self._gate.set()
        if self.listening:
            self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ records
    def count(self, status=None, grant_type=None, ok=None):
        """Requests answered so far, optionally only those with this status /
        grant_type; ok=True: only those that got a token."""
        with self.lock:
            return sum(1 for r in self.requests
                       if "answered" in r
                       and (status is None or r["status"] == status)
                       and (grant_type is None or r["grant_type"] == grant_type)
                       and (ok is None or (r["access_token"] is not None) == ok))

    @property
    def tokens_issued(self):
        with self.lock:
            return len(self.issued)

    def wait_count(self, n, timeout, desc=None, proc=None, **filters):
        """Wait until count(**filters) >= n; fails at once if proc (a
        harness.Mailroom) has exited.  Returns the count."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                c = self._count_locked(**filters)
                if c >= n:
                    return c
                if proc is not None and not proc.alive():
                    raise AssertionError(f"mailroom exited (rc={proc.returncode}) while waiting for "
                                         f"{desc or f'{n} token request(s)'} ({c} so far)\n" + proc.diagnostics())
                left = deadline - time.monotonic()
                if left <= 0:
                    extra = ("\n" + proc.diagnostics()) if proc is not None else ""
                    raise AssertionError(f"timed out after {timeout} s waiting for {desc or f'{n} token request(s)'}"
                                         f" ({c} so far; requests: {self.summary()}){extra}")
                self._changed.wait(min(left, 0.1))

    def _count_locked(self, status=None, grant_type=None, ok=None):
        return sum(1 for r in self.requests
                   if "answered" in r
                   and (status is None or r["status"] == status)
                   and (grant_type is None or r["grant_type"] == grant_type)
                   and (ok is None or (r["access_token"] is not None) == ok))

    def answered(self):
        with self.lock:
            return [r for r in self.requests if "answered" in r]

    def summary(self):
        return [(r.get("grant_type"), r.get("status"), r.get("error")) for r in self.requests]

    def last_token(self):
        with self.lock:
            return self.issued[-1] if self.issued else None

    def secrets(self):
        """Every client secret, refresh token and access token this endpoint knows."""
        with self.lock:
            return ([c["secret"] for c in self.clients.values()] + list(self.refresh_tokens)
                    + [t["token"] for t in self.issued])

    # ------------------------------------------------------------ the endpoint
    def _handle(self, method, path, headers, body):
        rec = {"time": time.monotonic(), "wall": time.time(), "method": method, "path": path,
               "headers": headers, "content_type": headers.get("content-type"), "body": body,
               "form": None, "grant_type": None, "status": None, "error": None, "access_token": None,
               "refresh_token": None, "bad": False}
        with self.lock:
            self.requests.append(rec)
            status, payload = self._answer(rec, method, path, headers, body)
            rec["status"] = status
            rec["error"] = payload.get("error")
            return status, payload, rec

    @staticmethod
    def _error(status, error, description=None):
        p = {"error": error}
        if description:
            p["error_description"] = description
        return status, p

    def _answer(self, rec, method, path, headers, body):
        if self.outage_status is not None:
            return self._error(self.outage_status, "temporarily_unavailable", "The service is down for a test.")
        if urllib.parse.urlsplit(path).path != self.path:
            return self._error(404, "not_found")
        if method != "POST":
            return self._error(405, "invalid_request", "POST only")
        ctype = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._error(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
                                           errors="strict")
        except (UnicodeDecodeError, ValueError):
            return self._error(400, "invalid_request", "the body is not a form")
        form = {}
        for k, v in pairs:
            if k in form:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
                return self._error(400, "invalid_request", f"{k} given twice")
            form[k] = v
        rec["form"] = form
        grant = rec["grant_type"] = form.get("grant_type")
        if not grant:
            return self._error(400, "invalid_request", "grant_type is missing")
        if grant not in ("refresh_token", "client_credentials"):
            return self._error(400, "unsupported_grant_type")

        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                cid, _, csec = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, client_secret = urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(csec)
            except ValueError:
                return self._error(401, "invalid_client", "bad Authorization header")
        client = self.clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client["secret"], client_secret or ""):
            return self._error(401, "invalid_client", "The OAuth client was not found or the secret is wrong.")

        new_refresh = None
        if grant == "refresh_token":
            rt = form.get("refresh_token")
            if not rt:
                return self._error(400, "invalid_request", "refresh_token is missing")
            entry = self.refresh_tokens.get(rt)
            if entry is None or entry["state"] != "valid" or entry["client_id"] != client_id:
                return self._error(400, "invalid_grant", REVOKED_DESCRIPTION)
            user = entry["user"]
            if self.rotate:
                new_refresh = f"1//rt-{_secrets.token_urlsafe(24)}"
                entry["state"] = "rotated"
                entry["successor"] = new_refresh
                self.refresh_tokens[new_refresh] = {"user": user, "client_id": client_id, "state": "valid",
                                                    "successor": None}
        else:
            user = client["user"]
            if not user:
                return self._error(400, "unauthorized_client", "no client-credentials grant for this client")

        now = int(time.time())
        lifetime = int(self.expires_in)
        bad = self.bad_tokens > 0
        if bad:
            self.bad_tokens -= 1
        # Dovecot validates locally against its cached loop time, which can
        # lag a second behind: a token issued "now" was refused once as
        # "issued in future" and made a second token request. Issue it a few
        # seconds in the past, as a provider's clock may well be.
        claims = {"iss": "https://oauth2.test.invalid", "sub": user, "email": user, "iat": now - 5,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex, "scope": form.get("scope", "")}
        key = self.signing_key if not bad else "not-the-dovecot-key-" + self.signing_key
        token = jwt_hs256(claims, key)
        self.issued.append({"token": token, "user": user, "client_id": client_id, "iat": now,
                            "exp": now + lifetime, "bad": bad, "time": time.monotonic()})
        rec["access_token"], rec["refresh_token"], rec["bad"] = token, new_refresh, bad
        payload = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime,
                   "scope": form.get("scope", "")}
        if new_refresh:
            payload["refresh_token"] = new_refresh
        return 200, payload
