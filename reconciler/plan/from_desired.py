"""From the approved desired state and the observed inventory to the planner's inputs. Pure.

    planning_inputs(state, observed, now, head=..., versions=..., replicas=...) -> PlanInputs

Per workload: the approved commit its definition comes from (`versions`, where the chain walk
saw its document last change; `head` for the others), the artifact digest it pins (or that its
build locks), the replica count to run (the autoscaler's decision, refused outside the approved
bounds; the fixed count otherwise) and the ready count a rolling update keeps (autoscale.min,
or every replica when the count is fixed).

Per admitted node: capacity is the smaller of declared and observed, CPU and memory alike; a
GPU is offered only where the node declares it and its agent sees it (a declared UUID must be
seen with that UUID and model, a declared GPU without one takes an unclaimed observed GPU of
the same model, by UUID), with the smaller memory of the two; a GPU seen under its UUID with
another model is offered as unhealthy. A node is alive while its lease runs at `now`. Nodes
seen but not admitted are ignored; nodes admitted but never seen are not alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.desired.model import Node, Workload
from reconciler.desired.model.workload import GpuRequest
from reconciler.desired.repository import DesiredState
from reconciler.plan.errors import PlanInputError
from reconciler.plan.inputs import (
    ArtifactDigest,
    CommitId,
    GpuDevice,
    GpuNeed,
    GpuUuid,
    NodeName,
    NodeSpec,
    WorkloadName,
    WorkloadSpec,
    label_set,
)


@dataclass(frozen=True, slots=True)
class Version:
    """An approved commit and its seq on the Human Chain."""

    commit: CommitId
    seq: int


@dataclass(frozen=True, slots=True)
class ObservedGpu:
    uuid: GpuUuid
    model: str
    memory: int
    healthy: bool


@dataclass(frozen=True, slots=True)
class ObservedNode:
    """What a node agent last reported (signed, through the state store)."""

    name: NodeName
    cpu: int  # millicores it can give
    memory: int  # bytes it can give
    gpus: tuple[ObservedGpu, ...]
    lease_expires_at: int  # unix seconds
    verified_seq: int  # the highest approved seq it has verified


@dataclass(frozen=True, slots=True)
class PlanInputs:
    workloads: tuple[WorkloadSpec, ...]  # by name
    nodes: tuple[NodeSpec, ...]  # by name


def planning_inputs(
    state: DesiredState,
    observed: Iterable[ObservedNode],
    now: int,
    *,
    head: Version,
    versions: Mapping[str, Version] | None = None,
    replicas: Mapping[str, int] | None = None,
) -> PlanInputs:
    """The planner's view of `state` (see the module)."""
    versions = versions or {}
    decisions = dict(replicas or {})
    seen: dict[str, ObservedNode] = {}
    for report in observed:
        if report.name in seen:
            raise PlanInputError(f"two inventory reports for node {report.name}")
        seen[report.name] = report
    unknown = sorted(set(decisions) - set(state.workloads))
    if unknown:
        raise PlanInputError(f"replica decisions for unknown workloads: {', '.join(unknown)}")
    workloads = tuple(
        workload_spec(
            loaded.document,
            versions.get(name, head),
            _locked_digest(state, loaded.document),
            decisions.get(name),
        )
        for name, loaded in sorted(state.workloads.items())
    )
    nodes = tuple(
        node_spec(loaded.document, seen.get(name), now)
        for name, loaded in sorted(state.nodes.items())
    )
    return PlanInputs(workloads, nodes)


def _locked_digest(state: DesiredState, workload: Workload) -> str | None:
    if workload.artifact.digest is not None:
        return workload.artifact.digest
    build = state.builds.get(workload.artifact.build)
    return build.document.digest if build is not None else None


def workload_spec(
    workload: Workload, version: Version, digest: str | None, decision: int | None
) -> WorkloadSpec:
    autoscale = workload.autoscale
    if decision is None:
        count = workload.replicas
    elif autoscale is None:
        raise PlanInputError(
            f"workload {workload.name} has no autoscale: its {workload.replicas} replicas are "
            f"fixed, so a decision of {decision} cannot apply"
        )
    elif not autoscale.min <= decision <= autoscale.max:
        raise PlanInputError(
            f"workload {workload.name}: a decision of {decision} replicas is outside the "
            f"approved bounds [{autoscale.min}, {autoscale.max}]"
        )
    else:
        count = decision
    placement = workload.placement
    return WorkloadSpec(
        name=WorkloadName(workload.name),
        commit=version.commit,
        seq=version.seq,
        digest=None if digest is None else ArtifactDigest(digest),
        replicas=count,
        cpu=workload.resources.cpu,
        memory=workload.resources.memory,
        gpu=_gpu_need(workload.resources.gpu),
        node_selector=label_set(placement.node_selector),
        min_failure_domains=placement.min_failure_domains,
        max_replicas_per_node=placement.max_replicas_per_node,
        min_ready=autoscale.min if autoscale is not None else None,
    )


def _gpu_need(request: GpuRequest | None) -> GpuNeed | None:
    if request is None:
        return None
    return GpuNeed(
        count=request.count,
        min_memory=request.min_memory or 0,
        models=frozenset(request.models),
        optional=request.optional,
    )


def node_spec(node: Node, report: ObservedNode | None, now: int) -> NodeSpec:
    declared = node.capacity
    name = NodeName(node.name)
    if report is None:
        return NodeSpec(
            name,
            node.failure_domain,
            0,
            0,
            verified_seq=0,
            labels=label_set(node.labels),
            alive=False,
        )
    return NodeSpec(
        name=name,
        failure_domain=node.failure_domain,
        cpu=min(declared.cpu, report.cpu),
        memory=min(declared.memory, report.memory),
        labels=label_set(node.labels),
        gpus=_offered_gpus(node, report.gpus),
        alive=now < report.lease_expires_at,
        verified_seq=report.verified_seq,
    )


def _offered_gpus(node: Node, observed: tuple[ObservedGpu, ...]) -> tuple[GpuDevice, ...]:
    by_uuid = {gpu.uuid: gpu for gpu in observed}
    if len(by_uuid) != len(observed):
        raise PlanInputError(f"node {node.name} reports one GPU UUID twice")
    offered: list[GpuDevice] = []
    declared = node.capacity.gpus
    pinned = {gpu.uuid for gpu in declared if gpu.uuid is not None}
    for gpu in declared:
        if gpu.uuid is None:
            continue
        seen = by_uuid.get(GpuUuid(gpu.uuid))
        if seen is not None:
            offered.append(
                GpuDevice(
                    seen.uuid,
                    gpu.model,
                    min(gpu.memory, seen.memory),
                    healthy=seen.healthy and seen.model == gpu.model,
                )
            )
    unclaimed = sorted((g for g in observed if g.uuid not in pinned), key=lambda g: g.uuid)
    for gpu in sorted((g for g in declared if g.uuid is None), key=lambda g: (g.model, g.memory)):
        match = next((seen for seen in unclaimed if seen.model == gpu.model), None)
        if match is not None:
            unclaimed.remove(match)
            offered.append(
                GpuDevice(match.uuid, gpu.model, min(gpu.memory, match.memory), match.healthy)
            )
    return tuple(sorted(offered, key=lambda gpu: gpu.uuid))
