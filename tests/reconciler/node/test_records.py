"""Record bodies are exact: every field present, nothing else, each of its JSON type and within
its bounds; a registration, status or leader record is signed by the node it speaks for; and
whatever a signed body holds, reading it gives the record or `MalformedRecord`, nothing else."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from reconciler.node.identity import (
    ForgedRecord,
    Json,
    MalformedRecord,
    NodeKey,
    RecordKind,
    WrongKind,
    WrongSigner,
)
from reconciler.node.records import (
    AssignmentStatus,
    EventRecord,
    EventType,
    GpuInfo,
    Inventory,
    LeaderRecord,
    Phase,
    Record,
    Registration,
    ShareState,
    VolumeStatus,
    fit_message,
    open_assignment,
    open_record,
    sign_assignment,
    sign_record,
)
from reconciler.plan.assignment import Assignment, AssignmentKey
from reconciler.plan.inputs import ArtifactDigest, CommitId, GpuUuid, NodeName, WorkloadName

KEY_A = NodeKey(Ed25519PrivateKey.generate())
KEY_B = NodeKey(Ed25519PrivateKey.generate())
KEYS = {"a": KEY_A.public_key_line, "b": KEY_B.public_key_line}
COMMIT = CommitId("3f2a1c" + "0" * 34)
GPU = GpuInfo(GpuUuid("GPU-6f1c2a7e-0000-4000-8000-000000000002"), "NVIDIA L4", 24 << 30, True,
              41, 3 << 30)  # fmt: skip

REGISTRATION = Registration(
    node=NodeName("a"), circle="demo", failure_domain="rack-1", address="http://10.0.0.5:7400",
    inventory=Inventory(cpu=8000, memory=32 << 30, disk=500 << 30, gpus=(GPU,)), commit=COMMIT,
    seq=7, started_at=1_700_000_000, heartbeat_at=1_700_000_030, agent="0.1.0",
)  # fmt: skip
LEADER = LeaderRecord(NodeName("a"), since=1_700_000_000)
STATUS = AssignmentStatus(
    node=NodeName("a"), workload=WorkloadName("langid"), slot=0, seq=7, phase=Phase.REFUSED,
    reason="DigestMismatch", message="artifact sha256:ab… is not the approved one", commit=COMMIT,
    observed_at=1_700_000_040,
)  # fmt: skip
EVENT = EventRecord(
    time_ms=1_700_000_040_123, type=EventType.WARNING, reason="NodeLost", object="node/b",
    node=NodeName("b"), commit=None, message="lease expired 30 s ago",
)  # fmt: skip
ASSIGNMENT = Assignment(
    workload=WorkloadName("langid"), slot=0, node=NodeName("b"), commit=COMMIT, seq=7,
    digest=ArtifactDigest("sha256:" + "ab" * 32), cpu=500, memory=1 << 30,
    gpus=(GPU.uuid,), epoch=12,
)  # fmt: skip
VOLUME = VolumeStatus(
    node=NodeName("a"), volume="models", object="c0ffee" * 10 + "abcd", name="langid/model.bin",
    k=2, n=3, shares=(ShareState(0, "disk-a", "rack-1", "healthy"),
                      ShareState(1, "disk-b", "rack-2", "corrupt"),
                      ShareState(2, "disk-c", "rack-3", "healthy")),
    margin=0, scrubbed_at=1_700_000_050, repairs=1, repaired_at=1_700_000_049,
)  # fmt: skip
RECORDS: dict[str, Record] = {
    "registration": REGISTRATION, "leader": LEADER, "status": STATUS, "event": EVENT,
    "volume": VOLUME,
}  # fmt: skip


@pytest.mark.parametrize("record", RECORDS.values(), ids=RECORDS)
def test_a_record_survives_its_body_and_its_signature(record: Record) -> None:
    assert type(record).from_body(record.to_body()) == record
    opened = open_record(sign_record(KEY_A, "a", record), type(record), KEYS)
    assert opened.record == record
    assert opened.signer == "a"


def test_the_registration_body_is_documented_exactly() -> None:
    assert rfc8785.dumps(REGISTRATION.to_body()) == (
        b'{"address":"http://10.0.0.5:7400","agent":"0.1.0","circle":"demo",'
        b'"commit":"3f2a1c0000000000000000000000000000000000","failureDomain":"rack-1",'
        b'"format":"circle-registration/1","heartbeatAt":1700000030,"inventory":{"cpu":8000,'
        b'"disk":536870912000,"gpus":[{"healthy":true,"memory":25769803776,'
        b'"memoryUsed":3221225472,"model":"NVIDIA L4",'
        b'"utilization":41,"uuid":"GPU-6f1c2a7e-0000-4000-8000-000000000002"}],'
        b'"memory":34359738368},"node":"a","seq":7,"startedAt":1700000000}'
    )
    assert STATUS.key == AssignmentKey(WorkloadName("langid"), 0, 7, NodeName("a"))


def test_an_assignment_is_signed_by_the_leader_as_its_canonical_dict() -> None:
    value = sign_assignment(KEY_A, "a", ASSIGNMENT)  # for node b, signed by leader a
    opened = open_assignment(value, KEYS)
    assert (opened.signer, opened.record) == ("a", ASSIGNMENT)
    assert opened.payload == rfc8785.dumps(
        {"format": "circle-signed/1", "kind": "assignment", "signer": "a",
         "body": ASSIGNMENT.to_dict()}
    )  # fmt: skip
    with pytest.raises(WrongKind):
        open_record(value, Registration, KEYS)


def test_a_malformed_assignment_body_is_malformed() -> None:
    value = KEY_A.sign(RecordKind.ASSIGNMENT, "a", {**ASSIGNMENT.to_dict(), "cpu": "500"})
    with pytest.raises(MalformedRecord) as raised:
        open_assignment(value, KEYS)
    assert str(raised.value) == (
        "assignment record refused: invalid assignment: cpu must be a whole number from 0; "
        "found '500'"
    )


@pytest.mark.parametrize(
    "record", [REGISTRATION, LEADER, STATUS], ids=["registration", "leader", "status"]
)
def test_a_node_cannot_speak_for_another(record: Record) -> None:
    value = KEY_B.sign(record.KIND, "b", record.to_body())  # node b, writing a's record
    with pytest.raises(WrongSigner) as raised:
        open_record(value, type(record), KEYS)
    assert raised.value.reason.value == "WrongSigner"
    assert str(raised.value) == (
        f"{record.KIND.value} record refused: it is about node 'a' but signed by node 'b'"
    )
    with pytest.raises(ValueError, match=r"^node 'b' cannot sign a .* of 'a'$"):
        sign_record(KEY_B, "b", record)


def test_an_event_about_another_node_is_signed_by_whoever_saw_it() -> None:
    assert open_record(sign_record(KEY_A, "a", EVENT), EventRecord, KEYS).record == EVENT


def test_a_record_no_reader_would_accept_is_never_signed() -> None:
    too_long = EventRecord(1, EventType.NORMAL, "Big", "node/a", None, None, "x" * 1025)
    with pytest.raises(ValueError, match=r"^a reader would refuse this record: event body: "):
        sign_record(KEY_A, "a", too_long)


def test_fit_message_makes_any_text_a_message() -> None:
    assert fit_message("line one\nline\ttwo\x1b[31m") == "line one line two [31m"
    fitted = fit_message("é" * 1000)
    assert fitted == "é" * 512
    assert fit_message("\ud800") == "?"


# --- refusals -------------------------------------------------------------------------------

Change = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Change:
    """Set the field at `path` ("inventory.gpus.0.uuid") to `value`."""

    def change(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(field: str) -> Change:
    return lambda body: body.pop(field)


def _add(field: str) -> Change:
    return lambda body: body.update({field: 1})


TWO_GPUS = [GPU.to_body(), {**GPU.to_body(), "uuid": "GPU-00000000-0000"}]
WHOLE = "must be a whole number from 0 to 9007199254740991"

# id -> (record, change to its body, message)
REFUSED: dict[str, tuple[Record, Change, str]] = {
    "registration-not-an-object": (REGISTRATION, lambda body: body.clear(),
        "registration body: expected exactly the fields format, node, circle, failureDomain, "
        "address, inventory, commit, seq, startedAt, heartbeatAt, agent; missing 'format', "
        "'node', 'circle', 'failureDomain', 'address' and 6 more, unknown none"),
    "registration-unknown-field": (REGISTRATION, _add("epoch"),
        "registration body: expected exactly the fields format, node, circle, failureDomain, "
        "address, inventory, commit, seq, startedAt, heartbeatAt, agent; missing none, "
        "unknown 'epoch'"),
    "registration-other-format": (REGISTRATION, _set("format", "circle-registration/2"),
        "registration body: format is 'circle-registration/2', expected "
        "'circle-registration/1'"),
    "registration-node-not-a-name": (REGISTRATION, _set("node", "A"),
        r"registration body: node 'A' does not match [a-z]([a-z0-9-]{0,61}[a-z0-9])?"),
    "registration-seq-a-string": (REGISTRATION, _set("seq", "7"),
        f"registration body: seq {WHOLE}; found '7'"),
    "registration-seq-true": (REGISTRATION, _set("seq", True),
        f"registration body: seq {WHOLE}; found True"),
    "registration-seq-a-float": (REGISTRATION, _set("seq", 7.5),
        f"registration body: seq {WHOLE}; found 7.5"),
    "registration-seq-negative": (REGISTRATION, _set("seq", -1),
        f"registration body: seq {WHOLE}; found -1"),
    "registration-started-past-2**53": (REGISTRATION, _set("startedAt", 2**53),
        f"registration body: startedAt {WHOLE}; found 9007199254740992"),
    "registration-commit-short": (REGISTRATION, _set("commit", "3f2a1c"),
        "registration body: commit '3f2a1c' does not match [0-9a-f]{40}"),
    "registration-commit-upper": (REGISTRATION, _set("commit", COMMIT.upper()),
        "registration body: commit '3F2A1C000000000000000000000000000000... does not match "
        "[0-9a-f]{40}"),
    "registration-address-with-path": (REGISTRATION, _set("address", "http://x/y"),
        r"registration body: address 'http://x/y' does not match https?://[!-.0-~]{1,250}/?"),
    "registration-address-a-number": (REGISTRATION, _set("address", 7400),
        r"registration body: address 7400 does not match https?://[!-.0-~]{1,250}/?"),
    "registration-agent-with-space": (REGISTRATION, _set("agent", "0.1 beta"),
        "registration body: agent '0.1 beta' does not match [0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"),
    "inventory-a-list": (REGISTRATION, _set("inventory", []),
        "registration body: inventory: expected a JSON object"),
    "inventory-cpu-a-float": (REGISTRATION, _set("inventory.cpu", 0.5),
        f"registration body: inventory: cpu {WHOLE}; found 0.5"),
    "inventory-gpus-not-a-list": (REGISTRATION, _set("inventory.gpus", {}),
        "registration body: inventory: gpus must be a list of at most 64 items"),
    "inventory-65-gpus": (REGISTRATION, _set("inventory.gpus", [GPU.to_body()] * 65),
        "registration body: inventory: gpus must be a list of at most 64 items"),
    "inventory-gpus-unsorted": (REGISTRATION, _set("inventory.gpus", TWO_GPUS),
        "registration body: inventory: gpus must be sorted by uuid, without repeats"),
    "inventory-gpu-twice": (REGISTRATION, _set("inventory.gpus", [GPU.to_body()] * 2),
        "registration body: inventory: gpus must be sorted by uuid, without repeats"),
    "gpu-uuid-not-nvml": (REGISTRATION, _set("inventory.gpus.0.uuid", "MIG-1234567890"),
        r"registration body: inventory: gpus[0]: uuid 'MIG-1234567890' does not match "
        r"GPU-[0-9a-fA-F-]{8,64}"),
    "gpu-healthy-1": (REGISTRATION, _set("inventory.gpus.0.healthy", 1),
        "registration body: inventory: gpus[0]: healthy must be true or false; found 1"),
    "gpu-utilization-101": (REGISTRATION, _set("inventory.gpus.0.utilization", 101),
        "registration body: inventory: gpus[0]: utilization must be a whole number from 0 to "
        "100; found 101"),
    "gpu-model-empty": (REGISTRATION, _set("inventory.gpus.0.model", ""),
        "registration body: inventory: gpus[0]: model must not be empty"),
    "gpu-model-129-bytes": (REGISTRATION, _set("inventory.gpus.0.model", "é" * 65),
        "registration body: inventory: gpus[0]: model is 130 bytes, over 128"),
    "gpu-model-escape": (REGISTRATION, _set("inventory.gpus.0.model", "L4\x1b[2J"),
        "registration body: inventory: gpus[0]: model holds a control character"),
    "gpu-missing-memory-used": (REGISTRATION,
        lambda body: body["inventory"]["gpus"][0].pop("memoryUsed"),
        "registration body: inventory: gpus[0]: expected exactly the fields uuid, model, "
        "memory, healthy, utilization, memoryUsed; missing 'memoryUsed', unknown none"),
    "leader-since-a-string": (LEADER, _set("since", "now"),
        f"leader body: since {WHOLE}; found 'now'"),
    "leader-missing-node": (LEADER, _drop("node"),
        "leader body: expected exactly the fields format, node, since; missing 'node', "
        "unknown none"),
    "status-unknown-phase": (STATUS, _set("phase", "Done"),
        "status body: phase is 'Done', expected one of Accepted, Refused, Pending, Running, "
        "Ready, Failed"),
    "status-phase-lower-case": (STATUS, _set("phase", "ready"),
        "status body: phase is 'ready', expected one of Accepted, Refused, Pending, Running, "
        "Ready, Failed"),
    "status-seq-0": (STATUS, _set("seq", 0),
        "status body: seq must be a whole number from 1 to 9007199254740991; found 0"),
    "status-reason-not-camel-case": (STATUS, _set("reason", "digest mismatch"),
        "status body: reason 'digest mismatch' does not match [A-Z][A-Za-z0-9]{0,63}"),
    "status-message-over-1-KiB": (STATUS, _set("message", "x" * 1025),
        "status body: message is 1025 bytes, over 1024"),
    "status-message-two-lines": (STATUS, _set("message", "a\nb"),
        "status body: message holds a control character"),
    "status-message-line-separator": (STATUS, _set("message", "a\u2028b"),
        "status body: message holds a control character"),
    "status-message-a-list": (STATUS, _set("message", ["a"]),
        "status body: message must be a string; found ['a']"),
    "event-type-unknown": (EVENT, _set("type", "Error"),
        "event body: type is 'Error', expected one of Normal, Warning"),
    "event-object-traversal": (EVENT, _set("object", "node/../a"),
        r"event body: object 'node/../a' does not match "
        r"[a-z]{1,32}(/[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?){1,3}"),
    "event-time-in-seconds-float": (EVENT, _set("timeMs", 1_700_000_000.5),
        f"event body: timeMs {WHOLE}; found 1700000000.5"),
    "event-node-empty": (EVENT, _set("node", ""),
        r"event body: node '' does not match [a-z]([a-z0-9-]{0,61}[a-z0-9])?"),
    "event-commit-a-number": (EVENT, _set("commit", 7),
        "event body: commit 7 does not match [0-9a-f]{40}"),
    "volume-object-not-an-id": (VOLUME, _set("object", "../../etc"),
        "volume status body: object '../../etc' does not match [0-9a-f]{64}"),
    "volume-share-status-unknown": (VOLUME, _set("shares.1.status", "fine"),
        "volume status body: shares[1]: status 'fine' is not one of ('healthy', 'missing', "
        "'corrupt', 'unreachable')"),
    "volume-shares-twice": (VOLUME, _set("shares.1.share", 0),
        "volume status body: shares must be sorted, without repeats"),
    "volume-share-past-n": (VOLUME, _set("shares.2.share", 3),
        "volume status body: a share number is not below n"),
    "volume-n-below-k": (VOLUME, _set("n", 1),
        "volume status body: n must be a whole number from 2 to 256; found 1"),
    "volume-margin-past-bounds": (VOLUME, _set("margin", -257),
        "volume status body: margin must be a whole number from -256 to 256; found -257"),
    "volume-backend-escape": (VOLUME, _set("shares.0.backend", "a\x1b[2J"),
        "volume status body: shares[0]: backend holds a control character"),
    "event-many-unknown-fields": (EVENT, lambda body: body.update({f"f{i}": i for i in range(9)}),
        "event body: expected exactly the fields format, timeMs, type, reason, object, node, "
        "commit, message; missing none, unknown 'f0', 'f1', 'f2', 'f3', 'f4' and 4 more"),
}  # fmt: skip


@pytest.mark.parametrize(("record", "change", "message"), REFUSED.values(), ids=REFUSED)
def test_an_inexact_body_is_malformed(record: Record, change: Change, message: str) -> None:
    body = record.to_body()
    change(body)
    with pytest.raises(MalformedRecord) as raised:
        type(record).from_body(body)
    assert str(raised.value) == message
    assert raised.value.reason.value == "Malformed"
    # Signed and stored as it is, it is refused the same way on the way in.
    try:
        value = KEY_A.sign(record.KIND, "a", body)
    except ValueError:
        return  # past 2**53: RFC 8785 cannot write it, so no value holds it
    with pytest.raises(MalformedRecord) as stored:
        open_record(value, type(record), KEYS)
    assert str(stored.value) == message


def test_a_number_is_a_number_on_the_wire() -> None:
    # RFC 8785 writes 7.0 as 7, as JavaScript does: what a reader sees is the integer.
    value = KEY_A.sign(RecordKind.LEADER, "a", {**LEADER.to_body(), "since": 1_700_000_000.0})
    assert open_record(value, LeaderRecord, KEYS).record == LEADER


def test_the_optional_fields_may_be_null() -> None:
    plain = Registration(
        NodeName("a"), "demo", "rack-1", None, Inventory(1000, 1, 1), COMMIT, 0, 0, 0, "1"
    )
    assert Registration.from_body(plain.to_body()) == plain
    bare = GpuInfo(GPU.uuid, "NVIDIA L4", 0, False)
    assert GpuInfo.from_body(bare.to_body()) == bare


# --- properties -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=10,
)  # fmt: skip


def _field_paths(body: Json, prefix: str = "") -> list[str]:
    """Every field and list item of `body`, as paths `_set` takes."""
    paths: list[str] = []
    items: list[tuple[object, Json]] = []
    if isinstance(body, dict):
        items = list(body.items())
    elif isinstance(body, list):
        items = list(enumerate(body))
    for key, value in items:
        path = f"{prefix}{key}"
        paths.append(path)
        paths.extend(_field_paths(value, path + "."))
    return paths


@given(
    record=st.sampled_from(list(RECORDS.values())),
    pick=st.integers(0, 1000),
    value=JSON,
)
def test_any_value_in_any_field_reads_as_the_record_or_malformed(
    record: Record, pick: int, value: Json
) -> None:
    body = record.to_body()
    paths = _field_paths(body)
    _set(paths[pick % len(paths)], value)(body)
    try:
        stored = KEY_A.sign(record.KIND, "a", body)
    except ValueError:
        return  # a float rfc8785 cannot write the same everywhere: never stored
    try:
        opened = open_record(stored, type(record), KEYS)
    except ForgedRecord as error:
        refused: ForgedRecord | None = error
    else:
        refused = None
        assert opened.record.to_body() == body
    if refused is not None:
        assert isinstance(refused, MalformedRecord | WrongSigner), refused
        assert re.fullmatch(r"[^\n]+", str(refused))


@given(
    node=st.from_regex(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    phase=st.sampled_from(Phase),
    message=st.text(max_size=300).map(fit_message),
    slot=st.integers(0, 2**53 - 1),
)
def test_any_status_a_node_can_make_it_can_sign(
    node: str, phase: Phase, message: str, slot: int
) -> None:
    status = AssignmentStatus(
        NodeName(node), WorkloadName("langid"), slot, 1, phase, "Reason", message, COMMIT, 0
    )
    value = sign_record(KEY_A, node, status)
    assert open_record(value, AssignmentStatus, {node: KEY_A.public_key_line}).record == status
