"""Blobs over HTTP: `BlobServer` exposes any Backend, `HttpBackend` is its client.

The wire protocol, all under an optional path prefix on the client side:

    PUT    /blobs/<key>          body = the blob (Content-Length required)  -> 204
    GET    /blobs/<key>          -> 200 + the blob, or 404
    HEAD   /blobs/<key>          -> 200 or 404
    DELETE /blobs/<key>          -> 204 (also when there was nothing)
    GET    /blobs?prefix=<p>     -> 200 + matching keys, one per line
    GET    /info                 -> 200 + {"name", "kind", "free_bytes"} as JSON

Errors: 400 bad key or request, 401 missing or wrong bearer token, 404 no such blob, 411 no
Content-Length, 413 body over the server's limit, 503 the served backend is unavailable, 500
any other backend error; the body is a one-line message. The client maps 404 to BlobNotFound,
503, refused connections and timeouts to BackendUnavailable, the rest to BackendError. Keys
are checked on both sides, so a bad key never reaches the served backend.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, NoReturn
from urllib.parse import parse_qs, quote, unquote, urlsplit

from qss.backends.base import KEY, Backend, BackendInfo, check_key
from qss.errors import BackendError, BackendUnavailable, BlobNotFound
from qss.serving import Background, TrackedServer

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024  # after a 413, read at most this much so the client sees it

# A reused keep-alive connection the server has meanwhile closed fails in one of these ways
# before any response: the request is sent again once on a fresh connection.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    ConnectionResetError,
    BrokenPipeError,
)


# ---------------------------------------------------------------------------------------------
# Client


class HttpBackend:
    """Client of a `BlobServer` at `base_url` (`http://host:port` or `https://...`, optionally
    with a path prefix). Keep-alive connections are shared through a small pool of idle ones,
    so threads that come and go (the store's pools) never leave sockets behind. A response
    larger than `max_response` is refused, whatever the server sends."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        failure_domain: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        max_response: int = MAX_BODY,
        max_idle: int = 16,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"http backend: {base_url!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.query or parts.fragment:
            raise BackendError(
                f"http backend: {base_url!r}: no user, query or fragment allowed "
                "(pass a token for authentication)"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise BackendError(f"http backend: {base_url!r}: bad port") from exc
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port if port is not None else (443 if parts.scheme == "https" else 80)
        self.path_prefix = parts.path.rstrip("/")
        self.url = f"{self.scheme}://{parts.netloc}{self.path_prefix}"
        self.name = name if name is not None else f"{parts.netloc}{self.path_prefix}"
        self.failure_domain = failure_domain if failure_domain is not None else self.name
        self.timeout = timeout
        self._auth = f"Bearer {token}" if token is not None else None
        self._ssl_context = ssl_context
        self.max_response = max_response
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r}, name={self.name!r})"

    # -- the Backend protocol ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._check(key)
        status, body = self._request("PUT", self._blob_path(key), key, data)
        if status not in (200, 201, 204):
            self._fail("put", key, status, body)

    def get(self, key: str) -> bytes:
        self._check(key)
        status, body = self._request("GET", self._blob_path(key), key)
        if status != 200:
            self._fail("get", key, status, body)
        return body

    def exists(self, key: str) -> bool:
        self._check(key)
        status, body = self._request("HEAD", self._blob_path(key), key)
        if status == 404:
            return False
        if status != 200:
            self._fail("exists", key, status, body)
        return True

    def delete(self, key: str) -> None:
        self._check(key)
        status, body = self._request("DELETE", self._blob_path(key), key)
        if status not in (200, 204, 404):
            self._fail("delete", key, status, body)

    def list(self, prefix: str = "") -> Iterator[str]:
        path = f"{self.path_prefix}/blobs?prefix={quote(prefix, safe='')}"
        status, body = self._request("GET", path, prefix)
        if status != 200:
            self._fail("list", prefix, status, body)
        # Only keys that could be ours: a server cannot slip anything else into the store.
        lines = body.decode("utf-8", "replace").split("\n")
        return iter([line for line in lines if line.startswith(prefix) and KEY.fullmatch(line)])

    def info(self) -> BackendInfo:
        status, body = self._request("GET", f"{self.path_prefix}/info", "")
        if status != 200:
            self._fail("info", "", status, body)
        try:
            free = json.loads(body).get("free_bytes")
        except (ValueError, AttributeError) as exc:
            raise BackendError(f"{self._where()}: info: not a JSON object: {body[:80]!r}") from exc
        return BackendInfo(
            url=self.url, kind="http", free_bytes=free if isinstance(free, int) else None
        )

    def sync(self) -> None:
        status, body = self._request("POST", f"{self.path_prefix}/sync", "")
        if status != 204:
            self._fail("sync", "", status, body)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- requests ---------------------------------------------------------------------------

    def _blob_path(self, key: str) -> str:
        return f"{self.path_prefix}/blobs/{quote(key, safe='/')}"

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (reused: True) or a new one, for this request alone."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self._ssl_context
            ), False
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout), False

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()

    def _request(
        self, method: str, path: str, key: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Authorization": self._auth} if self._auth else {}
        what = f"{method} {key!r}" if key else method
        for attempt in range(2):
            connection, reused = self._checkout()
            try:
                # The server may have refused the body early (413) and closed; its answer can
                # still be read. If not, getresponse fails and the except clauses below decide.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read(self.max_response + 1)
            except _STALE_CONNECTION as exc:
                self._drop(connection)
                if reused and attempt == 0:
                    continue
                raise self._unavailable(what, exc) from exc
            except ssl.SSLError as exc:
                self._drop(connection)
                raise BackendError(f"{self._where()}: {what}: TLS failed: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(connection)
                raise self._unavailable(what, exc) from exc
            if len(data) > self.max_response:
                self._drop(connection)
                raise BackendError(
                    f"{self._where()}: {what}: the response exceeds {self.max_response} bytes"
                )
            if response.will_close:
                self._drop(connection)
            else:
                self._checkin(connection)
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    # -- errors -----------------------------------------------------------------------------

    def _where(self) -> str:
        return f"http backend {self.name!r} ({self.url})"

    def _check(self, key: str) -> None:
        try:
            check_key(key)
        except BackendError as exc:
            raise BackendError(f"{self._where()}: {exc}") from None

    def _unavailable(self, what: str, exc: BaseException) -> BackendUnavailable:
        why = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        return BackendUnavailable(f"{self._where()} is unavailable: {what}: {why}")

    def _fail(self, op: str, key: str, status: int, body: bytes) -> NoReturn:
        what = f"{op} {key!r}" if key else op
        message = body.decode("utf-8", "replace").strip()[:300] or http.client.responses.get(
            status, ""
        )
        text = f"{self._where()}: {what}: HTTP {status}: {message}"
        if status == 404:
            raise BlobNotFound(text)
        if status == 503:
            raise BackendUnavailable(text)
        raise BackendError(text)


# ---------------------------------------------------------------------------------------------
# Server


class _Server(TrackedServer):
    """Holds what the handlers need."""

    def __init__(
        self, address: tuple[str, int], backend: Backend, token: str | None, max_body: int
    ) -> None:
        self.backend = backend
        self.expected_auth = f"Bearer {token}".encode() if token is not None else None
        self.max_body = max_body
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qss-blobs"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 60.0  # an idle keep-alive connection is closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if method != "PUT":
            self._refuse_body()  # only PUT takes a body; a stray one must not become a request
        if not self._authorized():
            if method == "PUT":
                self._refuse_body()
            self._reply(401, b"missing or wrong bearer token\n", {"WWW-Authenticate": "Bearer"})
            return
        url = urlsplit(self.path)
        backend = self.server.backend
        try:
            if url.path == "/info" and method == "GET":
                self._info(backend)
            elif url.path == "/sync" and method == "POST":
                backend.sync()
                self._reply(204, b"")
            elif url.path == "/blobs" and method == "GET":
                self._list(backend, url.query)
            elif url.path.startswith("/blobs/"):
                key = unquote(url.path[len("/blobs/") :])
                try:
                    check_key(key)
                except BackendError as exc:
                    if method == "PUT":
                        self._refuse_body()
                    self._reply(400, f"{exc}\n".encode())
                    return
                self._blob(method, backend, key)
            else:
                if method == "PUT":
                    self._refuse_body()
                self._reply(404, f"no route {method} {url.path}\n".encode())
        except BlobNotFound as exc:
            self._reply(404, f"{exc}\n".encode())
        except BackendUnavailable as exc:
            self._reply(503, f"{exc}\n".encode())
        except BackendError as exc:
            self._reply(500, f"{exc}\n".encode())
        except Exception:  # one bad request must not take the server down
            log.exception("blob server: %s %s failed", method, self.path)
            self._reply(500, b"internal error\n")

    def _blob(self, method: str, backend: Backend, key: str) -> None:
        if method == "GET":
            self._reply(200, backend.get(key), {"Content-Type": "application/octet-stream"})
        elif method == "HEAD":
            self._reply(200 if backend.exists(key) else 404, b"")
        elif method == "DELETE":
            backend.delete(key)
            self._reply(204, b"")
        else:
            data = self._read_body()
            if data is not None:
                backend.put(key, data)
                self._reply(204, b"")

    def _info(self, backend: Backend) -> None:
        info = backend.info()
        document = {"name": backend.name, "kind": info.kind, "free_bytes": info.free_bytes}
        self._reply(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _list(self, backend: Backend, query: str) -> None:
        prefix = parse_qs(query).get("prefix", [""])[0]
        keys = "".join(f"{key}\n" for key in backend.list(prefix))
        self._reply(200, keys.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    # -- bodies and replies -----------------------------------------------------------------

    def _authorized(self) -> bool:
        expected = self.server.expected_auth
        if expected is None:
            return True
        given = self.headers.get("Authorization", "").encode("utf-8", "replace")
        return hmac.compare_digest(given, expected)

    def _content_length(self) -> int | None:
        if "Transfer-Encoding" in self.headers:
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return length if length >= 0 else None

    def _read_body(self) -> bytes | None:
        """The request body, or None after replying why it was refused."""
        length = self._content_length()
        if length is None:
            self.close_connection = True
            self._reply(411, b"a Content-Length header is required (no chunked bodies)\n")
            return None
        if length > self.server.max_body:
            self._refuse_body()
            self._reply(
                413,
                f"body of {length} bytes is over the limit of {self.server.max_body}\n".encode(),
            )
            return None
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            self._reply(400, f"body ended after {len(data)} of {length} bytes\n".encode())
            return None
        return data

    def _refuse_body(self) -> None:
        """Before answering without reading the body: skip it if small, else close after the
        reply. Draining lets the client finish sending and read our answer instead of getting
        a reset connection."""
        length = self._content_length()
        if length == 0 or (length is None and "Transfer-Encoding" not in self.headers):
            return
        self.close_connection = True
        if length is not None and length <= DRAIN_LIMIT:
            with contextlib.suppress(OSError):
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status == 204:
            pass
        elif self.command == "HEAD":
            if status != 200:
                self.send_header("Content-Length", "0")
        else:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status != 204:
            self.wfile.write(body)


class BlobServer:
    """Serves `backend` over HTTP from a background thread. `start()` binds (port 0: any free
    port) and sets `.url`; `stop()` ends every connection and joins every thread."""

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.token = token
        self.max_body = max_body
        self.url = ""
        self._running: Background | None = None

    def start(self) -> BlobServer:
        if self._running is not None:
            raise BackendError(f"blob server at {self.url} is already started")
        try:
            server = _Server((self.host, self.port), self.backend, self.token, self.max_body)
        except OSError as exc:
            raise BackendUnavailable(
                f"blob server: cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self.port = server.server_port
        self._running = Background(server, "blobs", poll_interval=0.02)
        self.url = self._running.url
        return self

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.stop()

    def __enter__(self) -> BlobServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
