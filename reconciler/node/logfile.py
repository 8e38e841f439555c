"""Writing a replica's log files (the format is in `reconciler.node.logs`, which reads them).

Kept apart, and to a few standard modules, because the shim imports it in a fresh interpreter
for every start of a replica: each import there is paid once per start.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time

TYPE_CHECKING = False  # typing itself costs an import at every start; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CURRENT = "replica.log"
_NEXT = "replica.log.next"  # the next current file, while a rotation makes room for it
STREAMS = ("stdout", "stderr")
PIECE = 16 * 1024  # the longest content of one record (kubelet's and containerd's too)
MAX_RECORD = 64 * 1024 + 64  # a reader skips longer records: damage, or not ours
MAX_LINE = 1024 * 1024  # a reader cuts a joined line here

_RECORD = re.compile(
    rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([FP]) (.*)", re.DOTALL
)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


# -- writing ----------------------------------------------------------------------------------


class LogWriter:
    """Appends one replica's output to its log folder, a complete record per write(2).

    `write` and `close` may be called from several threads (one a stream, say). A failed
    write(2) (a full disk) loses that record, counted in `lost`, and never raises: the replica
    must not die of its log. Opening the files does raise OSError, for a link among others.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        max_files: int = 5,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """`max_files` counts the current file (at least 2); `clock` gives nanoseconds since
        the epoch, as `time.time_ns` does."""
        if max_files < 2:
            raise ValueError(f"max_files must be at least 2, not {max_files}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.lost = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = {stream: bytearray() for stream in STREAMS}
        self._second = -1
        self._second_text = b""
        self._torn = False  # the last write(2) stopped mid-record: start the next on a new line
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            self._folder = os.open(directory, _DIRECTORY)
        except OSError as error:
            if os.path.islink(directory):
                raise OSError(error.errno, f"{directory} is a link; not followed") from None
            raise
        self._fd = -1
        try:
            self._fd = self._open_current()
            self._size = os.fstat(self._fd).st_size
            self._repair()
        except BaseException:
            self._close_fds()
            raise

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, stream: str, data: bytes) -> None:
        """Add `data` read from `stream` ("stdout" or "stderr"); complete lines are written."""
        if stream not in self._pending:
            raise ValueError(f"not a stream: {stream!r} (expected stdout or stderr)")
        with self._lock:
            if self._fd < 0:
                raise ValueError("the log writer is closed")
            pending = self._pending[stream]
            pending += data
            start = 0
            while (end := pending.find(b"\n", start)) != -1:
                self._line(stream, memoryview(pending)[start:end])
                start = end + 1
            # An unterminated line longer than a piece: write its pieces now, memory stays small
            # (a piece exactly PIECE long waits: its newline may be next, and then it is `F`).
            while len(pending) - start > PIECE:
                self._record(stream, b"P", memoryview(pending)[start : start + PIECE])
                start += PIECE
            del pending[:start]

    def close(self) -> None:
        """Write what each stream has pending as its last line, and close the files."""
        with self._lock:
            if self._fd < 0:
                return
            for stream, pending in self._pending.items():
                if pending:
                    self._line(stream, memoryview(pending))
                    pending.clear()
            self._close_fds()

    def _line(self, stream: str, content: memoryview) -> None:
        while len(content) > PIECE:
            self._record(stream, b"P", content[:PIECE])
            content = content[PIECE:]
        self._record(stream, b"F", content)

    def _record(self, stream: str, tag: bytes, content: memoryview | bytes) -> None:
        second, nanoseconds = divmod(self._clock(), 1_000_000_000)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        record = b"%s.%09dZ %s %s %s\n" % (
            self._second_text, nanoseconds, stream.encode(), tag, content
        )  # fmt: skip
        if self._torn:
            record = b"\n" + record
        if self._size > 0 and self._size + len(record) > self.max_bytes:
            self._rotate()
        self._append(record)

    def _append(self, record: bytes) -> None:
        view = memoryview(record)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self.lost += 1
            self._torn = len(view) < len(record)
            self._size += len(record) - len(view)
            return
        self._torn = False
        self._size += len(record)

    def _rotate(self) -> None:
        """A new current file, made under a name readers ignore; the rotated files shifted one
        up (the oldest dropped); current -> .1; the new file -> current. If a step fails, the
        writer goes on writing the file it has (nothing is lost) and tries again after another
        `max_bytes`."""
        folder = self._folder
        try:
            fd = self._open_current(_NEXT, os.O_TRUNC)  # a failed rotation's leftover: emptied
        except OSError:
            self._size = 0
            return
        try:
            for number in range(self.max_files - 1, 1, -1):
                rotated = f"{CURRENT}.{number - 1}"
                try:
                    os.rename(rotated, f"{CURRENT}.{number}", src_dir_fd=folder, dst_dir_fd=folder)
                except FileNotFoundError:
                    continue
            os.rename(CURRENT, f"{CURRENT}.1", src_dir_fd=folder, dst_dir_fd=folder)
            os.rename(_NEXT, CURRENT, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError:
            os.close(fd)
            self._size = 0
            return
        os.close(self._fd)
        self._fd, self._size = fd, 0

    def _open_current(self, name: str = CURRENT, flags: int = 0) -> int:
        try:
            fd = os.open(name, _APPEND | flags, 0o600, dir_fd=self._folder)
        except OSError as error:
            if _is_link(name, self._folder):
                raise OSError(error.errno, f"{name} is a link; not followed") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{name} is not a regular file")
        return fd

    def _repair(self) -> None:
        """End what a killed writer left open: a torn last record (readers skip that one line),
        and a stream whose last record is a piece (else its next line would be joined to it)."""
        if self._size == 0:
            return
        start = max(0, self._size - 4 * MAX_RECORD)
        tail = os.pread(self._fd, self._size - start, start)
        if not tail.endswith(b"\n"):
            self._append(b"\n")
        last_tags: dict[bytes, bytes] = {}
        for raw in tail.split(b"\n")[1 if start else 0 :]:
            if found := _RECORD.fullmatch(raw):
                last_tags[found.group(2)] = found.group(3)
        for stream, tag in last_tags.items():
            if tag == b"P":
                self._record(stream.decode(), b"F", b"")

    def _close_fds(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._folder >= 0:
            os.close(self._folder)
            self._folder = -1


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False
