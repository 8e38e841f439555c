"""Errors of the reconciler package, and what a retry can do about each.

The CLI catches `ReconcilerError` once, prints its message and exits with its `exit_code`;
`--verbose` shows the traceback instead. A loop that retries (the node agent) asks the error's
`retry` instead, as Flux's reconcilers do: the meaning of a retry lives in the error type.

    ReconcilerError                   retry: STALLED unless the class says otherwise
    ├── InputError           bad usage or input (exit 2)
    │   ├── desired.problems.DocumentError     a document cannot be read; its problems
    │   └── chain.gitcli.GitFailed             TRANSIENT (a remote, the network)
    └── CheckFailed          a verification or validation check failed (exit 1)
        ├── chain.verify.ChainError            a step the node must not apply
        │   ├── RollbackError, SequenceGap, ForkError, PolicyError, Equivocation, ...
        │   └── BadSignature, NotAMember
        ├── chain.quorum.QuorumNotMet          WAITING (approvals may still come)
        │   └── chain.verify.NotVouched        WAITING
        ├── chain.statements.StatementError    (an approval that does not count)
        ├── chain.changes.TreeRefused, chain.node_state.StateFileError, ...
        └── store errors (reconciler.store)    unavailability is TRANSIENT
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Retry(enum.Enum):
    """What retrying the same work can do about an error."""

    STALLED = "Stalled"  # nothing, until a person changes something: report and wait
    WAITING = "Waiting"  # it may pass on its own (approvals come in, time passes): retry later
    TRANSIENT = "Transient"  # the surroundings failed (network, a peer, a store): back off, retry


class ReconcilerError(Exception):
    exit_code = 1
    retry: ClassVar[Retry] = Retry.STALLED


class InputError(ReconcilerError):
    exit_code = 2


class CheckFailed(ReconcilerError):
    exit_code = 1
