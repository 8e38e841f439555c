"""Serving the dashboard: one uvicorn server on a socket bound here (port 0: any free port),
bounded in connections, request sizes and idle time; SIGINT or SIGTERM stops it gracefully."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

import uvicorn

from reconciler.dashboard.app import ASGI
from reconciler.errors import InputError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or InputError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP (proto 0 would leave Nagle on: 40 ms per kept-alive request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def allowed_hosts(sock: socket.socket) -> set[str]:
    """The Host headers a loopback server answers: its own names, with and without the port."""
    host, port = sock.getsockname()[:2]
    names = {"localhost", "127.0.0.1", "[::1]", f"[{host}]" if ":" in host else host}
    return names | {f"{name}:{port}" for name in names}


def serve(app: ASGI, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
        limit_concurrency=64,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=3,
        h11_max_incomplete_event_size=16 * 1024,
    )
    server = uvicorn.Server(config)
    on_ready()
    server.run(sockets=[sock])
