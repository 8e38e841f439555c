"""Small threaded HTTP servers that stop cleanly, shared by the blob server (`qss.backends.http`)
and the chunk server (`builders.http_chunks`).

`TrackedServer` keeps every open connection so that stopping ends keep-alive clients too, skips
the DNS lookup `HTTPServer` does on bind, and keeps routine client disconnects out of stderr.
`Background` runs one on a thread and stops it completely: no handler thread outlives `stop`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class TrackedServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handler threads: nothing outlives stop()
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
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
            self.open_sockets.add(request)
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
    """`server` serving from a thread of its own until `stop`."""

    def __init__(self, server: TrackedServer, name: str, poll_interval: float = 0.05) -> None:
        self.server = server
        self.url = server.url
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": poll_interval},
            name=f"{name} {self.url}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server = self.server
        server.stopping.set()
        try:
            server.shutdown()
        finally:
            server.end_connections()
            server.server_close()
            self._thread.join(timeout=10)
