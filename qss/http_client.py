"""One pooled HTTP/1.1 client, bounded in time and bytes, for every HTTP peer this repository
talks to: blob servers (`qss.backends.http`) and chunk servers (`builders.http_chunks`).

Every request has one total deadline (`timeout` seconds from taking a connection to the last
byte of the body, a retry included), enforced on each socket operation by `qss.deadline`: a
server that trickles bytes is cut off at the deadline, not kept alive by its own trickle. A
body is refused once it exceeds the caller's limit: at once when its Content-Length says so,
else after limit + 1 bytes, never more. Error bodies (non-2xx) are kept to their first
`ERROR_BODY` bytes. Idle keep-alive connections are pooled (at most `max_idle`), so threads
that come and go leave no sockets behind; a reused one that the server closed meanwhile is
retried once on a fresh connection, within the same deadline.

Errors: TransferTimedOut (the deadline passed), TransferUnavailable (refused, reset, closed),
ReplyTooLarge, and TransferError (TLS, protocol); the caller names the peer in its own error.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from qss.deadline import Deadline, GuardedSocket, connect
from qss.errors import ReplyTooLarge, TransferError, TransferTimedOut, TransferUnavailable

ERROR_BODY = 64 * 1024

# A reused keep-alive connection the server has meanwhile closed fails in one of these ways
# before any response: the request is sent again once, on a fresh connection.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    ConnectionResetError,
    BrokenPipeError,
)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is a GuardedSocket: every operation of the current
    request waits at most what is left of its deadline."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port)
        self.tls = tls
        self.deadline: Deadline | None = None
        self.guard: GuardedSocket | None = None
        self.response: http.client.HTTPResponse | None = None

    def begin(self, deadline: Deadline) -> None:
        self.deadline = deadline
        if self.guard is not None:
            self.guard.deadline = deadline

    def connect(self) -> None:
        assert self.deadline is not None  # begin() comes first
        self.guard = connect(self.host, self.port, self.deadline, tls=self.tls)
        # http.client calls only sendall, makefile and close on its socket, all of which the
        # guard provides: it stands in for the socket.
        self.sock = cast(socket.socket, self.guard)

    def getresponse(self) -> http.client.HTTPResponse:
        self.response = super().getresponse()
        return self.response

    def close(self) -> None:
        # The response holds the socket open through its reader: closed with the connection,
        # not left to the garbage collector.
        response, self.response = self.response, None
        if response is not None:
            response.close()
        super().close()
        self.guard = None


class HttpPool:
    """Requests to one server (`scheme` http or https, `host`, `port`); thread-safe."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 8,
    ) -> None:
        Deadline(timeout)  # refuses a timeout that is not a positive number of seconds
        self.host = host
        self.port = port
        self.timeout = timeout
        self._tls = (ssl_context or ssl.create_default_context()) if scheme == "https" else None
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._closed = False  # a request finishing after close() closes its connection
        self._lock = threading.Lock()

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def request(
        self,
        method: str,
        path: str,
        *,
        limit: int,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; the reply once its whole body (at most `limit` bytes) is in."""
        deadline = Deadline(self.timeout)
        for attempt in range(2):
            connection, reused = self._checkout()
            connection.begin(deadline)
            try:
                # The server may have refused the body early (413) and closed; its answer can
                # still be read. If not, getresponse fails and the except clauses below decide.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    connection.request(method, path, body=body, headers=dict(headers or {}))
                response = connection.getresponse()
                data = _read_body(response, limit)
            except TimeoutError as error:
                connection.close()
                raise TransferTimedOut(
                    f"timed out: no complete response within {self.timeout:g} s"
                ) from error
            except _STALE_CONNECTION as error:
                connection.close()
                if reused and attempt == 0:
                    continue
                raise TransferUnavailable(_why(error)) from error
            except ssl.SSLError as error:
                connection.close()
                raise TransferError(f"TLS failed: {error}") from error
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise TransferUnavailable(_why(error)) from error
            except TransferError:
                connection.close()
                raise
            if response.will_close or not response.isclosed():
                connection.close()  # unread body left, or the server said so: not reusable
            else:
                self._checkin(connection)
            return Reply(response.status, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for connection in idle:
            connection.close()

    def _checkout(self) -> tuple[_Connection, bool]:
        """An idle connection (reused: True) or a new one, for this request alone."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return _Connection(self.host, self.port, self._tls), False

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()


def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The body, refused (ReplyTooLarge) past `limit` bytes; an error body is cut short."""
    success = 200 <= response.status < 300
    allowed = limit if success else ERROR_BODY
    announced = response.length  # None when chunked or delimited by the connection's end
    if success and announced is not None and announced > allowed:
        raise ReplyTooLarge(
            f"the response announces {announced} bytes, over the limit of {allowed}"
        )
    data = response.read(allowed + 1)
    if len(data) > allowed:
        if success:
            raise ReplyTooLarge(f"the response exceeds {allowed} bytes")
        return data[:allowed]  # an error message, cut; the connection is not reused
    if response.length:
        raise TransferUnavailable(
            f"the response ended after {len(data)} of {len(data) + response.length} bytes"
        )
    return data


def _why(error: BaseException) -> str:
    return str(error) or type(error).__name__
