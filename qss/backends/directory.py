"""Blobs as files under one local directory: the embedded default backend.

Key `s/ab12/3/0` is the file `<root>/s/ab12/3/0`. Every path is walked one component at a time
from a descriptor of the root (`openat` with `O_NOFOLLOW`), so a symlink planted inside the root
is refused, never followed, and nothing outside the root is reached. A put writes a temporary
file (`.tmp-...`, a name no key can have) in the target directory and renames it over the
target: readers see the old blob, the new one or none. `sync` makes every put durable with one
`syncfs` of the backend's filesystem (not one fsync per blob). A crash leaves at most a
temporary file, which `list` never reports and `sweep_temporary` removes, or a blob whose
content did not reach the disk, which the store's hash check refuses and repair replaces.

Only regular files are blobs. Anything else at a key's name (a symlink, a FIFO, a device, a
socket) is refused as InvalidBlob without being opened, read or followed, so it can neither
hang a read nor lead outside the root; a put replaces it (the name itself, never what a link
points to), and replaces an empty directory too. A get refuses a file larger than its limit
before reading it, and reads at most limit + 1 bytes of one that grows meanwhile.

One limit of the layout: a key cannot be both a blob and a directory (`a` and `a/b`); the
second put is refused with a message naming the clash. `qss.store` keys never clash.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from qss.backends.base import KEY, MAX_BLOB, BackendInfo, check_key
from qss.errors import BackendError, BackendUnavailable, BlobNotFound, InvalidBlob

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
DIR_MODE = 0o755

_READ_BLOCK = 1024 * 1024
_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# Errors that mean the disk or the directory cannot be used right now, not a fault of this blob.
_UNAVAILABLE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE}
)


class DirectoryBackend:
    """Blobs kept as files under `root`, which must exist unless `create` is true."""

    def __init__(
        self,
        root: Path | str,
        *,
        name: str | None = None,
        failure_domain: str | None = None,
        create: bool = False,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.name = name if name is not None else (self.root.name or str(self.root))
        self.failure_domain = failure_domain if failure_domain is not None else self.name
        if create:
            try:
                self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise self._unavailable(f"cannot create {self.root}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return f"DirectoryBackend({str(self.root)!r}, name={self.name!r})"

    # -- the Backend protocol ---------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self._check(key)
        parent_fd, leaf = self._open_parent(key, create=True)
        try:
            temp = f"{TEMP_PREFIX}{leaf}-{secrets.token_hex(8)}"
            try:
                self._write_temp(parent_fd, temp, data)
            except OSError as exc:
                raise self._error("put", key, exc) from exc
            try:
                _replace(temp, leaf, parent_fd)
            except BaseException as exc:
                _unlink_quietly(temp, parent_fd)
                if isinstance(exc, IsADirectoryError | FileExistsError):
                    raise self._clash(key, "a directory of longer keys is there") from exc
                if isinstance(exc, OSError):
                    raise self._error("put", key, exc) from exc
                raise
        finally:
            os.close(parent_fd)

    def sync(self) -> None:
        fd = self._open_root()
        try:
            _syncfs(fd)
        except OSError as exc:
            raise self._unavailable(f"cannot sync {self.root}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def get(self, key: str, limit: int = MAX_BLOB) -> bytes:
        self._check(key)
        fd = self._open_blob(key)
        if fd is None:
            raise self._not_found(key)
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                raise self._invalid(key, f"it holds {size} bytes, more than the {limit} expected")
            data = _read_at_most(fd, limit + 1)
        except OSError as exc:
            raise self._error("get", key, exc) from exc
        finally:
            os.close(fd)
        if len(data) > limit:
            raise self._invalid(key, f"it grew past the {limit} bytes expected while read")
        return data

    def exists(self, key: str) -> bool:
        self._check(key)
        fd = self._open_blob(key)
        if fd is None:
            return False
        os.close(fd)
        return True

    def delete(self, key: str) -> None:
        self._check(key)
        try:
            parent_fd, leaf = self._open_parent(key, create=False)
        except BlobNotFound:
            return
        try:
            kind = self._kind(parent_fd, leaf, key)
            if kind != stat.S_IFREG:
                return  # nothing there, or a directory of longer keys: no blob `key`
            os.unlink(leaf, dir_fd=parent_fd)
            os.fsync(parent_fd)
        except FileNotFoundError:
            return  # a concurrent delete won
        except OSError as exc:
            raise self._error("delete", key, exc) from exc
        finally:
            os.close(parent_fd)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with `prefix`. The walk is done before this returns, so an
        unreachable root raises here, not halfway through the iteration."""
        *directories, partial = prefix.split("/")
        if not all(_is_component(part) for part in directories):
            return iter(())  # no valid key starts with this prefix
        fd = self._open_root()
        try:
            for part in directories:
                child = self._open_child_dir(fd, part)
                if child is None:
                    return iter(())
                os.close(fd)
                fd = child
            keys: builtins.list[str] = []
            base = "".join(f"{part}/" for part in directories)
            self._collect(fd, base, partial, keys)
            return iter(keys)
        except OSError as exc:
            raise self._unavailable(f"cannot list {prefix!r}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def info(self) -> BackendInfo:
        try:
            fs = os.statvfs(self.root)
        except OSError as exc:
            raise self._unavailable(f"cannot stat {self.root}: {exc.strerror}") from exc
        return BackendInfo(url=self.url, kind="dir", free_bytes=fs.f_bavail * fs.f_frsize)

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own descriptors."""

    # -- maintenance ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"dir:{self.root}"

    def sweep_temporary(self, older_than_seconds: float) -> int:
        """Remove temporary files a crashed put left behind, if last modified more than
        `older_than_seconds` ago (keep that well above the longest put). Returns how many."""
        cutoff = time.time() - older_than_seconds
        root_fd = self._open_root()
        try:
            return self._sweep(root_fd, cutoff)
        except OSError as exc:
            raise self._unavailable(f"cannot sweep: {exc.strerror}") from exc
        finally:
            os.close(root_fd)

    # -- walking ----------------------------------------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._unavailable(f"root {self.root} cannot be opened: {exc.strerror}") from exc

    def _open_child_dir(self, fd: int, part: str) -> int | None:
        """Descriptor of directory `part` inside directory `fd`, or None where there is no such
        directory (missing, or a file). Refuses a symlink. Leaves `fd` open."""
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode):
                raise self._symlink(part) from None
            return None

    def _open_parent(self, key: str, *, create: bool) -> tuple[int, str]:
        """Descriptor of the directory that holds `key`'s file, and the file's name. With
        `create`, missing directories are made; without, BlobNotFound where one is missing."""
        *directories, leaf = key.split("/")
        fd = self._open_root()
        try:
            for part in directories:
                made = False
                if create:
                    try:
                        os.mkdir(part, DIR_MODE, dir_fd=fd)
                        made = True
                    except FileExistsError:
                        pass
                child = self._open_child_dir(fd, part)
                if child is None:
                    if create:
                        raise self._clash(key, f"a blob is stored at component {part!r}")
                    raise self._not_found(key)
                if made:
                    os.fsync(fd)  # make the new directory entry durable, as for the blob
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            raise self._error("put" if create else "open", key, exc) from exc
        except BaseException:
            os.close(fd)
            raise
        return fd, leaf

    def _open_blob(self, key: str) -> int | None:
        """A read descriptor of `key`'s file, or None where no such blob is stored (nothing
        there, or a directory of longer keys). Anything else at that name (a symlink, a FIFO,
        a device or a socket) is InvalidBlob: looked at with lstat, never opened or followed."""
        try:
            parent_fd, leaf = self._open_parent(key, create=False)
        except BlobNotFound:
            return None
        try:
            kind = stat.S_IFMT(os.lstat(leaf, dir_fd=parent_fd).st_mode)
            if kind == stat.S_IFDIR:
                return None
            if kind != stat.S_IFREG:
                raise self._not_regular(key, kind)
            fd = os.open(leaf, _READ_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat
                raise self._not_regular(key, stat.S_IFLNK) from exc
            raise self._error("get", key, exc) from exc
        finally:
            os.close(parent_fd)
        try:
            kind = stat.S_IFMT(os.fstat(fd).st_mode)
            if kind != stat.S_IFREG:  # swapped since the lstat
                raise self._not_regular(key, kind)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise self._error("get", key, exc) from exc
            raise
        return fd

    def _kind(self, parent_fd: int, leaf: str, key: str) -> int | None:
        try:
            mode = os.lstat(leaf, dir_fd=parent_fd).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            raise self._symlink(key)
        return stat.S_IFMT(mode)

    def _write_temp(self, parent_fd: int, temp: str, data: bytes) -> None:
        fd = os.open(temp, _WRITE_FLAGS, FILE_MODE, dir_fd=parent_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp, parent_fd)
            raise
        os.close(fd)

    def _collect(self, fd: int, base: str, partial: str, keys: builtins.list[str]) -> None:
        """Append to `keys` every blob under directory `fd` whose name starts with `partial`."""
        with os.scandir(fd) as entries:
            found = [
                (entry.name, entry.is_dir(follow_symlinks=False))
                for entry in entries
                if entry.name.startswith(partial)
                and _is_component(entry.name)
                and (entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False))
            ]
        for name, is_dir in found:
            if not is_dir:
                if KEY.fullmatch(base + name):
                    keys.append(base + name)
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed or replaced while we looked
            try:
                self._collect(child, f"{base}{name}/", "", keys)
            finally:
                os.close(child)

    def _sweep(self, fd: int, cutoff: float) -> int:
        removed = 0
        with os.scandir(fd) as entries:
            found = [
                (entry.name, entry.is_dir(follow_symlinks=False), entry.stat(follow_symlinks=False))
                for entry in entries
            ]
        for name, is_dir, info in found:
            if name.startswith(TEMP_PREFIX) and stat.S_ISREG(info.st_mode):
                if info.st_mtime < cutoff:
                    _unlink_quietly(name, fd)
                    removed += 1
            elif is_dir and _is_component(name):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                try:
                    removed += self._sweep(child, cutoff)
                finally:
                    os.close(child)
        return removed

    # -- errors -----------------------------------------------------------------------------

    def _where(self) -> str:
        return f"dir backend {self.name!r} ({self.root})"

    def _check(self, key: str) -> None:
        try:
            check_key(key)
        except BackendError as exc:
            raise BackendError(f"{self._where()}: {exc}") from None

    def _unavailable(self, why: str) -> BackendUnavailable:
        return BackendUnavailable(f"{self._where()} is unavailable: {why}")

    def _not_found(self, key: str) -> BlobNotFound:
        return BlobNotFound(f"{self._where()}: no blob {key!r}")

    def _symlink(self, what: str) -> BackendError:
        return BackendError(
            f"{self._where()}: refusing {what!r}: a symlink inside the root (never followed)"
        )

    def _invalid(self, key: str, why: str) -> InvalidBlob:
        return InvalidBlob(f"{self._where()}: refusing {key!r}: {why}")

    def _not_regular(self, key: str, kind: int) -> InvalidBlob:
        what = _KINDS.get(kind, "not a regular file")
        return self._invalid(key, f"{what} is there, not a blob (never followed or read)")

    def _clash(self, key: str, why: str) -> BackendError:
        return BackendError(f"{self._where()}: cannot put {key!r}: {why}")

    def _error(self, op: str, key: str, exc: OSError) -> BackendError:
        why = f"{op} {key!r}: {exc.strerror or exc}"
        if exc.errno in _UNAVAILABLE_ERRNOS:
            return self._unavailable(why)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return BackendError(f"{self._where()} is full: {why}")
        return BackendError(f"{self._where()}: {why}")


_LIBC = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> None:
    """Flush the filesystem holding `fd` (Linux `syncfs`; elsewhere a global `sync`)."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    if syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _read_at_most(fd: int, most: int) -> bytes:
    parts = []
    while most > 0:
        part = os.read(fd, min(most, _READ_BLOCK))
        if not part:
            break
        parts.append(part)
        most -= len(part)
    return b"".join(parts)


def _replace(temp: str, leaf: str, parent_fd: int) -> None:
    """Rename `temp` over `leaf`: whatever non-directory is there is replaced (a symlink
    itself, never its target), and so is an empty directory; a directory holding anything is
    left alone (FileExistsError or IsADirectoryError)."""
    try:
        os.replace(temp, leaf, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    except IsADirectoryError:
        try:
            os.rmdir(leaf, dir_fd=parent_fd)  # only ever removes an empty directory
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(exc.errno, exc.strerror, leaf) from exc
            raise
        os.replace(temp, leaf, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)


def _is_component(name: str) -> bool:
    """Whether `name` can be one '/'-separated part of a key (never '.', '..' or a temp file)."""
    return bool(name) and KEY.fullmatch(f"x/{name}") is not None


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):  # best effort: sweep_temporary removes what is left
        os.unlink(name, dir_fd=dir_fd)
