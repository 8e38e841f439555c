"""The bodies of the records nodes and the leader sign into the state store, exact and typed.

Each is a frozen value with `to_body()` and a strict `from_body()`: exactly its fields, each of
exactly its JSON type (`"2"` is not `2`, `true` is not `1`, no floats), strings and lists
bounded, texts without control characters. Anything else is `MalformedRecord`. Field names are
camelCase, as everywhere in a circle; every body names its own `format`:

    registration  circle-registration/1       {node, circle, failureDomain, address, inventory,
                                               commit, seq, startedAt, heartbeatAt, agent}
    status        circle-assignment-status/3  {node, workload, slot, seq, phase, reason,
                                               message, commit, observedAt, restarts,
                                               endpoints, load}
    leader        circle-leader/1             {node, since}
    event         circle-event/1              {timeMs, type, reason, object, node, commit,
                                               message}
    assignment    circle-assignment/1         reconciler.plan.assignment.Assignment
    volume        circle-volume-status/1      {node, volume, object, name, k, n, shares,
                                               margin, scrubbedAt, repairs, repairedAt}

`sign_record` signs hybrid (Ed25519 + ML-DSA-65) when the node key has an ML-DSA half;
`open_record` opens a stored value (`identity.open_signed`) and reads its body; a registration,
status or leader record must also be signed by the node it is about, or it is `WrongSigner`:
one admitted node can never speak for another. An event may be about any object and is
signed by whoever saw it; an assignment is signed by the leader, which the caller checks
against the current leader record.
"""

from __future__ import annotations

import builtins
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, Self, TypeAlias, TypeVar, cast

from reconciler.node.identity import (
    NAME,
    Json,
    MalformedRecord,
    NodeKey,
    RecordKind,
    WrongSigner,
    open_signed,
)
from reconciler.plan.assignment import Assignment, AssignmentKey
from reconciler.plan.errors import AssignmentFormatError
from reconciler.plan.inputs import CommitId, GpuUuid, NodeName, WorkloadName

MAX_GPUS = 64
MAX_MESSAGE_BYTES = 1024
MAX_ENDPOINTS = 16
MAX_SHARES = 256  # QSS's n is at most 256 (zfec)
_INT_LIMIT = 2**53  # JSON integers every reader agrees on
_COMMIT = re.compile(r"[0-9a-f]{40}")
_GPU_UUID = re.compile(r"GPU-[0-9a-fA-F-]{8,64}")
_REASON = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_ADDRESS = re.compile(r"https?://[!-.0-~]{1,250}/?")  # printable ASCII, no space or `/`
_OBJECT = re.compile(r"[a-z]{1,32}(/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?){1,3}")
_ENDPOINT = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?=[!-~]{1,253}:[0-9]{1,5}")
_OBJECT_ID = re.compile(r"[0-9a-f]{64}")
_SHARE_STATUS = ("healthy", "missing", "corrupt", "unreachable")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # no line breaks, no escapes


class Phase(enum.Enum):
    """Where a node is with one assignment."""

    ACCEPTED = "Accepted"
    REFUSED = "Refused"
    PENDING = "Pending"
    RUNNING = "Running"
    READY = "Ready"
    FAILED = "Failed"


