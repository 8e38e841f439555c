"""Copy a byte range from one open file to another without it passing through this process:
a reflink (`FICLONERANGE`: the blocks are shared, copy-on-write) where the filesystem has
them and the range is block-aligned in both files, else `copy_file_range` (the kernel copies,
page cache to page cache), else, where neither works, read and write.

The caller answers for what the source bytes are (see `builders.reuse`); nothing here hashes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from dataclasses import dataclass

# _IOW(0x94, 13, struct file_clone_range { s64 src_fd; u64 src_offset, src_length, dest_offset })
FICLONERANGE = 0x4020940D
_NOT_HERE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM}
_BLOCK = 1024 * 1024


@dataclass
class CopyCounts:
    """Bytes by how they were copied."""

    cloned: int = 0  # reflinked: no bytes moved at all
    copied: int = 0  # copy_file_range: moved by the kernel
    written: int = 0  # read and written by this process

    def add(self, other: CopyCounts) -> None:
        self.cloned += other.cloned
        self.copied += other.copied
        self.written += other.written


class _Support:
    """Which devices refused reflinks or copy_file_range, so each is tried once per device."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.no_clone: set[int] = set()
        self.no_copy: set[int] = set()


_SUPPORT = _Support()


def copy_range(
    source_fd: int, source_offset: int, target_fd: int, target_offset: int, length: int
) -> CopyCounts:
    """Make `length` bytes of the target at `target_offset` those of the source at
    `source_offset`. OSError as the system says, for what no method could do."""
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
    _copy(source_fd, source_offset, target_fd, target_offset, length, device, counts)
    return counts


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
