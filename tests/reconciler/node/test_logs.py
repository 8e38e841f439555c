"""Replica log files (reconciler.node.logs): CRI records written to real files, rotated by size,
appended to after a restart, and read back (whole, tail, followed across rotations) by readers
that skip damage instead of failing."""

from __future__ import annotations

import os
import queue
import re
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.node.logs import (
    CURRENT,
    PIECE,
    LogLine,
    LogWriter,
    Skipped,
    follow_log,
    follow_logs,
    has_log,
    merge_by_time,
    read_log,
    replica_log_dir,
    replica_slots,
    replica_workloads,
)

START = 1_796_170_629_669_794_202  # 2026-12-02T00:17:09.669794202Z, in nanoseconds
RECORD = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) ([FP]) (.*)", re.S)


class FakeClock:
    """Nanoseconds since the epoch, a millisecond further at every reading."""

    def __init__(self, start: int = START) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def writer(folder: Path, **options: int) -> LogWriter:
    return LogWriter(folder, clock=FakeClock(), **options)


def records(folder: Path, name: str = CURRENT) -> list[tuple[str, str, bytes]]:
    """(stream, tag, content) of every record of one file; fails on a malformed one."""
    found = []
    for raw in (folder / name).read_bytes().split(b"\n")[:-1]:
        match = RECORD.fullmatch(raw)
        assert match, raw[:80]
        found.append((match[1].decode(), match[2].decode(), match[3]))
    return found


def texts(lines: list[LogLine]) -> list[str]:
    return [line.text for line in lines]


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- framing ----------------------------------------------------------------------------------


def test_a_line_is_one_record_in_the_cri_format(tmp_path: Path) -> None:
    with writer(tmp_path / "log") as log:
        log.write("stdout", b"hello world\n")
    assert (tmp_path / "log" / CURRENT).read_bytes() == (
        b"2026-12-02T00:17:09.670794202Z stdout F hello world\n"
    )


def test_lines_are_framed_however_the_bytes_arrive(tmp_path: Path) -> None:
    with writer(tmp_path / "log") as log:
        for chunk in (b"he", b"llo\nwor", b"ld\n\nlast ", b"words"):
            log.write("stdout", chunk)
        log.write("stderr", b"oops\n")
        assert records(tmp_path / "log") == [
            ("stdout", "F", b"hello"),
            ("stdout", "F", b"world"),
            ("stdout", "F", b""),
            ("stderr", "F", b"oops"),
        ]
    # closing writes the unterminated rest as the stream's last line
    assert records(tmp_path / "log")[-1] == ("stdout", "F", b"last words")
    assert texts(read_log(tmp_path / "log")) == ["hello", "world", "", "oops", "last words"]


def test_content_is_kept_as_bytes_and_read_back_as_utf8(tmp_path: Path) -> None:
    raw = b"caf\xc3\xa9 \xff\xfe \x1b[31mred\r\x07 tab\there"
    with writer(tmp_path / "log") as log:
        log.write("stderr", raw + b"\n")
    assert records(tmp_path / "log") == [("stderr", "F", raw)]
    [line] = read_log(tmp_path / "log")
    assert line == LogLine(
        "2026-12-02T00:17:09.670794202Z", "stderr", "café \ufffd\ufffd \x1b[31mred\r\x07 tab\there"
    )


def test_a_stream_must_be_stdout_or_stderr(tmp_path: Path) -> None:
    with writer(tmp_path / "log") as log, pytest.raises(ValueError, match="not a stream"):
        log.write("stdin", b"x\n")


LONG = [PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 40_000, 5 * PIECE + 7]


