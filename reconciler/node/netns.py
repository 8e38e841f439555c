"""Reaching into a replica's network namespace: the only way in.

A replica's network namespace holds only `lo`, so nothing outside can reach it and it can
reach nothing. The agent reaches it by opening a socket *inside* that namespace: a short-lived
thread enters the namespace (`setns`, which moves only the calling thread), makes the socket
and ends; the socket stays in the namespace it was made in and works from any thread.
Health checks connect so, and `PortProxy` publishes each declared port on the node: it
listens on a host address and joins every accepted connection to the port inside. Declared
ports are all that can be reached; undeclared ones cannot even be named.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import selectors
import socket
import threading
from collections.abc import Callable

CLONE_NEWNET = 0x40000000
MAX_CONNECTIONS = 256  # per published port
_BUFFER = 64 * 1024
_SEND_TIMEOUT = 30.0
_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    """The replica's network namespace cannot be entered (it has ended, or no permission)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise NamespaceError(number, os.strerror(number))


def socket_in(pid: int, family: int = socket.AF_INET) -> socket.socket:
    """A new TCP socket in the network namespace of process `pid`."""
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        number = error.errno or errno.ESRCH
        raise NamespaceError(number, f"process {pid}: {error.strerror}") from None
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter() -> None:  # this thread alone enters the namespace, and then ends
        try:
            _setns(target)
            made.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            failed.append(error)

    try:
        worker = threading.Thread(target=enter, name=f"netns-{pid}", daemon=True)
        worker.start()
        worker.join()
    finally:
        os.close(target)
    if failed:
        raise failed[0]
    return made[0]


def connect(pid: int, port: int, timeout: float) -> socket.socket:
    """A connection to 127.0.0.1:`port` inside the namespace of `pid`."""
    sock = socket_in(pid)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortProxy:
    """Publish port `port` of a replica's namespace at (`host`, `host_port`) on the node; the
    declared port itself when free, else any free port (`address` says which)."""

    def __init__(
        self,
        pid: int,
        port: int,
        host: str = "127.0.0.1",
        host_port: int | None = None,
        *,
        connect_timeout: float = 5.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.pid = pid
        self.port = port
        self.connect_timeout = connect_timeout
        self.on_error = on_error or (lambda message: None)
        self._listener = _listen(host, port if host_port is None else host_port)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._accept, name=f"proxy-{pid}-{port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in list(self._connections):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                client.close()  # at its limit: refuse rather than queue without bound
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        inner: socket.socket | None = None
        try:
            try:
                inner = connect(self.pid, self.port, self.connect_timeout)
            except OSError as error:
                self.on_error(f"port {self.port}: cannot reach the replica: {error.strerror}")
                return
            with self._lock:
                self._connections.update((client, inner))
            _splice(client, inner, self._closed)
        finally:
            with self._lock:
                self._connections.discard(client)
                if inner is not None:
                    self._connections.discard(inner)
            for sock in (client, inner):
                if sock is not None:
                    sock.close()
            self._slots.release()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            listener.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE or port == 0:
                raise
            listener.bind((host, 0))  # the declared port is taken here: any free one
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener


def _splice(a: socket.socket, b: socket.socket, closed: threading.Event) -> None:
    """Copy both ways until both directions have ended (half-closes passed on)."""
    for sock in (a, b):
        sock.settimeout(None)
        sock.setblocking(False)
    peer = {a: b, b: a}
    open_reads = {a, b}
    with selectors.DefaultSelector() as selector:
        for sock in open_reads:
            selector.register(sock, selectors.EVENT_READ)
        while open_reads and not closed.is_set():
            for key, _ in selector.select(timeout=1.0):
                source = key.fileobj
                assert isinstance(source, socket.socket)
                try:
                    data = source.recv(_BUFFER)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                target = peer[source]
                if not data:
                    selector.unregister(source)
                    open_reads.discard(source)
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    continue
                try:
                    target.settimeout(_SEND_TIMEOUT)  # a peer that stops reading is dropped
                    target.sendall(data)
                    target.setblocking(False)
                except OSError:
                    return
