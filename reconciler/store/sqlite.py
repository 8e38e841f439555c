"""The embedded state store: one SQLite file (WAL), shared safely by many processes on one
machine. Its tables are in `reconciler.store.sqlite_tables`.

Writes take the write lock up front (`BEGIN IMMEDIATE`), so two writers never both read and
then collide on commit; reads are plain transactions, which WAL serves from a snapshot
without blocking writers. A busy file is waited for (SQLite's busy timeout) and retried with
backoff until the call's `timeout` has passed, then StoreUnavailable.

Leases expire by the store's own clock (`clock`, time.time by default; tests pass a fake
one): every operation, in whichever process, first deletes the keys of every lease whose
time has passed, one revision per lease, with a delete event for each key. An expiry is thus
seen by the first operation after it, which is the only place anyone could see it.

A watch polls the history table every `poll_interval` seconds.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from reconciler.store import sqlite_tables as tables
from reconciler.store.base import (
    Compare,
    Delete,
    DeleteResult,
    Event,
    KeyValue,
    LeaseId,
    Put,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResult,
    check_key,
    check_lease,
    check_limit,
    check_revision,
    check_ttl,
    check_txn,
)
from reconciler.store.errors import (
    Compacted,
    FutureRevision,
    InvalidReply,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
WATCH_BATCH = 1000


class SqliteStore:
    """The store in the SQLite file at `path` (created when missing; its folder must exist)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if not timeout > 0 or not poll_interval > 0:
            raise ValueError("timeout and poll_interval must be positive seconds")
        self.path = Path(path)
        self.url = f"sqlite:{self.path}"
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{self.url}: cannot open: {error}") from error
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        def settings(conn: sqlite3.Connection) -> None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailable(f"{self.url}: cannot use WAL (journal mode {mode})")
            # Every acknowledged write is on disk, as etcd's are.
            conn.execute("PRAGMA synchronous = FULL")

        self._retry("open", settings, transaction=None)
        self._retry("open", lambda conn: tables.initialize(conn, self.url), transaction="write")

    # -- reads ------------------------------------------------------------------------------

    def revision(self) -> int:
        self._reap_if_due()
        return self._retry("revision", self._revision, transaction="read")

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None:
        check_key(key)
        found = self._read(key, exact=True, revision=revision, limit=0)
        return found.kvs[0] if found.kvs else None

    def range(self, prefix: str, *, revision: int | None = None, limit: int = 0) -> RangeResult:
        check_key(prefix, empty_ok=True)
        check_limit(limit)
        return self._read(prefix, exact=False, revision=revision, limit=limit)

    def _read(self, prefix: str, *, exact: bool, revision: int | None, limit: int) -> RangeResult:
        check_revision(revision)
        self._reap_if_due()

        def work(conn: sqlite3.Connection) -> RangeResult:
            current = self._revision(conn)
            at = self._readable(conn, revision, current)
            return tables.read(
                conn, prefix, exact=exact, limit=limit, at=at, revision=current, where=self.url
            )

        return self._retry("range", work, transaction="read")

    def _readable(self, conn: sqlite3.Connection, revision: int | None, current: int) -> int | None:
        """None to read the current keys, else the past revision to read at (checked)."""
        if revision is None or revision == current:
            return None
        if revision > current:
            raise FutureRevision(
                f"{self.url}: revision {revision} is ahead of the store (at {current})"
            )
        compacted = tables.meta(conn, "compact_revision", self.url)
        if revision < compacted:
            raise Compacted(
                f"{self.url}: revision {revision} is compacted (history starts at {compacted})",
                compacted,
            )
        return revision

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> PutResult:
        response = self.txn((), (Put(key, value, lease),)).responses[0]
        assert isinstance(response, PutResult)
        return response

    def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        response = self.txn((), (Delete(key, prefix),)).responses[0]
        assert isinstance(response, DeleteResult)
        return response

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure)

        def work(conn: sqlite3.Connection) -> TxnResult:
            self._reap(conn)
            before = self._revision(conn)
            succeeded = all(c.holds_for(tables.current(conn, c.key, self.url)) for c in compares)
            revision = before + 1
            sub = 0
            responses: list[PutResult | DeleteResult | RangeResult] = []
            for op in success if succeeded else failure:
                if isinstance(op, Put):
                    if op.lease is not None and not self._lease_exists(conn, op.lease):
                        raise LeaseNotFound(self._no_lease(op.lease, f"put {op.key!r}"))
                    prev = tables.current(conn, op.key, self.url)
                    kv = KeyValue(
                        op.key,
                        op.value,
                        prev.create_revision if prev else revision,
                        revision,
                        prev.version + 1 if prev else 1,
                        op.lease,
                    )
                    tables.write_put(conn, kv, sub)
                    sub += 1
                    responses.append(PutResult(revision, prev))
                elif isinstance(op, Delete):
                    doomed = self._current_range(conn, op.key, op.prefix, 0).kvs
                    sub = tables.write_deletes(conn, doomed, revision, sub)
                    responses.append(DeleteResult(revision, len(doomed), doomed))
                else:
                    # Sees this branch's earlier writes, as in etcd.
                    responses.append(self._current_range(conn, op.key, op.prefix, op.limit))
            after = revision if sub else before
            tables.set_meta(conn, "revision", after)
            return TxnResult(succeeded, after, tuple(replace(r, revision=after) for r in responses))

        return self._retry("txn", work, transaction="write")

    def _current_range(
        self, conn: sqlite3.Connection, key: str, prefix: bool, limit: int
    ) -> RangeResult:
        """The keys now, inside a transaction (its revision is filled in at its end)."""
        return tables.read(
            conn, key, exact=not prefix, limit=limit, at=None, revision=0, where=self.url
        )

    def compact(self, revision: int) -> None:
        check_revision(revision)

        def work(conn: sqlite3.Connection) -> None:
            self._reap(conn)
            current = self._revision(conn)
            compacted = tables.meta(conn, "compact_revision", self.url)
            if revision > current:
                raise FutureRevision(
                    f"{self.url}: cannot compact at {revision}: the store is at {current}"
                )
            if revision <= compacted:
                raise Compacted(
                    f"{self.url}: cannot compact at {revision}: compacted at {compacted}",
                    compacted,
                )
            tables.compact(conn, revision)
            tables.set_meta(conn, "compact_revision", revision)

        self._retry("compact", work, transaction="write")

    # -- leases -----------------------------------------------------------------------------

    def grant(self, ttl: int) -> LeaseId:
        check_ttl(ttl)

        def work(conn: sqlite3.Connection) -> LeaseId:
            self._reap(conn)
            while True:  # ids are random 62-bit numbers: a clash is rare, and retried
                lease = LeaseId(secrets.randbelow(2**62) + 1)
                if not self._lease_exists(conn, lease):
                    break
            conn.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, self._clock() + ttl))
            return lease

        return self._retry("grant", work, transaction="write")

    def keep_alive(self, lease: LeaseId) -> int:
        check_lease(lease)

        def work(conn: sqlite3.Connection) -> int:
            self._reap(conn)
            row = conn.execute("SELECT ttl FROM leases WHERE id = ?", (lease,)).fetchone()
            if row is None:
                raise LeaseNotFound(self._no_lease(lease, "keep-alive"))
            ttl: int = row[0]
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE id = ?", (self._clock() + ttl, lease)
            )
            return ttl

        return self._retry("keep-alive", work, transaction="write")

    def revoke(self, lease: LeaseId) -> None:
        check_lease(lease)

        def work(conn: sqlite3.Connection) -> None:
            self._reap(conn)
            if not self._lease_exists(conn, lease):
                raise LeaseNotFound(self._no_lease(lease, "revoke"))
            self._end_lease(conn, lease)

        self._retry("revoke", work, transaction="write")

    def _lease_exists(self, conn: sqlite3.Connection, lease: int) -> bool:
        return conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is not None

    def _no_lease(self, lease: int, what: str) -> str:
        return f"{self.url}: {what}: lease {lease:x} not found (never granted, expired or revoked)"

    def _end_lease(self, conn: sqlite3.Connection, lease: int) -> None:
        doomed = tables.keys_of_lease(conn, lease, self.url)
        if doomed:
            revision = self._revision(conn) + 1
            tables.write_deletes(conn, doomed, revision, 0)
            tables.set_meta(conn, "revision", revision)
        conn.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _reap(self, conn: sqlite3.Connection) -> None:
        """End every lease whose time has passed (inside a write transaction)."""
        due = conn.execute(
            "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id", (self._clock(),)
        ).fetchall()
        for (lease,) in due:
            self._end_lease(conn, lease)

    def _reap_if_due(self) -> None:
        """Before a read: reap in a write transaction, only when some lease is due."""
        now = self._clock()

        def due(conn: sqlite3.Connection) -> bool:
            query = "SELECT 1 FROM leases WHERE expires_at <= ? LIMIT 1"
            return conn.execute(query, (now,)).fetchone() is not None

        if self._retry("lease expiry", due, transaction=None):
            self._retry("lease expiry", self._reap, transaction="write")

    # -- watch ------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> SqliteWatch:
        check_key(prefix, empty_ok=True)
        check_revision(start_revision)
        return SqliteWatch(self, prefix, start_revision)

    def _events(self, prefix: str, start: int) -> list[Event]:
        self._reap_if_due()

        def work(conn: sqlite3.Connection) -> list[Event]:
            compacted = tables.meta(conn, "compact_revision", self.url)
            if start <= compacted:
                raise Compacted(
                    f"{self.url}: cannot watch from revision {start}: compacted at {compacted}",
                    compacted,
                )
            if start > self._revision(conn):
                return []
            return tables.events(conn, prefix, start, WATCH_BATCH, self.url)

        return self._retry("watch", work, transaction="read")

    # -- plumbing ---------------------------------------------------------------------------

    def _revision(self, conn: sqlite3.Connection) -> int:
        return tables.meta(conn, "revision", self.url)

    def _retry(
        self,
        what: str,
        work: Callable[[sqlite3.Connection], T],
        *,
        transaction: str | None,
    ) -> T:
        """Run `work` in a transaction ("read", "write", or None for none), again while the
        file is busy, until `timeout` has passed. `work` must not change anything but the
        database: a failed attempt is rolled back and run again from the start."""
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            with self._lock:
                if self._closed:
                    raise StoreError(f"{self.url}: {what}: the store is closed")
                conn = self._conn
                try:
                    if transaction is not None:
                        conn.execute("BEGIN IMMEDIATE" if transaction == "write" else "BEGIN")
                    result = work(conn)
                    if conn.in_transaction:
                        conn.execute("COMMIT")
                    return result
                except sqlite3.OperationalError as error:
                    _rollback(conn)
                    if not _busy(error):
                        raise StoreUnavailable(f"{self.url}: {what}: {error}") from error
                    if time.monotonic() >= deadline:
                        raise StoreUnavailable(
                            f"{self.url}: {what}: busy: the store stayed locked for "
                            f"{self.timeout:g} s ({error})"
                        ) from error
                except sqlite3.DatabaseError as error:
                    _rollback(conn)
                    raise InvalidReply(f"{self.url}: {what}: not a store: {error}") from error
                except BaseException:
                    _rollback(conn)
                    raise
            # Another process holds the file: wait a little, more each time, and jitter so
            # that retrying processes do not march in step.
            time.sleep(pause * (0.5 + random.random()))  # noqa: S311  (jitter, not secrets)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


class SqliteWatch:
    """A watch over the history table, polled (see `Watch` in reconciler.store.base)."""

    def __init__(self, store: SqliteStore, prefix: str, start_revision: int) -> None:
        self.prefix = prefix
        self._store = store
        self._next = start_revision
        self._failed: StoreError | None = None
        self._closed = False

    @property
    def next_revision(self) -> int:
        return self._next

    def poll(self, timeout: float) -> tuple[Event, ...]:
        if self._closed:
            raise StoreError(f"{self._store.url}: watch of {self.prefix!r}: closed")
        if self._failed is not None:
            raise self._failed
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                found = self._store._events(self.prefix, self._next)
            except StoreError as error:
                self._failed = error
                raise
            if found:
                self._next = found[-1].revision + 1
                return tuple(found)
            left = deadline - time.monotonic()
            if left <= 0:
                return ()
            time.sleep(min(self._store.poll_interval, left))

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(error)
    return "locked" in text or "busy" in text


def _rollback(conn: sqlite3.Connection) -> None:
    # A failed rollback leaves SQLite to roll back by itself; the original error is what
    # the caller must see.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
