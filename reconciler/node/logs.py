"""A replica's log files: the shim writes its stdout and stderr into them, `circle logs` reads
them back. Standard library only: the shim imports this module in a fresh interpreter.

The format is Kubernetes' CRI log format, one record a line:

    2026-12-02T00:17:09.669794202Z stdout F the line's bytes

the time (RFC 3339, UTC, nine fractional digits, so that times sort as strings), the stream,
a tag, and the content exactly as the workload wrote it: bytes, never decoded or changed. `F`
ends a line. A line over 16 KiB is cut into 16 KiB pieces tagged `P`, the last piece `F`. A
stream's unterminated remainder is written `F` when the writer closes (containerd does the
same), so that the next incarnation's first line is never joined to it. A reader joins a
stream's `P` pieces up to its next `F`, and reads a `P` that nothing follows (a writer killed
mid-line) as a whole line.

The files, in a replica's log folder (`replica_log_dir`):

    replica.log       the current file, appended to by one writer at a time
    replica.log.1     the newest rotated file
    ...
    replica.log.<max_files - 1>   the oldest

    LogWriter(folder, max_bytes=, max_files=, clock=)   .write(stream, data)  .close()
    read_log(folder, tail=, skipped=) -> [LogLine]       oldest first, across the rotated files
    follow_log(folder, stop=, poll=, tail=, skipped=)    like `tail -F`, until `stop` is set
    follow_logs({key: folder}, ...) -> (key, LogLine)    several replicas, merged by time
    merge_by_time({key: lines}) -> (key, LogLine)        several replicas' lines, by time
    replica_log_dir(state, workload, slot)   the one place that knows the runtime's folders;
    replica_slots, replica_workloads, has_log, is_name   what there is, names checked first

The writer writes each record with one write(2), so the two streams' lines never interleave
mid-line, and rotates when the current file would pass `max_bytes`: it makes the next file as
`replica.log.next` (readers ignore it), shifts .N-1 -> .N (the oldest is dropped), ...,
current -> .1, and renames the next file current. A rename keeps the inode, so no line is lost
and a follower holding the old file finishes it before it turns to the new one. A writer
started after a restart appends to the same files; it first ends a line left torn or a piece
left pending by a writer that was killed, so that damage stays on one line.

Readers trust nothing in the folder: links are not followed, a record over 64 KiB is skipped
unread, and damaged records are skipped and counted (`Skipped`), never an exception. A
joined line is cut at 1 MiB.
"""

from __future__ import annotations

import heapq
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from reconciler.node.logfile import (
    _NEXT,
    _RECORD,
    CURRENT,
    MAX_LINE,
    MAX_RECORD,
    PIECE,
    STREAMS,
    LogWriter,
)

__all__ = [
    "CURRENT",
    "MAX_LINE",
    "MAX_RECORD",
    "PIECE",
    "STREAMS",
    "LogLine",
    "LogWriter",
    "Skipped",
    "follow_log",
    "follow_logs",
    "has_log",
    "is_name",
    "merge_by_time",
    "read_log",
    "replica_log_dir",
    "replica_slots",
    "replica_workloads",
]

_ROTATED = re.compile(re.escape(CURRENT) + r"\.([1-9][0-9]{0,5})")
# The circle's names and slot numbers, as reconciler.node.layout reads them from store keys.
_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_SLOT = re.compile(r"0|[1-9][0-9]{0,15}")

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CHUNK = 256 * 1024
_RELOOKS = 100  # looks at a folder a rotation is renaming in, before giving up on it

K = TypeVar("K", bound=Hashable)


# -- where the files are ----------------------------------------------------------------------


def is_name(name: str) -> bool:
    """Whether `name` is a circle name (a workload's): 1-63 of a-z, 0-9, -, a letter first."""
    return _NAME.fullmatch(name) is not None


def replica_log_dir(state_dir: Path, workload: str, slot: int) -> Path:
    """The log folder of replica `slot` of `workload` in a node's folder."""
    if not is_name(workload):
        raise ValueError(f"not a workload name: {workload!r}")
    if slot < 0:
        raise ValueError(f"not a slot: {slot}")
    return state_dir / "replicas" / workload / str(slot) / "log"


