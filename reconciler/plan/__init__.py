"""Placement and planning: where each replica runs, and the actions that get it there. Pure.

    planning_inputs(DesiredState, observed inventory, now)  ->  WorkloadSpec[], NodeSpec[]
    plan(workloads, nodes, assignments, now, epoch, readiness)  ->  Plan
    apply(assignments, plan)  ->  assignments

No clock, no I/O, no randomness: the same inputs give the same plan whatever their order.
Modules, by concept:

    inputs        the values the planner is given (workloads, nodes, readiness)
    assignment    `Assignment`, what the leader signs, and its canonical JSON
    actions       what a plan says (Place, Move, Stop, Unschedulable, Notice) and `apply`
    current       the current assignments sorted into kept, stopped and displaced
    ledger        free CPU, memory and GPUs per node while planning
    spread        the choice of node for a new replica (failure domains, then nodes)
    explain       why a replica cannot be placed, in words
    placement     one workload's turn: missing slots, one step of its rolling update
    planner       `plan`: the order of it all, settling slots, the rules of rolling updates
    from_desired  the adapter from the approved desired state and observed inventory
"""

from __future__ import annotations

from reconciler.plan.actions import (
    Action,
    ActionKind,
    Cause,
    Move,
    Notice,
    NoticeKind,
    Place,
    Plan,
    Reason,
    Stop,
    Unschedulable,
    apply,
)
from reconciler.plan.assignment import FORMAT, Assignment, AssignmentKey
from reconciler.plan.errors import AssignmentFormatError, PlanError, PlanInputError
from reconciler.plan.from_desired import (
    ObservedGpu,
    ObservedNode,
    PlanInputs,
    Version,
    planning_inputs,
)
from reconciler.plan.inputs import (
    ArtifactDigest,
    CommitId,
    GpuDevice,
    GpuNeed,
    GpuUuid,
    NodeName,
    NodeSpec,
    Readiness,
    ReadyState,
    WorkloadName,
    WorkloadSpec,
    label_set,
)
from reconciler.plan.planner import plan

__all__ = [
    "FORMAT",
    "Action",
    "ActionKind",
    "ArtifactDigest",
    "Assignment",
    "AssignmentFormatError",
    "AssignmentKey",
    "Cause",
    "CommitId",
    "GpuDevice",
    "GpuNeed",
    "GpuUuid",
    "Move",
    "NodeName",
    "NodeSpec",
    "Notice",
    "NoticeKind",
    "ObservedGpu",
    "ObservedNode",
    "Place",
    "Plan",
    "PlanError",
    "PlanInputError",
    "PlanInputs",
    "Readiness",
    "ReadyState",
    "Reason",
    "Stop",
    "Unschedulable",
    "Version",
    "WorkloadName",
    "WorkloadSpec",
    "apply",
    "label_set",
    "plan",
    "planning_inputs",
]
