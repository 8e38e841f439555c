"""Watching etcd through its gateway's streaming POST /v3/watch, without missing a change.

A thread reads the stream and hands events to `poll`. The stream is read in *sessions*: each
ends after `watch_resync` seconds (the socket's total deadline: `qss.deadline`), or when the
connection breaks, and the next opens from the revision after the last event received, on
any endpoint. Every line is bounded (`MAX_LINE`), and so is the wait for each session's
first answer (the store's `timeout`).

etcd 3.4 (and 3.5 before its fixes) can drop events around a compaction: a watch opened at
exactly the compaction's revision misses a delete there (etcd issue 19179), and a watch still
catching up from history when a compaction runs can lose events without being told (18089).
Hence:
- a watch from S is opened from S - 1 (events before S are dropped here), so that etcd
  reports it compacted whenever S <= the compaction's revision, as the protocol says;
- after a session that had history to catch up on, the store is asked whether S - 1 is still
  readable; if a compaction has passed it meanwhile, the watch raises Compacted, and the
  caller re-lists (range at R, watch from R + 1) instead of trusting what it was sent.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self, cast

from qss.deadline import Deadline, GuardedSocket, connect
from reconciler.store import etcd_wire as wire
from reconciler.store.base import Event
from reconciler.store.errors import Compacted, InvalidReply, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from reconciler.store.etcd import EtcdStore

MAX_LINE = 16 * 1024 * 1024  # one response of the stream (etcd fragments larger ones)
MAX_BATCH = 64 * 1024 * 1024  # the fragments of one response together
QUEUE_DEPTH = 256  # batches received and not yet polled: then the stream waits
_BROKEN = (OSError, http.client.HTTPException)


class Stream:
    """One POST /v3/watch to one endpoint, its response read a line at a time, each line
    within what is left of `deadline` (which the reader may replace)."""

    def __init__(self, host: str, port: int, body: bytes, deadline: Deadline) -> None:
        self.guard: GuardedSocket = connect(host, port, deadline)
        self._connection = http.client.HTTPConnection(host, port)
        # http.client uses only sendall, makefile and close of its socket: the guard has them.
        self._connection.sock = cast(socket.socket, self.guard)
        try:
            self._connection.request(
                "POST", "/v3/watch", body=body, headers={"Content-Type": "application/json"}
            )
            self.response = self._connection.getresponse()
        except BaseException:
            self.close()
            raise

    def line(self) -> bytes:
        data = self.response.readline(MAX_LINE + 1)
        if not data:
            raise ConnectionError("the watch stream ended")
        if len(data) > MAX_LINE:
            raise OverflowError(f"a watch response over {MAX_LINE} bytes")
        return data

    def interrupt(self) -> None:
        """Wake a reader blocked on this stream (from another thread)."""
        with contextlib.suppress(OSError):
            self.guard.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.close()
            self.guard.close()


def open_stream(store: EtcdStore, body: bytes, what: str) -> Stream:
    """A watch stream on the first endpoint that takes it (the preferred one first)."""
    failures: list[tuple[str, str]] = []
    refused = True
    count = len(store.endpoints)
    for step in range(count):
        index = (store._preferred + step) % count
        host, port = store.endpoints[index]
        try:
            stream = Stream(host, port, body, Deadline(store.timeout))
        except TimeoutError:
            failures.append((store.names[index], f"no answer within {store.timeout:g} s"))
            refused = False
            continue
        except ConnectionRefusedError:
            failures.append((store.names[index], "connection refused"))
            continue
        except _BROKEN as error:
            failures.append((store.names[index], str(error) or type(error).__name__))
            refused = False
            continue
        if stream.response.status != 200:
            try:
                data = stream.response.read(64 * 1024)
            except _BROKEN:
                data = b""
            finally:
                stream.close()
            raise store.reader.failure(what, stream.response.status, data)
        store._preferred = index
        return stream
    details = (
        failures[0][1] if count == 1 else "; ".join(f"{name}: {why}" for name, why in failures)
    )
    raise StoreUnavailable(f"{store.url}: {'cannot connect' if refused else what}: {details}")


def read_result(store: EtcdStore, stream: Stream) -> wire.Json:
    """The next response of the stream, its fragments joined; an error line raises."""
    events: list[object] = []
    size = 0
    while True:
        data = stream.line()
        size += len(data)
        if size > MAX_BATCH:
            raise InvalidReply(f"{store.url}: watch: a response over {MAX_BATCH} bytes")
        reply = store.reader.parse(data)
        if "error" in reply:
            raise store.reader.failure("watch", 200, data)
        result = reply.get("result")
        if not isinstance(result, dict):
            raise InvalidReply(f"{store.url}: watch: invalid reply: no result: {data[:80]!r}")
        more = result.get("events", [])
        if not isinstance(more, list):
            raise InvalidReply(f"{store.url}: watch: invalid reply: events is not a list")
        events.extend(more)
        if result.get("fragment") is not True:
            return {**result, "events": events}


def find_compact_revision(store: EtcdStore) -> int:
    """The revision etcd was compacted at, which its errors do not say but a watch from
    revision 1 is told. 0 when it is not told in time."""
    body = wire.encode({"create_request": {"key": wire.b64(b"\0"), "start_revision": "1"}})
    stream = open_stream(store, body, "compaction revision")
    try:
        for _ in range(2):  # "created", then "canceled" with the revision
            result = read_result(store, stream)
            if result.get("canceled"):
                return store.reader.integer(result, "compact_revision")
    except (*_BROKEN, OverflowError):
        return 0
    finally:
        stream.close()
    return 0


class EtcdWatch:
    """A watch of `prefix` from `start_revision` (see `Watch` in reconciler.store.base)."""

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int) -> None:
        self.prefix = prefix
        self._store = store
        self._next = start_revision  # after the last event `poll` returned
        self._received = start_revision  # after the last event the thread received
        self._queue: queue.Queue[tuple[Event, ...] | StoreError] = queue.Queue(QUEUE_DEPTH)
        self._failed: StoreError | None = None
        self._closed = False
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._stream_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"etcd watch {prefix!r}", daemon=True
        )
        self._thread.start()

    @property
    def next_revision(self) -> int:
        return self._next

    def poll(self, timeout: float) -> tuple[Event, ...]:
        if self._closed:
            raise StoreError(f"{self._store.url}: watch of {self.prefix!r}: closed")
        if self._failed is not None:
            raise self._failed
        try:
            item = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return ()
        events: list[Event] = []
        while True:
            if isinstance(item, StoreError):
                self._failed = item
                break
            events.extend(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        if not events:
            assert self._failed is not None
            raise self._failed
        self._next = events[-1].revision + 1
        return tuple(events)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        with self._stream_lock:
            if self._stream is not None:
                self._stream.interrupt()
        self._thread.join(self._store.timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._session():
                    self._stop.wait(0.2)  # the stream broke: a short pause before the next
        except StoreError as error:
            self._push(error)
        except Exception as error:  # noqa: BLE001  (whatever ends the thread, poll must know)
            self._push(StoreError(f"{self._store.url}: watch of {self.prefix!r}: {error!r}"))

    def _session(self) -> bool:
        """One session; False when its stream broke before its time was up."""
        start = self._received
        request = {
            **wire.key_range(self.prefix, exact=False),
            "start_revision": str(max(start - 1, 1)),
            "prev_kv": True,
            "fragment": True,
        }
        what = f"watch of {self.prefix!r} from revision {start}"
        stream = open_stream(self._store, wire.encode({"create_request": request}), what)
        with self._stream_lock:
            if self._stop.is_set():
                stream.close()
                return True
            self._stream = stream
        head = 0
        try:
            try:
                created = read_result(self._store, stream)
            except TimeoutError:
                raise StoreUnavailable(
                    f"{self._store.url}: {what}: no answer within {self._store.timeout:g} s"
                ) from None
            except _BROKEN as error:
                raise StoreUnavailable(f"{self._store.url}: {what}: {error}") from error
            if not created.get("created"):
                raise InvalidReply(f"{self._store.url}: {what}: the watch was not created")
            self._check_canceled(created, what)
            head = self._store.reader.revision(created)
            stream.guard.deadline = Deadline(self._store.watch_resync)
            clean = self._follow(stream, what)
        except OverflowError as error:
            raise InvalidReply(f"{self._store.url}: {what}: {error}") from error
        finally:
            with self._stream_lock:
                self._stream = None
            stream.close()
        if 1 < start <= head and not self._stop.is_set():
            self._check_history(start, what)
        return clean

    def _follow(self, stream: Stream, what: str) -> bool:
        """Hand on the events of an open stream until its time is up (True) or it breaks."""
        try:
            while not self._stop.is_set():
                result = read_result(self._store, stream)
                self._check_canceled(result, what)
                batch = [self._store.reader.event(item) for item in result["events"]]
                fresh = tuple(event for event in batch if event.revision >= self._received)
                if fresh:
                    self._push(fresh)
                    self._received = fresh[-1].revision + 1
        except TimeoutError:
            return True  # TimeoutError is an OSError: this clause must come first
        except _BROKEN:
            return False
        return True

    def _check_canceled(self, result: wire.Json, what: str) -> None:
        if not result.get("canceled"):
            return
        compacted = self._store.reader.integer(result, "compact_revision")
        if compacted:
            raise Compacted(f"{self._store.url}: {what}: compacted at {compacted}", compacted)
        reason = str(result.get("cancel_reason", "no reason given"))[:200]
        raise StoreError(f"{self._store.url}: {what}: canceled by etcd: {reason}")

    def _check_history(self, start: int, what: str) -> None:
        """Raise Compacted if a compaction passed `start` while this session caught up."""
        body = {"key": wire.b64(b"\0"), "count_only": True, "revision": str(start - 1)}
        try:
            self._store.call("watch resync", "/v3/kv/range", body, idempotent=True)
        except Compacted as error:
            raise Compacted(
                f"{self._store.url}: {what}: compacted at {error.compact_revision} while "
                "catching up: re-list",
                error.compact_revision,
            ) from error

    def _push(self, item: tuple[Event, ...] | StoreError) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue  # the caller is behind: wait for it, or for close()
