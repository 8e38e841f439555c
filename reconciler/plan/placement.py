"""Placing one workload's slots: missing ones, then one step of its rolling update. Pure.

A `Placer` works for one workload inside a plan (`Planning` holds what all of them share: the
ledger, the actions so far). Missing slots are filled in slot order; a displaced assignment
of the slot is moved to the chosen node, or stopped if none fits. A slot no node can take is
remembered, retried at the end of the plan if capacity was given back after it failed, and
only then explained, against the plan's final state: the reason an operator reads is what is
true once the plan is applied, and a replan of an unchanged cluster says the same.

Rolling update (see `reconciler.plan.planner` for the rules): `roll` replaces stale replicas
known not to be ready at once, then, if no replacement is still starting, surges one slot:
its replacement is placed beside the old replica, or, where nothing has room, replaces it in
place if enough other replicas are ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.plan.actions import (
    Action,
    Cause,
    Move,
    Notice,
    NoticeKind,
    Place,
    Reason,
    Stop,
    Unschedulable,
)
from reconciler.plan.assignment import Assignment, AssignmentKey
from reconciler.plan.current import Displaced
from reconciler.plan.explain import age, explain
from reconciler.plan.inputs import (
    UNKNOWN,
    GpuUuid,
    NodeName,
    NodeSpec,
    Readiness,
    ReadyState,
    WorkloadSpec,
)
from reconciler.plan.ledger import Ledger
from reconciler.plan.spread import Candidates, Spreader


@dataclass(slots=True)
class Slot:
    """One slot of a workload during a plan: what runs there."""

    current: Assignment | None = None  # runs the approved definition
    stale: Assignment | None = None  # an older definition, kept until its successor is ready
    displaced: list[Displaced] = field(default_factory=list)  # to move, or stop if no room
    placed_now: bool = False  # `current` is placed by this plan

    @property
    def old(self) -> Assignment:
        assert self.stale is not None
        return self.stale

    @property
    def primary(self) -> Assignment | None:
        """The assignment the slot counts as for spread: its current one, else its stale one."""
        return self.current if self.current is not None else self.stale


@dataclass(slots=True)
class Planning:
    """What every workload's placement shares within one plan."""

    nodes: dict[NodeName, NodeSpec]
    node_list: list[NodeSpec]  # by name
    readiness: Mapping[AssignmentKey, Readiness]
    ledger: Ledger
    candidates: Candidates
    epoch: int
    now: int
    actions: list[Action] = field(default_factory=list)
    unschedulable: list[Unschedulable] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    releases: int = 0  # capacity given back during placement, so far

    def ready(self, assignment: Assignment) -> Readiness:
        return self.readiness.get(assignment.key, UNKNOWN)

    def is_ready(self, assignment: Assignment | None) -> bool:
        return assignment is not None and self.ready(assignment).state is ReadyState.READY


