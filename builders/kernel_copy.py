"""Copy a byte range from one open file to another without it passing through this process:
a reflink (`FICLONERANGE`: the blocks are shared, copy-on-write) where the filesystem has
them and the range is block-aligned in both files, else `copy_file_range` (the kernel copies,
page cache to page cache), else, where neither works, read and write.

Without reflinks, a long range's page-aligned middle may instead be written past the page
cache (`O_DIRECT`, from the source's cached pages through two reused buffers): where new
pages of memory are dear (a VM whose host backs guest memory on first touch and takes back
what the guest frees) and the disk is fast, a gigabyte so costs a fraction of a second
against seconds into the page cache; where the disk is slow (an SD card at the edge), the
page cache is far faster. Which one a device gets is measured, once per device and process:
the first long copy to it writes a probe each way (`_PROBE` bytes) and keeps the faster.

The caller answers for what the source bytes are (see `builders.reuse`); nothing here hashes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

# _IOW(0x94, 13, struct file_clone_range { s64 src_fd; u64 src_offset, src_length, dest_offset })
FICLONERANGE = 0x4020940D
# This call falls back; of these, the device never does what was asked (recorded, not asked
# again): the others come from the pair of files or the range (EXDEV, a source cut short).
_NOT_HERE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
_NEVER_HERE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS}
_NO_DIRECT = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS}  # O_DIRECT refused
_BLOCK = 1024 * 1024
_DIRECT_BUFFER = 16 * 1024 * 1024  # what one direct write moves
_PROBE = 16 * 1024 * 1024  # each way, the first time a device gets a long copy
_MIN_DIRECT = 1024 * 1024  # a shorter middle goes through the page cache


@dataclass
class CopyCounts:
    """Bytes by how they were copied."""

    cloned: int = 0  # reflinked: no bytes moved at all
    copied: int = 0  # copy_file_range: moved by the kernel
    written: int = 0  # read and written by this process
    direct: int = 0  # read from the source's cache, written past the target's (O_DIRECT)

    @property
    def total(self) -> int:
        return self.cloned + self.copied + self.written + self.direct

    def add(self, other: CopyCounts) -> None:
        self.cloned += other.cloned
        self.copied += other.copied
        self.written += other.written
        self.direct += other.direct


class _Support:
    """Which devices cannot do reflinks or copy_file_range (not asked again), and for which
    direct writes were measured faster (True) or slower or refused (False)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.no_clone: set[int] = set()
        self.no_copy: set[int] = set()
        self.direct: dict[int, bool] = {}
        self.buffers: list[mmap.mmap] = []  # page-aligned, as O_DIRECT needs; reused


_SUPPORT = _Support()


def _after_fork() -> None:
    """In a forked child: a lock another thread held at the fork would never be let go."""
    global _SUPPORT
    _SUPPORT = _Support()


os.register_at_fork(after_in_child=_after_fork)


def copy_range(
    source_fd: int,
    source_offset: int,
    target_fd: int,
    target_offset: int,
    length: int,
    *,
    direct: bool | None = None,
) -> CopyCounts:
    """Make `length` bytes of the target at `target_offset` those of the source at
    `source_offset`. `direct`: whether a long range's middle, where it is not reflinked, is
    written past the page cache (None: as measured for the device). OSError as the system
    says, for what no method could do."""
    counts = CopyCounts()
    device = os.fstat(target_fd).st_dev
    block = os.fstatvfs(target_fd).f_bsize or 4096
    if device not in _SUPPORT.no_clone and (source_offset - target_offset) % block == 0:
        head = (-target_offset) % block
        middle = (length - head) // block * block if length > head else 0
        if middle > 0:
            request = struct.pack(
                "qQQQ", source_fd, source_offset + head, middle, target_offset + head
            )
            try:
                fcntl.ioctl(target_fd, FICLONERANGE, request)
            except OSError as error:
                if error.errno not in _NOT_HERE:
                    raise
                if error.errno in _NEVER_HERE:
                    with _SUPPORT.lock:
                        _SUPPORT.no_clone.add(device)
            else:
                counts.cloned += middle
                _copy(source_fd, source_offset, target_fd, target_offset, head, device, counts)
                tail = head + middle
                _copy(
                    source_fd,
                    source_offset + tail,
                    target_fd,
                    target_offset + tail,
                    length - tail,
                    device,
                    counts,
                )
                return counts
    page = mmap.PAGESIZE  # what direct writes align to (a multiple of the device's sector)
    head = min((-target_offset) % page, length)
    middle = (length - head) // page * page
    known = _SUPPORT.direct.get(device)  # None: not measured yet
    if direct is None:
        direct = known
    probe = direct is None and middle >= 2 * _PROBE
    if not (direct or probe) or middle < _MIN_DIRECT:
        _copy(source_fd, source_offset, target_fd, target_offset, length, device, counts)
        return counts
    # The partial pages at both ends through the page cache, the middle as is fastest.
    _copy(source_fd, source_offset, target_fd, target_offset, head, device, counts)
    done, end = head, head + middle
    if probe:
        done += _probe(source_fd, source_offset + done, target_fd, target_offset + done, counts)
    if direct or _SUPPORT.direct.get(device):  # asked for, or measured faster just now
        moved = _write_direct(
            source_fd, source_offset + done, target_fd, target_offset + done, end - done
        )
        counts.direct += moved
        done += moved  # short of `end` only where direct writes stopped working
    _copy(
        source_fd,
        source_offset + done,
        target_fd,
        target_offset + done,
        length - done,
        device,
        counts,
    )
    return counts


