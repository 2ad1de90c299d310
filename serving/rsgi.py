"""The HTTP edge: granian's RSGI interface in front of the Flask (WSGI) app.

granian reads and parses HTTP in Rust on its own I/O threads. Under granian's WSGI interface a
request reaches a Python thread before its body has arrived, so a client that sends the body
slowly (or promises more bytes than it sends) holds that thread: the defect this module
exists for. Here the body is awaited on the event loop, with a deadline and a size limit,
and the Flask app is called only with a complete body in memory. Only the routes that take a
body (POST ``/predict`` and ``/feedback``) have theirs read: any other request is answered
without it, its connection closed after the answer if it sent one. A thousand slow clients
cost a thousand idle futures, not a thread each. The app then runs inline (it is CPU-bound
for well under a millisecond, like a sync worker, with no thread hand-off).

Answers given here, before the app, are JSON like the app's own errors: 408 when the body
does not arrive within ``SERVING_BODY_TIMEOUT`` seconds, 400 when the connection ends
before the body does (a short body then a half-close, a malformed chunked body), 413 when
the body is over ``SERVING_MAX_BODY_BYTES``, 400 naming the header when ``Authorization``,
``Content-Type``, ``Content-Encoding`` or ``Host`` holds a value that is not ASCII (granian
hands such a value to no one), an HTTP/1.1 request has no ``Host`` or ``Transfer-Encoding``
names a coding besides ``chunked``, and with a token 401 for a POST to ``/predict`` or
``/feedback`` without it, before its body is read. They are counted in the app's request
metrics like its own answers.

Also here because they concern every request: the JSON access log (one object per line,
``SERVING_ACCESS_LOG``) and the request id (``X-Request-ID`` from the client, else a new
one), passed to the app as ``environ["serving.request_id"]`` and returned in the response.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from serving.auth import AFTER_RESPONSE, AUTHORIZED, auth_error
from serving.predlog import escape_breaks

log = logging.getLogger("serving.http")

REQUEST_ID_HEADER = "x-request-id"
_SLASHES = re.compile(r"/{2,}")
#: A client's request id is kept when it is this simple; anything else is replaced.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_JSON_HEADERS = [("content-type", "application/json")]
#: Headers the server acts on, with the names its errors give them. granian leaves a header
#: whose value is not ASCII out of ``scope.headers.get``/``items`` (its name stays in ``keys``):
#: such a value is refused by name, never read as absent ("missing bearer token").
_READ_HEADERS = {
    "authorization": "Authorization",
    "content-type": "Content-Type",
    "content-encoding": "Content-Encoding",
    "host": "Host",
}
#: Headers that must come once: a second ``Host`` or ``Authorization`` is how one part of a
#: chain of servers reads another value than the next (RFC 9112 section 3.2).
_SINGLE_HEADERS = ("host", "content-type", "authorization")
#: What the access log keeps of a client's path and User-Agent: granian takes headers up to
#: about 400 KB, and a log line that long is one a log shipper splits or drops.
LOGGED_PATH_CHARS, LOGGED_AGENT_CHARS = 1024, 256
#: How often a worker looks for the drain file (one stat call).
DRAIN_CHECK_SECONDS = 0.05


def merge_slashes(path: str) -> str:
    """``path`` as the app's router matches it: runs of ``/`` merged (``//predict``)."""
    return _SLASHES.sub("/", path) if "//" in path else path


def request_id_from(given: str | None) -> str:
    """The client's id when it is short and plain, else a new random one."""
    if given and _SAFE_ID.fullmatch(given):
        return given
    return os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, in a fifth of its time


def _error_body(status: int, rule: str, message: str, field: str | None = None) -> bytes:
    error: dict[str, Any] = {"status": status, "rule": rule}
    if field is not None:
        error["field"] = field
    error["message"] = message
    return orjson.dumps({"error": error})


class _BodyError(Exception):
    def __init__(
        self,
        status: int,
        rule: str,
        message: str,
        field: str | None = None,
        challenge: str | None = None,
    ):
        super().__init__(message)
        self.status, self.rule, self.message, self.field = status, rule, message, field
        self.challenge = challenge  # WWW-Authenticate, for a 401


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + "..."


