"""The state store's semantics as a small in-memory model: a dict per revision, a list of
events, leases on a clock. Slow and simple on purpose, so that it is obviously right; the
property test holds the SQLite store to it. It shares only the request checks
(`check_txn` and the value classes) with the real backends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from reconciler.store import (
    Compacted,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventKind,
    FutureRevision,
    KeyValue,
    LeaseId,
    LeaseNotFound,
    Put,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResult,
)
from reconciler.store.base import check_txn


@dataclass
class _Lease:
    ttl: int
    expires_at: float


class ModelStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.revision = 1
        self.compacted = 0
        self.kvs: dict[str, KeyValue] = {}
        self.snapshots: dict[int, dict[str, KeyValue]] = {1: {}}
        self.events: list[Event] = []
        self.leases: dict[int, _Lease] = {}

    # -- reads ------------------------------------------------------------------------------

    def range(self, prefix: str, *, revision: int | None = None, limit: int = 0) -> RangeResult:
        self._reap()
        keys = self._at(revision)
        found = [keys[k] for k in _ordered(keys) if k.startswith(prefix)]
        shown = found[:limit] if limit else found
        return RangeResult(tuple(shown), len(found), len(shown) < len(found), self.revision)

    def _at(self, revision: int | None) -> dict[str, KeyValue]:
        if revision is None:
            return self.kvs
        if revision > self.revision:
            raise FutureRevision(f"revision {revision} is ahead of {self.revision}")
        if revision < self.compacted:
            raise Compacted(f"revision {revision} is compacted", self.compacted)
        return self.snapshots[revision]

    def watch_events(self, start: int) -> list[Event]:
        self._reap()
        if start <= self.compacted:
            raise Compacted(f"cannot watch from {start}", self.compacted)
        return [event for event in self.events if event.revision >= start]

    # -- writes -----------------------------------------------------------------------------

    def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
    ) -> TxnResult:
        check_txn(compares, success, failure)
        self._reap()
        succeeded = all(c.holds_for(self.kvs.get(c.key)) for c in compares)
        branch = success if succeeded else failure
        for op in branch:
            if isinstance(op, Put) and op.lease is not None and op.lease not in self.leases:
                raise LeaseNotFound(f"lease {op.lease:x} not found")
        revision = self.revision + 1
        changed = False
        pending: list[PutResult | DeleteResult | RangeResult] = []
        for op in branch:
            if isinstance(op, Put):
                prev = self.kvs.get(op.key)
                kv = KeyValue(
                    op.key,
                    op.value,
                    prev.create_revision if prev else revision,
                    revision,
                    prev.version + 1 if prev else 1,
                    op.lease,
                )
                self.kvs[op.key] = kv
                self.events.append(Event(EventKind.PUT, op.key, revision, kv, prev))
                changed = True
                pending.append(PutResult(revision, prev))
            elif isinstance(op, Delete):
                doomed = [self.kvs[k] for k in _ordered(self.kvs) if op.covers(k)]
                for kv in doomed:
                    del self.kvs[kv.key]
                    self.events.append(Event(EventKind.DELETE, kv.key, revision, None, kv))
                changed = changed or bool(doomed)
                pending.append(DeleteResult(revision, len(doomed), tuple(doomed)))
            else:
                found = [self.kvs[k] for k in _ordered(self.kvs) if _in(op.key, op.prefix, k)]
                shown = found[: op.limit] if op.limit else found
                pending.append(RangeResult(tuple(shown), len(found), len(shown) < len(found), 0))
        after = revision if changed else self.revision
        if changed:
            self._commit(revision)
        # Every response carries the revision the transaction ended at.
        results = tuple(replace(item, revision=after) for item in pending)
        return TxnResult(succeeded, after, results)

    def compact(self, revision: int) -> None:
        self._reap()
        if revision > self.revision:
            raise FutureRevision(f"cannot compact at {revision}")
        if revision <= self.compacted:
            raise Compacted(f"compacted at {self.compacted}", self.compacted)
        self.compacted = revision

    # -- leases -----------------------------------------------------------------------------

    def grant(self, ttl: int, lease: LeaseId) -> None:
        """Record the lease the real store granted (its ids are random)."""
        self._reap()
        self.leases[lease] = _Lease(ttl, self.clock() + ttl)

    def keep_alive(self, lease: LeaseId) -> int:
        self._reap()
        if lease not in self.leases:
            raise LeaseNotFound(f"lease {lease:x} not found")
        held = self.leases[lease]
        held.expires_at = self.clock() + held.ttl
        return held.ttl

    def revoke(self, lease: LeaseId) -> None:
        self._reap()
        if lease not in self.leases:
            raise LeaseNotFound(f"lease {lease:x} not found")
        self._end(lease)

    def _reap(self) -> None:
        now = self.clock()
        due = sorted((held.expires_at, lease) for lease, held in self.leases.items())
        for expires_at, lease in due:
            if expires_at <= now:
                self._end(lease)

    def _end(self, lease: int) -> None:
        doomed = [self.kvs[k] for k in _ordered(self.kvs) if self.kvs[k].lease == lease]
        if doomed:
            revision = self.revision + 1
            for kv in doomed:
                del self.kvs[kv.key]
                self.events.append(Event(EventKind.DELETE, kv.key, revision, None, kv))
            self._commit(revision)
        del self.leases[lease]

    def _commit(self, revision: int) -> None:
        self.revision = revision
        self.snapshots[revision] = dict(self.kvs)


def _ordered(keys: dict[str, KeyValue]) -> list[str]:
    return sorted(keys, key=lambda key: key.encode())


def _in(key: str, prefix: bool, candidate: str) -> bool:
    return candidate.startswith(key) if prefix else candidate == key
