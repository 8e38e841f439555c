"""Blobs over HTTP: `BlobServer` exposes any Backend, `HttpBackend` is its client.

The wire protocol, all under an optional path prefix on the client side:

    PUT    /blobs/<key>          body = the blob (Content-Length required)  -> 204
    GET    /blobs/<key>[?limit=N] -> 200 + the blob, 404, or 413 when it is over N bytes
    HEAD   /blobs/<key>          -> 200 or 404
    DELETE /blobs/<key>          -> 204 (also when there was nothing)
    GET    /blobs?prefix=<p>     -> 200 + matching keys, one per line
    GET    /info                 -> 200 + {"name", "kind", "free_bytes"} as JSON

Errors: 400 bad key or request, 401 missing or wrong bearer token, 404 no such blob, 411 no
Content-Length, 413 body over the server's limit (or, for a GET, a blob over its `limit`), 503
the served backend is unavailable, 500 any other backend error; the body is a one-line
message. The client maps 404 to BlobNotFound, 413 on a get (or a blob larger than its limit,
whatever the server says) to InvalidBlob, 503, refused connections and requests not done
within the timeout to BackendUnavailable, the rest to BackendError. Keys are checked on both
sides, so a bad key never reaches the served backend. Both sides bound every exchange in
bytes and in time (`qss.http_client`, `qss.serving`).
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import logging
import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, NoReturn
from urllib.parse import parse_qs, quote, unquote, urlsplit

from qss.backends.base import KEY, MAX_BLOB, Backend, BackendInfo, check_key
from qss.errors import (
    BackendError,
    BackendUnavailable,
    BlobNotFound,
    InvalidBlob,
    ReplyTooLarge,
    TransferError,
    TransferUnavailable,
)
from qss.http_client import HttpPool
from qss.serving import Background, BoundedHandler, ServingLimits, TrackedServer

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024  # after a 413, read at most this much so the client sees it
DEFAULT_TIMEOUT = 30.0  # seconds for a whole request, from connecting to the last byte
INFO_LIMIT = 64 * 1024


# ---------------------------------------------------------------------------------------------
# Client


class HttpBackend:
    """Client of a `BlobServer` at `base_url` (`http://host:port` or `https://...`, optionally
    with a path prefix). Every request must complete within `timeout` seconds in all (a server
    that trickles its answer is cut off then, and reads as unavailable). A blob larger than the
    `limit` of its get, or any response larger than `max_response`, is refused unread."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str | None = None,
        failure_domain: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
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
        if not timeout > 0:
            raise BackendError(f"http backend: the timeout must be positive seconds, not {timeout}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port if port is not None else (443 if parts.scheme == "https" else 80)
        self.path_prefix = parts.path.rstrip("/")
        self.url = f"{self.scheme}://{parts.netloc}{self.path_prefix}"
        self.name = name if name is not None else f"{parts.netloc}{self.path_prefix}"
        self.failure_domain = failure_domain if failure_domain is not None else self.name
        self.timeout = timeout
        self._auth = f"Bearer {token}" if token is not None else None
        self.max_response = max_response
        self._pool = HttpPool(
            self.scheme,
            self.host,
            self.port,
            timeout=timeout,
            ssl_context=ssl_context,
            max_idle=max_idle,
        )

    def __repr__(self) -> str:
        return f"HttpBackend({self.url!r}, name={self.name!r})"

    # -- the Backend protocol ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._check(key)
        status, body = self._request("PUT", self._blob_path(key), key, data)
        if status not in (200, 201, 204):
            self._fail("put", key, status, body)

    def get(self, key: str, limit: int = MAX_BLOB) -> bytes:
        self._check(key)
        # The server is told the limit too, so that it refuses an oversized blob unread.
        path = f"{self._blob_path(key)}?limit={limit}"
        status, body = self._request("GET", path, key, limit=limit, too_large=InvalidBlob)
        if status == 413:
            raise InvalidBlob(f"{self._where()}: get {key!r}: {_message(status, body)}")
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
        status, body = self._request("GET", f"{self.path_prefix}/info", "", limit=INFO_LIMIT)
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
        self._pool.close()

    # -- requests ---------------------------------------------------------------------------

    def _blob_path(self, key: str) -> str:
        return f"{self.path_prefix}/blobs/{quote(key, safe='/')}"

    def _request(
        self,
        method: str,
        path: str,
        key: str,
        body: bytes | None = None,
        *,
        limit: int | None = None,
        too_large: type[BackendError] = BackendError,
    ) -> tuple[int, bytes]:
        """Status and body; a body over `limit` (or `max_response`) raises `too_large`."""
        headers = {"Authorization": self._auth} if self._auth else {}
        what = f"{method} {key!r}" if key else method
        try:
            reply = self._pool.request(
                method,
                path,
                body=body,
                headers=headers,
                limit=self.max_response if limit is None else min(limit, self.max_response),
            )
        except TransferUnavailable as exc:  # timed out included
            raise BackendUnavailable(f"{self._where()} is unavailable: {what}: {exc}") from exc
        except ReplyTooLarge as exc:
            raise too_large(f"{self._where()}: {what}: {exc}") from exc
        except TransferError as exc:
            raise BackendError(f"{self._where()}: {what}: {exc}") from exc
        return reply.status, reply.body

    # -- errors -----------------------------------------------------------------------------

    def _where(self) -> str:
        return f"http backend {self.name!r} ({self.url})"

    def _check(self, key: str) -> None:
        try:
            check_key(key)
        except BackendError as exc:
            raise BackendError(f"{self._where()}: {exc}") from None

    def _fail(self, op: str, key: str, status: int, body: bytes) -> NoReturn:
        what = f"{op} {key!r}" if key else op
        text = f"{self._where()}: {what}: HTTP {status}: {_message(status, body)}"
        if status == 404:
            raise BlobNotFound(text)
        if status == 503:
            raise BackendUnavailable(text)
        raise BackendError(text)


def _message(status: int, body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()[:300] or http.client.responses.get(status, "")


# ---------------------------------------------------------------------------------------------
# Server


class _Server(TrackedServer):
    """Holds what the handlers need."""

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        token: str | None,
        max_body: int,
        limits: ServingLimits,
    ) -> None:
        self.backend = backend
        self.expected_auth = f"Bearer {token}".encode() if token is not None else None
        self.max_body = max_body
        super().__init__(address, _Handler, limits)


# BaseHTTPRequestHandler is named as well: do_GET and the rest override its methods.
class _Handler(BoundedHandler, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qss-blobs"
    sys_version = ""
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
                self._blob(method, backend, key, url.query)
            else:
                if method == "PUT":
                    self._refuse_body()
                self._reply(404, f"no route {method} {url.path}\n".encode())
        except BlobNotFound as exc:
            self._reply(404, f"{exc}\n".encode())
        except InvalidBlob as exc:
            self._reply(413, f"{exc}\n".encode())
        except BackendUnavailable as exc:
            self._reply(503, f"{exc}\n".encode())
        except BackendError as exc:
            self._reply(500, f"{exc}\n".encode())
        except TimeoutError:  # the client took longer than a request may: it is cut off
            self.close_connection = True
        except Exception:  # one bad request must not take the server down
            log.exception("blob server: %s %s failed", method, self.path)
            self._reply(500, b"internal error\n")

    def _blob(self, method: str, backend: Backend, key: str, query: str) -> None:
        if method == "GET":
            limit = _limit(query)
            if limit is None:
                self._reply(400, b"limit must be a number of bytes from 0 to %d\n" % MAX_BLOB)
                return
            blob = backend.get(key, limit)
            self._reply(200, blob, {"Content-Type": "application/octet-stream"})
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


def _limit(query: str) -> int | None:
    """The `limit` of a get (MAX_BLOB unless the client asks for less); None if malformed."""
    values = parse_qs(query, keep_blank_values=True).get("limit", [str(MAX_BLOB)])
    text = values[-1]
    if len(values) != 1 or not text.isascii() or not text.isdigit() or len(text) > 20:
        return None
    return min(int(text), MAX_BLOB)


class BlobServer:
    """Serves `backend` over HTTP from a background thread. `start()` binds (port 0: any free
    port) and sets `.url`; `stop()` ends every connection and joins every thread. `limits`
    bound what one client may hold: connections, and the time of each request."""

    def __init__(
        self,
        backend: Backend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body: int = MAX_BODY,
        limits: ServingLimits = ServingLimits(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        self.backend = backend
        self.limits = limits
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
            server = _Server(
                (self.host, self.port), self.backend, self.token, self.max_body, self.limits
            )
        except OSError as exc:
            raise BackendUnavailable(
                f"blob server: cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self.port = server.server_port
        self._running = Background(server, "blobs")
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
