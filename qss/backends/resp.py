"""A small Redis-protocol (RESP2) client whose every reply is bounded in bytes and in time: what
`qss.backends.redis` talks to its server with.

A general-purpose client reads whatever the server announces: a bulk header of `$9999999999`
makes it buffer ten gigabytes, a reply that never ends is read for ever, and its socket timeout
restarts on every byte that trickles in. Here each call says how large its reply may be: a bulk
string is refused as soon as its header announces more than `limit` (before any of it is
read), the whole reply may not exceed `budget` bytes, an array `max_items` elements and one
level of nesting, a line (status, error, integer, header) `MAX_LINE` bytes; and each call
(connecting, AUTH and SELECT included) must be done within `timeout` seconds
(`qss.deadline`). A connection that broke any of this is closed, never reused.

Only what RedisBackend needs: one command at a time per connection, RESP2 replies. Errors:
TransferTimedOut, TransferUnavailable (refused, reset or closed connection), ReplyTooLarge,
ErrorReply (the server's own error), TransferError (anything that is not RESP).
"""

from __future__ import annotations

import threading
from typing import TypeAlias

from qss.deadline import Deadline, GuardedSocket, connect
from qss.errors import (
    ErrorReply,
    ReplyTooLarge,
    TransferError,
    TransferTimedOut,
    TransferUnavailable,
)

Value: TypeAlias = bytes | int | list["Value"] | None
Argument: TypeAlias = bytes | str | int

MAX_LINE = 64 * 1024
_RECV = 64 * 1024
_KINDS = (b"+", b"-", b":", b"$", b"*")
_MAX_DEPTH = 2  # SCAN answers [cursor, [keys]]: nothing we send is answered deeper


class _Connection:
    """One connection and what it has received but not parsed yet."""

    def __init__(self, guard: GuardedSocket) -> None:
        self.guard = guard
        self.buffer = bytearray()
        self.received_any = False  # of the current call's reply

    def send(self, args: tuple[Argument, ...]) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.guard.sendall(b"".join(parts))

    def reply(self, *, limit: int, budget: int, max_items: int) -> Value:
        self.received_any = False
        return _Reader(self, limit, budget, max_items).value(0)

    def fill(self) -> None:
        chunk = bytearray(_RECV)
        count = self.guard.recv_into(chunk)
        if count == 0:
            raise TransferUnavailable("the server closed the connection")
        self.received_any = True
        self.buffer += memoryview(chunk)[:count]

    def close(self) -> None:
        self.guard.close()


class _Reader:
    """Parses one reply off `connection`, counting its bytes against the budget."""

    def __init__(self, connection: _Connection, limit: int, budget: int, max_items: int) -> None:
        self.connection = connection
        self.limit = limit
        self.left = budget
        self.max_items = max_items

    def value(self, depth: int) -> Value:
        connection = self.connection
        if not connection.buffer:
            connection.fill()
        if connection.buffer[:1] not in _KINDS:  # known from its first byte: not a RESP reply
            raise TransferError(f"not a RESP reply: {bytes(connection.buffer[:40])!r}")
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            if depth:  # inside an array: the rest of it is unread, so the connection goes
                raise TransferError(f"an error inside an array reply: {line[:80]!r}")
            raise ErrorReply("", rest.decode("utf-8", "replace")[:300])
        if kind == b":":
            return _integer(rest, line)
        if kind == b"$":
            size = _integer(rest, line)
            if size == -1:
                return None
            if size < 0:
                raise TransferError(f"bad bulk length in {line[:40]!r}")
            if size > self.limit:
                raise ReplyTooLarge(
                    f"the reply announces a {size}-byte value, more than the {self.limit} "
                    "expected (refused unread)"
                )
            return self._exactly(size)
        if kind == b"*":
            count = _integer(rest, line)
            if count == -1:
                return None
            if count < 0:
                raise TransferError(f"bad array length in {line[:40]!r}")
            if depth >= _MAX_DEPTH:
                raise TransferError(f"arrays nested deeper than {_MAX_DEPTH} in the reply")
            if count > self.max_items:
                raise ReplyTooLarge(
                    f"the reply announces an array of {count} elements, more than the "
                    f"{self.max_items} expected (refused unread)"
                )
            return [self.value(depth + 1) for _ in range(count)]
        raise AssertionError(f"unreachable: {kind!r}")  # pragma: no cover

    def _spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ReplyTooLarge("the reply exceeds the bytes a reply to this command may have")

    def _line(self) -> bytes:
        connection = self.connection
        searched = 0
        while True:
            end = connection.buffer.find(b"\r\n", max(0, searched - 1))
            if end >= 0:
                break
            searched = len(connection.buffer)
            if searched > MAX_LINE:
                raise ReplyTooLarge(f"a reply line exceeds {MAX_LINE} bytes")
            connection.fill()
        if end > MAX_LINE:
            raise ReplyTooLarge(f"a reply line exceeds {MAX_LINE} bytes")
        self._spend(end + 2)
        line = bytes(connection.buffer[:end])
        del connection.buffer[: end + 2]
        return line

    def _exactly(self, size: int) -> bytes:
        self._spend(size + 2)
        connection = self.connection
        while len(connection.buffer) < size + 2:
            connection.fill()
        if connection.buffer[size : size + 2] != b"\r\n":
            raise TransferError(f"a {size}-byte value is not followed by CRLF")
        data = bytes(connection.buffer[:size])
        del connection.buffer[: size + 2]
        return data