def replica_workloads(state_dir: Path) -> list[str]:
    """The workloads with a replica folder in a node's folder, sorted (other names ignored)."""
    return sorted(name for name in _folders(state_dir / "replicas") if is_name(name))


def replica_slots(state_dir: Path, workload: str) -> list[int]:
    """The slots of `workload`'s replica folders in a node's folder, in order (other names,
    `01` or `x`, files and links, are ignored)."""
    if not is_name(workload):
        raise ValueError(f"not a workload name: {workload!r}")
    folders = _folders(state_dir / "replicas" / workload)
    return sorted(int(name) for name in folders if _SLOT.fullmatch(name))


def has_log(state_dir: Path, workload: str, slot: int) -> bool:
    """Whether replica `slot` of `workload` has a log folder (folders all the way, no link)."""
    folder = replica_log_dir(state_dir, workload, slot)
    return all(_is_folder(path) for path in (folder.parent.parent, folder.parent, folder))


def _folders(path: Path) -> list[str]:
    if not _is_folder(path):
        return []
    with os.scandir(path) as entries:
        return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a replica's output: `time` is the CRI time of its last piece."""

    time: str
    stream: str
    text: str  # the content, pieces joined, decoded as UTF-8 (errors replaced)


@dataclass(slots=True)
class Skipped:
    """What readers passed over: damaged or overlong records, torn file ends."""

    records: int = 0


def read_log(
    directory: Path, *, tail: int | None = None, skipped: Skipped | None = None
) -> list[LogLine]:
    """A replica's lines, oldest first across the rotated files; with `tail`, only the last
    `tail` lines (and only as many held in memory). FileNotFoundError if there is no folder."""
    if tail is not None and tail < 0:
        raise ValueError(f"tail must be at least 0, not {tail}")
    follower = _Follower(directory, skipped or Skipped())
    try:
        return follower.backlog(tail, final=True)
    finally:
        follower.close()


def follow_log(
    directory: Path,
    *,
    stop: threading.Event,
    poll: float = 0.2,
    tail: int | None = None,
    skipped: Skipped | None = None,
) -> Iterator[LogLine]:
    """`read_log`'s lines, then new lines as they come, across rotations, until `stop` is set
    (checked every `poll` seconds). `tail` limits only the lines there were at the start."""
    lines = follow_logs({0: directory}, stop=stop, poll=poll, tail=tail, skipped=skipped)
    try:
        for _, line in lines:
            yield line
    finally:
        lines.close()


def follow_logs(
    directories: Mapping[K, Path],
    *,
    stop: threading.Event,
    poll: float = 0.2,
    tail: int | None = None,
    skipped: Skipped | None = None,
) -> Generator[tuple[K, LogLine], None, None]:
    """`follow_log` for several replicas at once, each line with its replica's key: the lines
    there were, merged by time (`tail` applies to each replica), then new lines as they come,
    each poll's merged by time."""
    if tail is not None and tail < 0:
        raise ValueError(f"tail must be at least 0, not {tail}")
    counts = skipped or Skipped()
    followers: dict[K, _Follower] = {}
    try:
        for key, directory in directories.items():
            followers[key] = _Follower(directory, counts)
        yield from merge_by_time({key: f.backlog(tail) for key, f in followers.items()})
        while not stop.is_set():
            fresh = {key: f.poll() for key, f in followers.items()}
            yield from merge_by_time({key: lines for key, (lines, _) in fresh.items()})
            if not any(more for _, more in fresh.values()):
                stop.wait(poll)
        yield from merge_by_time({key: f.rest() for key, f in followers.items()})
    finally:
        for follower in followers.values():
            follower.close()


def merge_by_time(sources: Mapping[K, Iterable[LogLine]]) -> Iterator[tuple[K, LogLine]]:
    """Several replicas' lines (each oldest first) as one sequence by time, each line with its
    replica's key; lines of the same time keep the order of `sources`."""
    keyed = [_keyed(key, lines) for key, lines in sources.items()]
    return heapq.merge(*keyed, key=lambda pair: pair[1].time)