@pytest.mark.parametrize("length", LONG, ids=[str(n) for n in LONG])
@pytest.mark.parametrize("chunk", [None, 1000, PIECE + 3], ids=["whole", "1000", "piece+3"])
def test_long_lines_are_cut_into_16k_pieces_and_joined_again(
    tmp_path: Path, length: int, chunk: int | None
) -> None:
    line = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    data = line.replace(b"\n", b"n") + b"\n"
    with writer(tmp_path / "log") as log:
        for start in range(0, len(data), chunk or len(data)):
            log.write("stdout", data[start : start + (chunk or len(data))])
    found = records(tmp_path / "log")
    pieces = -(-length // PIECE)
    assert [tag for _, tag, _ in found] == ["P"] * (pieces - 1) + ["F"]
    assert all(len(content) == PIECE for _, _, content in found[:-1])
    assert b"".join(content for _, _, content in found) == data[:-1]
    assert texts(read_log(tmp_path / "log")) == [data[:-1].decode("utf-8", "replace")]


def test_pieces_of_one_stream_are_joined_across_the_other_streams_lines(tmp_path: Path) -> None:
    with writer(tmp_path / "log") as log:
        log.write("stdout", b"a" * (PIECE + 10))  # one piece out, 10 bytes pending
        log.write("stderr", b"between\n")
        log.write("stdout", b"b\n")
    assert [(stream, tag) for stream, tag, _ in records(tmp_path / "log")] == [
        ("stdout", "P"),
        ("stderr", "F"),
        ("stdout", "F"),
    ]
    lines = read_log(tmp_path / "log")
    assert [(line.stream, line.text) for line in lines] == [
        ("stderr", "between"),
        ("stdout", "a" * (PIECE + 10) + "b"),
    ]
    assert lines[0].time < lines[1].time  # a joined line has the time of its last piece


def test_a_real_process_writing_through_pipes(tmp_path: Path) -> None:
    """A child writes numbered lines (some long) to stdout and stderr; two threads copy its pipes
    into one writer while it rotates: every line arrives whole, in its stream's order."""
    program = (
        "import sys\n"
        "for i in range(3000):\n"
        "    stream = sys.stdout if i % 3 else sys.stderr\n"
        "    stream.write(f'{i} ' + 'x' * (i % 7 * 5000) + '\\n')\n"
        "    if i % 100 == 0: stream.flush()\n"
    )
    log = LogWriter(tmp_path / "log", max_bytes=256 * 1024, max_files=1000)

    def copy(stream: str, pipe: int) -> None:
        while chunk := os.read(pipe, 65536):
            log.write(stream, chunk)

    command = [sys.executable, "-c", program]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        threads = [
            threading.Thread(target=copy, args=("stdout", child.stdout.fileno())),
            threading.Thread(target=copy, args=("stderr", child.stderr.fileno())),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert child.wait(timeout=60) == 0
    log.close()
    assert len(list((tmp_path / "log").iterdir())) > 10  # it did rotate
    skipped = Skipped()
    lines = read_log(tmp_path / "log", skipped=skipped)
    assert skipped.records == 0
    for stream, wanted in (("stdout", [i for i in range(3000) if i % 3]),
                           ("stderr", [i for i in range(3000) if not i % 3])):  # fmt: skip
        seen = [line.text for line in lines if line.stream == stream]
        assert seen == [f"{i} " + "x" * (i % 7 * 5000) for i in wanted]


# -- files: rotation, restarts, links ---------------------------------------------------------


def numbered(log: LogWriter, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        log.write("stdout", f"line {number:04d}\n".encode())


def test_rotation_by_size_drops_the_oldest_and_loses_no_line(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder, max_bytes=400, max_files=4) as log:
        numbered(log, 100)
    assert sorted(os.listdir(folder)) == [CURRENT, f"{CURRENT}.1", f"{CURRENT}.2", f"{CURRENT}.3"]
    assert all(len((folder / name).read_bytes()) <= 400 for name in os.listdir(folder))
    kept = texts(read_log(folder))
    # a contiguous run ending with the last line: whole files were dropped, no line inside
    first = int(kept[0].split()[1])
    assert first > 0
    assert kept == [f"line {number:04d}" for number in range(first, 100)]
    assert len(kept) == sum(len(records(folder, name)) for name in os.listdir(folder))


def test_rotation_with_room_for_everything_keeps_everything(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder, max_bytes=400, max_files=100) as log:
        numbered(log, 100)
    assert len(os.listdir(folder)) > 10
    assert texts(read_log(folder)) == [f"line {number:04d}" for number in range(100)]
    # oldest in the highest number, the newest in the current file
    oldest = max(int(name.rsplit(".", 1)[1]) for name in os.listdir(folder) if name != CURRENT)
    assert records(folder, f"{CURRENT}.{oldest}")[0][2] == b"line 0000"
    assert records(folder)[-1][2] == b"line 0099"


def test_a_record_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder, max_bytes=100, max_files=10) as log:
        log.write("stdout", b"y" * 500 + b"\nshort\n")
    assert texts(read_log(folder)) == ["y" * 500, "short"]
    assert records(folder, f"{CURRENT}.1") == [("stdout", "F", b"y" * 500)]


def test_a_rotation_that_cannot_happen_loses_nothing(tmp_path: Path) -> None:
    """Where the next file cannot be made (here a folder sits on its name), the writer keeps
    writing the current file, and rotates again once it can."""
    folder = tmp_path / "log"
    (folder / "replica.log.next").mkdir(parents=True)
    log = writer(folder, max_bytes=400, max_files=100)
    numbered(log, 50)
    assert sorted(os.listdir(folder)) == [CURRENT, "replica.log.next"]
    (folder / "replica.log.next").rmdir()
    numbered(log, 50, start=50)
    log.close()
    assert len(os.listdir(folder)) > 3
    assert texts(read_log(folder)) == [f"line {number:04d}" for number in range(100)]
    with pytest.raises(ValueError, match="closed"):
        log.write("stdout", b"after close\n")


def test_a_writer_after_a_restart_appends_to_the_same_files(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder, max_bytes=400, max_files=100) as first:
        numbered(first, 30)
        first.write("stdout", b"unterminated")
    with writer(folder, max_bytes=400, max_files=100) as second:
        second.write("stdout", b"next incarnation\n")
        numbered(second, 30, start=30)
    assert texts(read_log(folder)) == [
        *(f"line {n:04d}" for n in range(30)),
        "unterminated",
        "next incarnation",
        *(f"line {n:04d}" for n in range(30, 60)),
    ]


def test_a_restart_ends_what_a_killed_writer_left_open(tmp_path: Path) -> None:
    """A writer killed after a `P` piece, and one killed mid-record: the next incarnation's
    first lines are not joined to them; the torn record is one skipped line."""
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / CURRENT).write_bytes(
        b"2026-12-02T00:17:09.000000001Z stdout P half a line\n"
        b"2026-12-02T00:17:09.000000002Z stderr F whole\n"
        b"2026-12-02T00:17:09.00000"  # torn mid-record
    )
    with writer(folder) as log:
        log.write("stdout", b"first of the new\n")
        log.write("stderr", b"second of the new\n")
    skipped = Skipped()
    assert texts(read_log(folder, skipped=skipped)) == [
        "whole",
        "half a line",
        "first of the new",
        "second of the new",
    ]
    assert skipped.records == 1


def test_modes_and_links(tmp_path: Path) -> None:
    folder = tmp_path / "replicas" / "web" / "0" / "log"
    with LogWriter(folder) as log:
        log.write("stdout", b"x\n")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / CURRENT).stat().st_mode) == 0o600

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"precious\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / CURRENT).symlink_to(elsewhere)
    with pytest.raises(OSError, match="is a link"):
        LogWriter(linked)
    (tmp_path / "folder-link").symlink_to(folder)
    with pytest.raises(OSError, match="is a link"):
        LogWriter(tmp_path / "folder-link")
    assert elsewhere.read_bytes() == b"precious\n"


