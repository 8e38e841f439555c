"""The current assignments sorted into what stays, what stops and what must move. Pure.

Every assignment ends in exactly one of:

- stopped: its workload is gone, or its slot is above the replica count (`Cause.REMOVED`,
  `Cause.SCALED_DOWN`);
- displaced, to be moved if a place is found and stopped if not: its node is not alive or no
  longer admitted (`NODE_LOST`), or no longer fits it (`NO_LONGER_FITS`: labels no longer
  match the selector, a GPU it holds is gone or unhealthy, or the node's capacity shrank
  below what it holds);
- kept, and taken from the ledger.

An assignment of an older definition (stale: another commit, digest or resources) is judged
by what it holds, not by the new definition's selector and GPU need: a rolling update, not an
eviction, replaces it. When a node's capacity no longer holds all its assignments, they are
kept in order of (ready, then unknown, then not ready; newer seq; workload; slot) while they
fit, so the choice does not depend on input order and keeps what serves traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.desired.model.types import format_bytes, format_cpu
from reconciler.plan.actions import Cause, Stop, sort_key
from reconciler.plan.assignment import Assignment, AssignmentKey
from reconciler.plan.explain import selector_words
from reconciler.plan.inputs import (
    UNKNOWN,
    GpuDevice,
    GpuUuid,
    NodeName,
    NodeSpec,
    Readiness,
    ReadyState,
    WorkloadName,
    WorkloadSpec,
)
from reconciler.plan.ledger import Ledger

READY_RANK = {ReadyState.READY: 0, ReadyState.UNKNOWN: 1, ReadyState.NOT_READY: 2}


def is_current(assignment: Assignment, spec: WorkloadSpec) -> bool:
    """Whether `assignment` runs the workload's approved definition (else it is stale)."""
    return (
        assignment.commit == spec.commit
        and assignment.seq == spec.seq
        and assignment.digest == spec.digest
        and assignment.cpu == spec.cpu
        and assignment.memory == spec.memory
    )


@dataclass(frozen=True, slots=True)
class Displaced:
    assignment: Assignment
    cause: Cause
    detail: str


@dataclass(slots=True)
class Survey:
    stops: list[Stop] = field(default_factory=list)
    kept: dict[WorkloadName, dict[int, list[Assignment]]] = field(default_factory=dict)
    displaced: dict[WorkloadName, dict[int, list[Displaced]]] = field(default_factory=dict)
    dirty: set[WorkloadName] = field(default_factory=set)  # anything to do beyond keeping


def survey(
    specs: Mapping[WorkloadName, WorkloadSpec],
    nodes: Mapping[NodeName, NodeSpec],
    assignments: Iterable[Assignment],
    readiness: Mapping[AssignmentKey, Readiness],
    ledger: Ledger,
) -> Survey:
    """Sort `assignments` (see the module) and take the kept ones from `ledger`.

    One pass, grouped by workload so that each definition is read once (a replan reads every
    assignment, and must stay fast); the same assignment given twice counts once.
    """
    result = Survey()
    by_workload: dict[WorkloadName, list[Assignment]] = {}
    for assignment in assignments:
        group = by_workload.get(assignment.workload)
        if group is None:
            by_workload[assignment.workload] = [assignment]
        else:
            group.append(assignment)
    devices: dict[NodeName, dict[GpuUuid, GpuDevice]] = {
        node.name: {gpu.uuid: gpu for gpu in node.gpus} for node in nodes.values() if node.gpus
    }
    used: dict[NodeName, list[int]] = {}  # [cpu, memory] held by kept assignments
    with_gpus: list[Assignment] = []
    stopped: set[Assignment] = set()
    find_node = nodes.get

    def displace(assignment: Assignment, cause: Cause, detail: str) -> None:
        by_slot = result.displaced.setdefault(assignment.workload, {})
        held = by_slot.setdefault(assignment.slot, [])
        if all(other.assignment != assignment for other in held):
            held.append(Displaced(assignment, cause, detail))
        result.dirty.add(assignment.workload)

    def stop(assignment: Assignment, cause: Cause, detail: str) -> None:
        if assignment not in stopped:
            stopped.add(assignment)
            result.stops.append(Stop(assignment, cause, detail))

    for workload, group in by_workload.items():
        spec = specs.get(workload)
        if spec is None:
            for assignment in group:
                stop(assignment, Cause.REMOVED, f"workload {workload} is no longer desired")
            continue
        replicas, commit, seq, digest = spec.replicas, spec.commit, spec.seq, spec.digest
        cpu, memory = spec.cpu, spec.memory
        need, selector = spec.gpu, spec.node_selector
        slots: dict[int, list[Assignment]] = {}
        dirty = False
        for assignment in group:
            if assignment.slot >= replicas:
                stop(
                    assignment,
                    Cause.SCALED_DOWN,
                    f"{workload} runs {replicas} replica{_s(replicas)} now",
                )
                continue
            node = find_node(assignment.node)
            if node is None or not node.alive:
                where = "is not alive" if node else "is no longer admitted"
                displace(assignment, Cause.NODE_LOST, f"{assignment.node} {where}")
                continue
            current = (  # is_current(), inlined: a replan runs this for every assignment
                assignment.commit == commit
                and assignment.seq == seq
                and assignment.digest == digest
                and assignment.cpu == cpu
                and assignment.memory == memory
            )
            if assignment.gpus or (current and (need is not None or not selector <= node.labels)):
                unfit = _unfit(assignment, spec, node, devices.get(node.name, {}), current)
                if unfit is not None:
                    displace(assignment, Cause.NO_LONGER_FITS, unfit)
                    continue
            held = slots.get(assignment.slot)
            if held is None:
                slots[assignment.slot] = [assignment]
            elif assignment in held:
                continue
            else:
                held.append(assignment)
                dirty = True
            dirty = dirty or not current
            held_on = used.get(node.name)
            if held_on is None:
                used[node.name] = [assignment.cpu, assignment.memory]
            else:
                held_on[0] += assignment.cpu
                held_on[1] += assignment.memory
            if assignment.gpus:
                with_gpus.append(assignment)
        if slots:
            result.kept[workload] = slots
        if dirty or len(slots) < replicas:
            result.dirty.add(workload)
    result.dirty.update(
        name for name, spec in specs.items() if spec.replicas and name not in by_workload
    )
    _take(result, nodes, readiness, ledger, used, with_gpus, displace)
    return result