def _header_error(scope, read_headers: dict[str, str] = _READ_HEADERS) -> _BodyError | None:
    """400 for a transfer coding besides chunked, for a header the server reads that granian
    could not hand over as text, and for an HTTP/1.1 request without ``Host`` (RFC 9112
    section 3.2)."""
    headers = scope.headers
    if headers.get("transfer-encoding") is not None:
        codings = ",".join(headers.get_all("transfer-encoding")).lower().split(",")
        if [c.strip() for c in codings] != ["chunked"]:
            # granian removes chunked and hands on the rest still encoded (RFC 9112 6.1).
            return _BodyError(
                400,
                "transfer_encoding",
                "the only transfer coding taken is chunked; send the JSON uncompressed",
                "Transfer-Encoding",
            )
    for name in _SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            # granian hands on the first, Flask would read the last (RFC 9112 section 3.2 for
            # Host; RFC 9110 section 5.3: these are not lists).
            return _BodyError(
                400, "header", "the header is given more than once", _READ_HEADERS[name]
            )
    absent = [name for name in read_headers if headers.get(name) is None]
    if not absent:
        return None
    present = headers.keys()
    for name in absent:
        if name in present:
            return _BodyError(
                400,
                "header",
                "the value could not be read: header values must be ASCII text",
                read_headers[name],
            )
    if "host" in absent and scope.http_version == "1.1":
        return _BodyError(400, "host", "an HTTP/1.1 request must have a Host header", "Host")
    return None


class AccessLog:
    """One JSON object per request, on stdout (``-``) or appended to a file."""

    def __init__(self, target: str | None):
        self.enabled = bool(target)
        if not target:
            self._stream = None
        elif target == "-":
            self._stream = sys.stdout
        else:
            self._stream = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._pid = os.getpid()

    def write(self, entry: dict[str, Any]) -> None:
        if self._stream is None:
            return
        entry["pid"] = self._pid
        try:
            self._stream.write(escape_breaks(orjson.dumps(entry)).decode() + "\n")
        except Exception:  # a full disk must not fail the request
            log.exception("failed to write an access log entry")