def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_files"):
        LogWriter(tmp_path, max_files=1)
    with pytest.raises(ValueError, match="max_bytes"):
        LogWriter(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="tail"):
        read_log(tmp_path, tail=-1)


# -- reading: tail, damage --------------------------------------------------------------------


def test_tail_takes_the_last_lines_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder, max_bytes=400, max_files=100) as log:
        numbered(log, 100)
    assert texts(read_log(folder, tail=3)) == ["line 0097", "line 0098", "line 0099"]
    assert texts(read_log(folder, tail=0)) == []
    assert len(read_log(folder, tail=1000)) == 100


def test_tail_holds_only_its_lines_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    record = b"2026-12-02T00:17:09.669794202Z stdout F " + b"z" * 200 + b"\n"
    (folder / CURRENT).write_bytes(record * 40_000)  # 9.6 MB
    tracemalloc.start()
    try:
        assert len(read_log(folder, tail=5)) == 5
        _, tail_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert len(read_log(folder)) == 40_000
        _, all_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail_peak < 2 * 1024 * 1024
    assert all_peak > 8 * 1024 * 1024  # what an unbounded read costs: the check can fail


def test_damaged_and_overlong_records_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    good = b"2026-12-02T00:17:09.669794202Z stdout F good %d\n"
    (folder / CURRENT).write_bytes(
        (good % 1)
        + b"garbage\n"
        + b"2026-12-02T00:17:09.669794202Z stdin F wrong stream\n"
        + b"2026-12-02T00:17:09.669794202Z stdout X wrong tag\n"
        + b"2026-12-02T00:17:09.6697Z stdout F short time\n"
        + b"2026-12-02T00:17:09.669794202Z stdout F " + b"o" * 70_000 + b"\n"  # overlong
        + b"\x00" * 200_000 + b"\n"  # overlong, no framing at all
        + (good % 2)
        + b"\n"
    )  # fmt: skip
    (folder / f"{CURRENT}.1").write_bytes(good % 0 + b"2026-12-02T00:17:09.669794202Z std")
    skipped = Skipped()
    assert texts(read_log(folder, skipped=skipped)) == ["good 0", "good 1", "good 2"]
    assert skipped.records == 8  # 6 bad lines, an empty one, the torn end of .1


