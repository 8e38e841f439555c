"""Errors of the planner: inputs that contradict themselves, and assignment bytes refused.

    PlanError (a ReconcilerError)
    ├── PlanInputError         inputs that cannot describe one cluster: two nodes of one name,
    │                          a GPU on two nodes, a decision outside the approved bounds, a
    │                          plan applied to assignments it was not made for (exit 2)
    └── AssignmentFormatError  an assignment's JSON is not exactly the canonical form (exit 1)

Nothing the cluster *does* is an error: a replica that cannot be placed is a value of the plan
(`Unschedulable`), with its reason in words.
"""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class PlanError(ReconcilerError):
    """Base of the planner's errors."""


class PlanInputError(PlanError):
    exit_code = 2


class AssignmentFormatError(PlanError):
    exit_code = 1