class RSGIBridge:
    """``__rsgi__`` for granian: complete the body, then call ``wsgi_app`` inline."""

    def __init__(
        self,
        wsgi_app: Callable,
        *,
        max_body_bytes: int,
        body_timeout: float,
        access_log: str | None = None,
        drain_file: Path | None = None,
        expected_auth: bytes | None = None,
        protected_posts: frozenset[str] = frozenset(),
        body_paths: frozenset[str] = frozenset(),
        observe: Callable[[str, int, float], None] | None = None,
        also_read: tuple[str, ...] = (),
    ):
        self.app = wsgi_app
        #: The headers refused when granian could not hand their value over: the fixed ones
        #: and ``also_read`` (the canary's caller key: unread, a caller would change variant).
        self.read_headers = {**_READ_HEADERS, **{h.lower(): h for h in also_read}}
        #: With a token, a POST to these paths is refused before its body is read: a client
        #: without the token cannot make a worker buffer (and wait for) a body.
        self.expected_auth = expected_auth
        self.protected_posts = protected_posts
        #: The paths whose POST reads a body; any other request is served without reading one.
        self.body_paths = body_paths
        #: Counts the answers given here (path, status, seconds) where the app counts its own.
        self.observe = observe
        self.drain_file = drain_file
        self._draining = False
        self._drain_checked = 0.0
        self.limit = max_body_bytes
        self.body_timeout = body_timeout
        self.access = AccessLog(access_log)
        self._errors = sys.stderr

    async def _read_body(self, scope, protocol) -> bytes:
        length = scope.headers.get("content-length")
        if length is not None:
            # granian has refused a malformed Content-Length already (400 before the app).
            size = int(length)
            if size > self.limit:
                raise _BodyError(
                    413, "max_body_bytes", f"the body is {size} bytes; the limit is {self.limit}"
                )
            if size == 0:
                return b""
            async with asyncio.timeout(self.body_timeout):  # no Task per request, unlike wait_for
                body = await protocol()
            if len(body) != size:
                raise _BodyError(
                    400,
                    "incomplete_body",
                    f"the body ended after {len(body)} of the {size} bytes Content-Length "
                    "announced",
                    "Content-Length",
                )
            return body
        if scope.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return b""
        async with asyncio.timeout(self.body_timeout):
            return await self._read_chunks(protocol)

    async def _read_chunks(self, protocol) -> bytes:
        parts, size, empty = [], 0, 0
        async for chunk in protocol:
            if not chunk:
                # granian 2.8.7 ends a chunked body with one empty chunk, and one more when the
                # framing broke (a bad chunk size or trailer after good chunks): then the body
                # so far looked complete and was served (RFC 9112 section 7.1: it is not).
                empty += 1
                if empty > 1:
                    raise _BodyError(
                        400,
                        "incomplete_body",
                        "the chunked body is malformed (a chunk size or trailer is not valid)",
                        "Transfer-Encoding",
                    )
                continue
            size += len(chunk)
            if size > self.limit:
                raise _BodyError(413, "max_body_bytes", f"the body exceeds {self.limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def __rsgi__(self, scope, protocol) -> None:
        started = time.perf_counter()
        headers = scope.headers
        request_id = request_id_from(headers.get(REQUEST_ID_HEADER))
        refused, authorized = _header_error(scope, self.read_headers), False
        if refused is None and self.expected_auth is not None and scope.method == "POST":
            refused, authorized = self._auth_error(scope)
        if refused is not None:
            self._respond_error(scope, protocol, started, request_id, refused)
            return
        unread = False
        if scope.method != "POST" or merge_slashes(scope.path) not in self.body_paths:
            # No route here reads a body: the app answers (a 404, a 405, a GET) without it, so
            # a client cannot make a worker buffer and wait for one, token or not. A body the
            # client sends anyway is left unread, and the connection closed after the answer.
            body = b""
            unread = headers.get("transfer-encoding") is not None or (
                headers.get("content-length") not in (None, "0")
            )
        else:
            try:
                body = await self._read_body(scope, protocol)
            except _BodyError as exc:
                self._respond_error(scope, protocol, started, request_id, exc)
                return
            except TimeoutError:
                self._respond_error(
                    scope,
                    protocol,
                    started,
                    request_id,
                    _BodyError(
                        408,
                        "body_timeout",
                        f"the body did not arrive within {self.body_timeout:g} s",
                    ),
                )
                return
            except Exception:  # RSGIProtocolClosed/Error: the connection ended mid-body
                self._respond_error(
                    scope,
                    protocol,
                    started,
                    request_id,
                    _BodyError(400, "incomplete_body", "the connection ended before the body did"),
                )
                return
        environ = self._environ(scope, body, request_id, started)
        if authorized:  # the view need not compare the token again
            environ[AUTHORIZED] = True
        after: list = []
        environ[AFTER_RESPONSE] = after
        status_line: list[str] = []
        response_headers: list[tuple[str, str]] = []

        def start_response(status, header_list, exc_info=None):
            status_line[:] = [status]
            response_headers[:] = header_list
            return self._no_write

        try:
            result = self.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            # Flask answers its views' errors itself; this is an error around them (building
            # the request), answered as JSON, counted and logged like any answer.
            log.exception("request %s failed outside the app's error handlers", request_id)
            self._respond_error(
                scope,
                protocol,
                started,
                request_id,
                _BodyError(500, "internal", "the server failed to handle this request"),
            )
            return
        status = int(status_line[0][:3])
        response_headers.append(("x-request-id", request_id))
        if unread or self._is_draining():
            # A body left unread is not to be read as the next request. Shutting down: each
            # client finishes its exchange and reconnects, so no request is left on a
            # keep-alive connection the server is about to close.
            response_headers.append(("connection", "close"))
        protocol.response_bytes(status, response_headers, payload)
        if self.access.enabled:
            self._log(scope, status, len(payload), started, request_id)
        for job in after:  # work the client need not wait for (a shadow challenger's scoring)
            try:
                job()
            except Exception:
                log.exception("request %s: work after the response failed", request_id)

    def _is_draining(self) -> bool:
        if self._draining or self.drain_file is None:
            return self._draining
        now = time.monotonic()
        if now - self._drain_checked > DRAIN_CHECK_SECONDS:
            self._drain_checked = now
            self._draining = self.drain_file.exists()
        return self._draining

    @staticmethod
    def _no_write(data: bytes) -> None:
        raise RuntimeError("the write() callable is not supported; return the body")

    def _auth_error(self, scope) -> tuple[_BodyError | None, bool]:
        """``(the 401 to answer, whether the token was checked and is right)``."""
        path = merge_slashes(scope.path)
        if path not in self.protected_posts:
            return None, False
        refused = auth_error(scope.headers.get("authorization"), self.expected_auth)
        if refused is None:
            return None, True
        message, challenge = refused
        return _BodyError(401, "auth", message, "Authorization", challenge), False

    def _respond_error(self, scope, protocol, started, request_id, exc: _BodyError) -> None:
        body = _error_body(exc.status, exc.rule, exc.message, exc.field)
        headers = [*_JSON_HEADERS, ("x-request-id", request_id), ("connection", "close")]
        if exc.challenge is not None:
            headers.append(("www-authenticate", exc.challenge))
        protocol.response_bytes(exc.status, headers, body)
        if self.observe is not None:
            self.observe(scope.path, exc.status, time.perf_counter() - started)
        if self.access.enabled:
            self._log(scope, exc.status, len(body), started, request_id)

    def _log(self, scope, status: int, size: int, started: float, request_id: str) -> None:
        self.access.write(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "remote": scope.client.rsplit(":", 1)[0],
                "method": _clip(scope.method, 32),
                "path": _clip(scope.path, LOGGED_PATH_CHARS),
                "status": status,
                "bytes": size,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "user_agent": _clip(scope.headers.get("user-agent"), LOGGED_AGENT_CHARS),
                "request_id": request_id,
            }
        )

    def _environ(self, scope, body: bytes, request_id: str, started: float) -> dict[str, Any]:
        server_host, _, server_port = scope.server.rpartition(":")
        remote_host, _, remote_port = scope.client.rpartition(":")
        path = scope.path
        if not path.isascii():
            # granian hands the path decoded; WSGI wants its bytes as latin-1 text (PEP 3333),
            # which werkzeug decodes again. As text, '/%E2%80%A8' failed werkzeug with a 500.
            path = path.encode("utf-8", "surrogatepass").decode("latin-1")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_host,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": remote_host,
            "REMOTE_PORT": remote_port,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": self._errors,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "serving.request_id": request_id,
            "serving.started": started,
        }
        for name, value in scope.headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
                continue
            if name == "content-length":
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = value if key not in environ else environ[key] + "," + value
        if scope.authority is not None:
            # An absolute-form target (``GET http://name/path``): its host is the request's,
            # whatever Host says (RFC 9112 section 3.2.2); the Host allow-list reads this.
            environ["HTTP_HOST"] = scope.authority
        return environ


