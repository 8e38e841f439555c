"""Chunks and manifests over HTTP: `ChunkServer` serves a local `ChunkStore` to peers
(`circle artifact serve`), `HttpChunkSource` is the `ChunkSource` a node fetches them with.

    GET|HEAD /chunks/<64 hex>       -> 200 + the chunk (verified on read), 404, 400 bad digest
    GET|HEAD /manifests/<64 hex>    -> 200 + the manifest bytes of sha256:<hex>, 404, 400
    GET|HEAD <a page's path>        -> 200 + what the owner's `pages` callable returns

`trees` (a node's `builders.sealed_trees.SealedTrees`) serves the chunks the store lacks from
the node's installed trees, as ranges of files whose seals hold (hashed before they are sent,
as the store's are), and from a tree while it is being written.

`pages` lets the owner of a server add a few read-only routes of its own (the node agent's
`/metrics`): path -> a callable giving (content type, body), called per request from the
handler's thread, under the same limits as every other request; what it raises is a 500.
Any other failure is a 500 with a one-line message, never a traceback. The server trusts
nothing it stores (a chunk that fails its check is refused, not sent) and the client trusts
nothing it receives: materialization hashes every chunk again and gates every manifest on its
id. Both bound every exchange in bytes and in time: the client through `qss.http_client` (a
total deadline per request, a response limit), the server through `qss.serving` (a deadline
per request, a cap on connections). `rate_limit` paces all response bodies together (bytes
per second over every connection, in slices of 256 KiB), so a benchmark on one machine can
emulate a network link.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from builders.chunks import (
    MAX_CHUNK,
    MAX_MANIFEST,
    ChunkCorrupt,
    ChunkError,
    ChunkMissing,
    ChunkSource,
    ChunkStore,
    SourceUnavailable,
    check_digest,
)
from qss.errors import TransferError, TransferTimedOut, TransferUnavailable
from qss.http_client import HttpPool
from qss.serving import Background, BoundedHandler, ServingLimits, TrackedServer

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0  # seconds for one whole request, from connecting to the last byte
_SLICE = 256 * 1024  # bytes booked on the emulated link at a time
_ROUTE = re.compile(r"/(chunks|manifests)/([^/]*)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"sha256:[0-9a-f]{64}")
_PAGE = re.compile(r"/[A-Za-z0-9._~/-]*")

Page = Callable[[], tuple[str, bytes]]  # -> (content type, body)


# -- client --------------------------------------------------------------------------------------


class HttpChunkSource:
    """A `ChunkSource` reading from a `ChunkServer` at `url`. Every request must be done within
    `timeout` seconds in all, however slowly the server answers: one that stalls or trickles
    is cut off then (SourceUnavailable, so that the next source is tried). Thread-safe:
    requests share a small pool of idle keep-alive connections (`qss.http_client`). Call
    `close()` when done."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, *, max_idle: int = 8) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChunkError(f"chunk source {url!r} is not an http:// or https:// URL")
        if parts.username is not None or parts.query or parts.fragment:
            raise ChunkError(f"chunk source {url!r}: no user, query or fragment allowed")
        try:
            port = parts.port
        except ValueError:
            raise ChunkError(f"chunk source {url!r}: bad port") from None
        if not timeout > 0:
            raise ChunkError(f"chunk source {url!r}: the timeout must be positive, not {timeout}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port if port is not None else (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.url = f"{parts.scheme}://{parts.netloc}{self.prefix}"
        self.name = self.url
        self.timeout = timeout
        self._pool = HttpPool(self.scheme, self.host, self.port, timeout=timeout, max_idle=max_idle)

    def __repr__(self) -> str:
        return f"HttpChunkSource({self.url!r})"

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        check_digest(digest)
        status, body = self._request("GET", f"/chunks/{digest}", min(limit, MAX_CHUNK))
        if status == 404:
            raise ChunkMissing(f"chunk {digest[:16]} is not at {self.url}")
        if status != 200:
            raise self._failed(f"chunk {digest[:16]}", status, body)
        return body

    def has(self, digest: str) -> bool:
        check_digest(digest)
        status, body = self._request("HEAD", f"/chunks/{digest}", 0)
        if status not in (200, 404):
            raise self._failed(f"chunk {digest[:16]}", status, body)
        return status == 200

    def get_manifest(self, artifact_id: str) -> bytes:
        """The manifest bytes the server holds for `artifact_id` (the caller's gate checks them)."""
        if not _ID.fullmatch(artifact_id):
            raise ChunkError(f"{artifact_id[:80]!r} is not an artifact id (sha256:<64 hex>)")
        hex_id = artifact_id.removeprefix("sha256:")
        status, body = self._request("GET", f"/manifests/{hex_id}", MAX_MANIFEST)
        if status == 404:
            raise ChunkMissing(f"no manifest of {artifact_id} at {self.url}")
        if status != 200:
            raise self._failed(f"manifest of {artifact_id}", status, body)
        return body

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> HttpChunkSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, limit: int) -> tuple[int, bytes]:
        what = f"{method} {self.prefix}{path}"
        try:
            reply = self._pool.request(method, self.prefix + path, limit=limit)
        except TransferTimedOut as error:
            raise SourceUnavailable(f"chunk source {self.url} stalled: {what}: {error}") from error
        except TransferUnavailable as error:
            raise SourceUnavailable(
                f"chunk source {self.url} is unreachable: {what}: {error}"
            ) from error
        except TransferError as error:  # TLS, protocol, a response over the limit
            raise ChunkError(f"chunk source {self.url}: {what}: {error}") from error
        return reply.status, reply.body

    def _failed(self, what: str, status: int, body: bytes) -> ChunkError:
        message = body.decode("utf-8", "replace").strip()[:300] or http.client.responses.get(
            status, ""
        )
        return ChunkError(f"chunk source {self.url}: {what}: HTTP {status}: {message}")


