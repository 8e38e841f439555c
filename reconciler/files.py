"""Reading files the way a security tool must: no symlinks followed, sizes bounded up front."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from reconciler.errors import InputError


def read_bounded(path: Path, limit: int, *, display: str | None = None) -> bytes:
    """The bytes of regular file `path`, refusing symlinks and files over `limit` bytes.

    Reads at most `limit + 1` bytes so that a huge or endless file costs nothing; the caller's
    size check then reports it. Raises InputError for what is not a readable regular file.
    """
    shown = display or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{shown}: no such file") from None
    except OSError as error:
        if path.is_symlink():
            raise InputError(f"{shown}: is a symbolic link; links are not followed") from None
        raise InputError(f"{shown}: cannot read: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{shown}: not a regular file")
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
