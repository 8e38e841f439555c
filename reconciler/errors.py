"""Errors of the reconciler package.

The CLI catches `ReconcilerError` once, prints its message and exits with its `exit_code`;
`--verbose` shows the traceback instead.

    ReconcilerError
    ├── InputError           bad usage or input (exit 2)
    │   └── DocumentError    one or more documents cannot be read; carries the problems
    └── CheckFailed          a verification or validation check failed (exit 1)
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.desired.problems import Problem


class ReconcilerError(Exception):
    exit_code = 1


class InputError(ReconcilerError):
    exit_code = 2


class DocumentError(InputError):
    """A document failed to parse or validate. `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("DocumentError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = str(self.problems[0])
        more = len(self.problems) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more)")


class CheckFailed(ReconcilerError):
    exit_code = 1