# -- server --------------------------------------------------------------------------------------


class _Server(TrackedServer):
    """Holds what the handlers need, and the booking clock of the emulated link."""

    def __init__(
        self,
        address: tuple[str, int],
        store: ChunkStore,
        rate: float | None,
        limits: ServingLimits,
        pages: Mapping[str, Page],
        trees: ChunkSource | None,
    ) -> None:
        self.store = store
        self.trees = trees
        self.rate = rate
        self.pages = dict(pages)
        self.link_lock = threading.Lock()
        self.link_free_at = 0.0
        super().__init__(address, _Handler, limits)

    def reserve_link(self, size: int) -> float:
        """Book `size` bytes on the one emulated link all responses share; when they are sent.

        One booking clock for every connection: parallel fetches share the rate, as they would
        share a real link, instead of each getting it whole. A sender that wakes up late (by
        at most one slice's time) books from where the link stopped, as its data would have
        waited in the socket's queue for a real link: the link is not idled by a busy host.
        """
        assert self.rate is not None
        with self.link_lock:
            now = time.monotonic()
            begin = max(now - _SLICE / self.rate, self.link_free_at)
            self.link_free_at = begin + size / self.rate
            return self.link_free_at


# BaseHTTPRequestHandler is named as well: do_GET and the rest override its methods.
class _Handler(BoundedHandler, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "circle-chunks"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body we will not read must not become a request
        path = urlsplit(self.path).path
        page = self.server.pages.get(path)
        if page is not None:
            self._page(path, page)
            return
        route = _ROUTE.fullmatch(path)
        if route is None:
            self._reply(404, f"no route {self.command} {path[:100]}\n".encode())
            return
        kind, digest = route.groups()
        if not _HEX64.fullmatch(digest):
            self._reply(
                400, f"{digest[:80]!r} is not a sha256 digest (64 lowercase hex)\n".encode()
            )
            return
        try:
            if kind == "chunks":
                self._chunk(digest)
            else:
                self._manifest(digest)
        except ChunkMissing:
            self._reply(404, f"no {kind[:-1]} {digest}\n".encode())
        except ChunkCorrupt:
            self._reply(500, f"{kind[:-1]} {digest} is corrupt in this store\n".encode())
        except TimeoutError:  # the client took longer than a request may: it is cut off
            self.close_connection = True
        except Exception:  # one bad request must not take the server down, nor leak details
            log.exception("chunk server: %s %s failed", self.command, path)
            self._reply(500, b"internal error\n")

    def _page(self, path: str, page: Page) -> None:
        try:
            content_type, body = page()
        except Exception:  # the owner's page failed: a 500, and the server serves on
            log.exception("chunk server: page %s failed", path)
            self._reply(500, b"internal error\n")
            return
        try:
            self._reply(200, body, content_type)
        except TimeoutError:
            self.close_connection = True

    def _chunk(self, digest: str) -> None:
        store, trees = self.server.store, self.server.trees
        if self.command == "HEAD":
            held = store.has(digest) or (trees is not None and trees.has(digest))
            self._reply(200 if held else 404, b"")
            return
        try:
            data = store.get(digest)
        except (ChunkMissing, ChunkCorrupt):
            if trees is None:
                raise
            data = trees.get(digest)  # ChunkMissing: in no sealed tree either
        self._reply(200, data)

    def _manifest(self, digest: str) -> None:
        artifact_id = f"sha256:{digest}"
        store = self.server.store
        if self.command == "HEAD":
            self._reply(200 if store.manifest_path(artifact_id).is_file() else 404, b"")
            return
        data = store.get_manifest(artifact_id)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ChunkCorrupt(f"manifest {digest} does not match its name")
        self._reply(200, data)

    def _reply(
        self, status: int, body: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        self.send_response(status)
        if status == 200:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(body)

    def _write_body(self, body: bytes) -> None:
        rate = self.server.rate
        if rate is None:
            self.wfile.write(body)
            return
        view = memoryview(body)
        sent = 0
        while sent < len(view) and not self.server.stopping.is_set():
            piece = view[sent : sent + _SLICE]
            done_at = self.server.reserve_link(len(piece))
            self.wfile.write(piece)
            sent += len(piece)
            delay = done_at - time.monotonic()
            if delay > 0:
                self.server.stopping.wait(delay)
        if sent < len(view):
            self.close_connection = True


class ChunkServer:
    """Serves `store` over HTTP from a background thread. `start()` binds (port 0: any free
    port) and sets `.url`; `stop()` ends every connection and joins every thread. `limits`
    bound what one client may hold: connections, and the time of each request. `pages` adds
    GET routes of the owner's (see the module): a path outside /chunks/ and /manifests/.
    `trees`: what the store lacks is served from there (see the module)."""

    def __init__(
        self,
        store: ChunkStore,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        limits: ServingLimits = ServingLimits(),  # noqa: B008 - frozen, shared safely
        pages: Mapping[str, Page] | None = None,
        trees: ChunkSource | None = None,
    ) -> None:
        if rate_limit is not None and rate_limit <= 0:
            raise ChunkError(f"rate_limit must be positive bytes per second, got {rate_limit}")
        for path in pages or {}:
            if not _PAGE.fullmatch(path) or path.startswith(("/chunks/", "/manifests/")):
                raise ChunkError(
                    f"page {path[:80]!r}: a path (/ then letters, digits, ._~-/) outside "
                    "/chunks/ and /manifests/ is expected"
                )
        self.pages = dict(pages or {})
        self.store = store
        self.trees = trees
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.limits = limits
        self.url = ""
        self._running: Background | None = None

    @property
    def root(self) -> Path:
        return self.store.root

    def start(self) -> ChunkServer:
        if self._running is not None:
            raise ChunkError(f"chunk server at {self.url} is already started")
        try:
            server = _Server(
                (self.host, self.port),
                self.store,
                self.rate_limit,
                self.limits,
                self.pages,
                self.trees,
            )
        except OSError as error:
            raise ChunkError(
                f"chunk server: cannot listen on {self.host}:{self.port}: {error.strerror}"
            ) from error
        self.port = server.server_port
        self._running = Background(server, "chunks")
        self.url = self._running.url
        return self

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.stop()

    def __enter__(self) -> ChunkServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