def _keyed(key: K, lines: Iterable[LogLine]) -> Iterator[tuple[K, LogLine]]:
    for line in lines:
        yield key, line


class _Framer:
    """Bytes of one file in, complete records out; a record over MAX_RECORD is skipped without
    being held."""

    def __init__(self, skipped: Skipped) -> None:
        self._skipped = skipped
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        records: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            if self._discarding:
                self._discarding = False
            elif end - start > MAX_RECORD:
                self._skipped.records += 1
            else:
                records.append(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_RECORD:
            if not self._discarding:
                self._skipped.records += 1
                self._discarding = True
            buffer.clear()
        return records

    def end(self) -> None:
        """The file is done (rotated away): what is left is a torn record."""
        if self._buffer or self._discarding:
            self._skipped.records += 0 if self._discarding else 1
        self._buffer.clear()
        self._discarding = False


class _Joiner:
    """Records in, lines out: a stream's `P` pieces joined up to its `F` (across files)."""

    def __init__(self, skipped: Skipped) -> None:
        self._skipped = skipped
        self._pieces: dict[bytes, list[bytes]] = {b"stdout": [], b"stderr": []}
        self._sizes = dict.fromkeys(self._pieces, 0)
        self._times = dict.fromkeys(self._pieces, b"")

    def add(self, record: bytes) -> LogLine | None:
        found = _RECORD.fullmatch(record)
        if found is None:
            self._skipped.records += 1
            return None
        time_text, stream, tag, content = found.groups()
        self._pieces[stream].append(content)
        self._sizes[stream] += len(content)
        self._times[stream] = time_text
        if tag == b"P" and self._sizes[stream] < MAX_LINE:
            return None
        return self._line(stream)

    def rest(self) -> list[LogLine]:
        """The pieces no `F` has followed, each stream's as a line, by time."""
        lines = [self._line(stream) for stream, pieces in self._pieces.items() if pieces]
        return sorted(lines, key=lambda line: line.time)

    def _line(self, stream: bytes) -> LogLine:
        pieces = self._pieces[stream]
        text = b"".join(pieces).decode("utf-8", "replace")
        pieces.clear()
        self._sizes[stream] = 0
        return LogLine(self._times[stream].decode(), stream.decode(), text)


@dataclass(slots=True)
class _File:
    fd: int
    inode: int
    framer: _Framer


class _Follower:
    """One replica's log folder read as `tail -F` reads a file: the files there are, oldest
    first, then the current file as it grows, and when a rotation replaces it, the rest of the
    old one and then the files that came after it."""

    def __init__(self, directory: Path, skipped: Skipped) -> None:
        self._skipped = skipped
        self._joiner = _Joiner(skipped)
        self._folder = os.open(directory, _DIRECTORY)
        self._file: _File | None = None  # the newest file seen: the one that may still grow
        self._more = False  # the last read stopped at its budget, not at the end

    def backlog(self, tail: int | None, *, final: bool = False) -> list[LogLine]:
        """The lines there are now (the last `tail` of them); with `final`, pieces that no `F`
        followed too."""
        lines = self._catch_up()
        if final:
            lines = _chain(lines, self._joiner.rest)
        return list(lines) if tail is None else list(deque(lines, maxlen=tail))

    def poll(self) -> tuple[list[LogLine], bool]:
        """The lines written since the last call, and whether more can be read at once."""
        if self._file is None:
            return list(self._catch_up()), False
        lines = list(self._read(self._file, budget=4 * _CHUNK))
        if lines or self._more:
            return lines, self._more
        try:
            current = os.stat(CURRENT, dir_fd=self._folder, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == self._file.inode:
            return [], False
        # Rotated (or being rotated): the writer renamed our file before it wrote elsewhere,
        # so reading it to its end now gets its last lines.
        lines += self._read(self._file, budget=None)
        lines += self._catch_up()
        return lines, False

    def rest(self) -> list[LogLine]:
        return self._joiner.rest()

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file.fd)
            self._file = None
        if self._folder >= 0:
            os.close(self._folder)
            self._folder = -1

    def _catch_up(self) -> Iterator[LogLine]:
        """The files newer than the one followed (all, at first), read in order; the newest
        becomes the one followed."""
        files = self._open_files()
        followed = self._file
        if followed is not None:
            # Not among them, yet still linked: a rotation was renaming while the folder was
            # read (a gap in the numbers), so look again; unlinked: rotated out, all are newer.
            for _ in range(_RELOOKS):
                if any(inode == followed.inode for inode, _ in files):
                    break
                if os.fstat(followed.fd).st_nlink == 0:
                    break
                for _, fd in files:
                    os.close(fd)
                time.sleep(0.001)
                files = self._open_files()
            after = [index for index, (inode, _) in enumerate(files) if inode == followed.inode]
            for _, fd in files[: after[0] + 1] if after else []:
                os.close(fd)
            files = files[after[0] + 1 :] if after else files
            if not files:
                return
            followed.framer.end()
            os.close(followed.fd)
            self._file = None
        for index, (inode, fd) in enumerate(files):
            file = _File(fd, inode, _Framer(self._skipped))
            if index == len(files) - 1:
                self._file = file
                yield from self._read(file, budget=None)
            else:
                try:
                    yield from self._read(file, budget=None)
                    file.framer.end()
                finally:
                    os.close(fd)

    def _open_files(self) -> list[tuple[int, int]]:
        """(inode, fd) of the log files, oldest first, read while no rotation ran: the same
        current file before and after, and no next file being made. A rotation that renames
        meanwhile can hide a file from the listing (an entry renamed during a readdir may be
        returned under neither name) or move it past the names listed, so the folder is read
        again, up to _RELOOKS times (a next file left by a failed rotation makes them all; the
        last reading is used then)."""
        for attempt in range(_RELOOKS):
            before = self._rotation()
            opened = self._scan()
            if (after := self._rotation()) == before and after[1] is None:
                return opened
            if attempt == _RELOOKS - 1:
                break
            for _, fd in opened:
                os.close(fd)
            time.sleep(0.001)
        return opened

    def _rotation(self) -> tuple[int | None, int | None]:
        """The inodes of the current file and of the next one (None: none there)."""
        found: list[int | None] = []
        for name in (CURRENT, _NEXT):
            try:
                found.append(os.stat(name, dir_fd=self._folder, follow_symlinks=False).st_ino)
            except OSError:
                found.append(None)
        return found[0], found[1]

    def _scan(self) -> list[tuple[int, int]]:
        """One reading of the folder. The current file is opened first, then .1, .2, ... (each
        number listed and the one above it, where a rotation may have moved it): a rotation
        meanwhile moves files the way this looks, so each is found, maybe twice (kept at its
        older place: that is where it went)."""
        listed = {
            int(found.group(1))
            for name in os.listdir(self._folder)
            if (found := _ROTATED.fullmatch(name))
        }
        numbers = sorted(listed | {number + 1 for number in listed} | {1})
        opened: list[tuple[int, int]] = []
        for name in [CURRENT, *(f"{CURRENT}.{number}" for number in numbers)]:
            try:
                fd = os.open(name, _READ, dir_fd=self._folder)
            except OSError:  # gone (rotated away), or a link: not followed
                continue
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                os.close(fd)
                continue
            for index, (inode, seen) in enumerate(opened):
                if inode == status.st_ino:
                    os.close(seen)
                    del opened[index]
                    break
            opened.append((status.st_ino, fd))
        return opened[::-1]

    def _read(self, file: _File, budget: int | None) -> Iterator[LogLine]:
        self._more = False
        while budget is None or budget > 0:
            chunk = os.read(file.fd, _CHUNK)
            if not chunk:
                return
            if budget is not None:
                budget -= len(chunk)
            for record in file.framer.feed(chunk):
                if (line := self._joiner.add(record)) is not None:
                    yield line
        self._more = True


def _chain(lines: Iterator[LogLine], then: Callable[[], list[LogLine]]) -> Iterator[LogLine]:
    yield from lines
    yield from then()
