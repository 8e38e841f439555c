"""Folders opened one name at a time below a descriptor, never following a symlink: how
materialization and verification reach every entry of a tree they write or check."""

from __future__ import annotations

import os

# O_NOFOLLOW on every open below the root: a name that became a symlink is an error, not a path.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO swapped in for a file cannot hang verification.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_dir(root_fd: int, relative: str) -> int:
    """Open a folder below `root_fd` one name at a time, following no symlink on the way."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root_fd)
    for name in relative.split("/") if relative else ():
        try:
            next_fd = os.open(name, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


class ParentCache:
    """Keeps the last opened folder: sorted entries mostly share their parent with the one
    before, and a huge tree must not hold one descriptor per folder."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.path: str | None = None
        self.fd = -1

    def open(self, relative: str) -> int:
        if relative != self.path:
            self.close()
            self.fd = open_dir(self.root_fd, relative)
            self.path = relative
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.path = -1, None

    def __enter__(self) -> ParentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
