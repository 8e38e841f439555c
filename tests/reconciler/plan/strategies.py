"""Hypothesis strategies for the planner: clusters (some nodes with GPUs, some down) and
workloads (some needing GPUs, some selecting labels, some capped per node).

Kept beside the planner's tests; they build `reconciler.plan` values, not documents.
"""

from __future__ import annotations

from hypothesis import strategies as st

from reconciler.plan import GpuNeed, NodeSpec, WorkloadSpec
from tests.reconciler.plan.helpers import C1, DIGEST1, GIB, MIB, gpu, node, workload

MODELS = ("NVIDIA L4", "NVIDIA A100")
GPU_MEMORY = (16 * GIB, 24 * GIB, 80 * GIB)
LABELS: tuple[dict[str, str], ...] = (
    {},
    {"gpu": "true"},
    {"zone": "fast"},
    {"gpu": "true", "zone": "fast"},
)


@st.composite
def clusters(
    draw: st.DrawFn, *, min_nodes: int = 1, max_nodes: int = 8, all_alive: bool = False
) -> list[NodeSpec]:
    """Nodes with distinct names and GPU UUIDs over 1 to 4 failure domains."""
    count = draw(st.integers(min_nodes, max_nodes))
    domains = draw(st.integers(1, 4))
    nodes = []
    serial = 0
    for index in range(count):
        gpus = []
        for _ in range(draw(st.integers(0, 3) if draw(st.booleans()) else st.just(0))):
            serial += 1
            gpus.append(
                gpu(
                    serial,
                    draw(st.sampled_from(MODELS)),
                    draw(st.sampled_from(GPU_MEMORY)),
                    healthy=draw(st.booleans()) or draw(st.booleans()),  # mostly healthy
                )
            )
        nodes.append(
            node(
                f"node-{index}",
                f"site-{draw(st.integers(0, domains - 1))}",
                cpu=draw(st.sampled_from([1000, 2000, 4000, 8000, 16000])),
                memory=draw(st.sampled_from([2, 4, 8, 16, 32])) * GIB,
                labels=draw(st.sampled_from(LABELS)),
                gpus=gpus,
                alive=all_alive or draw(st.integers(0, 9)) > 0,
            )
        )
    return nodes


gpu_needs = st.none() | st.builds(
    GpuNeed,
    count=st.integers(1, 2),
    min_memory=st.sampled_from([0, 16 * GIB, 40 * GIB]),
    models=st.sampled_from([frozenset(), frozenset({"NVIDIA L4"}), frozenset(MODELS)]),
    optional=st.booleans(),
)


@st.composite
def workload_specs(draw: st.DrawFn, name: str, *, max_replicas: int = 6) -> WorkloadSpec:
    replicas = draw(st.integers(0, max_replicas))
    return workload(
        name,
        replicas,
        cpu=draw(st.sampled_from([100, 250, 500, 1000, 2000, 4000])),
        memory=draw(st.sampled_from([128, 512, 1024, 4096])) * MIB,
        commit=C1,
        digest=DIGEST1,
        gpu=draw(gpu_needs),
        selector=draw(st.sampled_from(LABELS[:3])),
        min_domains=draw(st.integers(1, max(1, min(replicas, 3)))),
        per_node=draw(st.none() | st.integers(1, 3)),
    )


@st.composite
def desired(draw: st.DrawFn, *, max_workloads: int = 4) -> list[WorkloadSpec]:
    count = draw(st.integers(1, max_workloads))
    return [draw(workload_specs(f"app-{index}")) for index in range(count)]
