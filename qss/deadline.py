"""Total deadlines for socket conversations: what every network client and server here uses so
that no peer can hold a call longer than its deadline, however slowly it trickles bytes.

A socket timeout alone bounds each `recv`, and restarts on every byte: a peer that sends one
byte every few seconds holds a read for weeks. A `Deadline` is one point in time for a whole
exchange (connect, TLS handshake, request, every byte of the reply); `GuardedSocket` gives
each operation only what is left of it, so the exchange ends by then, complete or not, with
`TimeoutError`.
"""

from __future__ import annotations

import io
import math
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


class Deadline:
    """`seconds` from now; `left()` raises TimeoutError once it has passed."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0 or math.isinf(seconds) or math.isnan(seconds):
            raise ValueError(f"a deadline must be a positive number of seconds, got {seconds}")
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete answer within {self.seconds:g} s")
        return remaining


class GuardedSocket:
    """A connected socket (plain or TLS) whose every send and receive waits at most what is
    left of `deadline`, which the owner sets afresh for each exchange.

    `makefile("rb")` and `writer()` give buffered streams over it for http.client and
    http.server; the underlying socket's own file objects keep it open until they are closed.
    """

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock = sock
        self.deadline = deadline

    def arm(self) -> None:
        self.sock.settimeout(self.deadline.left())

    def sendall(self, data: ReadableBuffer) -> None:
        self.arm()
        self.sock.sendall(data)  # since Python 3.5 the timeout bounds the whole sendall

    def recv_into(self, buffer: WriteableBuffer) -> int:
        self.arm()
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only binary reading is supported, not {mode!r}")
        raw = _GuardedReader(self, self.sock.makefile("rb", buffering=0))
        return io.BufferedReader(raw, buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE)

    def writer(self) -> io.BufferedIOBase:
        """An unbuffered writer: each write is sent at once, in full."""
        return _GuardedWriter(self)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


class _GuardedReader(io.RawIOBase):
    def __init__(self, guard: GuardedSocket, raw: io.RawIOBase) -> None:
        super().__init__()
        self._guard = guard
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self._guard.arm()
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _GuardedWriter(io.BufferedIOBase):
    def __init__(self, guard: GuardedSocket) -> None:
        super().__init__()
        self._guard = guard

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        self._guard.sendall(data)
        return memoryview(data).nbytes


def connect(
    host: str,
    port: int,
    deadline: Deadline,
    *,
    connect_timeout: float | None = None,
    tls: ssl.SSLContext | None = None,
) -> GuardedSocket:
    """A TCP connection to host:port (TLS when `tls` is given, handshake included) made before
    `deadline`, and within `connect_timeout` for the TCP connect alone when that is shorter."""
    wait = deadline.left() if connect_timeout is None else min(connect_timeout, deadline.left())
    sock = socket.create_connection((host, port), timeout=wait)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            # The TLS socket takes the plain one over: from here `sock` is the one to close.
            sock = tls.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            _handshake(sock, deadline)
    except BaseException:
        sock.close()
        raise
    return GuardedSocket(sock, deadline)


def _handshake(sock: ssl.SSLSocket, deadline: Deadline) -> None:
    """Complete the TLS handshake before `deadline`: non-blocking steps, each waiting only
    what is left (a blocking handshake would restart its timeout on every record)."""
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                events = selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                events = selectors.EVENT_WRITE
            selector.register(sock, events)
            try:
                if not selector.select(deadline.left()):
                    deadline.left()
                    raise TimeoutError(f"TLS handshake not done within {deadline.seconds:g} s")
            finally:
                selector.unregister(sock)
