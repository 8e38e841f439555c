"""The canonical form of an assignment, `circle-assignment/1`: exact bytes in, exact bytes out.

A node reads what the leader signed; any other spelling of the same value is refused, so the
bytes verified are the bytes read. Each refused case changes one thing in the canonical bytes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.plan import Assignment, AssignmentFormatError, apply
from reconciler.plan.actions import Cause, Place, Plan, Stop
from reconciler.plan.errors import PlanInputError
from tests.reconciler.plan.helpers import at, workload

LANGID = workload("langid", 3)
EXAMPLE = at(LANGID, 2, "node-b", 0xC, 0xA, epoch=7)
CANONICAL = (
    b'{"commit":"1111111111111111111111111111111111111111","cpu":500,'
    b'"digest":"sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",'
    b'"epoch":7,"format":"circle-assignment/1","gpus":["GPU-0000000a","GPU-0000000c"],'
    b'"memory":268435456,"node":"node-b","seq":1,"slot":2,"workload":"langid"}'
)


def test_canonical_bytes() -> None:
    assert EXAMPLE.to_json() == CANONICAL
    assert Assignment.from_json(CANONICAL) == EXAMPLE
    assert Assignment.from_dict(EXAMPLE.to_dict()) == EXAMPLE


def _edit(**fields: object) -> bytes:
    document = json.loads(CANONICAL)
    for key, value in fields.items():
        if value is _DROP:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


_DROP = object()


def _reversed() -> bytes:
    document = json.loads(CANONICAL)
    return json.dumps(dict(reversed(document.items())), separators=(",", ":")).encode()


REFUSED: list[tuple[str, bytes, str]] = [
    ("not-json", b"{", "not JSON"),
    ("not-an-object", b"[]", "expected a JSON object"),
    ("spaces", CANONICAL.replace(b",", b", "), "not in canonical form"),
    ("key-order", _reversed(), "not in canonical form"),
    ("duplicate-key", CANONICAL[:-1] + b',"slot":2}', "duplicate key 'slot'"),
    ("unknown-field", _edit(extra=1), "expected exactly the fields"),
    ("missing-field", _edit(epoch=_DROP), "expected exactly the fields"),
    ("other-format", _edit(format="circle-assignment/2"), "format must be"),
    ("slot-as-string", _edit(slot="2"), "slot must be a whole number"),
    ("slot-as-bool", _edit(slot=True), "slot must be a whole number"),
    ("slot-as-float", CANONICAL.replace(b'"slot":2', b'"slot":2.0'), "slot must be a whole number"),
    ("negative-slot", _edit(slot=-1), "slot must be a whole number from 0"),
    ("seq-zero", _edit(seq=0), "seq must be a whole number from 1"),
    ("huge-cpu", _edit(cpu=2**53), "cpu must be a whole number"),
    ("short-commit", _edit(commit="1" * 12), "bad commit"),
    ("upper-case-commit", _edit(commit="A" * 40), "bad commit"),
    ("bad-digest", _edit(digest="sha256:xyz"), "bad digest"),
    ("bad-workload-name", _edit(workload="Langid"), "bad workload name"),
    ("bad-node-name", _edit(node="node_b"), "bad node name"),
    ("bad-gpu-uuid", _edit(gpus=["gpu-1"]), "bad GPU UUID"),
    ("gpus-not-a-list", _edit(gpus="GPU-0000000a"), "gpus must be a list"),
    ("gpus-unsorted", _edit(gpus=["GPU-0000000c", "GPU-0000000a"]), "sorted and without repeats"),
    ("gpus-repeated", _edit(gpus=["GPU-0000000a", "GPU-0000000a"]), "sorted and without repeats"),
    ("too-large", b" " * 20_000, "over 16384 bytes"),
]


@pytest.mark.parametrize(("data", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused(data: bytes, message: str) -> None:
    with pytest.raises(AssignmentFormatError, match=message):
        Assignment.from_json(data)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 10_000),
    st.integers(1, 2**40),
    st.integers(0, 2**40),
    st.lists(st.integers(1, 2**32 - 1), max_size=4, unique=True),
)
def test_round_trip(slot: int, seq: int, epoch: int, gpus: list[int]) -> None:
    assignment = at(workload("w", 1, seq=seq), slot, "n", *gpus, epoch=epoch)
    assert Assignment.from_json(assignment.to_json()) == assignment


def test_apply_adds_and_removes_and_refuses_a_plan_for_other_assignments() -> None:
    one, two = at(LANGID, 0, "node-a"), at(LANGID, 1, "node-b")
    result = apply(
        [one], Plan((Stop(one, Cause.SCALED_DOWN, ""), Place(two, Cause.MISSING, "")), (), ())
    )
    assert result == (two,)
    with pytest.raises(PlanInputError, match="not assigned"):
        apply([two], Plan((Stop(one, Cause.SCALED_DOWN, ""),), (), ()))
    with pytest.raises(PlanInputError, match="assigned already"):
        apply([two], Plan((Place(two, Cause.MISSING, ""),), (), ()))
