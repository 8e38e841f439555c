"""Small builders for planner inputs, so that a test case reads as the cluster it describes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from reconciler.plan import (
    ArtifactDigest,
    Assignment,
    CommitId,
    GpuDevice,
    GpuNeed,
    GpuUuid,
    NodeName,
    NodeSpec,
    Plan,
    Readiness,
    ReadyState,
    WorkloadName,
    WorkloadSpec,
    label_set,
    plan,
)
from reconciler.plan.assignment import AssignmentKey

MIB = 2**20
GIB = 2**30
NOW = 1_700_000_000
C1 = CommitId("1" * 40)
C2 = CommitId("2" * 40)
DIGEST1 = ArtifactDigest("sha256:" + "a1" * 32)
DIGEST2 = ArtifactDigest("sha256:" + "b2" * 32)


def gpu(
    number: int, model: str = "NVIDIA L4", memory: int = 24 * GIB, healthy: bool = True
) -> GpuDevice:
    return GpuDevice(GpuUuid(f"GPU-{number:08x}"), model, memory, healthy)


def node(
    name: str,
    domain: str,
    cpu: int = 4000,
    memory: int = 8 * GIB,
    labels: Mapping[str, str] | None = None,
    gpus: Sequence[GpuDevice] = (),
    *,
    alive: bool = True,
    verified: int = 1,
) -> NodeSpec:
    return NodeSpec(
        NodeName(name),
        domain,
        cpu,
        memory,
        verified_seq=verified,
        labels=label_set(dict(labels or {})),
        gpus=tuple(gpus),
        alive=alive,
    )


def example_nodes(*replacements: NodeSpec) -> list[NodeSpec]:
    """The example circle's three nodes (example-circle-repo/nodes/), one per site; a
    replacement takes the place of the node of its name."""
    nodes = {
        "node-a": node("node-a", "site-ghent", labels={"region": "eu"}),
        "node-b": node("node-b", "site-cairo", labels={"region": "africa"}),
        "node-c": node(
            "node-c",
            "site-dubai",
            16000,
            64 * GIB,
            labels={"region": "me", "accelerator": "nvidia"},
            gpus=[gpu(0xC)],
        ),
    }
    nodes.update((replacement.name, replacement) for replacement in replacements)
    return list(nodes.values())


def dead(spec: NodeSpec) -> NodeSpec:
    return dataclasses.replace(spec, alive=False)


def workload(
    name: str = "langid",
    replicas: int = 2,
    cpu: int = 500,
    memory: int = 256 * MIB,
    *,
    commit: CommitId = C1,
    seq: int = 1,
    digest: ArtifactDigest | None = DIGEST1,
    gpu: GpuNeed | None = None,
    selector: Mapping[str, str] | None = None,
    min_domains: int = 1,
    per_node: int | None = None,
    min_ready: int | None = None,
) -> WorkloadSpec:
    return WorkloadSpec(
        WorkloadName(name),
        commit,
        seq,
        digest,
        replicas,
        cpu,
        memory,
        gpu,
        label_set(dict(selector or {})),
        min_domains,
        per_node,
        min_ready,
    )


def at(
    spec: WorkloadSpec,
    slot: int,
    node_name: str,
    *gpus: int,
    epoch: int = 1,
) -> Assignment:
    """An assignment of `spec`'s current definition (its commit, digest and resources)."""
    assert spec.digest is not None
    return Assignment(
        spec.name,
        slot,
        NodeName(node_name),
        spec.commit,
        spec.seq,
        spec.digest,
        spec.cpu,
        spec.memory,
        tuple(GpuUuid(f"GPU-{number:08x}") for number in sorted(gpus)),
        epoch,
    )


def ready(
    *assignments: Assignment, state: ReadyState = ReadyState.READY, since: int = NOW
) -> dict[AssignmentKey, Readiness]:
    return {a.key: Readiness(state, since) for a in assignments}


def run(
    workloads: Iterable[WorkloadSpec],
    nodes: Iterable[NodeSpec],
    assignments: Iterable[Assignment] = (),
    readiness: Mapping[AssignmentKey, Readiness] | None = None,
    *,
    epoch: int = 2,
) -> Plan:
    return plan(workloads, nodes, assignments, NOW, epoch=epoch, readiness=readiness)
