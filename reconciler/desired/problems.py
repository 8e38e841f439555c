"""Problems found in a circle's documents, with the place they were found.

A `Problem` is what a user reads: `file:line:col: message`. Checks produce `Finding`s against a
path inside a document (`("workloads", 0, "port")`); `locate` turns them into problems once the
document's positions are known.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from reconciler.errors import InputError

DocPath: TypeAlias = tuple[str | int, ...]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Stage(enum.StrEnum):
    """How far a document got before the problem was found; decides the exit code."""

    DOCUMENT = "document"  # cannot be read as a valid document: bad input (exit 2)
    REPOSITORY = "repository"  # valid documents that do not fit together or break policy (exit 1)


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    column: int


START = Mark(1, 1)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    mark: Mark
    message: str
    code: str
    severity: Severity = Severity.ERROR
    stage: Stage = Stage.DOCUMENT

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{self.file}:{self.mark.line}:{self.mark.column}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, str | int]:
        return {
            "file": self.file,
            "line": self.mark.line,
            "column": self.mark.column,
            "severity": self.severity.value,
            "stage": self.stage.value,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem found at a path inside one document, before it is given a line and column.

    `at_key` points at the key of the last path element instead of its value (for "unknown
    field" and "duplicate name" the key is what the user has to look at).
    """

    path: DocPath
    message: str
    code: str
    severity: Severity = Severity.ERROR
    at_key: bool = False


def sort_key(problem: Problem) -> tuple[str, int, int, str]:
    return (problem.file, problem.mark.line, problem.mark.column, problem.message)


class DocumentError(InputError):
    """A document failed to parse or validate. `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("DocumentError needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = str(self.problems[0])
        more = len(self.problems) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more)")
