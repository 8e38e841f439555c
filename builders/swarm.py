"""Fetch the chunks of one artifact from several sources at once, each chunk verified on
arrival and put into the local store (from where the node's chunk server already serves it
to its peers, while the rest is still coming).

Every source gets `workers` threads, and each thread takes the next chunk nobody holds yet,
so a fast source takes more chunks than a slow one without any static split. Sources are
preferred in their order (peers, then configured sources): a later one takes a chunk only while
every earlier one that could is busy to its `workers`, so with work enough all of them fetch
at once, and at the end the earlier ones finish it. Each source's
rate is measured (bytes per second per request, a moving average). A chunk whose request has
taken more than `hedge_after` seconds and several times what its source's rate predicts is
asked of another source as well (the first verified answer is kept): a source that stalls
delays no chunk by more than that, and the others never wait on it. Every request is bounded
by its source's own total deadline (`HttpChunkSource`'s timeout), the whole transfer by
`deadline` when given.

What a source does wrong decides what happens to it, for this transfer:

    ChunkMissing            that chunk is asked elsewhere; the source keeps serving others
    SourceUnavailable       reported once; the source is tried last from then on (only for
                            chunks every other source has failed)
    wrong bytes             reported once; the source is dropped (never asked again)
    any other error         that chunk is asked elsewhere

A chunk that every source has failed makes the transfer fail at once (ChunkUnavailable,
naming what each source said), as does a store that cannot keep what arrived.

With a `sink`, verified bytes go there instead of into the store: a cold materialization
writes each chunk straight into its tree (hashed once, on arrival, and written once), and the
node serves it from the sealed tree once installed (`builders.sealed_trees`). The sink is
called once per chunk, from the fetching thread, with bytes that hash to the chunk's name;
what it raises fails the transfer. Asked again for a chunk delivered already, the swarm
fetches it again (it is not in the store).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from builders.chunks import (
    ChunkCorrupt,
    ChunkError,
    ChunkMissing,
    ChunkSource,
    ChunkStore,
    SourceUnavailable,
)
from builders.chunks import chunk_digest as digest_of
from builders.faults import ChunkUnavailable, MaterializeError
from builders.manifest import Chunk

log = logging.getLogger(__name__)

HEDGE_AFTER = 1.0  # seconds a request may take before a second source is asked too
HEDGE_FACTOR = 4.0  # ...and this many times what its source's measured rate predicts
_POLL = 0.05  # how often idle workers look again for a chunk to hedge
CLOSE_GRACE = 0.25  # seconds a closing transfer waits for requests in flight
_ALPHA = 0.3  # weight of the newest sample in a source's rate
FRESH_BYTES = 128 * 1024 * 1024  # arrived bytes held in memory for the writer, at most


@dataclass
class SourceStats:
    """What one source did in a transfer."""

    name: str
    chunks: int = 0  # chunks whose bytes were kept
    bytes: int = 0
    duplicates: int = 0  # verified, but another source's copy had been kept already
    rate: float | None = None  # bytes per second per request (moving average)
    demoted: str | None = None
    dropped: str | None = None


@dataclass
class _Want:
    chunk: Chunk
    tried: dict[int, str] = field(default_factory=dict)  # source position -> what it said
    flights: dict[int, float] = field(default_factory=dict)  # source position -> since when
    done: bool = False
    queued: bool = True
    landing: bool = False  # a verified copy is being handed to the sink


@dataclass(frozen=True, slots=True)
class Arrival:
    chunk: Chunk
    source: ChunkSource


class Swarm:
    """One transfer (see the module). Add chunks with `want`; `wait` for one, `finish` for
    all; always `close`. `on_chunk` and `on_problem` are called from fetching threads."""

    def __init__(
        self,
        sources: Sequence[ChunkSource],
        store: ChunkStore,
        *,
        workers: int = 4,
        describe: Callable[[Chunk], str] = lambda chunk: "",
        on_problem: Callable[[str], None] | None = None,
        on_chunk: Callable[[ChunkSource, int], None] | None = None,
        hedge_after: float = HEDGE_AFTER,
        deadline: float | None = None,
        sink: Callable[[Chunk, bytes], None] | None = None,
    ) -> None:
        if workers < 1:
            raise MaterializeError(f"workers must be at least 1, got {workers}")
        self.sources = tuple(sources)
        self.store = store
        self.workers = workers
        self.describe = describe
        self.on_problem = on_problem
        self.on_chunk = on_chunk
        self.hedge_after = hedge_after
        self.sink = sink
        self.deadline = None if deadline is None else time.monotonic() + deadline
        self.deadline_seconds = deadline
        self.stats = [SourceStats(source.name) for source in self.sources]
        # The local store as a source has already been asked: materialization fetches only
        # what it lacks. Named in a refusal all the same, as every source is.
        self._local = {p for p, source in enumerate(self.sources) if source is store}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wants: dict[str, _Want] = {}
        self._queue: deque[_Want] = deque()  # not yet held by any source, in fetch order
        self._flying: set[str] = set()
        self._arrivals: deque[Arrival] = deque()
        # Bytes verified on arrival, kept for the writer so that it need not read and hash
        # them again from the store (bounded: beyond, it reads the store).
        self._fresh: dict[str, bytes] = {}
        self._fresh_bytes = 0
        self._open = 0  # chunks wanted and not yet in the store
        self._busy = [0] * len(self.sources)  # requests in flight, by source
        self._failure: MaterializeError | None = None
        self._closing = False
        self._threads: list[threading.Thread] = []

    # -- the caller's side ---------------------------------------------------------------

    def want(self, chunks: Iterable[Chunk], *, first: bool = False) -> None:
        """Fetch these chunks too (`first`: before those already waiting)."""
        with self._lock:
            fresh = []
            for chunk in chunks:
                want = self._wants.get(chunk.sha256)
                if want is None:
                    want = self._wants[chunk.sha256] = _Want(chunk)
                    want.tried.update(dict.fromkeys(self._local, "missing"))
                    fresh.append(want)
                elif want.done and (self.sink is not None or not self.store.has(chunk.sha256)):
                    # The store lost or refused its copy since (or, with a sink, it is wanted
                    # in more places): fetched again, from anyone.
                    want.done, want.queued = False, True
                    want.tried = dict.fromkeys(self._local, "missing")
                    fresh.append(want)
            self._open += len(fresh)
            if first:
                self._queue.extendleft(reversed(fresh))
            else:
                self._queue.extend(fresh)
            for want in fresh:
                self._check_failed(want)
            self._changed.notify_all()
        if not self._threads and fresh:
            self._start()

    def wait(self, chunk: Chunk, progress: Callable[[Arrival], None] | None = None) -> None:
        """Until `chunk` is in the store; raises the transfer's failure."""
        with self._lock:
            while True:
                self._drain(progress)
                if self._failure is not None:
                    raise self._failure
                want = self._wants.get(chunk.sha256)
                if want is None or want.done:
                    return
                self._changed.wait(self._timeout())
                self._check_deadline()

    def finish(self, progress: Callable[[Arrival], None] | None = None) -> None:
        """Until every chunk wanted is in the store; raises the transfer's failure."""
        with self._lock:
            while True:
                self._drain(progress)
                if self._failure is not None:
                    raise self._failure
                if self._open == 0:
                    return
                self._changed.wait(self._timeout())
                self._check_deadline()

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop every worker, waiting up to `grace` seconds for requests still in flight
        (a source closed under one would lose its connection). One that takes longer (a
        stalled source) is not waited for: it ends by its source's deadline, and what it
        brings is dropped."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        until = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))

    def __enter__(self) -> Swarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside: the caller's thread -----------------------------------------------------

    def _start(self) -> None:
        for position, source in enumerate(self.sources):
            if position in self._local:
                continue
            for index in range(self.workers):
                thread = threading.Thread(
                    target=self._work,
                    args=(position, source),
                    name=f"fetch-{position}-{index}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _drain(self, progress: Callable[[Arrival], None] | None) -> None:
        while self._arrivals:
            arrival = self._arrivals.popleft()
            if progress is not None:
                self._lock.release()
                try:
                    progress(arrival)
                finally:
                    self._lock.acquire()

    def _timeout(self) -> float:
        if self.deadline is None:
            return 1.0
        return max(0.0, min(1.0, self.deadline - time.monotonic()))

    def _check_deadline(self) -> None:
        if self.deadline is None or self._failure is not None:
            return
        if time.monotonic() >= self.deadline:
            left = [want for want in self._wants.values() if not want.done]
            self._failure = ChunkUnavailable(
                f"the transfer did not finish within its deadline of {self.deadline_seconds:g} s:"
                f" {len(left)} of {len(self._wants)} chunks still missing"
            )
            self._closing = True
            self._changed.notify_all()

    # -- inside: the workers -------------------------------------------------------------

    def _work(self, position: int, source: ChunkSource) -> None:
        try:
            self._serve(position, source)
        except Exception as error:  # a bug here must fail the transfer, not hang it
            with self._lock:
                if self._failure is None and not self._closing:
                    log.exception("fetching from %s failed", source.name)
                    self._failure = MaterializeError(f"fetching from {source.name}: {error!r}")
                self._changed.notify_all()

    def _serve(self, position: int, source: ChunkSource) -> None:
        stats = self.stats[position]
        while True:
            with self._lock:
                want = self._pick(position)
                while want is None:
                    if self._closing or stats.dropped is not None:
                        return
                    self._changed.wait(_POLL)
                    want = self._pick(position)
                want.flights[position] = time.monotonic()
                self._flying.add(want.chunk.sha256)
                self._busy[position] += 1
            try:
                self._fetch(position, source, want)
            finally:
                with self._lock:
                    self._busy[position] -= 1
                    self._changed.notify_all()

    def _pick(self, position: int) -> _Want | None:
        """The next chunk for this source: one nobody holds, else one overdue elsewhere."""
        if self._closing or self._failure is not None:
            return None
        stats = self.stats[position]
        if stats.dropped is not None:
            return None
        for want in self._queue:
            if position in want.tried or self._earlier_can_take(want, position):
                continue
            if stats.demoted is None or self._only_hope(want, position):
                self._queue.remove(want)
                want.queued = False
                return want
        if stats.demoted is not None:
            return None
        now = time.monotonic()
        late: tuple[float, _Want] | None = None
        for digest in self._flying:
            want = self._wants[digest]
            if want.done or position in want.tried or position in want.flights:
                continue
            if len(want.flights) != 1:
                continue  # being stored, or asked twice already
            lateness = min(
                self._late_by(held, since, want.chunk, now) for held, since in want.flights.items()
            )
            if lateness > 0 and (late is None or lateness > late[0]):
                late = (lateness, want)
        return late[1] if late is not None else None

    def _late_by(self, position: int, since: float, chunk: Chunk, now: float) -> float:
        """How far past its expected time a request is (negative: not yet due)."""
        rate = self.stats[position].rate or max(
            (stats.rate for stats in self.stats if stats.rate), default=None
        )
        expected = HEDGE_FACTOR * chunk.size / rate if rate else 0.0
        return now - since - max(self.hedge_after, expected)

    def _earlier_can_take(self, want: _Want, position: int) -> bool:
        """Whether a source listed before this one has a free worker for `want`: sources
        are preferred in their order (peers, then configured sources), and a later one takes
        a chunk only while every earlier one that could is busy to its capacity."""
        for earlier in range(position):
            stats = self.stats[earlier]
            if (
                earlier not in self._local
                and earlier not in want.tried
                and stats.dropped is None
                and stats.demoted is None
                and self._busy[earlier] < self.workers
            ):
                return True
        return False

    def _only_hope(self, want: _Want, position: int) -> bool:
        """Whether every other usable source has failed this chunk already."""
        return all(
            other == position or other in want.tried or self.stats[other].dropped is not None
            for other in range(len(self.sources))
        )

    def _fetch(self, position: int, source: ChunkSource, want: _Want) -> None:
        chunk = want.chunk
        started = time.monotonic()
        problem: str | None = None
        verdict = "chunk"
        try:
            data = source.get(chunk.sha256, chunk.size)
        except ChunkMissing:
            problem = "missing"
        except SourceUnavailable as error:
            problem, verdict = str(error), "demote"
        except Exception as error:  # noqa: BLE001 - a source's failure, ChunkError or not
            problem = str(error) or repr(error)
        else:
            if len(data) != chunk.size:
                problem = f"sent {len(data)} bytes hashing to {digest_of(data)[:16]}"
                verdict = "drop"
        elapsed = max(time.monotonic() - started, 1e-6)
        if problem is None:
            # Verified by the store as it takes them: the bytes must hash to the name.
            problem = self._arrived(position, source, want, data, elapsed)
            if problem is None:
                return
            verdict = "drop"
        with self._lock:
            want.flights.pop(position, None)
            want.tried[position] = problem
            stats = self.stats[position]
            report = None
            if verdict == "demote" and stats.demoted is None:
                stats.demoted = problem
                report = f"{problem}; it is tried last from now on"
            elif verdict == "drop" and stats.dropped is None:
                stats.dropped = problem
                report = (
                    f"chunk source {source.name} {problem} for chunk {chunk.sha256[:16]}, "
                    "not its bytes: dropped for this transfer"
                )
            if not want.flights:
                self._flying.discard(chunk.sha256)
                if not want.done and not want.queued:
                    want.queued = True
                    self._queue.appendleft(want)  # asked elsewhere next
            if verdict == "drop":
                for other in self._wants.values():
                    self._check_failed(other)
            else:
                self._check_failed(want)
            self._changed.notify_all()
        if report is not None and self.on_problem is not None and not self._closing:
            self.on_problem(report)

    def _arrived(
        self, position: int, source: ChunkSource, want: _Want, data: bytes, elapsed: float
    ) -> str | None:
        """Keep the bytes if they are the chunk's; what was wrong with them otherwise."""
        chunk = want.chunk
        stats = self.stats[position]
        with self._lock:
            if want.done or self._closing:
                want.flights.pop(position, None)
                stats.duplicates += 1
                if not want.flights:
                    self._flying.discard(chunk.sha256)
                return None
        if self.sink is None:
            try:
                self.store.put(data, chunk.sha256)
            except ChunkCorrupt:
                return f"sent {len(data)} bytes hashing to {digest_of(data)[:16]}"
            except ChunkError as error:
                self._fail_keeping(position, want, error)
                return None
        else:
            found = digest_of(data)
            if found != chunk.sha256:
                return f"sent {len(data)} bytes hashing to {found[:16]}"
            with self._lock:
                if want.done or want.landing or self._closing:
                    want.flights.pop(position, None)
                    stats.duplicates += 1
                    if not want.flights:
                        self._flying.discard(chunk.sha256)
                    return None
                want.landing = True
                # Received: a sink that waits (for the disk) is no stalled request to hedge.
                want.flights.pop(position, None)
                if not want.flights:
                    self._flying.discard(chunk.sha256)
            try:
                self.sink(chunk, data)
            except (MaterializeError, OSError) as error:
                self._fail_keeping(position, want, error)
                return None
        sample = chunk.size / elapsed
        with self._lock:
            stats.rate = (
                sample if stats.rate is None else (1 - _ALPHA) * stats.rate + (_ALPHA * sample)
            )
            want.flights.pop(position, None)
            if not want.flights:
                self._flying.discard(chunk.sha256)
            if _settled(want):  # another source's copy came in while this one was stored
                stats.duplicates += 1
                return None
            want.done, want.landing = True, False
            self._open -= 1
            if want.queued:  # never, as it was in flight; kept for safety
                self._queue.remove(want)
                want.queued = False
            stats.chunks += 1
            stats.bytes += chunk.size
            if self.sink is None and self._fresh_bytes + len(data) <= FRESH_BYTES:
                self._fresh[chunk.sha256] = data
                self._fresh_bytes += len(data)
            self._arrivals.append(Arrival(chunk, source))
            self._changed.notify_all()
        if self.on_chunk is not None:
            self.on_chunk(source, chunk.size)
        return None

    def _fail_keeping(self, position: int, want: _Want, error: Exception) -> None:
        """The store or the sink could not keep verified bytes: the transfer fails."""
        with self._lock:
            want.flights.pop(position, None)
            if self._failure is None:
                chunk = want.chunk
                self._failure = MaterializeError(
                    f"chunk {chunk.sha256} (needed by {self.describe(chunk)}): {error}"
                )
            self._changed.notify_all()

    def take(self, chunk: Chunk) -> bytes | None:
        """The verified bytes of a chunk that just arrived, once (None: read the store)."""
        with self._lock:
            data = self._fresh.pop(chunk.sha256, None)
            if data is not None:
                self._fresh_bytes -= len(data)
            return data

    def _check_failed(self, want: _Want) -> None:
        """Fail the transfer if no source is left to try `want` (under the lock)."""
        if want.done or want.flights or self._failure is not None:
            return
        usable = [
            position
            for position in range(len(self.sources))
            if position not in want.tried and self.stats[position].dropped is None
        ]
        if usable:
            return
        said = []
        for position, source in enumerate(self.sources):
            what = want.tried.get(position) or self.stats[position].dropped or "not asked"
            said.append(f"{source.name}: {what}")
        chunk = want.chunk
        tried = "; ".join(said) or "no sources configured"
        self._failure = ChunkUnavailable(
            f"chunk {chunk.sha256} ({chunk.size} bytes, needed by {self.describe(chunk)}) "
            f"is available from none of {len(self.sources)} sources: {tried}"
        )
        self._changed.notify_all()


def _settled(want: _Want) -> bool:
    return want.done
