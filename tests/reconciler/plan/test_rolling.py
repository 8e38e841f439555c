"""Rolling updates: a new approved definition replaces replicas without dropping below the
ready count the workload needs.

The cases start from langid's three replicas of commit 1111... on the example circle's three
nodes and change the workload to commit 2222... (seq 2). The simulations then play the whole
update round by round (plan, apply, the agents report) and check the ready count after every
round.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.plan import (
    Assignment,
    NodeSpec,
    Place,
    Readiness,
    ReadyState,
    WorkloadSpec,
    apply,
)
from reconciler.plan.assignment import AssignmentKey
from tests.reconciler.plan.helpers import (
    C2,
    DIGEST2,
    NOW,
    at,
    example_nodes,
    node,
    ready,
    run,
    workload,
)

A, B, C = "node-a", "node-b", "node-c"
OLD = workload("langid", 3, min_domains=2)
NEW = workload("langid", 3, commit=C2, seq=2, digest=DIGEST2, min_domains=2)
NODES = [dataclasses.replace(n, verified_seq=2) for n in example_nodes()]
RUNNING = [at(OLD, 0, A), at(OLD, 1, B), at(OLD, 2, C)]
ALL_READY = ready(*RUNNING)
CHANGE = "(commit 111111111111 -> commit 222222222222)"
ROLLING = "workload langid: rolling update to commit 222222222222 (seq 2)"
# Nodes with room for exactly one replica each: no room to surge.
FULL = [node(n, f"site-{n}", cpu=500, verified=2) for n in (A, B, C)]


def waiting(updated: int, *slots: str) -> str:
    return f"{ROLLING}, {updated} of 3 slots run it; waiting for {', '.join(slots)} to be ready"


Case = tuple[str, WorkloadSpec, list[NodeSpec], list[Assignment], Any, list[str]]
CASES: list[Case] = [
    (
        "surges-one-slot-beside-the-old-replica",
        NEW,
        NODES,
        RUNNING,
        ALL_READY,
        [
            # beside it means on another node: a node runs one replica of a slot
            f"place langid slot 0 on node-b: replacement for slot 0 {CHANGE}",
            waiting(1, "slot 0 on node-b (placed now)"),
        ],
    ),
    (
        "waits-while-the-replacement-is-not-ready",
        NEW,
        NODES,
        [*RUNNING, at(NEW, 0, A)],
        ALL_READY | ready(at(NEW, 0, A), state=ReadyState.NOT_READY, since=NOW - 130),
        [waiting(1, "slot 0 on node-a (not ready for 2m10s)")],
    ),
    (
        "unknown-readiness-of-the-replacement-waits-too",
        NEW,
        NODES,
        [*RUNNING, at(NEW, 0, A)],
        ALL_READY,
        [waiting(1, "slot 0 on node-a (no readiness reported yet)")],
    ),
    (
        "ready-replacement-stops-the-old-and-the-next-slot-surges",
        NEW,
        NODES,
        [*RUNNING, at(NEW, 0, A)],
        ALL_READY | ready(at(NEW, 0, A)),
        [
            "stop langid slot 0 on node-a: its replacement on node-a is ready",
            f"place langid slot 1 on node-a: replacement for slot 1 {CHANGE}",
            waiting(2, "slot 1 on node-a (placed now)"),
        ],
    ),
    (
        "old-replica-known-not-ready-is-replaced-at-once",
        NEW,
        NODES,
        RUNNING,
        ready(*RUNNING[:2]) | ready(RUNNING[2], state=ReadyState.NOT_READY),
        [
            f"move langid slot 2 node-c -> node-c: it was not ready {CHANGE}",
            waiting(1, "slot 2 on node-c (placed now)"),
        ],
    ),
    (
        "old-replica-of-unknown-readiness-is-kept-until-replaced",
        NEW,
        NODES,
        RUNNING,
        None,
        [
            f"place langid slot 0 on node-b: replacement for slot 0 {CHANGE}",
            waiting(1, "slot 0 on node-b (placed now)"),
        ],
    ),
    (
        "no-room-replaced-in-place-within-min-ready",
        dataclasses.replace(NEW, min_ready=2),
        FULL,
        RUNNING,
        ALL_READY,
        [
            "move langid slot 0 node-a -> node-a: no room for a replacement beside it; "
            f"replaced in place {CHANGE}",
            waiting(1, "slot 0 on node-a (placed now)"),
        ],
    ),
    (
        "no-room-and-every-replica-needed-is-blocked",
        NEW,
        FULL,
        RUNNING,
        ALL_READY,
        [
            f"{ROLLING} is blocked at slot 0: no room for its replacement (needs 500m CPU, "
            "the most free on an alive node is 0 (node-c); replacing it in place would leave "
            "2 ready, below the 3 langid needs)"
        ],
    ),
    (
        "all-replacements-ready-stop-every-old-replica",
        NEW,
        NODES,
        [*RUNNING, at(NEW, 0, A), at(NEW, 1, B), at(NEW, 2, C)],
        ALL_READY | ready(at(NEW, 0, A), at(NEW, 1, B), at(NEW, 2, C)),
        [
            f"stop langid slot {slot} on {where}: its replacement on {where} is ready"
            for slot, where in enumerate((A, B, C))
        ],
    ),
    (
        "unpinned-new-definition-leaves-the-old-replicas-running",
        dataclasses.replace(NEW, digest=None),
        NODES,
        RUNNING,
        ALL_READY,
        [
            f"{ROLLING} is blocked: its artifact has no pinned digest, and a node starts only "
            "an artifact it can verify"
        ],
    ),
    (
        "new-selector-is-honoured-and-old-replicas-are-not-evicted",
        dataclasses.replace(NEW, node_selector=frozenset({("accelerator", "nvidia")})),
        NODES,
        RUNNING,
        ALL_READY,
        [
            f"place langid slot 0 on node-c: replacement for slot 0 {CHANGE}",
            waiting(1, "slot 0 on node-c (placed now)"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("spec", "nodes", "assignments", "readiness", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rolling_update(
    spec: WorkloadSpec,
    nodes: list[NodeSpec],
    assignments: list[Assignment],
    readiness: Any,
    expected: list[str],
) -> None:
    assert run([spec], nodes, assignments, readiness).lines() == expected


def test_resources_of_the_new_commit_are_honoured() -> None:
    bigger = dataclasses.replace(NEW, cpu=1500, memory=2 * 2**30)
    (place,) = run([bigger], NODES, RUNNING, ALL_READY).actions
    assert isinstance(place, Place)
    assert (place.assignment.cpu, place.assignment.memory) == (1500, 2 * 2**30)
    assert (place.assignment.commit, place.assignment.digest) == (C2, DIGEST2)


def _slots_ready(
    assignments: tuple[Assignment, ...], readiness: dict[AssignmentKey, Readiness]
) -> int:
    return len(
        {
            a.slot
            for a in assignments
            if readiness.get(a.key, Readiness(ReadyState.UNKNOWN, 0)).state is ReadyState.READY
        }
    )


def _simulate(
    spec: WorkloadSpec, nodes: list[NodeSpec], *, new_gets_ready: bool = True, rounds: int = 12
) -> list[tuple[Assignment, ...]]:
    """Rounds of plan -> apply -> report: a replica is ready from the round after it starts
    (a new one never, if `new_gets_ready` is false). Returns the assignments of every round."""
    assignments = tuple(RUNNING)
    readiness = ready(*RUNNING)
    history = [assignments]
    needed = spec.ready_needed
    for _ in range(rounds):
        result = run([spec], nodes, assignments, readiness)
        if not result.actions:
            break
        assignments = apply(assignments, result)
        # Right after the actions, before anything new reports: what was ready and survives.
        assert _slots_ready(assignments, readiness) >= needed, result.lines()
        readiness = {
            a.key: Readiness(
                ReadyState.READY
                if a.commit != spec.commit or new_gets_ready
                else ReadyState.NOT_READY,
                NOW,
            )
            for a in assignments
        }
        history.append(assignments)
    return history


@pytest.mark.parametrize(
    ("spec", "nodes"),
    [
        (NEW, NODES),
        (dataclasses.replace(NEW, min_ready=2), FULL),
        (dataclasses.replace(NEW, cpu=1500), NODES),
    ],
    ids=["surge", "in-place-within-min-ready", "bigger-replicas"],
)
def test_an_update_completes_and_never_drops_below_the_ready_count(
    spec: WorkloadSpec, nodes: list[NodeSpec]
) -> None:
    final = _simulate(spec, nodes)[-1]
    assert sorted((a.slot, a.commit) for a in final) == [(slot, C2) for slot in range(3)]
    domains = {n.name: n.failure_domain for n in nodes}
    assert len({domains[a.node] for a in final}) >= spec.min_failure_domains


def test_a_new_version_that_never_gets_ready_stops_the_update_after_one_slot() -> None:
    final = _simulate(NEW, NODES, new_gets_ready=False)[-1]
    assert sorted((a.slot, a.commit[:1]) for a in final) == [
        (0, "1"),
        (0, "2"),
        (1, "1"),
        (2, "1"),
    ]