def test_readers_follow_no_link_and_read_no_fifo(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with writer(folder) as log:
        log.write("stdout", b"real\n")
    secret = tmp_path / "secret"
    secret.write_bytes(b"2026-12-02T00:17:09.669794202Z stdout F secret\n")
    (folder / f"{CURRENT}.1").symlink_to(secret)
    os.mkfifo(folder / f"{CURRENT}.2")  # opened without blocking, then passed over
    assert texts(read_log(folder)) == ["real"]
    with pytest.raises(FileNotFoundError):
        read_log(tmp_path / "none")


# -- following --------------------------------------------------------------------------------


class Following:
    """follow_log in a thread, its lines in a list."""

    def __init__(self, folder: Path, tail: int | None = None) -> None:
        self.stop = threading.Event()
        self.lines: list[LogLine] = []
        self.skipped = Skipped()
        lines = follow_log(folder, stop=self.stop, poll=0.01, tail=tail, skipped=self.skipped)
        self.thread = threading.Thread(target=lambda: self.lines.extend(lines))
        self.thread.start()

    def texts(self) -> list[str]:
        return texts(list(self.lines))

    def wait_for(self, count: int) -> None:
        wait_for(lambda: len(self.lines) >= count)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@pytest.fixture
def following() -> Iterator[Callable[..., Following]]:
    started: list[Following] = []

    def start(folder: Path, tail: int | None = None) -> Following:
        started.append(Following(folder, tail))
        return started[-1]

    yield start
    for one in started:
        one.end()


def test_follow_yields_the_tail_then_new_lines(
    tmp_path: Path, following: Callable[..., Following]
) -> None:
    folder = tmp_path / "log"
    log = writer(folder)
    numbered(log, 10)
    follower = following(folder, tail=2)
    follower.wait_for(2)
    numbered(log, 3, start=10)
    follower.wait_for(5)
    log.close()
    follower.end()
    assert follower.texts() == [f"line {n:04d}" for n in (8, 9, 10, 11, 12)]


def test_follow_continues_across_rotations(
    tmp_path: Path, following: Callable[..., Following]
) -> None:
    """Lines written one at a time, and bursts with several rotations between two polls: the
    follower sees each line once, in order."""
    folder = tmp_path / "log"
    log = writer(folder, max_bytes=200, max_files=1000)
    follower = following(folder)
    count = 0
    for burst in (1, 1, 3, 1, 40, 2, 100, 1):
        numbered(log, burst, start=count)
        count += burst
        follower.wait_for(count)
    log.close()
    follower.end()
    assert follower.texts() == [f"line {n:04d}" for n in range(count)]
    assert len(os.listdir(folder)) > 20
    assert follower.skipped.records == 0


@pytest.mark.slow
def test_follow_keeps_up_with_a_writer_that_rotates_as_it_reads(
    tmp_path: Path, following: Callable[..., Following]
) -> None:
    """Rotations while the follower reads the folder (a readdir during renames may miss a
    file, or see it before it moves on): each line still comes once, in order."""
    folder = tmp_path / "log"
    log = writer(folder, max_bytes=200, max_files=1000)  # none dropped: each line is there
    follower = following(folder)
    total = 1200  # about 300 rotations, each renaming every file up one
    numbered(log, total)
    follower.wait_for(total)
    log.close()
    follower.end()
    assert follower.texts() == [f"line {n:04d}" for n in range(total)]
    assert follower.skipped.records == 0


def test_follow_waits_for_a_record_still_being_written(
    tmp_path: Path, following: Callable[..., Following]
) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    current = folder / CURRENT
    current.write_bytes(b"2026-12-02T00:17:09.669794202Z stdout F one\n2026-12-02T00:17:")
    follower = following(folder)
    follower.wait_for(1)
    with current.open("ab") as file:
        file.write(b"10.000000000Z stdout P tw")
        file.flush()
        file.write(b"o\n2026-12-02T00:17:11.000000000Z stdout F  halves\n")
    follower.wait_for(2)
    follower.end()
    assert follower.texts() == ["one", "two halves"]
    assert follower.skipped.records == 0


def test_follow_waits_for_the_first_file(
    tmp_path: Path, following: Callable[..., Following]
) -> None:
    folder = tmp_path / "log"
    folder.mkdir()
    follower = following(folder)
    with writer(folder) as log:
        numbered(log, 2)
    follower.wait_for(2)
    follower.end()
    assert follower.texts() == ["line 0000", "line 0001"]


def test_follow_several_replicas_merged_by_time(tmp_path: Path) -> None:
    clock = FakeClock()
    a = LogWriter(tmp_path / "a", clock=clock)
    b = LogWriter(tmp_path / "b", clock=clock)
    a.write("stdout", b"a1\n")
    b.write("stdout", b"b1\n")
    a.write("stdout", b"a2\n")
    stop = threading.Event()
    found: queue.Queue[tuple[str, str]] = queue.Queue()

    def run() -> None:
        folders = {"a": tmp_path / "a", "b": tmp_path / "b"}
        for key, line in follow_logs(folders, stop=stop, poll=0.01):
            found.put((key, line.text))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        seen = [found.get(timeout=60) for _ in range(3)]
        b.write("stderr", b"b2\n")
        seen.append(found.get(timeout=60))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert seen == [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")]


def test_merge_by_time() -> None:
    def line(time: str, text: str) -> LogLine:
        return LogLine(f"2026-12-02T00:17:{time}Z", "stdout", text)

    merged = merge_by_time(
        {
            0: [line("01.000000000", "a"), line("03.000000000", "c"), line("09.000000000", "f")],
            1: [line("02.000000000", "b"), line("03.000000000", "d"), line("04.000000000", "e")],
            2: [],
        }
    )
    assert [(key, one.text) for key, one in merged] == [
        (0, "a"), (1, "b"), (0, "c"), (1, "d"), (1, "e"), (0, "f"),
    ]  # fmt: skip


# -- where the files are ----------------------------------------------------------------------


def test_replica_folders(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert replica_log_dir(state, "langid", 3) == state / "replicas" / "langid" / "3" / "log"
    for bad in ("", "Langid", "-x", "x-", "../x", "a/b", "a" * 64, "1x"):
        with pytest.raises(ValueError, match="not a workload name"):
            replica_log_dir(state, bad, 0)
    with pytest.raises(ValueError, match="not a slot"):
        replica_log_dir(state, "langid", -1)
    assert replica_workloads(state) == []
    assert replica_slots(state, "langid") == []

    for slot in ("0", "2", "10", "01", "x", "-1"):
        (state / "replicas" / "langid" / slot).mkdir(parents=True)
    (state / "replicas" / "langid" / "5").write_text("a file")
    (state / "replicas" / "langid" / "7").symlink_to(state / "replicas" / "langid" / "2")
    (state / "replicas" / "Bad").mkdir()
    (state / "replicas" / "web").mkdir()
    replica_log_dir(state, "langid", 2).mkdir()
    assert replica_workloads(state) == ["langid", "web"]
    assert replica_slots(state, "langid") == [0, 2, 10]
    assert [has_log(state, "langid", slot) for slot in (0, 2, 7)] == [False, True, False]
