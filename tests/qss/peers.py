"""Hostile peers on loopback, real TCP servers: they answer a byte at a time, without end, or with
lengths they never send, to prove that every client read is bounded in bytes and in time. And
the two measures the tests take: that a call returns at all, and how much it allocated.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
Script = Callable[[socket.socket, threading.Event], None]

# "Does not hang" bound for a call whose own deadline is under a second: generous on purpose.
RETURNS_WITHIN = 30.0
MiB = 1024 * 1024


class Peer:
    """A TCP server on 127.0.0.1 that runs `script(connection, stopping)` for each connection
    it accepts, on a thread of its own. `stop()` ends every connection and joins every thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Peer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=10)
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)
        with self._lock:
            for connection in self._open:
                connection.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            with self._lock:
                self.connections += 1
                self._open.append(connection)
                self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.script(connection, self._stopping)


def trickle(reply: bytes, *, interval: float = 0.05, then: bytes = b"x") -> Script:
    """Read the request, send `reply` one byte every `interval` seconds, then `then` the same
    way for ever: a byte always arrives well within any per-read timeout."""

    def script(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        position = 0
        while not stopping.wait(interval):
            if position < len(reply):
                connection.sendall(reply[position : position + 1])
                position += 1
            else:
                connection.sendall(then)

    return script


def flood(head: bytes, filler: bytes = b"x" * 65536) -> Script:
    """Read the request, send `head`, then `filler` as fast as the client takes it, for ever."""

    def script(connection: socket.socket, stopping: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(head)
        while not stopping.is_set():
            connection.sendall(filler)

    return script


def returns(call: Callable[[], T], within: float = RETURNS_WITHIN) -> T:
    """`call()`, run on a thread of its own so that a call that never returns fails the test
    (after `within` seconds) instead of hanging it; its exception is raised here."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread below
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the call did not return within {within:g} s"
    if failure:
        raise failure[0]
    return outcome[0]


def closed_by_server(connection: socket.socket, request: bytes) -> bool:
    """Send `request` one byte each 50 ms, then spaces, until the server closes the connection
    (True) or RETURNS_WITHIN passes (False): a client that trickles."""
    connection.settimeout(0.05)
    for step in range(int(RETURNS_WITHIN / 0.05)):
        try:
            connection.sendall(request[step : step + 1] or b" ")
            if connection.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset, or a broken pipe: closed as well
            return True
    return False


@contextlib.contextmanager
def allocations() -> Iterator[list[int]]:
    """Measure the peak of Python allocations in the block: the list holds it afterwards."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
