"""Small threaded HTTP servers that stop cleanly, shared by the blob server (`qss.backends.http`)
and the chunk server (`builders.http_chunks`).

`TrackedServer` keeps every open connection so that stopping ends keep-alive clients too, skips
the DNS lookup `HTTPServer` does on bind, and keeps routine client disconnects out of stderr.
`Background` runs one on a thread and stops it completely: no handler thread outlives `stop`.

Clients are bounded as servers are (`qss.http_client`): a `BoundedHandler` gives each request
`idle_timeout + request_timeout` seconds in all (the server's `ServingLimits`), from waiting
for its first byte to the last byte of the reply, so a client that trickles its headers or
body, or reads the reply a byte at a time, loses its connection then instead of holding a
thread for ever; and a server takes at most `max_connections` at once (each holds a thread),
closing any beyond. Request lines and headers are bounded in bytes by `http.server` itself
(64 KiB a line, 100 headers).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from qss.deadline import Deadline, GuardedSocket

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServingLimits:
    """What a server grants its clients."""

    max_connections: int = 256  # open at once, each holding a thread
    idle_timeout: float = 60.0  # seconds a kept-alive connection may wait for its next request
    request_timeout: float = 120.0  # seconds, on top, to read one request and write its reply

    def __post_init__(self) -> None:
        Deadline(self.idle_timeout + self.request_timeout)  # refuses what is not positive
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be 1 or more, got {self.max_connections}")


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler (of a TrackedServer) whose every request must be done within the
    server's deadline."""

    server: TrackedServer
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a guarded one over the same socket
        self.guard = GuardedSocket(self.connection, self._deadline())
        self.rfile = self.guard.makefile("rb")
        self.wfile = self.guard.writer()

    def handle_one_request(self) -> None:
        self.guard.deadline = self._deadline()
        super().handle_one_request()

    def _deadline(self) -> Deadline:
        limits = self.server.limits
        return Deadline(limits.idle_timeout + limits.request_timeout)


class TrackedServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handler threads: nothing outlives stop()
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: ServingLimits,
    ) -> None:
        self.limits = limits
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        self.stopping = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host up in DNS (socket.getfqdn): not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            full = len(self.open_sockets) >= self.limits.max_connections
            if not full:
                self.open_sockets.add(request)
        if full:
            log.warning(
                "refusing a connection from %s: %d are open already",
                client_address,
                self.limits.max_connections,
            )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-response is routine; keep it out of the server's stderr.
        log.debug("connection from %s failed", client_address, exc_info=True)

    def end_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        host = self.server_name
        netloc = f"[{host}]:{self.server_port}" if ":" in host else f"{host}:{self.server_port}"
        return f"http://{netloc}"


class Background:
    """`server` serving from a thread of its own until `stop`.

    The serving loop wakes only for connections (a long `poll_interval`, so an idle server
    costs nothing); `stop` wakes it by connecting to it while the shutdown waits."""

    def __init__(self, server: TrackedServer, name: str, poll_interval: float = 60.0) -> None:
        self.server = server
        self.url = server.url
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": poll_interval},
            name=f"{name} {self.url}",
            daemon=True,
        )
        self._thread.start()

    def _poke(self) -> None:
        """Connect to the server once, so that its loop wakes and sees the shutdown."""
        host, port = self.server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind, reached on loopback
            host = "::1" if ":" in str(host) else "127.0.0.1"
        with contextlib.suppress(OSError):
            socket.create_connection((str(host), int(port)), timeout=0.2).close()

    def stop(self) -> None:
        server = self.server
        server.stopping.set()
        try:
            if self._thread.is_alive():
                stopper = threading.Thread(target=server.shutdown, daemon=True)
                stopper.start()
                while stopper.is_alive():
                    self._poke()
                    stopper.join(0.05)
        finally:
            server.end_connections()
            server.server_close()
            self._thread.join(timeout=10)
