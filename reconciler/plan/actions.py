"""What a plan says: actions on assignments, replicas that cannot be placed, and notices.

    Place(assignment)   start a new replica (a missing slot, or a rolling update's surge)
    Move(old, new)      replace one assignment by another in one step: the old node stops it
                        (or is gone), the new node starts its successor
    Stop(assignment)    stop a replica and forget it

Each action has a `Cause` and a `detail` in an operator's words. `apply` plays a plan onto
the assignments it was made from, purely, so a plan can be checked by planning again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from reconciler.plan.assignment import Assignment
from reconciler.plan.errors import PlanInputError
from reconciler.plan.inputs import WorkloadName


class ActionKind(enum.StrEnum):
    PLACE = "place"
    MOVE = "move"
    STOP = "stop"


class Cause(enum.StrEnum):
    MISSING = "missing"  # the slot has no replica: new, scaled up, or never placed before
    NODE_LOST = "node-lost"  # its node is not alive, or no longer admitted
    NO_LONGER_FITS = "no-longer-fits"  # labels, GPUs or capacity of its node changed
    ROLLING_UPDATE = "rolling-update"  # the workload's approved definition changed
    REPLACED = "replaced"  # its successor in the slot is ready
    SCALED_DOWN = "scaled-down"  # the slot is above the replica count
    REMOVED = "removed"  # the workload is no longer in the desired state
    DUPLICATE = "duplicate"  # the slot has another replica that is kept


@dataclass(frozen=True, slots=True)
class Place:
    kind: ClassVar[ActionKind] = ActionKind.PLACE
    assignment: Assignment
    cause: Cause
    detail: str

    @property
    def workload(self) -> WorkloadName:
        return self.assignment.workload

    @property
    def slot(self) -> int:
        return self.assignment.slot


@dataclass(frozen=True, slots=True)
class Move:
    kind: ClassVar[ActionKind] = ActionKind.MOVE
    old: Assignment
    new: Assignment
    cause: Cause
    detail: str

    @property
    def workload(self) -> WorkloadName:
        return self.new.workload

    @property
    def slot(self) -> int:
        return self.new.slot


@dataclass(frozen=True, slots=True)
class Stop:
    kind: ClassVar[ActionKind] = ActionKind.STOP
    assignment: Assignment
    cause: Cause
    detail: str

    @property
    def workload(self) -> WorkloadName:
        return self.assignment.workload

    @property
    def slot(self) -> int:
        return self.assignment.slot


Action = Place | Move | Stop


class Reason(enum.StrEnum):
    """Why a slot cannot be placed: the first requirement no node meets."""

    UNPINNED = "unpinned"  # the artifact has no digest a node could verify
    NO_NODE_ALIVE = "no-node-alive"
    SELECTOR = "selector"  # no alive node carries the nodeSelector labels
    NOT_VERIFIED = "not-verified"  # no matching node has verified the workload's commit yet
    CPU = "cpu"
    MEMORY = "memory"
    GPU = "gpu"
    MAX_PER_NODE = "max-per-node"  # every node that fits holds maxReplicasPerNode already


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A slot without a replica after this plan."""

    workload: WorkloadName
    slot: int
    reason: Reason
    message: str  # "workload langid slot 2: needs 1 GPU with >= 8Gi, free: none in site-cairo"


class NoticeKind(enum.StrEnum):
    ROLLOUT_WAITING = "rollout-waiting"  # a replacement is not ready yet; the update waits
    ROLLOUT_BLOCKED = "rollout-blocked"  # no room for a replacement, none may be taken down
    SPREAD_SHORT = "spread-short"  # fewer failure domains than minFailureDomains


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator should know about a workload that is not an action."""

    workload: WorkloadName
    kind: NoticeKind
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]  # by workload, slot, then stops before moves before places
    unschedulable: tuple[Unschedulable, ...]  # by workload and slot
    notices: tuple[Notice, ...]  # by workload and kind

    def lines(self) -> list[str]:
        """The plan as an operator reads it, one line per item."""
        out = [f"{action.kind} {_subject(action)}: {action.detail}" for action in self.actions]
        out += [item.message for item in self.unschedulable]
        out += [notice.message for notice in self.notices]
        return out


def _subject(action: Action) -> str:
    if isinstance(action, Move):
        where = f"{action.old.node} -> {action.new.node}{_with(action.new)}"
    else:
        where = f"on {action.assignment.node}{_with(action.assignment)}"
    return f"{action.workload} slot {action.slot} {where}"


def _with(assignment: Assignment) -> str:
    return f" with {', '.join(assignment.gpus)}" if assignment.gpus else ""


def apply(assignments: Iterable[Assignment], plan: Plan) -> tuple[Assignment, ...]:
    """The assignments after `plan`, sorted: stops and moves remove, places and moves add.

    Refuses a plan that stops or moves an assignment that is not there, or places one that
    is there already: that plan was made for other assignments.
    """
    current = set(assignments)
    for action in plan.actions:
        if isinstance(action, Place):
            added, removed = action.assignment, None
        elif isinstance(action, Move):
            added, removed = action.new, action.old
        else:
            added, removed = None, action.assignment
        if removed is not None:
            if removed not in current:
                raise PlanInputError(
                    f"plan does not apply: {action.kind} of {removed.workload} slot "
                    f"{removed.slot} on {removed.node}, which is not assigned"
                )
            current.remove(removed)
        if added is not None:
            if added in current:
                raise PlanInputError(
                    f"plan does not apply: {added.workload} slot {added.slot} on "
                    f"{added.node} is assigned already"
                )
            current.add(added)
    return tuple(sorted(current, key=sort_key))


def sort_key(assignment: Assignment) -> tuple[str, int, int, str, int, tuple[str, ...], str]:
    """A total order of assignments: ties never fall back to input order."""
    return (
        assignment.workload,
        assignment.slot,
        assignment.seq,
        assignment.node,
        assignment.epoch,
        assignment.gpus,
        f"{assignment.commit} {assignment.digest} {assignment.cpu} {assignment.memory}",
    )
