"""Reading files the way a security tool must: no symlinks followed, sizes bounded up front."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from reconciler.errors import InputError, ReconcilerError


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


def read_private(path: Path, limit: int, what: str, error: type[ReconcilerError]) -> bytes:
    """The bytes of the private key file `path` (a `what`: "node key", "KEM key"), as ssh
    insists for one: opened without following a link or waiting on a FIFO, refused (`error`,
    never a byte of the key in the message) unless it is a regular file of this uid's that
    no one else may read, at most `limit` bytes (the caller names what is too large)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as failed:
        if failed.errno == errno.ELOOP:
            raise error(
                f"{path}: the {what} is a symbolic link; give the key file itself"
            ) from None
        raise error(f"{path}: cannot read the {what}: {failed.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: the {what} is not a regular file")
        if info.st_uid != os.geteuid():
            raise error(
                f"{path}: the {what} belongs to uid {info.st_uid}, not to this agent's uid "
                f"{os.geteuid()}"
            )
        if info.st_mode & 0o077:
            raise error(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; a {what} "
                f"must be readable by its agent alone (chmod 600 {path})"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as failed:
        raise error(f"{path}: cannot read the {what}: {failed.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it, never following a link (a link is removed, its
    target left alone) and without recursion, so a tree of any depth goes (`shutil.rmtree`
    recurses: a hostile tree nested past Python's recursion limit stops it). A missing path
    is nothing to do; OSError as the system says otherwise."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        top = os.open(parent, _DIR_FLAGS)
    except FileNotFoundError:
        return
    try:
        remove_entry(top, name)
    finally:
        os.close(top)


def remove_entry(top: int, name: str) -> None:
    """`remove_tree` of `name` in the folder open as `top`."""
    # Depth first, with an explicit stack of open folders and their names in the one above.
    stack: list[tuple[int, str]] = []
    try:
        entry: str | None = name
        while True:
            here = stack[-1][0] if stack else top
            if entry is None:  # the folder on top of the stack is empty now
                folder, folder_name = stack.pop()
                os.close(folder)
                os.rmdir(folder_name, dir_fd=stack[-1][0] if stack else top)
                if not stack:
                    return
            else:
                try:
                    inner = os.open(entry, _DIR_FLAGS, dir_fd=here)
                except FileNotFoundError:
                    if not stack:
                        return
                except OSError as error:
                    if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    os.unlink(entry, dir_fd=here)  # a file or a link: never followed
                    if not stack:
                        return
                else:
                    stack.append((inner, entry))
            entry = _first_entry(stack[-1][0]) if stack else None
    finally:
        for folder, _ in stack:
            os.close(folder)


def _first_entry(folder: int) -> str | None:
    with os.scandir(folder) as entries:
        for entry in entries:
            return entry.name
    return None