def create_rsgi_app() -> RSGIBridge:
    """granian's target (``serving.rsgi:create_rsgi_app`` with ``--factory``): the Flask app
    of ``serving.app.create_app()`` behind the bridge, configured from ``SERVING_*``."""
    from serving.app import BODY_PATHS, PROTECTED_POSTS, create_app, endpoint_label
    from serving.config import DRAIN_FILE
    from serving.server import configure_logging

    configure_logging(os.environ.get("SERVING_LOG_LEVEL", "info"))
    app = create_app()
    state = app.extensions["serving"]
    config = state.config

    def observe(path: str, status: int, seconds: float) -> None:
        state.store.observe_request(endpoint_label(path), status, seconds)

    # What the app built to serve (modules, the model, its schema) lives as long as the worker
    # or is freed by its reference count (a reload): the collector's passes no longer walk
    # it, about 2% of a one-row request's instructions.
    gc.collect()
    gc.freeze()
    return RSGIBridge(
        app.wsgi_app,
        max_body_bytes=config.max_body_bytes,
        body_timeout=config.body_timeout,
        access_log=os.environ.get("SERVING_ACCESS_LOG", "-"),
        drain_file=state.runtime_dir / DRAIN_FILE,
        expected_auth=state.expected_auth,
        protected_posts=PROTECTED_POSTS,
        body_paths=BODY_PATHS,
        observe=observe,
        also_read=(config.rollout_key_header,) if config.rollout == "canary" else (),
    )