def _probe(
    source_fd: int, source_offset: int, target_fd: int, target_offset: int, counts: CopyCounts
) -> int:
    """`_PROBE` bytes through the page cache, then `_PROBE` past it, each timed: the faster
    is what `device` gets from now on. Returns how many bytes (from `target_offset`) it
    copied."""
    device = os.fstat(target_fd).st_dev
    with _SUPPORT.lock:  # made first: what they cost once is not what each write costs
        _SUPPORT.buffers.extend(_new_buffer() for _ in range(2 - len(_SUPPORT.buffers)))
    started = time.perf_counter()
    _copy(source_fd, source_offset, target_fd, target_offset, _PROBE, device, counts)
    cached = time.perf_counter() - started
    started = time.perf_counter()
    moved = _write_direct(
        source_fd, source_offset + _PROBE, target_fd, target_offset + _PROBE, _PROBE
    )
    past = time.perf_counter() - started
    counts.direct += moved
    with _SUPPORT.lock:  # a refusal recorded meanwhile (another thread) stands
        if _SUPPORT.direct.get(device) is not False:
            _SUPPORT.direct[device] = moved == _PROBE and past < cached
    return _PROBE + moved


def _write_direct(
    source_fd: int, source_offset: int, target_fd: int, target_offset: int, length: int
) -> int:
    """Up to `length` bytes (a multiple of the page size, at a page-aligned `target_offset`)
    written past the page cache, each buffer read while the one before is written; how many
    were. Fewer where the target refused them (a filesystem without direct writes is then
    not asked again) or took fewer: the caller copies the rest."""
    device = os.fstat(target_fd).st_dev
    buffers = [_take_buffer(), _take_buffer()]
    try:  # a second opening of the same file (never a path lookup), for direct writes alone
        direct_fd = os.open(f"/proc/self/fd/{target_fd}", os.O_WRONLY | os.O_DIRECT)
    except OSError as error:  # refused by the filesystem, or for now (no /proc, EMFILE)
        _give_back(buffers)
        _refused(device, error)
        return 0

    def write(piece: memoryview, offset: int) -> int:
        try:
            return os.pwritev(direct_fd, [piece], target_offset + offset)
        except OSError as error:
            if error.errno not in _NOT_HERE:
                raise
            _refused(device, error)
            return 0

    done = read = 0  # written, and read (ahead of it by the buffer in flight)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="direct-write") as writer:
            in_flight: Future[int] | None = None
            while read < length:
                buffers.reverse()  # the one not in flight
                piece = memoryview(buffers[0])[: min(len(buffers[0]), length - read)]
                _read_into(source_fd, piece, source_offset + read)
                if in_flight is not None:
                    written, expected = in_flight.result(), read - done
                    done += written
                    if written < expected:  # refused or short: the page cache takes the rest
                        in_flight = None
                        break
                in_flight = writer.submit(write, piece, read)
                read += len(piece)
            if in_flight is not None:
                done += in_flight.result()
    finally:
        os.close(direct_fd)
        _give_back(buffers)
    return done - done % mmap.PAGESIZE


def _refused(device: int, error: OSError) -> None:
    if error.errno in _NO_DIRECT:  # the filesystem does not take direct writes
        with _SUPPORT.lock:
            _SUPPORT.direct[device] = False


def _read_into(source_fd: int, piece: memoryview, offset: int) -> None:
    got = 0
    while got < len(piece):
        read = os.preadv(source_fd, [piece[got:]], offset + got)
        if read == 0:
            raise OSError(errno.EIO, "the source file ended before the range")
        got += read


def _take_buffer() -> mmap.mmap:
    with _SUPPORT.lock:
        if _SUPPORT.buffers:
            return _SUPPORT.buffers.pop()
    return _new_buffer()


def _give_back(buffers: list[mmap.mmap]) -> None:
    with _SUPPORT.lock:
        _SUPPORT.buffers.extend(buffers)


def _copy(
    source_fd: int,
    source_offset: int,
    target_fd: int,
    target_offset: int,
    length: int,
    device: int,
    counts: CopyCounts,
) -> None:
    done = 0
    while done < length and device not in _SUPPORT.no_copy:
        try:
            moved = os.copy_file_range(
                source_fd, target_fd, length - done, source_offset + done, target_offset + done
            )
        except OSError as error:
            if error.errno not in _NOT_HERE:
                raise
            if error.errno in _NEVER_HERE:
                with _SUPPORT.lock:
                    _SUPPORT.no_copy.add(device)
            break
        if moved == 0:  # the source ended early: it is not what the caller said it was
            raise OSError(errno.EIO, "the source file ended before the range")
        done += moved
        counts.copied += moved
    while done < length:
        data = os.pread(source_fd, min(_BLOCK, length - done), source_offset + done)
        if not data:
            raise OSError(errno.EIO, "the source file ended before the range")
        view = memoryview(data)
        position = target_offset + done
        while view:
            written = os.pwrite(target_fd, view, position)
            view, position = view[written:], position + written
        done += len(data)
        counts.written += len(data)


def _new_buffer() -> mmap.mmap:
    # Private: a child forked while it is in use gets its own copy, not the same pages.
    buffer = mmap.mmap(-1, _DIRECT_BUFFER, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memoryview(buffer)[:: mmap.PAGESIZE] = bytes(_DIRECT_BUFFER // mmap.PAGESIZE)  # touched
    return buffer