class EventType(enum.Enum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as its node measured it."""

    uuid: GpuUuid
    model: str  # as NVML names it, e.g. "NVIDIA L4"
    memory: int  # bytes
    healthy: bool
    utilization: int | None = None  # percent, when the device reports it
    memory_used: int | None = None  # bytes

    def to_body(self) -> dict[str, Json]:
        return {
            "uuid": self.uuid,
            "model": self.model,
            "memory": self.memory,
            "healthy": self.healthy,
            "utilization": self.utilization,
            "memoryUsed": self.memory_used,
        }

    @classmethod
    def from_body(cls, body: object, what: str = "gpu") -> GpuInfo:
        fields = _Body(body, what, ("uuid", "model", "memory", "healthy", "utilization",
                                    "memoryUsed"))  # fmt: skip
        return cls(
            uuid=GpuUuid(fields.text("uuid", _GPU_UUID)),
            model=fields.words("model", 128),
            memory=fields.whole("memory"),
            healthy=fields.flag("healthy"),
            utilization=fields.whole_or_none("utilization", most=100),
            memory_used=fields.whole_or_none("memoryUsed"),
        )


@dataclass(frozen=True, slots=True)
class Inventory:
    """What a node offers: millicores, bytes of memory and of disk, GPUs sorted by UUID."""

    cpu: int
    memory: int
    disk: int
    gpus: tuple[GpuInfo, ...] = ()

    def to_body(self) -> dict[str, Json]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "disk": self.disk,
            "gpus": [gpu.to_body() for gpu in self.gpus],
        }

    @classmethod
    def from_body(cls, body: object, what: str = "inventory") -> Inventory:
        fields = _Body(body, what, ("cpu", "memory", "disk", "gpus"))
        gpus = tuple(
            GpuInfo.from_body(item, f"{what}: gpus[{index}]")
            for index, item in enumerate(fields.items("gpus", MAX_GPUS))
        )
        uuids = [gpu.uuid for gpu in gpus]
        fields.need(uuids == sorted(set(uuids)), "gpus must be sorted by uuid, without repeats")
        return cls(fields.whole("cpu"), fields.whole("memory"), fields.whole("disk"), gpus)


@dataclass(frozen=True, slots=True)
class Registration:
    """A node's registration and heartbeat, rewritten under its lease while it lives."""

    KIND: ClassVar[RecordKind] = RecordKind.REGISTRATION
    FORMAT: ClassVar[str] = "circle-registration/1"

    node: NodeName
    circle: str  # the circle id
    failure_domain: str
    address: str | None  # where its agent listens, e.g. http://10.0.0.5:7400
    inventory: Inventory
    commit: CommitId  # the applied commit (before the first transition: the introduction's)
    seq: int  # its seq on the Human Chain; 0 before the first transition
    started_at: int  # unix seconds
    heartbeat_at: int  # unix seconds
    agent: str  # the agent's version

    @property
    def subject(self) -> str:
        return self.node

    def to_body(self) -> dict[str, Json]:
        return {
            "format": self.FORMAT,
            "node": self.node,
            "circle": self.circle,
            "failureDomain": self.failure_domain,
            "address": self.address,
            "inventory": self.inventory.to_body(),
            "commit": self.commit,
            "seq": self.seq,
            "startedAt": self.started_at,
            "heartbeatAt": self.heartbeat_at,
            "agent": self.agent,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        fields = _Body(body, "registration body", ("format", "node", "circle", "failureDomain",
                       "address", "inventory", "commit", "seq", "startedAt", "heartbeatAt",
                       "agent"), cls.FORMAT)  # fmt: skip
        return cls(
            node=NodeName(fields.text("node", NAME)),
            circle=fields.text("circle", NAME),
            failure_domain=fields.text("failureDomain", NAME),
            address=fields.text_or_none("address", _ADDRESS),
            inventory=Inventory.from_body(fields.raw("inventory"), "registration body: inventory"),
            commit=CommitId(fields.text("commit", _COMMIT)),
            seq=fields.whole("seq"),
            started_at=fields.whole("startedAt"),
            heartbeat_at=fields.whole("heartbeatAt"),
            agent=fields.text("agent", _VERSION),
        )


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """The leader lease's holder, and since when it holds it."""

    KIND: ClassVar[RecordKind] = RecordKind.LEADER
    FORMAT: ClassVar[str] = "circle-leader/1"

    node: NodeName
    since: int  # unix seconds

    @property
    def subject(self) -> str:
        return self.node

    def to_body(self) -> dict[str, Json]:
        return {"format": self.FORMAT, "node": self.node, "since": self.since}

    @classmethod
    def from_body(cls, body: object) -> Self:
        fields = _Body(body, "leader body", ("format", "node", "since"), cls.FORMAT)
        return cls(NodeName(fields.text("node", NAME)), fields.whole("since"))


@dataclass(frozen=True, slots=True)
class AssignmentStatus:
    """What a node reports about one assignment it was given."""

    KIND: ClassVar[RecordKind] = RecordKind.STATUS
    FORMAT: ClassVar[str] = "circle-assignment-status/3"

    node: NodeName
    workload: WorkloadName
    slot: int
    seq: int  # the assignment's seq (as in AssignmentKey)
    phase: Phase
    reason: str  # CamelCase, e.g. DigestMismatch
    message: str  # one line, at most 1 KiB of UTF-8
    commit: CommitId
    observed_at: int  # unix seconds
    restarts: int = 0  # starts of the replica after its first
    endpoints: tuple[str, ...] = ()  # "NAME=HOST:PORT": where its declared ports are published
    load: int | None = None  # thousandths of its autoscale metric's unit, when measured

    @property
    def subject(self) -> str:
        return self.node

    @property
    def key(self) -> AssignmentKey:
        return AssignmentKey(self.workload, self.slot, self.seq, self.node)

    def to_body(self) -> dict[str, Json]:
        return {
            "format": self.FORMAT,
            "node": self.node,
            "workload": self.workload,
            "slot": self.slot,
            "seq": self.seq,
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "commit": self.commit,
            "observedAt": self.observed_at,
            "restarts": self.restarts,
            "endpoints": list(self.endpoints),
            "load": self.load,
        }

    @classmethod
    def from_body(cls, body: object) -> Self:
        fields = _Body(body, "status body", ("format", "node", "workload", "slot", "seq",
                       "phase", "reason", "message", "commit", "observedAt", "restarts",
                       "endpoints", "load"), cls.FORMAT)  # fmt: skip
        endpoints = fields.items("endpoints", MAX_ENDPOINTS)
        for endpoint in endpoints:
            fields.need(
                isinstance(endpoint, str) and _ENDPOINT.fullmatch(endpoint) is not None,
                f"endpoints: {_show(endpoint)} is not NAME=HOST:PORT",
            )
        return cls(
            node=NodeName(fields.text("node", NAME)),
            workload=WorkloadName(fields.text("workload", NAME)),
            slot=fields.whole("slot"),
            seq=fields.whole("seq", least=1),
            phase=fields.choice("phase", Phase),
            reason=fields.text("reason", _REASON),
            message=fields.words("message", MAX_MESSAGE_BYTES, empty=True),
            commit=CommitId(fields.text("commit", _COMMIT)),
            observed_at=fields.whole("observedAt"),
            restarts=fields.whole("restarts"),
            endpoints=tuple(str(endpoint) for endpoint in endpoints),
            load=fields.whole_or_none("load"),
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened, for people: `circle events` and the dashboard show these."""

    KIND: ClassVar[RecordKind] = RecordKind.EVENT
    FORMAT: ClassVar[str] = "circle-event/1"

    time_ms: int  # unix milliseconds
    type: EventType
    reason: str  # CamelCase, e.g. NodeLost
    object: str  # what it is about: node/a, workload/langid, assignment/langid/0
    node: NodeName | None  # the node it happened on, if any
    commit: CommitId | None  # the commit it concerns, if any
    message: str  # one line, at most 1 KiB of UTF-8

    @property
    def subject(self) -> None:
        return None  # whoever saw it signs it; it may be about another node

    def to_body(self) -> dict[str, Json]:
        return {
            "format": self.FORMAT,
            "timeMs": self.time_ms,
            "type": self.type.value,
            "reason": self.reason,
            "object": self.object,
            "node": self.node,
            "commit": self.commit,
            "message": self.message,
        }

    @classmethod
    def from_body(cls, body: builtins.object) -> Self:  # `object` is a field here
        fields = _Body(body, "event body", ("format", "timeMs", "type", "reason", "object",
                       "node", "commit", "message"), cls.FORMAT)  # fmt: skip
        node = fields.text_or_none("node", NAME)
        commit = fields.text_or_none("commit", _COMMIT)
        return cls(
            time_ms=fields.whole("timeMs"),
            type=fields.choice("type", EventType),
            reason=fields.text("reason", _REASON),
            object=fields.text("object", _OBJECT),
            node=None if node is None else NodeName(node),
            commit=None if commit is None else CommitId(commit),
            message=fields.words("message", MAX_MESSAGE_BYTES, empty=True),
        )


@dataclass(frozen=True, slots=True)
class ShareState:
    """One share of a volume object as a scrub found it."""

    share: int
    backend: str
    failure_domain: str
    status: str  # healthy, missing, corrupt or unreachable

    def to_body(self) -> dict[str, Json]:
        return {
            "share": self.share,
            "backend": self.backend,
            "failureDomain": self.failure_domain,
            "status": self.status,
        }

    @classmethod
    def from_body(cls, body: object, what: str = "share") -> ShareState:
        fields = _Body(body, what, ("share", "backend", "failureDomain", "status"))
        status = fields.words("status", 16)
        fields.need(status in _SHARE_STATUS, f"status {status!r} is not one of {_SHARE_STATUS}")
        return cls(
            share=fields.whole("share", most=MAX_SHARES - 1),
            backend=fields.words("backend", 128),
            failure_domain=fields.words("failureDomain", 128),
            status=status,
        )


@dataclass(frozen=True, slots=True)
class VolumeStatus:
    """The last scrub of one volume object, by the leader that did it: every share's state and
    the object's margin (blocks beyond the k needed in its weakest segment; below 0 it cannot
    be read). Kept without a lease: the newest word on the object, with its time."""

    KIND: ClassVar[RecordKind] = RecordKind.VOLUME
    FORMAT: ClassVar[str] = "circle-volume-status/1"

    node: NodeName  # who scrubbed
    volume: str
    object: str  # the object id (sha256 hex of its manifest's content)
    name: str  # the object's name in the volume
    k: int
    n: int
    shares: tuple[ShareState, ...]  # by share number
    margin: int
    scrubbed_at: int  # unix seconds
    repairs: int = 0  # shares rebuilt by this leader's term
    repaired_at: int | None = None  # unix seconds of the last rebuild

    @property
    def subject(self) -> str:
        return self.node

    @property
    def healthy(self) -> int:
        return sum(1 for share in self.shares if share.status == "healthy")

    def to_body(self) -> dict[str, Json]:
        return {
            "format": self.FORMAT,
            "node": self.node,
            "volume": self.volume,
            "object": self.object,
            "name": self.name,
            "k": self.k,
            "n": self.n,
            "shares": [share.to_body() for share in self.shares],
            "margin": self.margin,
            "scrubbedAt": self.scrubbed_at,
            "repairs": self.repairs,
            "repairedAt": self.repaired_at,
        }

    @classmethod
    def from_body(cls, body: builtins.object) -> Self:  # `object` is a field here
        fields = _Body(body, "volume status body", ("format", "node", "volume", "object",
                       "name", "k", "n", "shares", "margin", "scrubbedAt", "repairs",
                       "repairedAt"), cls.FORMAT)  # fmt: skip
        shares = tuple(
            ShareState.from_body(item, f"volume status body: shares[{index}]")
            for index, item in enumerate(fields.items("shares", MAX_SHARES))
        )
        k = fields.whole("k", least=1, most=MAX_SHARES)
        n = fields.whole("n", least=k, most=MAX_SHARES)
        numbers = [share.share for share in shares]
        fields.need(numbers == sorted(set(numbers)), "shares must be sorted, without repeats")
        fields.need(all(number < n for number in numbers), "a share number is not below n")
        return cls(
            node=NodeName(fields.text("node", NAME)),
            volume=fields.text("volume", NAME),
            object=fields.text("object", _OBJECT_ID),
            name=fields.words("name", 255),
            k=k,
            n=n,
            shares=shares,
            margin=fields.whole("margin", least=-MAX_SHARES, most=MAX_SHARES),
            scrubbed_at=fields.whole("scrubbedAt"),
            repairs=fields.whole("repairs"),
            repaired_at=fields.whole_or_none("repairedAt"),
        )


Record: TypeAlias = Registration | AssignmentStatus | LeaderRecord | EventRecord | VolumeStatus
R = TypeVar("R", bound=Record)
T = TypeVar("T")
_E = TypeVar("_E", bound=enum.Enum)


@dataclass(frozen=True, slots=True)
class Opened(Generic[T]):
    """A record read from the store: who signed it, what it says, and the bytes signed."""

    signer: NodeName
    record: T
    payload: bytes


def fit_message(text: str) -> str:
    """`text` as a record's message: each control character or line break a space, cut to
    at most 1 KiB of UTF-8 at a character boundary."""
    line = _CONTROL.sub(" ", text).encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    return line.decode("utf-8", "ignore")


def sign_record(key: NodeKey, signer: str, record: Record) -> bytes:
    """The value to store for `record`, signed by node `signer`'s `key`. ValueError when a
    reader would refuse it (a caller's bug): it speaks for another node or is out of bounds."""
    if record.subject not in (None, signer):
        raise ValueError(f"node {signer!r} cannot sign a {record.KIND.value} of {record.subject!r}")
    body = record.to_body()
    try:
        type(record).from_body(body)
    except MalformedRecord as error:
        raise ValueError(f"a reader would refuse this record: {error}") from None
    return key.sign(record.KIND, signer, body)


def open_record(
    value: bytes,
    record_type: type[R],
    keys: Mapping[str, str],
    mldsa_keys: Mapping[str, str] | None = None,
) -> Opened[R]:
    """A stored value as a `record_type`, signed by an admitted node (`keys`: name -> public
    key line; `mldsa_keys`: name -> ML-DSA-65 public key line of the nodes that sign hybrid)
    and, unless an event, by the node it is about. ForgedRecord otherwise."""
    signed = open_signed(value, record_type.KIND, keys, mldsa_keys)
    # `from_body` returns Self; mypy sees the union through a bound TypeVar.
    record = cast(R, record_type.from_body(signed.body))
    if record.subject is not None and record.subject != signed.signer:
        raise WrongSigner(
            f"{record_type.KIND.value} record refused: it is about node {record.subject!r} but "
            f"signed by node {signed.signer!r}"
        )
    return Opened(signed.signer, record, signed.payload)


def sign_assignment(key: NodeKey, leader: str, assignment: Assignment) -> bytes:
    """The value to store for `assignment`, signed by the leader."""
    return key.sign(RecordKind.ASSIGNMENT, leader, assignment.to_dict())


def open_assignment(
    value: bytes, keys: Mapping[str, str], mldsa_keys: Mapping[str, str] | None = None
) -> Opened[Assignment]:
    """A stored assignment, signed by an admitted node (by both its keys when it signs hybrid,
    as `open_record`); whether that node is the current leader, and the assignment approved,
    is the caller's to check."""
    signed = open_signed(value, RecordKind.ASSIGNMENT, keys, mldsa_keys)
    try:
        assignment = Assignment.from_dict(signed.body)
    except AssignmentFormatError as error:
        raise MalformedRecord(f"assignment record refused: {error}") from None
    return Opened(signed.signer, assignment, signed.payload)


# --- reading a body ------------------------------------------------------------------------


class _Body:
    """One body being read: exact fields, each of its JSON type, or MalformedRecord."""

    def __init__(
        self, body: object, what: str, fields: tuple[str, ...], form: str | None = None
    ) -> None:
        self._what = what
        if not isinstance(body, dict):
            raise self.refused("expected a JSON object")
        self._body: dict[str, object] = body
        missing = [key for key in fields if key not in body]
        unknown = [key for key in body if key not in fields]
        if missing or unknown:
            raise self.refused(
                f"expected exactly the fields {', '.join(fields)}; "
                f"missing {_listed(missing)}, unknown {_listed(unknown)}"
            )
        if form is not None and body["format"] != form:
            raise self.refused(f"format is {_show(body['format'])}, expected {form!r}")

    def refused(self, problem: str) -> MalformedRecord:
        return MalformedRecord(f"{self._what}: {problem}")

    def need(self, condition: bool, problem: str) -> None:
        if not condition:
            raise self.refused(problem)

    def raw(self, key: str) -> object:
        return self._body[key]

    def text(self, key: str, pattern: re.Pattern[str]) -> str:
        value = self._body[key]
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise self.refused(f"{key} {_show(value)} does not match {pattern.pattern}")
        return value

    def text_or_none(self, key: str, pattern: re.Pattern[str]) -> str | None:
        return None if self._body[key] is None else self.text(key, pattern)

    def words(self, key: str, most_bytes: int, *, empty: bool = False) -> str:
        """Free text for people: one line, no control characters, at most `most_bytes`."""
        value = self._body[key]
        if not isinstance(value, str):
            raise self.refused(f"{key} must be a string; found {_show(value)}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate, only from a caller's own dict
            raise self.refused(f"{key} is not valid Unicode") from None
        self.need(empty or size > 0, f"{key} must not be empty")
        self.need(size <= most_bytes, f"{key} is {size} bytes, over {most_bytes}")
        self.need(_CONTROL.search(value) is None, f"{key} holds a control character")
        return value

    def whole(self, key: str, *, least: int = 0, most: int = _INT_LIMIT - 1) -> int:
        value = self._body[key]
        # `type(...) is int`: a JSON `true` is a Python bool, which is an int subclass.
        if type(value) is not int or not least <= value <= most:
            raise self.refused(
                f"{key} must be a whole number from {least} to {most}; found {_show(value)}"
            )
        return value

    def whole_or_none(self, key: str, *, most: int = _INT_LIMIT - 1) -> int | None:
        return None if self._body[key] is None else self.whole(key, most=most)

    def flag(self, key: str) -> bool:
        value = self._body[key]
        self.need(type(value) is bool, f"{key} must be true or false; found {_show(value)}")
        return bool(value)

    def items(self, key: str, most: int) -> list[object]:
        value = self._body[key]
        if not isinstance(value, list) or len(value) > most:
            raise self.refused(f"{key} must be a list of at most {most} items")
        return value

    def choice(self, key: str, choices: type[_E]) -> _E:
        value = self._body[key]
        for choice in choices:
            if choice.value == value and isinstance(value, str):
                return choice
        allowed = ", ".join(str(choice.value) for choice in choices)
        raise self.refused(f"{key} is {_show(value)}, expected one of {allowed}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _listed(keys: list[str]) -> str:
    if not keys:
        return "none"
    shown = ", ".join(_show(key) for key in keys[:5])
    return shown if len(keys) <= 5 else f"{shown} and {len(keys) - 5} more"
