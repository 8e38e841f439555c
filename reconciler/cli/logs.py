"""`circle logs WORKLOAD`: what a workload's replicas on this node printed, from their log files
(`reconciler.node.logs`), as `kubectl logs` shows a pod's: one replica's lines, or several
merged by time, each line prefixed with its replica (`--prefix`), `-f` to follow.

The lines were written by the workload, so nothing in them reaches the terminal raw: control
characters but tab (ESC, CR, backspace, C1 controls, line and paragraph separators, bidi
overrides) are shown escaped (`\\x1b`), and no markup is read. JSON output is one object a line
(JSON lines), ASCII only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import plural, stderr
from reconciler.errors import InputError
from reconciler.node.logs import (
    LogLine,
    Skipped,
    follow_logs,
    has_log,
    is_name,
    merge_by_time,
    read_log,
    replica_log_dir,
    replica_slots,
    replica_workloads,
)

_UNSAFE = [
    *range(0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0),  # C0 (not tab), DEL, C1
    0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),  # bidi controls
    0x2028, 0x2029,  # line and paragraph separators
]  # fmt: skip
_ESCAPES = {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _UNSAFE}


def printable(text: str) -> str:
    """`text` safe for a terminal: the characters that could move the cursor, change colours,
    end the line or reorder it, written as escapes."""
    return text.translate(_ESCAPES)


@click.command("logs")
@click.argument("workload")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="The node's folder (as given to `circle node run`).",
)
@click.option("--replica", "slot", type=click.IntRange(min=0), default=None, metavar="SLOT",
              help="Only this replica (its slot); default: all of them on this node.")  # fmt: skip
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines until Ctrl-C or SIGTERM.")  # fmt: skip
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="Only the last N lines of each replica (default: all).")  # fmt: skip
@click.option("--timestamps", is_flag=True, help="Begin each line with its time (RFC 3339, UTC).")
@output_option
def command(
    workload: str,
    state_dir: Path,
    slot: int | None,
    follow: bool,
    tail: int | None,
    timestamps: bool,
    output: str | None,
) -> int:
    """Print what WORKLOAD's replicas on this node wrote to stdout and stderr, oldest first.

    Several replicas are merged by time, each line prefixed with `[slot N]`. With `-o json`,
    one object a line: {"time", "stream", "slot", "text"}.
    """
    folders = _log_folders(state_dir, workload, slot)
    as_json = settings(output).json
    prefixed = len(folders) > 1
    skipped = Skipped()
    lines = _follow(folders, tail, skipped) if follow else _read(folders, tail, skipped)
    try:
        for shown, line in lines:
            if as_json:
                _write(_json_line(shown, line), follow)
            else:
                _write(_text_line(shown, line, prefixed, timestamps), follow)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has had enough
        _quiet_stdout()
        return 0
    if skipped.records:
        stderr.print(
            f"circle: {plural(skipped.records, 'damaged log record')} skipped", markup=False
        )
    return 0


def _log_folders(state_dir: Path, workload: str, slot: int | None) -> dict[int, Path]:
    """The log folders to show, by slot; InputError naming what there is when there is none."""
    if not is_name(workload):
        raise InputError(
            f"not a workload name: {workload!r} (1-63 of a-z, 0-9, -; a letter first, no - last)"
        )
    slots = [found for found in replica_slots(state_dir, workload)
             if has_log(state_dir, workload, found)]  # fmt: skip
    if not slots:
        here = [name for name in replica_workloads(state_dir) if name != workload]
        known = f"workloads with replicas here: {', '.join(here)}" if here else "none here"
        raise InputError(f"no replicas of {workload} with logs on this node ({known})")
    if slot is not None:
        if slot not in slots:
            raise InputError(
                f"no replica {slot} of {workload} on this node "
                f"(replicas here: {', '.join(map(str, slots))})"
            )
        slots = [slot]
    return {found: replica_log_dir(state_dir, workload, found) for found in slots}


def _read(
    folders: dict[int, Path], tail: int | None, skipped: Skipped
) -> Iterable[tuple[int, LogLine]]:
    return merge_by_time(
        {slot: read_log(folder, tail=tail, skipped=skipped) for slot, folder in folders.items()}
    )


def _follow(
    folders: dict[int, Path], tail: int | None, skipped: Skipped
) -> Iterator[tuple[int, LogLine]]:
    """Lines until SIGTERM or Ctrl-C, which end the command as a finished one (exit 0)."""
    stop = threading.Event()

    def stopping(signum: int, frame: object) -> None:
        stop.set()

    previous = {
        signum: signal.signal(signum, stopping) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield from follow_logs(folders, stop=stop, tail=tail, skipped=skipped)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _text_line(slot: int, line: LogLine, prefixed: bool, timestamps: bool) -> str:
    parts = [f"[slot {slot}] " if prefixed else "", f"{line.time} " if timestamps else ""]
    return "".join(parts) + printable(line.text) + "\n"


def _json_line(slot: int, line: LogLine) -> str:
    found: dict[str, Any] = {
        "time": line.time,
        "stream": line.stream,
        "slot": slot,
        "text": line.text,
    }
    return json.dumps(found, ensure_ascii=True) + "\n"


def _write(text: str, flush: bool) -> None:
    """Plain writes, not rich: nothing of a line is read as markup, and following stays fast."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:  # a terminal that cannot show some character
        sys.stdout.write(text.encode("ascii", "backslashreplace").decode("ascii"))
    if flush:
        sys.stdout.flush()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