class Placer:
    """Placements for one workload: `fill` its missing slots, `roll` its update, then (after
    every workload had its turn) `retry` and `report` what could not be placed."""

    def __init__(self, planning: Planning, spec: WorkloadSpec, slots: dict[int, Slot]) -> None:
        self.planning = planning
        self.spec = spec
        self.slots = slots
        self.node_counts: dict[NodeName, int] = {}
        self.domain_counts: dict[str, int] = {}
        for slot in slots.values():
            if slot.primary is not None:
                node = slot.primary.node
                self.node_counts[node] = self.node_counts.get(node, 0) + 1
                domain = planning.nodes[node].failure_domain
                self.domain_counts[domain] = self.domain_counts.get(domain, 0) + 1
        self._spreader: Spreader | None = None
        self._full = spec.digest is None  # no choice can succeed until capacity comes back
        self._unplaced: list[int] = []
        self._failed_at = 0  # `planning.releases` when a slot last failed

    # -- choosing ---------------------------------------------------------------------------

    @property
    def spreader(self) -> Spreader:
        if self._spreader is None:
            self._spreader = Spreader(
                self.spec,
                self.planning.candidates,
                self.planning.ledger,
                self.node_counts,
                self.domain_counts,
            )
        return self._spreader

    def choose(self) -> tuple[NodeName, tuple[GpuUuid, ...]] | None:
        if self._full:
            return None
        picked = self.spreader.choose()
        self._full = picked is None
        return picked

    def choose_besides(self, node: NodeName) -> tuple[NodeName, tuple[GpuUuid, ...]] | None:
        if self._full:
            return None
        return self.spreader.choose_besides(node)

    def reason(self) -> tuple[Reason, str]:
        """Why no further replica fits, now."""
        planning = self.planning
        return explain(self.spec, planning.node_list, planning.ledger, self.node_counts)

    def release(self, assignment: Assignment) -> None:
        self.planning.ledger.release(assignment)
        self.gained(assignment.node)

    def gained(self, node: NodeName) -> None:
        """`node` has more room than before: it counts again for this workload, and for the
        slots of others that found no room (see `retry`)."""
        if self._spreader is not None:
            self._spreader.revive(node)
        self._full = self.spec.digest is None
        self.planning.releases += 1

    def new(self, number: int, node: NodeName, gpus: tuple[GpuUuid, ...]) -> Assignment:
        """Take room on `node` for a replica of the approved definition in slot `number`."""
        spec = self.spec
        assert spec.digest is not None  # nothing unpinned is ever chosen
        self.planning.ledger.take(node, spec.cpu, spec.memory, gpus)
        return Assignment(
            workload=spec.name,
            slot=number,
            node=node,
            commit=spec.commit,
            seq=spec.seq,
            digest=spec.digest,
            cpu=spec.cpu,
            memory=spec.memory,
            gpus=gpus,
            epoch=self.planning.epoch,
        )

    # -- missing slots ----------------------------------------------------------------------

    def fill(self, number: int, slot: Slot) -> None:
        """Place slot `number`, which has no replica; move what was displaced from it."""
        picked = self.choose()
        if picked is None:
            self._unplaced.append(number)
            self._failed_at = self.planning.releases
            return
        node, gpus = picked
        new = self.new(number, node, gpus)
        self.spreader.add(node)
        slot.current, slot.placed_now = new, True
        actions = self.planning.actions
        if not slot.displaced:
            actions.append(Place(new, Cause.MISSING, f"slot {number} has no replica"))
            return
        first, *rest = slot.displaced
        actions.append(Move(first.assignment, new, first.cause, first.detail))
        for gone in rest:
            detail = f"{gone.detail}; slot {number} moves to {node}"
            actions.append(Stop(gone.assignment, gone.cause, detail))
        slot.displaced = []

    def retry(self) -> None:
        """Try unplaced slots again if capacity was given back after they failed."""
        if not self._unplaced or self.planning.releases <= self._failed_at:
            return
        self._spreader, self._full = None, self.spec.digest is None
        waiting, self._unplaced = self._unplaced, []
        for number in waiting:
            self.fill(number, self.slots[number])

    def report(self) -> None:
        """Say why each unplaced slot has no place, and stop what was displaced from it."""
        if not self._unplaced:
            return
        planning, name = self.planning, self.spec.name
        reason, words = self.reason()
        for number in self._unplaced:
            message = f"workload {name} slot {number}: {words}"
            planning.unschedulable.append(Unschedulable(name, number, reason, message))
            for gone in self.slots[number].displaced:
                detail = f"{gone.detail}; no node can take it: {words}"
                planning.actions.append(Stop(gone.assignment, gone.cause, detail))

    # -- rolling update ---------------------------------------------------------------------

    def roll(self) -> None:
        """One step of the rolling update, if the workload has stale replicas."""
        planning, slots, spec = self.planning, self.slots, self.spec
        stale = [number for number, slot in sorted(slots.items()) if slot.stale is not None]
        if not stale:
            return
        if spec.digest is None:  # nothing could replace them: they run on
            _, words = self.reason()
            message = (
                f"workload {spec.name}: rolling update to {_spec_version(spec)} is blocked: {words}"
            )
            planning.notices.append(Notice(spec.name, NoticeKind.ROLLOUT_BLOCKED, message))
            return
        for number in stale:
            slot = slots[number]
            if slot.current is None and planning.ready(slot.old).state is ReadyState.NOT_READY:
                self._replace(number, slot, surge=False)
        if not self._starting():
            pending = [number for number in stale if slots[number].current is None]
            if pending:
                self._replace(pending[0], slots[pending[0]], surge=True)
        starting = self._starting()
        if starting and any(slot.stale is not None for slot in slots.values()):
            planning.notices.append(self._waiting(starting))

    def _starting(self) -> list[int]:
        """Slots whose current replica is not proven ready: the update waits for them."""
        return [
            number
            for number, slot in sorted(self.slots.items())
            if slot.current is not None
            and (slot.placed_now or not self.planning.is_ready(slot.current))
        ]

    def _replace(self, number: int, slot: Slot, *, surge: bool) -> None:
        """Start the new definition in slot `number`: beside its stale replica, else in place.

        `surge`: the stale replica may be serving, so it runs on until its successor is ready,
        and goes down first only within `ready_needed`. Otherwise it is replaced now.
        """
        planning, spec, old = self.planning, self.spec, slot.old
        self.spreader.remove(old.node)  # the slot is leaving that node
        # A node runs one replica per slot: a surge beside the old replica is on another node
        # (on its own node the new one would replace it, below the ready count).
        picked = self.choose_besides(old.node) if surge else self.choose()
        if picked is None:
            self.spreader.add(old.node)
        else:
            node, gpus = picked
            new = self.new(number, node, gpus)
            self.spreader.add(node)
            slot.current, slot.placed_now = new, True
            change = f"{_version(old)} -> {_version(new)}"
            if surge:
                detail = f"replacement for slot {number} ({change})"
                planning.actions.append(Place(new, Cause.ROLLING_UPDATE, detail))
            else:
                self.release(old)
                slot.stale = None
                detail = f"it was not ready ({change})"
                planning.actions.append(Move(old, new, Cause.ROLLING_UPDATE, detail))
            return
        ready_elsewhere = sum(
            1
            for other, held in self.slots.items()
            if other != number
            and (planning.is_ready(held.current) or planning.is_ready(held.stale))
        )
        may_go_down = not surge or ready_elsewhere >= spec.ready_needed
        if may_go_down and self._in_place(number, slot, old):
            return
        if surge and self._fits_beside(old):
            words = (
                f"only {old.node} has room, and it runs the slot's old replica (a node runs "
                "one replica of a slot)"
            )
        else:
            _, words = self.reason()
        if may_go_down:
            words += f"; it does not fit in place on {old.node} either"
        else:
            words += (
                f"; replacing it in place would leave {ready_elsewhere} ready, below the "
                f"{spec.ready_needed} {spec.name} needs"
            )
        planning.notices.append(
            Notice(
                spec.name,
                NoticeKind.ROLLOUT_BLOCKED,
                f"workload {spec.name}: rolling update to {_spec_version(spec)} is blocked at "
                f"slot {number}: no room for its replacement ({words})",
            )
        )

    def _fits_beside(self, old: Assignment) -> bool:
        """The new definition would fit on `old`'s node beside it."""
        spec, node = self.spec, self.planning.nodes[old.node]
        return (
            spec.digest is not None
            and node.alive
            and spec.node_selector <= node.labels
            and node.verified_seq >= spec.seq
            and self.planning.ledger.fit(old.node, spec) is not None
        )

    def _in_place(self, number: int, slot: Slot, old: Assignment) -> bool:
        """Replace `old` on its own node with what it frees; False if the new does not fit."""
        planning, spec = self.planning, self.spec
        node = planning.nodes[old.node]
        if (
            spec.digest is None
            or not spec.node_selector <= node.labels
            or node.verified_seq < spec.seq
        ):
            return False
        planning.ledger.release(old)
        gpus = planning.ledger.fit(old.node, spec)
        if gpus is None:
            planning.ledger.take_assignment(old)
            return False
        new = self.new(number, old.node, gpus)
        self.gained(old.node)  # the new one may need less than the old one held
        slot.current, slot.stale, slot.placed_now = new, None, True
        detail = (
            "no room for a replacement beside it; replaced in place "
            f"({_version(old)} -> {_version(new)})"
        )
        planning.actions.append(Move(old, new, Cause.ROLLING_UPDATE, detail))
        return True

    def _waiting(self, starting: list[int]) -> Notice:
        spec, planning = self.spec, self.planning
        updated = sum(1 for slot in self.slots.values() if slot.current is not None)
        parts = []
        for number in starting:
            slot = self.slots[number]
            assert slot.current is not None
            seen = planning.ready(slot.current)
            if slot.placed_now:
                state = "placed now"
            elif seen.state is ReadyState.NOT_READY:
                state = f"not ready for {age(planning.now - seen.since)}"
            else:
                state = "no readiness reported yet"
            parts.append(f"slot {number} on {slot.current.node} ({state})")
        return Notice(
            spec.name,
            NoticeKind.ROLLOUT_WAITING,
            f"workload {spec.name}: rolling update to {_spec_version(spec)}, {updated} of "
            f"{spec.replicas} slots run it; waiting for {', '.join(parts)} to be ready",
        )


def _version(assignment: Assignment) -> str:
    return f"commit {assignment.commit[:12]}"


def _spec_version(spec: WorkloadSpec) -> str:
    return f"commit {spec.commit[:12]} (seq {spec.seq})"
