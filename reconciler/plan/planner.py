"""The planner: from approved workloads, nodes and current assignments to a `Plan`. Pure.

    plan(workloads, nodes, assignments, now, epoch=..., readiness=...) -> Plan

1. Survey (`reconciler.plan.current`): stop what is removed or scaled down, displace what
   lost its node or no longer fits, keep the rest and take it from the ledger.
2. Settle each slot of each workload that needs anything: one current assignment stays (ready
   first), and duplicates stop; a stale one (older definition) whose successor is ready stops.
3. Per workload, GPU workloads and larger requests first (scarce resources go to those that
   cannot do without): place missing slots (a displaced assignment is moved, never left
   behind), then take one step of a rolling update (`reconciler.plan.placement`).
4. Report: slots left without a replica (`Unschedulable`, with the reason in words, as true
   once the plan is applied), rollouts that wait or are blocked, and spreads below
   `minFailureDomains` (`Notice`).

Rolling update (the workload's commit, digest or resources changed). A slot keeps its number;
its replacement is a new assignment of the same slot at the new seq, so for a while a slot
holds two: the old one runs until the new one is reported READY, then it stops. One slot per
workload is in flight at a time (surge 1, unavailable 0): no step is taken while any current
replica of the workload is not ready, so a new version that never gets ready stops the update
after one slot. Where no node has room for a replacement beside the old replica, the slot is
replaced in place (the old one stops, the new one starts on the same node, in one `Move`) only
if the replicas known to be ready in the other slots are at least `ready_needed` (the
autoscaler's approved minimum, or all replicas for a fixed count); otherwise the update is
blocked and says why. A stale replica already reported NOT_READY serves nothing: it is
replaced at once (`Move`), outside the one-at-a-time limit.

Unknown readiness counts as possibly ready where taking a replica down is concerned, and as not
ready where a replacement must prove itself. Optional GPUs are taken when a replica is placed
and free then; a replica is never moved later only to give it a GPU. Nothing is rebalanced:
a healthy, fitting assignment stays where it is (minimal moves).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from reconciler.plan.actions import (
    Action,
    ActionKind,
    Cause,
    Move,
    Notice,
    NoticeKind,
    Plan,
    Stop,
    sort_key,
)
from reconciler.plan.assignment import Assignment, AssignmentKey
from reconciler.plan.current import READY_RANK, Survey, is_current, survey
from reconciler.plan.errors import PlanInputError
from reconciler.plan.explain import few
from reconciler.plan.inputs import NodeSpec, Readiness, ReadyState, WorkloadName, WorkloadSpec
from reconciler.plan.ledger import Ledger
from reconciler.plan.placement import Placer, Planning, Slot
from reconciler.plan.spread import Candidates

_Named = TypeVar("_Named", WorkloadSpec, NodeSpec)
_ACTION_ORDER = {ActionKind.STOP: 0, ActionKind.MOVE: 1, ActionKind.PLACE: 2}


def plan(
    desired: Iterable[WorkloadSpec],
    nodes: Iterable[NodeSpec],
    assignments: Iterable[Assignment],
    now: int,
    *,
    epoch: int,
    readiness: Mapping[AssignmentKey, Readiness] | None = None,
) -> Plan:
    """The actions that take `assignments` toward `desired` on `nodes` (see the module).

    `epoch` is the leader's epoch, stamped on every new assignment; `readiness` what the agents
    last reported, by assignment (missing: unknown); `now` (unix seconds) dates what is said.
    """
    specs = {WorkloadName(name): spec for name, spec in _index(desired, "workload").items()}
    node_list = sorted(_index(nodes, "node").values(), key=lambda node: node.name)
    _check_gpus(node_list)
    readiness = readiness or {}
    planning = Planning(
        nodes={node.name: node for node in node_list},
        node_list=node_list,
        readiness=readiness,
        ledger=Ledger(node_list),
        candidates=Candidates(node_list),
        epoch=epoch,
        now=now,
    )
    found = survey(specs, planning.nodes, assignments, readiness, planning.ledger)
    planning.actions.extend(found.stops)
    # Settle everything before placing anything: what settling stops frees room for all.
    settled = {name: _settle(planning, found, specs[name]) for name in sorted(found.dirty)}
    placers = []
    for name in sorted(settled, key=lambda name: _priority(specs[name])):
        spec, slots = specs[name], settled[name]
        placer = Placer(planning, spec, slots)
        for number in range(spec.replicas):
            slot = slots.setdefault(number, Slot())
            if slot.primary is None:
                placer.fill(number, slot)
        placer.roll()
        placers.append(placer)
    for placer in placers:
        placer.retry()
    for placer in placers:
        placer.report()
    for name in sorted(specs):
        _check_spread(planning, found, specs[name], settled.get(name))
    return Plan(
        actions=tuple(sorted(planning.actions, key=_action_key)),
        unschedulable=tuple(sorted(planning.unschedulable, key=lambda u: (u.workload, u.slot))),
        notices=tuple(sorted(planning.notices, key=lambda n: (n.workload, n.kind, n.message))),
    )


def _index(items: Iterable[_Named], what: str) -> dict[str, _Named]:
    found: dict[str, _Named] = {}
    for item in items:
        if item.name in found:
            raise PlanInputError(f"two {what}s named {item.name!r}")
        found[item.name] = item
    return found


def _check_gpus(nodes: Iterable[NodeSpec]) -> None:
    owner: dict[str, str] = {}
    for node in nodes:
        for gpu in node.gpus:
            if gpu.uuid in owner:
                raise PlanInputError(
                    f"GPU {gpu.uuid} is listed twice (on {owner[gpu.uuid]} and {node.name})"
                )
            owner[gpu.uuid] = node.name


def _priority(spec: WorkloadSpec) -> tuple[int, int, int, int, str]:
    need = spec.gpu
    required = need.count if need is not None and not need.optional else 0
    return (0 if required else 1, -required, -spec.cpu, -spec.memory, spec.name)


def _action_key(action: Action) -> tuple[str, int, int, tuple[object, ...]]:
    """By workload and slot; in a slot stops, then moves, then places; then the assignment."""
    subject = action.new if isinstance(action, Move) else action.assignment
    return (action.workload, action.slot, _ACTION_ORDER[action.kind], sort_key(subject))


def _settle(planning: Planning, found: Survey, spec: WorkloadSpec) -> dict[int, Slot]:
    """Decide what stays in each slot of `spec`; stop duplicates and replaced replicas."""
    kept = found.kept.get(spec.name, {})
    displaced = found.displaced.get(spec.name, {})

    def rank(assignment: Assignment) -> int:
        return READY_RANK[planning.ready(assignment).state]

    def stop(assignment: Assignment, cause: Cause, detail: str) -> None:
        planning.ledger.release(assignment)
        planning.actions.append(Stop(assignment, cause, detail))

    slots: dict[int, Slot] = {}
    for number in sorted(set(kept) | set(displaced)):
        slot = slots[number] = Slot(
            displaced=sorted(displaced.get(number, []), key=lambda d: sort_key(d.assignment))
        )
        group = kept.get(number, [])
        # Best first: ready, then unknown, then not ready; of stale ones the newest.
        current = sorted(
            (a for a in group if is_current(a, spec)), key=lambda a: (rank(a), sort_key(a))
        )
        stale = sorted(
            (a for a in group if not is_current(a, spec)),
            key=lambda a: (rank(a), -a.seq, sort_key(a)),
        )
        if current:
            slot.current = keep = current[0]
            for extra in current[1:]:
                stop(extra, Cause.DUPLICATE, f"slot {number} keeps its replica on {keep.node}")
            if planning.is_ready(keep):
                for old in stale:
                    stop(old, Cause.REPLACED, f"its replacement on {keep.node} is ready")
            else:
                # Only a replica that may be serving is worth keeping while its successor
                # starts; one known not ready gives nothing.
                for old in stale:
                    if slot.stale is None and planning.ready(old).state is not ReadyState.NOT_READY:
                        slot.stale = old
                    else:
                        stop(old, Cause.REPLACED, f"its replacement on {keep.node} is starting")
        elif stale:
            slot.stale = keep = stale[0]
            for extra in stale[1:]:
                stop(extra, Cause.DUPLICATE, f"slot {number} keeps its replica on {keep.node}")
        if slot.primary is not None:
            for gone in slot.displaced:
                detail = f"{gone.detail}; slot {number} runs on {slot.primary.node}"
                planning.actions.append(Stop(gone.assignment, gone.cause, detail))
            slot.displaced = []
    return slots


def _check_spread(
    planning: Planning, found: Survey, spec: WorkloadSpec, slots: dict[int, Slot] | None
) -> None:
    wanted = min(spec.min_failure_domains, spec.replicas)
    if wanted <= 1:
        return
    if slots is None:  # nothing changed: one kept assignment per slot
        running = [held[0] for held in found.kept.get(spec.name, {}).values()]
    else:
        running = [slot.primary for slot in slots.values() if slot.primary is not None]
    nodes = planning.nodes
    domains = {nodes[assignment.node].failure_domain for assignment in running}
    if len(domains) < wanted:
        count = len(running)
        planning.notices.append(
            Notice(
                spec.name,
                NoticeKind.SPREAD_SHORT,
                f"workload {spec.name}: {count} replica{_s(count)} span {len(domains)} "
                f"failure domain{_s(len(domains))} ({few(domains) or 'none'}); "
                f"minFailureDomains is {spec.min_failure_domains}",
            )
        )


def _s(count: int) -> str:
    return "" if count == 1 else "s"