def _take(
    result: Survey,
    nodes: Mapping[NodeName, NodeSpec],
    readiness: Mapping[AssignmentKey, Readiness],
    ledger: Ledger,
    used: dict[NodeName, list[int]],
    with_gpus: list[Assignment],
    displace: Callable[[Assignment, Cause, str], None],
) -> None:
    """Take the kept assignments from the ledger; where a node cannot hold all of its own
    (capacity shrank, or two hold one GPU), keep them in priority order and displace the rest."""
    crowded = {
        name
        for name, (cpu, memory) in used.items()
        if cpu > nodes[name].cpu or memory > nodes[name].memory
    }
    claims: dict[GpuUuid, Assignment] = {}
    for assignment in with_gpus:
        for uuid in assignment.gpus:
            if claims.setdefault(uuid, assignment) is not assignment:
                crowded.add(assignment.node)
    for name, (cpu, memory) in used.items():
        if name not in crowded:
            ledger.take(name, cpu, memory, ())
    for assignment in with_gpus:
        if assignment.node not in crowded:
            ledger.take(assignment.node, 0, 0, assignment.gpus)
    if not crowded:
        return
    on_node: dict[NodeName, list[Assignment]] = {name: [] for name in crowded}
    for slots in result.kept.values():
        for held in slots.values():
            for assignment in held:
                if assignment.node in on_node:
                    on_node[assignment.node].append(assignment)
    for name, held_here in sorted(on_node.items()):
        node = nodes[name]
        for assignment, detail in _overflow(node, held_here, readiness, used[name]):
            slots = result.kept[assignment.workload]
            slots[assignment.slot].remove(assignment)
            if not slots[assignment.slot]:
                del slots[assignment.slot]
            displace(assignment, Cause.NO_LONGER_FITS, detail)
        for assignment in held_here:
            ledger.take_assignment(assignment)


def _unfit(
    assignment: Assignment,
    spec: WorkloadSpec,
    node: NodeSpec,
    devices: Mapping[GpuUuid, GpuDevice],
    current: bool,
) -> str | None:
    """Why `node` can no longer hold `assignment` by its labels and GPUs, or None."""
    for uuid in assignment.gpus:
        gpu = devices.get(uuid)
        if gpu is None:
            return f"GPU {uuid} is not on {node.name}"
        if not gpu.healthy:
            return f"GPU {uuid} on {node.name} is unhealthy"
    if not current:
        return None
    if not spec.node_selector <= node.labels:
        return f"{node.name} no longer matches nodeSelector {selector_words(spec.node_selector)}"
    need = spec.gpu
    held = len(assignment.gpus)
    if need is None:
        return None if not held else f"it holds {held} GPU{_s(held)} its workload does not ask for"
    if held not in ((0, need.count) if need.optional else (need.count,)):
        return f"it holds {held} GPU{_s(held)} of the {need.count} its workload asks for"
    for uuid in assignment.gpus:
        gpu = devices[uuid]
        if not need.accepts(gpu):
            return (
                f"GPU {uuid} on {node.name} ({gpu.model}, {format_bytes(gpu.memory)}) no "
                "longer fits its GPU need"
            )
    return None


def _overflow(
    node: NodeSpec,
    held_here: list[Assignment],
    readiness: Mapping[AssignmentKey, Readiness],
    used: list[int],
) -> list[tuple[Assignment, str]]:
    """The assignments `node` can no longer hold, removed from `held_here` (kept in order)."""

    def priority(assignment: Assignment) -> tuple[int, int, tuple[object, ...]]:
        state = readiness.get(assignment.key, UNKNOWN).state
        return (READY_RANK[state], -assignment.seq, sort_key(assignment))

    held_here.sort(key=priority)
    keep: list[Assignment] = []
    out: list[tuple[Assignment, str]] = []
    cpu = memory = 0
    claimed: dict[GpuUuid, Assignment] = {}
    for assignment in held_here:
        holder = next((claimed[uuid] for uuid in assignment.gpus if uuid in claimed), None)
        if holder is not None:
            out.append(
                (
                    assignment,
                    f"its GPU is also held by {holder.workload} slot {holder.slot} on {node.name}",
                )
            )
        elif cpu + assignment.cpu > node.cpu or memory + assignment.memory > node.memory:
            out.append(
                (
                    assignment,
                    f"{node.name} has cpu {format_cpu(node.cpu)}, memory "
                    f"{format_bytes(node.memory)} for cpu {format_cpu(used[0])}, "
                    f"memory {format_bytes(used[1])} assigned",
                )
            )
        else:
            keep.append(assignment)
            cpu += assignment.cpu
            memory += assignment.memory
            claimed.update(dict.fromkeys(assignment.gpus, assignment))
    held_here[:] = keep
    return out


def _s(count: int) -> str:
    return "" if count == 1 else "s"
