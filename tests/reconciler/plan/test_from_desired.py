"""From the example circle's approved state and an observed inventory to a plan.

The example circle (example-circle-repo/) has three nodes in three sites (node-c with an
NVIDIA L4) and one workload, langid: 2 replicas (autoscale 2 to 4), minFailureDomains 2, an
optional GPU of at least 8Gi.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model.node import Gpu
from reconciler.desired.repository import DesiredState
from reconciler.plan import (
    CommitId,
    GpuDevice,
    GpuUuid,
    NodeName,
    ObservedGpu,
    ObservedNode,
    PlanInputError,
    Version,
    apply,
    plan,
    planning_inputs,
)
from tests.conftest import EXAMPLE
from tests.reconciler.plan.helpers import GIB, NOW

HEAD = Version(CommitId("c" * 40), 4)
L4 = ObservedGpu(GpuUuid("GPU-4c4c4c4c-0001"), "NVIDIA L4", 23 * GIB, True)


@pytest.fixture(scope="module")
def state() -> DesiredState:
    report = check_circle_dir(EXAMPLE)
    assert report.exit_code == 0, report.problems
    return report.state


def seen(
    name: str, *gpus: ObservedGpu, cpu: int = 64000, memory: int = 256 * GIB, **kw: Any
) -> ObservedNode:
    values: dict[str, Any] = {"lease_expires_at": NOW + 30, "verified_seq": HEAD.seq} | kw
    return ObservedNode(NodeName(name), cpu, memory, gpus, **values)


INVENTORY = [seen("node-a"), seen("node-b"), seen("node-c", L4)]


def with_node_gpus(state: DesiredState, name: str, gpus: list[Gpu]) -> DesiredState:
    loaded = state.nodes[name]
    capacity = loaded.document.capacity.model_copy(update={"gpus": gpus})
    document = loaded.document.model_copy(update={"capacity": capacity})
    nodes = state.nodes | {name: dataclasses.replace(loaded, document=document)}
    return dataclasses.replace(state, nodes=nodes)


def test_the_example_circle_spreads_langid_over_its_sites(state: DesiredState) -> None:
    inputs = planning_inputs(state, INVENTORY, NOW, head=HEAD)
    (langid,) = inputs.workloads
    assert (langid.replicas, langid.ready_needed, langid.min_failure_domains) == (2, 2, 2)
    assert (langid.commit, langid.seq) == (HEAD.commit, HEAD.seq)
    two = apply((), plan(inputs.workloads, inputs.nodes, (), NOW, epoch=1))
    assert sorted(a.node for a in two) == ["node-a", "node-b"]

    scaled = planning_inputs(state, INVENTORY, NOW, head=HEAD, replicas={"langid": 3})
    three = plan(scaled.workloads, scaled.nodes, two, NOW, epoch=1)
    assert three.lines() == [
        "place langid slot 2 on node-c with GPU-4c4c4c4c-0001: slot 2 has no replica"
    ]


def test_capacity_is_the_smaller_of_declared_and_observed(state: DesiredState) -> None:
    inputs = planning_inputs(
        state, [seen("node-a", cpu=1500, memory=64 * GIB), *INVENTORY[1:]], NOW, head=HEAD
    )
    node_a, node_b, node_c = inputs.nodes
    assert (node_a.cpu, node_a.memory) == (1500, 8 * GIB)  # observed cpu, declared memory
    assert (node_b.cpu, node_b.memory) == (4000, 8 * GIB)
    assert node_c.gpus == (GpuDevice(L4.uuid, "NVIDIA L4", 23 * GIB, True),)


def test_liveness_is_the_lease_at_now(state: DesiredState) -> None:
    inventory = [seen("node-a", lease_expires_at=NOW), seen("node-b"), seen("stranger")]
    nodes = planning_inputs(state, inventory, NOW, head=HEAD).nodes
    assert [(n.name, n.alive) for n in nodes] == [
        ("node-a", False),  # its lease ran out at now
        ("node-b", True),
        ("node-c", False),  # never seen
    ]  # "stranger" is not admitted: ignored


@pytest.mark.parametrize(
    ("declared", "observed", "offered"),
    [
        (
            [Gpu(model="NVIDIA L4", memory=24 * GIB)],
            [L4, dataclasses.replace(L4, uuid=GpuUuid("GPU-4c4c4c4c-0002"))],
            [("GPU-4c4c4c4c-0001", "NVIDIA L4", 23 * GIB, True)],
        ),
        (
            [Gpu(model="NVIDIA A100", memory=80 * GIB)],
            [L4],
            [],
        ),
        (
            [Gpu(model="NVIDIA L4", memory=24 * GIB, uuid="GPU-4c4c4c4c-0001")],
            [dataclasses.replace(L4, model="NVIDIA T4")],
            [("GPU-4c4c4c4c-0001", "NVIDIA L4", 23 * GIB, False)],
        ),
        (
            [Gpu(model="NVIDIA L4", memory=16 * GIB, uuid="GPU-4c4c4c4c-0001")],
            [dataclasses.replace(L4, healthy=False)],
            [("GPU-4c4c4c4c-0001", "NVIDIA L4", 16 * GIB, False)],
        ),
        (
            [Gpu(model="NVIDIA L4", memory=24 * GIB, uuid="GPU-4c4c4c4c-0009")],
            [L4],
            [],
        ),
    ],
    ids=[
        "unpinned-takes-one-of-its-model",
        "other-model-not-offered",
        "pinned-uuid-reporting-another-model-is-unhealthy",
        "unhealthy-and-smaller-declared-memory",
        "pinned-uuid-not-seen-not-offered",
    ],
)
def test_gpus_offered_are_declared_and_seen(
    state: DesiredState, declared: list[Gpu], observed: list[ObservedGpu], offered: list[Any]
) -> None:
    changed = with_node_gpus(state, "node-c", declared)
    inventory = [*INVENTORY[:2], seen("node-c", *observed)]
    node_c = planning_inputs(changed, inventory, NOW, head=HEAD).nodes[2]
    assert [(g.uuid, g.model, g.memory, g.healthy) for g in node_c.gpus] == offered


def test_versions_and_the_build_lock(state: DesiredState) -> None:
    loaded = state.workloads["langid"]
    artifact = loaded.document.artifact.model_copy(update={"digest": None})
    unpinned = loaded.document.model_copy(update={"artifact": artifact})
    changed = dataclasses.replace(
        state, workloads={"langid": dataclasses.replace(loaded, document=unpinned)}
    )
    older = Version(CommitId("b" * 40), 2)
    (langid,) = planning_inputs(
        changed, INVENTORY, NOW, head=HEAD, versions={"langid": older}
    ).workloads
    assert (langid.commit, langid.seq) == (older.commit, 2)
    # The workload no longer pins a digest; its build's lock does.
    assert langid.digest == state.builds["langid-service"].document.digest


@pytest.mark.parametrize(
    ("replicas", "fixed", "message"),
    [
        ({"langid": 5}, False, "a decision of 5 replicas is outside the approved bounds [2, 4]"),
        ({"langid": 1}, False, "a decision of 1 replicas is outside the approved bounds [2, 4]"),
        ({"other": 2}, False, "replica decisions for unknown workloads: other"),
        ({"langid": 3}, True, "has no autoscale: its 2 replicas are fixed"),
    ],
    ids=["above-max", "below-min", "unknown-workload", "fixed-count"],
)
def test_decisions_outside_the_approved_bounds_are_refused(
    state: DesiredState, replicas: dict[str, int], fixed: bool, message: str
) -> None:
    if fixed:
        loaded = state.workloads["langid"]
        document = loaded.document.model_copy(update={"autoscale": None})
        state = dataclasses.replace(
            state, workloads={"langid": dataclasses.replace(loaded, document=document)}
        )
    with pytest.raises(PlanInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        planning_inputs(state, INVENTORY, NOW, head=HEAD, replicas=replicas)


def test_two_reports_for_one_node_are_refused(state: DesiredState) -> None:
    with pytest.raises(PlanInputError, match="two inventory reports for node node-a"):
        planning_inputs(state, [*INVENTORY, seen("node-a")], NOW, head=HEAD)
