"""Durable atomic writes: the one way this project replaces or creates a file by name.

A file written here is never seen half-written, and is there after a crash once the call has
returned: the bytes go to a temporary file in the same folder (created `O_EXCL | O_NOFOLLOW`
with its final mode from the first byte), are flushed and fsynced, the temporary file is renamed
over the target (or linked to it, for a file that must not exist yet), and the folder is fsynced
so that the new name survives too. A failure removes the temporary file and leaves the target as
it was.

Used by all three packages (`qss` is the lowest layer). Writes through directory descriptors
(`qss.backends.directory`, `builders.materialize`) keep their own `openat` code: they never
resolve a path, and batch their durability (one `syncfs` per put, one fsync per folder).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o644, exclusive: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write; on a clean exit it durably becomes `path`.

    `exclusive`: refuse with FileExistsError when `path` exists (then, or when the rename
    would happen: the name is linked, never replaced). OSError otherwise, as the system says.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    if exclusive and os.path.lexists(path):
        raise FileExistsError(17, "File exists", str(path))
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # whatever the umask
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(temporary, path, follow_symlinks=False)
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
        fsync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_atomically(
    path: Path, data: bytes | str, *, mode: int = 0o644, exclusive: bool = False
) -> None:
    """Replace (or, `exclusive`, create) `path` with `data` (str is written as UTF-8)."""
    with atomic_writer(path, mode=mode, exclusive=exclusive) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a rename or a new file in it)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
