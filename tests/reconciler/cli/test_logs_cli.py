"""`circle logs`: a node's replica logs (written by the real LogWriter) as people and machines
read them; one replica or several merged with prefixes; errors that name what there is; text
from a hostile workload shown escaped; `--follow` as a real process ended by SIGTERM."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.node.logs import LogWriter, replica_log_dir
from tests.conftest import Result

START = 1_796_170_629_000_000_000  # 2026-12-02T00:17:09Z, in nanoseconds


class Clock:
    """One clock for all replicas: each reading a second after the last."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        self.now += 1_000_000_000
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A node's folder where langid has replicas 0 and 1 (their lines interleaved in time) and
    web has replica 2."""
    state = tmp_path / "node"
    clock = Clock()
    zero = LogWriter(replica_log_dir(state, "langid", 0), clock=clock)
    one = LogWriter(replica_log_dir(state, "langid", 1), clock=clock)
    zero.write("stdout", b"zero starts\n")  # 00:17:10
    one.write("stdout", b"one starts\n")  # 00:17:11
    one.write("stderr", b"one warns\n")  # 00:17:12
    zero.write("stdout", b"zero serves\n")  # 00:17:13
    zero.close()
    one.close()
    with LogWriter(replica_log_dir(state, "web", 2), clock=clock) as web:
        web.write("stdout", b"web\n")
    return state


def test_one_replica(circle: Callable[..., Result], state: Path) -> None:
    result = circle("logs", "langid", "--replica", "0", "--state", str(state))
    assert result.code == 0, result.stderr
    assert result.stdout == "zero starts\nzero serves\n"
    assert result.stderr == ""


def test_a_workload_with_one_replica_has_no_prefix(
    circle: Callable[..., Result], state: Path
) -> None:
    assert circle("logs", "web", "--state", str(state)).stdout == "web\n"


def test_several_replicas_merged_by_time_with_prefixes(
    circle: Callable[..., Result], state: Path
) -> None:
    result = circle("logs", "langid", "--state", str(state))
    assert result.code == 0, result.stderr
    assert result.stdout == (
        "[slot 0] zero starts\n[slot 1] one starts\n[slot 1] one warns\n[slot 0] zero serves\n"
    )


def test_timestamps_and_tail(circle: Callable[..., Result], state: Path) -> None:
    result = circle("logs", "langid", "--state", str(state), "--timestamps", "--tail", "1")
    assert result.code == 0, result.stderr
    # the last line of each replica, merged
    assert result.stdout == (
        "[slot 1] 2026-12-02T00:17:12.000000000Z one warns\n"
        "[slot 0] 2026-12-02T00:17:13.000000000Z zero serves\n"
    )
    result = circle("logs", "langid", "--replica", "1", "--state", str(state), "--tail", "0")
    assert result.stdout == ""


def test_json_lines(circle: Callable[..., Result], state: Path) -> None:
    result = circle("logs", "langid", "--state", str(state), "-o", "json")
    assert result.code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[1:3] == [
        {"time": "2026-12-02T00:17:11.000000000Z", "stream": "stdout", "slot": 1,
         "text": "one starts"},
        {"time": "2026-12-02T00:17:12.000000000Z", "stream": "stderr", "slot": 1,
         "text": "one warns"},
    ]  # fmt: skip
    assert [row["text"] for row in rows] == [
        "zero starts", "one starts", "one warns", "zero serves",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no replicas of nope with logs on this node "
                   "(workloads with replicas here: langid, web)"),
        (["langid", "--replica", "3"], "no replica 3 of langid on this node "
                                       "(replicas here: 0, 1)"),
        (["Bad/../x"], "not a workload name: 'Bad/../x'"),
    ],
    ids=["no-workload", "no-replica", "not-a-name"],
)  # fmt: skip
def test_what_is_not_there_is_one_line_naming_what_is(
    circle: Callable[..., Result], state: Path, args: list[str], message: str
) -> None:
    result = circle("logs", *args, "--state", str(state))
    assert result.code == 2
    assert result.stderr.startswith(f"circle: error: {message}")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_an_empty_node(circle: Callable[..., Result], tmp_path: Path) -> None:
    result = circle("logs", "langid", "--state", str(tmp_path))
    assert result.code == 2
    assert (
        result.stderr == "circle: error: no replicas of langid with logs on this node (none here)\n"
    )
    missing = circle("logs", "langid", "--state", str(tmp_path / "nowhere"))
    assert missing.code == 2
    assert "does not exist" in missing.stderr


def test_a_hostile_line_is_shown_escaped_and_literal(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    hostile = (
        "\x1b[2J\x1b]0;owned\x07 [bold]x[/] [red]y "
        "back\x08space\rreturn\tTab \u009b31m \u2028 \u202eevil nul\x00"
    )
    with LogWriter(replica_log_dir(tmp_path, "evil", 0)) as log:
        log.write("stdout", hostile.encode() + b"\n")
    result = circle("logs", "evil", "--state", str(tmp_path))
    assert result.code == 0, result.stderr
    assert result.stdout == (
        "\\x1b[2J\\x1b]0;owned\\x07 [bold]x[/] [red]y "
        "back\\x08space\\x0dreturn\tTab \\x9b31m \\u2028 \\u202eevil nul\\x00\n"
    )
    as_json = circle("logs", "evil", "--state", str(tmp_path), "-o", "json")
    assert json.loads(as_json.stdout)["text"] == hostile  # machines get the text as it was
    assert as_json.stdout.isascii()


def test_damaged_records_are_skipped_and_said(circle: Callable[..., Result], state: Path) -> None:
    current = replica_log_dir(state, "web", 2) / "replica.log"
    current.write_bytes(current.read_bytes() + b"not a record\n")
    result = circle("logs", "web", "--state", str(state))
    assert result.code == 0
    assert result.stdout == "web\n"
    assert result.stderr == "circle: 1 damaged log record skipped\n"


def test_help(circle: Callable[..., Result]) -> None:
    result = circle("logs", "--help")
    assert result.code == 0
    for option in ("--replica", "--follow", "--tail", "--timestamps", "--state", "--output"):
        assert option in result.stdout


# -- as real processes ------------------------------------------------------------------------


def start(*args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


@pytest.mark.parametrize("output", ["text", "json"])
def test_follow_prints_new_lines_until_sigterm(state: Path, output: str) -> None:
    process, lines = start(
        "logs", "langid", "--state", str(state), "--follow", "--tail", "1", "-o", output
    )
    try:
        seen = [lines.get(timeout=60) for _ in range(2)]
        with LogWriter(replica_log_dir(state, "langid", 1), max_bytes=300) as log:
            for number in range(20):  # rotates on the way
                log.write("stdout", f"new {number}\n".encode())
        seen += [lines.get(timeout=60) for _ in range(20)]
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert errors == ""
    if output == "json":
        seen = [f"[slot {row['slot']}] {row['text']}\n" for row in map(json.loads, seen)]
    assert seen == [
        "[slot 1] one warns\n",
        "[slot 0] zero serves\n",
        *(f"[slot 1] new {number}\n" for number in range(20)),
    ]


def test_a_reader_that_stops_reading_ends_it_quietly(state: Path) -> None:
    """`circle logs ... | head -1`: the pipe closes early; exit 0, no traceback."""
    with LogWriter(replica_log_dir(state, "web", 2)) as log:
        for number in range(20_000):
            log.write("stdout", f"line {number} {'x' * 80}\n".encode())
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "logs", "web", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"web\n"
    process.stdout.close()
    assert process.stderr is not None
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert errors == b""