def _integer(text: bytes, line: bytes) -> int:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or len(digits) > 19 or not digits.isdigit():
        raise TransferError(f"not a RESP integer: {line[:40]!r}")
    return int(text)


class RespClient:
    """Commands to the Redis-protocol server at host:port; thread-safe (a pool of idle
    connections, at most `max_idle`, each authenticated and on database `db`)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        password: str | None = None,
        connect_timeout: float,
        timeout: float,
        max_idle: int = 16,
    ) -> None:
        Deadline(timeout)  # refuses a timeout that is not a positive number of seconds
        self.host = host
        self.port = port
        self.db = db
        self.timeout = timeout
        self._password = password
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def call(
        self,
        *args: Argument,
        limit: int = MAX_LINE,
        budget: int | None = None,
        max_items: int = 0,
    ) -> Value:
        """Send one command and return its reply: bulk strings at most `limit` bytes, the
        whole reply at most `budget` (default: one bulk and its header), arrays at most
        `max_items` long. A reused connection found closed is replaced once."""
        deadline = Deadline(self.timeout)
        total = limit + MAX_LINE if budget is None else budget
        command = str(args[0]).upper()
        for attempt in range(2):
            connection, reused = self._checkout(deadline)
            try:
                connection.guard.deadline = deadline
                connection.send(args)
                value = connection.reply(limit=limit, budget=total, max_items=max_items)
            except TransferUnavailable:
                connection.close()
                if reused and attempt == 0 and not connection.received_any:
                    continue
                raise
            except ErrorReply as error:
                self._checkin(connection)  # the reply was complete: the connection is fine
                raise ErrorReply(command, error.message) from None
            except TimeoutError as error:
                connection.close()
                raise TransferTimedOut(
                    f"timed out: no complete reply within {self.timeout:g} s"
                ) from error
            except OSError as error:
                connection.close()
                if reused and attempt == 0 and not connection.received_any:
                    continue
                raise TransferUnavailable(str(error) or type(error).__name__) from error
            except BaseException:
                connection.close()  # a refused or malformed reply may have left bytes unread
                raise
            self._checkin(connection)
            return value
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _checkout(self, deadline: Deadline) -> tuple[_Connection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        try:
            guard = connect(self.host, self.port, deadline, connect_timeout=self._connect_timeout)
        except TimeoutError as error:
            wait = min(self._connect_timeout, self.timeout)
            raise TransferTimedOut(f"timed out: no connection within {wait:g} s") from error
        except OSError as error:
            raise TransferUnavailable(f"cannot connect: {error.strerror or error}") from error
        connection = _Connection(guard)
        try:
            if self._password is not None:
                self._setup(connection, ("AUTH", self._password))
            if self.db:
                self._setup(connection, ("SELECT", self.db))
        except BaseException:
            connection.close()
            raise
        return connection, False

    def _setup(self, connection: _Connection, args: tuple[Argument, ...]) -> None:
        try:
            connection.send(args)
            connection.reply(limit=MAX_LINE, budget=2 * MAX_LINE, max_items=0)
        except ErrorReply as error:
            raise ErrorReply(str(args[0]), error.message) from None
        except TimeoutError as error:
            raise TransferTimedOut(
                f"timed out: no complete reply within {self.timeout:g} s"
            ) from error
        except OSError as error:
            raise TransferUnavailable(str(error) or type(error).__name__) from error

    def _checkin(self, connection: _Connection) -> None:
        if connection.buffer:  # bytes past the reply: the conversation is out of step
            connection.close()
            return
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()
