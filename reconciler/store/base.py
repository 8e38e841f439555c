"""The state store protocol and its values: etcd's data model, whatever the backend.

- Keys are strings (ordered as their UTF-8 bytes, as etcd orders them), values are bytes.
- The store has one revision. It starts at 1 (empty store) and every write bumps it by one:
  a put, a delete that deleted something, a transaction with at least one such write (all of
  its writes share the one revision), the deletion of a lease's keys when the lease expires
  or is revoked (one revision per lease). Keep-alives and reads never bump it.
- Each key carries `create_revision` (when it was last created), `mod_revision` (its last
  write), `version` (writes since creation, 1 after the first) and its lease, if any.
- Reads may ask for a past revision R: the store as it was right after R. `compact(C)` drops
  the history before C: reads at R < C raise Compacted, and so does a watch from S <= C
  (deletes at exactly C may be gone: etcd loses them, see etcd issues 18089 and 19179). The
  way back from Compacted is always: range at the current revision R, watch from R + 1.
- A transaction evaluates every compare against the store before it, then applies either
  its success or its failure operations, all or nothing. A value compare on a missing key
  is false whatever the operator; the other targets of a missing key read as 0.
- Limits are etcd's defaults, enforced by every backend so a caller that works on one works
  on the other: values up to 1 MiB, keys up to 4 KiB, 128 operations per transaction.

The store is untrusted (DESIGN.md section 1): it keeps bytes, and callers sign and verify
what they keep in it. Nothing here knows what the bytes mean.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NewType, Protocol, Self

from reconciler.store.errors import BadRequest

LeaseId = NewType("LeaseId", int)

MAX_KEY = 4096
MAX_VALUE = 1024 * 1024
MAX_TXN_OPS = 128
MAX_LEASE_TTL = 9_000_000_000  # etcd's own bound on a TTL (seconds)


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


class Target(enum.Enum):
    """What a compare looks at."""

    VERSION = "version"
    CREATE = "create_revision"
    MOD = "mod_revision"
    VALUE = "value"


class Op(enum.Enum):
    EQUAL = "="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"

    def holds(self, left: int | bytes, right: int | bytes) -> bool:
        """`left <op> right` for two ints or two byte strings (bytes order as etcd's)."""
        if self is Op.EQUAL:
            return left == right
        if self is Op.NOT_EQUAL:
            return left != right
        if self is Op.LESS:
            return left < right  # type: ignore[operator]  # same types, checked by Compare
        return left > right  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: LeaseId | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One change. `kv` is the key after a put, None after a delete; `prev` is the key
    before the change when the backend has it (both backends here do)."""

    kind: EventKind
    key: str
    revision: int
    kv: KeyValue | None
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class RangeResult:
    """`kvs` in key order, at most `limit` of them; `count` is how many match in all and
    `more` whether some were left out. `revision` is the store's revision when it answered
    (also for a read at a past revision): list at it, watch from `revision + 1`."""

    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, the store revision after it, and one result per operation of it."""

    succeeded: bool
    revision: int
    responses: tuple[PutResult | DeleteResult | RangeResult, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """`target(key) <op> operand`: an int for revisions and versions, bytes for a value.

    Build them with the class methods: `Compare.mod_revision("a", "=", 5)`,
    `Compare.value("a", "!=", b"x")`, `Compare.absent("a")`."""

    key: str
    target: Target
    op: Op
    operand: int | bytes

    def __post_init__(self) -> None:
        check_key(self.key)
        if self.target is Target.VALUE:
            if not isinstance(self.operand, bytes):
                raise BadRequest(f"compare on the value of {self.key!r} needs bytes")
            check_value(self.key, self.operand)
        elif isinstance(self.operand, bool) or not isinstance(self.operand, int):
            raise BadRequest(f"compare on {self.target.value} of {self.key!r} needs an int")

    @classmethod
    def version(cls, key: str, op: str, operand: int) -> Compare:
        return cls(key, Target.VERSION, Op(op), operand)

    @classmethod
    def create_revision(cls, key: str, op: str, operand: int) -> Compare:
        return cls(key, Target.CREATE, Op(op), operand)

    @classmethod
    def mod_revision(cls, key: str, op: str, operand: int) -> Compare:
        return cls(key, Target.MOD, Op(op), operand)

    @classmethod
    def value(cls, key: str, op: str, operand: bytes) -> Compare:
        return cls(key, Target.VALUE, Op(op), operand)

    @classmethod
    def exists(cls, key: str) -> Compare:
        return cls(key, Target.CREATE, Op.GREATER, 0)

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, Target.CREATE, Op.EQUAL, 0)

    def holds_for(self, kv: KeyValue | None) -> bool:
        """Whether this compare is true of `kv` (None: the key does not exist)."""
        if self.target is Target.VALUE:
            return kv is not None and self.op.holds(kv.value, self.operand)
        if kv is None:
            return self.op.holds(0, self.operand)
        field = {
            Target.VERSION: kv.version,
            Target.CREATE: kv.create_revision,
            Target.MOD: kv.mod_revision,
        }[self.target]
        return self.op.holds(field, self.operand)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: LeaseId | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        check_value(self.key, self.value)
        if self.lease is not None:
            check_lease(self.lease)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `key`, or every key starting with it when `prefix` is true."""

    key: str
    prefix: bool = False

    def __post_init__(self) -> None:
        check_key(self.key, empty_ok=self.prefix)

    def covers(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key


@dataclass(frozen=True, slots=True)
class Range:
    """Read `key`, or every key starting with it when `prefix` is true (at most `limit`,
    0 for no limit), inside a transaction: it sees the branch's earlier writes."""

    key: str
    prefix: bool = False
    limit: int = 0

    def __post_init__(self) -> None:
        check_key(self.key, empty_ok=self.prefix)
        check_limit(self.limit)


TxnOp = Put | Delete | Range


class Watch(Protocol):
    """Changes under a prefix, from a revision on, in revision order and none missed.

    `poll` waits up to `timeout` seconds for at least one event and returns what has come
    (an empty tuple when nothing did). It raises Compacted when the history it needs is gone
    and StoreUnavailable when the store cannot be reached; after an error the watch is done,
    and `next_revision` says where a new one would resume."""

    prefix: str

    @property
    def next_revision(self) -> int: ...

    def poll(self, timeout: float) -> tuple[Event, ...]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class StateStore(Protocol):
    """The state store: etcd's semantics (module docstring), one of several backends."""

    url: str

    def revision(self) -> int:
        """The store's current revision."""
        ...

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None: ...

    def range(self, prefix: str, *, revision: int | None = None, limit: int = 0) -> RangeResult: ...

    def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> PutResult: ...

    def delete(self, key: str, *, prefix: bool = False) -> DeleteResult: ...

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    def grant(self, ttl: int) -> LeaseId:
        """A new lease of `ttl` seconds (etcd rounds a TTL below its minimum, 2 s by
        default, up to it; `keep_alive` tells the TTL in force)."""
        ...

    def keep_alive(self, lease: LeaseId) -> int:
        """Restart the lease's TTL; returns it. LeaseNotFound once the lease is gone."""
        ...

    def revoke(self, lease: LeaseId) -> None:
        """End the lease now, deleting its keys. LeaseNotFound if it is already gone."""
        ...

    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    def compact(self, revision: int) -> None:
        """Drop the history before `revision`. Compacted if it is already dropped,
        FutureRevision if the store has not reached it."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


# ---------------------------------------------------------------------------------------------
# Checks shared by the backends, so that both refuse the same requests the same way.


def check_key(key: str, *, empty_ok: bool = False) -> None:
    if not isinstance(key, str):
        raise BadRequest(f"a key is a str, not {type(key).__name__}")
    if not key and not empty_ok:
        raise BadRequest("a key must not be empty")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY:
        raise BadRequest(f"key {key[:40]!r}...: {size} bytes, over the limit of {MAX_KEY}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"key {key[:40]!r} is not valid Unicode text") from None


def check_value(key: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise BadRequest(f"the value of {key!r} must be bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE:
        raise BadRequest(
            f"the value of {key!r} is {len(value)} bytes, over the limit of {MAX_VALUE}"
        )


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadRequest(f"a range limit is a whole number, 0 for none; got {limit!r}")


def check_revision(revision: int | None) -> None:
    if revision is None:
        return
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise BadRequest(f"a revision is a whole number from 1, got {revision!r}")


def check_ttl(ttl: int) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_LEASE_TTL:
        raise BadRequest(f"a lease TTL is a whole number of seconds from 1, got {ttl!r}")


def check_lease(lease: LeaseId) -> None:
    if type(lease) is not int or lease < 1:  # bool is an int, but never a lease id
        raise BadRequest(f"a lease id is a positive whole number, got {lease!r}")


def check_txn(
    compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
) -> None:
    """etcd's rules: at most MAX_TXN_OPS compares and operations per branch, and in each
    branch a key is put at most once and never also deleted."""
    for name, items in (("compares", compares), ("success", success), ("failure", failure)):
        if len(items) > MAX_TXN_OPS:
            raise BadRequest(
                f"a transaction has {len(items)} {name}, over the limit of {MAX_TXN_OPS}"
            )
    for compare in compares:
        if not isinstance(compare, Compare):
            raise BadRequest(f"not a Compare: {compare!r}")
    for branch in (success, failure):
        put_keys: set[str] = set()
        deletes: list[Delete] = []
        for op in branch:
            if isinstance(op, Put):
                if op.key in put_keys:
                    raise BadRequest(f"a transaction branch puts {op.key!r} twice")
                put_keys.add(op.key)
            elif isinstance(op, Delete):
                deletes.append(op)
            elif not isinstance(op, Range):
                raise BadRequest(f"not a transaction operation: {op!r}")
        for delete in deletes:
            clash = sorted(key for key in put_keys if delete.covers(key))
            if clash:
                raise BadRequest(f"a transaction branch both puts and deletes {clash[0]!r}")


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (etcd's range_end); b"" when
    there is none (a prefix of only 0xff bytes, or the empty prefix: to the end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b""
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
