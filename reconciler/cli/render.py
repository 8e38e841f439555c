"""Printing for people (rich, on a terminal or plain when piped) and for machines (JSON)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from reconciler.desired.problems import DocumentError, Problem, Severity

if TYPE_CHECKING:  # annotations only: the models cost 200 ms to import, and errors print here
    from rich.console import Console
    from rich.progress import Progress

    from reconciler.desired.repository import DesiredState, Report


class _FirstUse:
    """A rich Console made when first used: rich takes 25 ms to import, and a command that
    replays a kept answer (`reconciler.cli.answers`) prints nothing through it."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


stdout: Console = cast("Console", _FirstUse(stderr=False))
stderr: Console = cast("Console", _FirstUse(stderr=True))


def console_of(proxy: Console) -> Console:
    """The Console itself, for rich objects that take one (`Live`, `Progress`)."""
    return proxy.console if isinstance(proxy, _FirstUse) else proxy


def json_text(value: Any) -> str:
    """`value` as `print_json` prints it."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def print_json(value: Any) -> None:
    sys.stdout.write(json_text(value))
    sys.stdout.flush()


class ProblemsFound(DocumentError):
    """Bad input found as problems in documents, with a sentence saying what it stopped:
    printed as the problems, one a line, then the sentence; in JSON as both."""

    def __init__(self, message: str, problems: Sequence[Problem]) -> None:
        super().__init__(problems)
        self.args = (message,)


def print_error(message: str, as_json: bool, problems: Sequence[Problem] = ()) -> None:
    """One clear error: a line per problem on stderr, or one JSON object on stdout."""
    if as_json:
        print_json({"error": message, "problems": [p.as_dict() for p in problems]})
        return
    for problem in problems:
        stderr.print(str(problem), markup=False)
    # A DocumentError's message is its first problem again; any other says what it stopped.
    if not problems or not message.startswith(str(problems[0])):
        stderr.print(f"circle: error: {message}", markup=False)


GAP = "   "
ELLIPSIS = "…"


def print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Aligned columns as kubectl prints them: upper-case headers, three spaces between
    columns. Piped, nothing is cut; on a terminal (or with COLUMNS set) lines are fitted to
    its width by shortening the widest cells in their middle, with an ellipsis, rather than
    letting the terminal break them mid-word."""
    widths = fit_widths(
        [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(header)],
        [len(title) for title in header],
        terminal_columns(),
    )
    for row in [header, *rows]:
        line = GAP.join(
            shorten(cell, width).ljust(width) for cell, width in zip(row, widths, strict=True)
        )
        sys.stdout.write(line.rstrip() + "\n")
    sys.stdout.flush()


def terminal_columns() -> int | None:
    """The width to fit lines to: $COLUMNS, else the terminal's; None when piped."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def fit_widths(widths: Sequence[int], floors: Sequence[int], limit: int | None) -> list[int]:
    """Column widths whose line fits in `limit`: the column with the most to spare gives up a
    character at a time, none below its header (or 8 characters), so narrow columns stay
    whole. When even that is too wide, the line is as narrow as those floors allow."""
    fitted = list(widths)
    if limit is None:
        return fitted
    least = [min(width, max(floor, 8)) for width, floor in zip(widths, floors, strict=True)]
    excess = sum(fitted) + len(GAP) * (len(fitted) - 1) - limit
    while excess > 0:
        widest = max(range(len(fitted)), key=lambda i: (fitted[i] - least[i], fitted[i]))
        if fitted[widest] <= least[widest]:
            break
        fitted[widest] -= 1
        excess -= 1
    return fitted


def shorten(cell: str, width: int) -> str:
    """`cell` in at most `width` characters: its start and end kept, the middle an ellipsis
    (an id's prefix and a path's file name both survive)."""
    if len(cell) <= width:
        return cell
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2
    return cell[: width - 1 - tail] + ELLIPSIS + (cell[-tail:] if tail else "")


def print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        style = "yellow" if problem.severity is Severity.WARNING else "red"
        stdout.print(str(problem), style=style, markup=False)


def transfer_progress(enabled: bool) -> Progress:
    """A bar with bytes, speed and time left, on stderr, shown only on a terminal."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console_of(stderr),
        disable=not enabled or not stderr.is_terminal,
        transient=True,
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- a circle repository's report (validate, describe) ---------------------------------------


def counts(state: DesiredState) -> dict[str, int]:
    circle = state.circle.document if state.circle else None
    return {
        "members": len(circle.members) if circle else 0,
        "rules": len(circle.consensus.rules) if circle else 0,
        "nodes": len(state.nodes),
        "workloads": len(state.workloads),
        "builds": len(state.builds),
        "volumes": len(state.volumes),
    }


def report_json(path: Path, report: Report) -> dict[str, object]:
    circle = report.state.circle
    return {
        "path": str(path),
        "valid": not report.errors,
        "exitCode": report.exit_code,
        "documents": report.documents,
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "circle": {
            "id": circle.document.id,
            "version": circle.document.version,
            "policySha256": circle.sha256,
        }
        if circle
        else None,
        "counts": counts(report.state),
        "problems": [problem.as_dict() for problem in report.problems],
    }


def summary_line(path: Path, report: Report) -> str:
    parts = [plural(n, kind.removesuffix("s")) for kind, n in counts(report.state).items()]
    circle = report.state.circle
    name = f"circle {circle.document.id} v{circle.document.version}" if circle else "no circle"
    verdict = "valid" if not report.errors else f"invalid ({plural(len(report.errors), 'error')})"
    return (
        f"{path}: {name}, {plural(report.documents, 'document')} {verdict}; "
        f"{', '.join(parts)}; {plural(len(report.warnings), 'warning')}"
    )
