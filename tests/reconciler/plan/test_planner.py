"""Planner cases, one cluster each: what the plan says, line by line, in an operator's words.

Each case is (id, workloads, nodes, current assignments, readiness, expected `Plan.lines()`).
`example_nodes()` are the example circle's three nodes: node-a in site-ghent, node-b in
site-cairo, node-c in site-dubai with one NVIDIA L4 (GPU-0000000c).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from reconciler.plan import (
    Assignment,
    GpuNeed,
    NodeSpec,
    Place,
    PlanInputError,
    Reason,
    WorkloadSpec,
    apply,
)
from tests.reconciler.plan.helpers import (
    C2,
    GIB,
    at,
    dead,
    example_nodes,
    gpu,
    node,
    ready,
    run,
    workload,
)

A, B, C = "node-a", "node-b", "node-c"
NODE_A, NODE_B, NODE_C = example_nodes()
OPTIONAL_GPU = GpuNeed(1, 8 * GIB, optional=True)
LANGID = workload("langid", 3, min_domains=2, gpu=OPTIONAL_GPU)
PLAIN = workload("langid", 3, min_domains=2)
ON_GPU = {"gpu": "true"}
NVIDIA = {"accelerator": "nvidia"}
GPU_NODES = [
    node(
        "gpu-1",
        "site-1",
        16000,
        64 * GIB,
        ON_GPU,
        [gpu(1, "NVIDIA L4", 24 * GIB), gpu(2, "NVIDIA A100", 80 * GIB)],
    ),
    node("gpu-2", "site-2", 2000, 64 * GIB, ON_GPU, [gpu(3, healthy=False)]),
    node("cpu-1", "site-1", 16000, 64 * GIB),
]
FIRST = workload("first", 1, gpu=GpuNeed(1, 16 * GIB), selector=ON_GPU)
HOLDER = workload("holder", 1, gpu=GpuNeed(1), selector=NVIDIA)
BIG = workload("big", 1, gpu=GpuNeed(1, 16 * GIB))
INFER = workload("infer", 1, selector=ON_GPU)
CRAMMED = workload("langid", 2, 3000)
ONE, TWO = workload("one", 1, 2000), workload("two", 1, 2000)
EVERY_SLOT = [at(PLAIN, 0, A), at(PLAIN, 1, B), at(PLAIN, 2, C)]


def placed(slot: int, where: str, gpus: str = "") -> str:
    return f"place langid slot {slot} on {where}{gpus}: slot {slot} has no replica"


Case = tuple[str, list[WorkloadSpec], list[NodeSpec], list[Assignment], Any, list[str]]
CASES: list[Case] = [
    (
        "spread-3-replicas-over-3-sites",
        [LANGID],
        example_nodes(),
        [],
        None,
        [placed(0, A), placed(1, B), placed(2, C, " with GPU-0000000c")],
    ),
    (
        "spread-2-replicas-over-2-sites",
        [workload("langid", 2, min_domains=2, gpu=OPTIONAL_GPU)],
        example_nodes(),
        [],
        None,
        [placed(0, A), placed(1, B)],
    ),
    ("keeps-valid-assignments", [PLAIN], example_nodes(), EVERY_SLOT, None, []),
    (
        "gpu-by-memory-takes-the-big-one",
        [workload("big", 1, gpu=GpuNeed(1, 40 * GIB))],
        GPU_NODES,
        [],
        None,
        ["place big slot 0 on gpu-1 with GPU-00000002: slot 0 has no replica"],
    ),
    (
        "gpu-smallest-that-fits",
        [workload("small", 1, gpu=GpuNeed(1, 16 * GIB))],
        GPU_NODES,
        [],
        None,
        ["place small slot 0 on gpu-1 with GPU-00000001: slot 0 has no replica"],
    ),
    (
        "gpu-by-model",
        [workload("model", 1, gpu=GpuNeed(1, models=frozenset({"NVIDIA A100"})))],
        GPU_NODES,
        [],
        None,
        ["place model slot 0 on gpu-1 with GPU-00000002: slot 0 has no replica"],
    ),
    (
        "gpu-two-on-one-node",
        [workload("two", 1, gpu=GpuNeed(2, 16 * GIB))],
        GPU_NODES,
        [],
        None,
        ["place two slot 0 on gpu-1 with GPU-00000001, GPU-00000002: slot 0 has no replica"],
    ),
    (
        "gpu-none-free-says-where",
        [workload("langid", 3, gpu=GpuNeed(1, 8 * GIB), selector={"region": "africa"})],
        example_nodes(),
        [],
        None,
        [
            f"workload langid slot {slot}: needs 1 GPU with >= 8Gi, free: none in site-cairo"
            for slot in range(3)
        ],
    ),
    (
        "gpu-held-and-unhealthy-counted",
        [FIRST, workload("second", 1, gpu=GpuNeed(1, models=frozenset({"NVIDIA L4"})))],
        GPU_NODES,
        [at(FIRST, 0, "gpu-1", 1)],
        None,
        [
            "workload second slot 0: needs 1 GPU (NVIDIA L4), free: none in site-1, site-2 "
            "(1 held, 1 unhealthy)"
        ],
    ),
    (
        "optional-gpu-taken-when-free",
        [workload("opt", 1, gpu=OPTIONAL_GPU, selector=NVIDIA)],
        example_nodes(),
        [],
        None,
        ["place opt slot 0 on node-c with GPU-0000000c: slot 0 has no replica"],
    ),
    (
        "optional-gpu-runs-without-when-held",
        [HOLDER, workload("opt", 1, gpu=OPTIONAL_GPU, selector=NVIDIA)],
        example_nodes(),
        [at(HOLDER, 0, C, 0xC)],
        None,
        ["place opt slot 0 on node-c: slot 0 has no replica"],
    ),
    (
        "node-selector",
        [workload("infer", 2, selector=ON_GPU)],
        GPU_NODES,
        [],
        None,
        [
            "place infer slot 0 on gpu-1: slot 0 has no replica",
            "place infer slot 1 on gpu-2: slot 1 has no replica",
        ],
    ),
    (
        "no-capacity-cpu",
        [workload("infer", 1, 4000, selector=ON_GPU)],
        [node("gpu-1", "site-1", 2000, labels=ON_GPU), node("cpu-1", "site-1", 16000)],
        [],
        None,
        [
            "workload infer slot 0: needs 4 CPU, the most free on a node matching nodeSelector "
            "gpu=true is 2 (gpu-1)"
        ],
    ),
    (
        "no-capacity-memory",
        [workload("langid", 1, 500, 16 * GIB)],
        example_nodes(dead(NODE_C)),
        [],
        None,
        [
            "workload langid slot 0: needs 16Gi memory, the most free on an alive node with "
            "500m CPU free is 8Gi (node-b)"
        ],
    ),
    (
        "selector-matches-no-node",
        [workload("infer", 1, selector={"region": "mars"})],
        example_nodes(),
        [],
        None,
        ["workload infer slot 0: no alive node matches nodeSelector region=mars"],
    ),
    (
        "no-node-alive",
        [workload("langid", 1)],
        [dead(NODE_A), dead(NODE_B), dead(NODE_C)],
        [],
        None,
        ["workload langid slot 0: no node is alive (3 admitted: node-a, node-b, node-c)"],
    ),
    (
        "not-verified-yet",
        [workload("langid", 1, commit=C2, seq=5)],
        example_nodes(),
        [],
        None,
        [
            "workload langid slot 0: no alive node has verified commit 222222222222 (seq 5) "
            "yet; the furthest, node-c, is at seq 1"
        ],
    ),
    (
        "unpinned-artifact",
        [workload("langid", 1, digest=None)],
        example_nodes(),
        [],
        None,
        [
            "workload langid slot 0: its artifact has no pinned digest, and a node starts only "
            "an artifact it can verify"
        ],
    ),
    (
        "shrink-stops-highest-slots",
        [workload("langid", 1)],
        example_nodes(),
        EVERY_SLOT,
        None,
        [
            "stop langid slot 1 on node-b: langid runs 1 replica now",
            "stop langid slot 2 on node-c: langid runs 1 replica now",
        ],
    ),
    (
        "workload-removed",
        [],
        example_nodes(),
        EVERY_SLOT[:2],
        None,
        [
            "stop langid slot 0 on node-a: workload langid is no longer desired",
            "stop langid slot 1 on node-b: workload langid is no longer desired",
        ],
    ),
    (
        "node-loss-reschedules-only-its-slots",
        [PLAIN],
        example_nodes(dead(NODE_B)),
        EVERY_SLOT,
        None,
        ["move langid slot 1 node-b -> node-a: node-b is not alive"],
    ),
    (
        "node-no-longer-admitted",
        [PLAIN],
        [NODE_A, NODE_C],
        EVERY_SLOT,
        None,
        ["move langid slot 1 node-b -> node-a: node-b is no longer admitted"],
    ),
    (
        "node-loss-no-room-left",
        [CRAMMED],
        [node(A, "site-ghent"), node(B, "site-cairo", alive=False)],
        [at(CRAMMED, 0, A), at(CRAMMED, 1, B)],
        None,
        [
            "stop langid slot 1 on node-b: node-b is not alive; no node can take it: needs 3 "
            "CPU, the most free on an alive node is 1 (node-a)",
            "workload langid slot 1: needs 3 CPU, the most free on an alive node is 1 (node-a)",
        ],
    ),
    (
        "unhealthy-gpu-moves-its-replica",
        [BIG],
        [
            node("gpu-1", "site-1", gpus=[gpu(1, healthy=False)]),
            node("gpu-2", "site-2", gpus=[gpu(2)]),
        ],
        [at(BIG, 0, "gpu-1", 1)],
        None,
        [
            "move big slot 0 gpu-1 -> gpu-2 with GPU-00000002: GPU GPU-00000001 on gpu-1 is "
            "unhealthy"
        ],
    ),
    (
        "labels-changed-moves-its-replica",
        [INFER],
        [node("gpu-1", "site-1"), node("gpu-2", "site-2", labels=ON_GPU)],
        [at(INFER, 0, "gpu-1")],
        None,
        ["move infer slot 0 gpu-1 -> gpu-2: gpu-1 no longer matches nodeSelector gpu=true"],
    ),
    (
        "capacity-shrank-moves-the-one-not-known-ready",
        [ONE, TWO],
        [node(A, "site-ghent", cpu=3000), node(B, "site-cairo")],
        [at(ONE, 0, A), at(TWO, 0, A)],
        ready(at(TWO, 0, A)),
        [
            "move one slot 0 node-a -> node-b: node-a has cpu 3, memory 8Gi for cpu 4, memory "
            "512Mi assigned"
        ],
    ),
    (
        "max-replicas-per-node",
        [workload("web", 4, per_node=1)],
        example_nodes(),
        [],
        None,
        [
            "place web slot 0 on node-a: slot 0 has no replica",
            "place web slot 1 on node-b: slot 1 has no replica",
            "place web slot 2 on node-c: slot 2 has no replica",
            "workload web slot 3: at most 1 replica per node, and every alive node that fits "
            "holds 1 already (node-a, node-b, node-c)",
        ],
    ),
    (
        "duplicate-slot-keeps-the-ready-one",
        [PLAIN],
        example_nodes(),
        [at(PLAIN, 0, A), *EVERY_SLOT],
        ready(at(PLAIN, 0, A)),
        [],
    ),
    (
        "two-replicas-of-one-slot-keep-the-ready-one",
        [PLAIN],
        example_nodes(),
        [at(PLAIN, 0, B), *EVERY_SLOT],
        ready(at(PLAIN, 0, B)),
        ["stop langid slot 0 on node-a: slot 0 keeps its replica on node-b"],
    ),
    (
        "spread-short-of-min-failure-domains",
        [workload("langid", 2, min_domains=2)],
        [node("a-1", "site-a"), node("a-2", "site-a")],
        [],
        None,
        [
            "place langid slot 0 on a-2: slot 0 has no replica",
            "place langid slot 1 on a-1: slot 1 has no replica",
            "workload langid: 2 replicas span 1 failure domain (site-a); minFailureDomains is 2",
        ],
    ),
]


@pytest.mark.parametrize(
    ("workloads", "nodes", "assignments", "readiness", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan(
    workloads: list[WorkloadSpec],
    nodes: list[NodeSpec],
    assignments: list[Assignment],
    readiness: Any,
    expected: list[str],
) -> None:
    result = run(workloads, nodes, assignments, readiness)
    assert result.lines() == expected
    # Whatever it says, planning again over its result has nothing more to do.
    again = run(workloads, nodes, apply(assignments, result), readiness)
    assert again.actions == ()
    assert again.unschedulable == result.unschedulable


REASONS = [
    ("gpu-none-free-says-where", Reason.GPU),
    ("no-capacity-cpu", Reason.CPU),
    ("no-capacity-memory", Reason.MEMORY),
    ("selector-matches-no-node", Reason.SELECTOR),
    ("no-node-alive", Reason.NO_NODE_ALIVE),
    ("not-verified-yet", Reason.NOT_VERIFIED),
    ("unpinned-artifact", Reason.UNPINNED),
    ("max-replicas-per-node", Reason.MAX_PER_NODE),
]


@pytest.mark.parametrize(("case", "reason"), REASONS, ids=[r[0] for r in REASONS])
def test_reasons_are_values(case: str, reason: Reason) -> None:
    _, workloads, nodes, assignments, readiness, _ = next(c for c in CASES if c[0] == case)
    result = run(workloads, nodes, assignments, readiness)
    assert {item.reason for item in result.unschedulable} == {reason}


def test_new_assignments_carry_the_definition_and_the_epoch() -> None:
    spec = workload("infer", 1, 1500, 3 * GIB, gpu=GpuNeed(1, 16 * GIB))
    (action,) = run([spec], GPU_NODES, epoch=7).actions
    assert isinstance(action, Place)
    assert at(spec, 0, "gpu-1", 1, epoch=7) == action.assignment


def test_an_assignment_of_a_gpu_not_on_its_node_takes_one_that_is() -> None:
    stolen = at(BIG, 0, "gpu-2", 1)  # GPU-00000001 is gpu-1's
    nodes = [node("gpu-1", "site-1", gpus=[gpu(1)]), node("gpu-2", "site-2", gpus=[gpu(2)])]
    assert run([BIG], nodes, [stolen]).lines() == [
        "move big slot 0 gpu-2 -> gpu-2 with GPU-00000002: GPU GPU-00000001 is not on gpu-2"
    ]


def test_two_holding_one_gpu_keep_one() -> None:
    other = workload("other", 1, gpu=GpuNeed(1, 16 * GIB))
    nodes = [node("gpu-1", "site-1", gpus=[gpu(1)]), node("gpu-2", "site-2", gpus=[gpu(2)])]
    result = run([BIG, other], nodes, [at(BIG, 0, "gpu-1", 1), at(other, 0, "gpu-1", 1)])
    assert result.lines() == [
        "move other slot 0 gpu-1 -> gpu-2 with GPU-00000002: its GPU is also held by big "
        "slot 0 on gpu-1"
    ]


@pytest.mark.parametrize(
    ("workloads", "nodes", "message"),
    [
        ([PLAIN, PLAIN], example_nodes(), "two workloads named 'langid'"),
        ([PLAIN], [NODE_A, NODE_A], "two nodes named 'node-a'"),
        (
            [PLAIN],
            [node("x", "s", gpus=[gpu(1)]), node("y", "s", gpus=[gpu(1)])],
            "GPU GPU-00000001 is listed twice (on x and y)",
        ),
    ],
    ids=["duplicate-workload", "duplicate-node", "gpu-on-two-nodes"],
)
def test_contradictory_inputs_are_refused(
    workloads: list[WorkloadSpec], nodes: list[NodeSpec], message: str
) -> None:
    with pytest.raises(PlanInputError, match=re.escape(message)):
        run(workloads, nodes)
