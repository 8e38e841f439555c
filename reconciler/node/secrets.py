"""Sealed secrets on a node: which values a replica may have, and where it gets them.

`Releaser` decides and decrypts: a value goes only to a replica of a workload the secret
names, whose artifact is the digest pinned at the applied commit (and one of the secret's
`digests` when it has any), on a node it was sealed to, holding the KEM key it was sealed to.
Anything else is `SecretRefused`, with the reason and never a byte of the value.

`mount_secrets` hands the values over: a tmpfs of the host's own (size 1 MiB, mode 0500,
owned by the replica's uid, nosuid, nodev, noexec) at STATE/secrets/WORKLOAD/SLOT, one file a
secret, mode 0400, owned by the uid; the sandbox binds it read-only at /run/secrets. The value
lives in that tmpfs and in this process's memory for the moment it is written, nowhere else:
`unmount_secrets` takes the tmpfs away when the replica stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError
from reconciler.secrets import seal
from reconciler.secrets.errors import SecretError
from reconciler.secrets.xwing import XWingPrivateKey

if TYPE_CHECKING:
    from reconciler.node.runtime import Work

TMPFS_BYTES = 1024 * 1024
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class SecretRefused(ReconcilerError):
    """A secret this replica names may not be released to it here (the message says why)."""


class Releaser:
    """The values of the secrets a replica names, for this node holding `key` (None: the node
    has no KEM key, and a workload that names a secret is refused)."""

    def __init__(self, node: str, key: XWingPrivateKey | None) -> None:
        self.node = node
        self._key = key

    def __call__(self, work: Work) -> dict[str, bytes]:
        refs = work.workload.secrets
        if not refs:
            return {}
        workload = work.workload.name
        digest = str(work.assignment.digest)
        pinned = _pinned(work)
        names = ", ".join(ref.secret for ref in refs)
        if digest != pinned:
            raise SecretRefused(
                f"workload {workload} would run artifact {digest}, and commit "
                f"{work.assignment.commit} pins {pinned}: secrets {names} withheld"
            )
        if self._key is None:
            raise SecretRefused(
                f"node {self.node} has no KEM key (KEY.x-wing beside its node key): secrets "
                f"{names} cannot be opened here (circle node keygen makes one; the owners "
                "then reseal)"
            )
        if work.desired.circle is None:
            raise SecretRefused(f"commit {work.assignment.commit} has no circle.yaml")
        circle = work.desired.circle.document.id
        values: dict[str, bytes] = {}
        for ref in refs:
            loaded = work.desired.secrets.get(ref.secret)
            if loaded is None:
                raise SecretRefused(
                    f"secret {ref.secret} is not in commit {work.assignment.commit}"
                )
            try:
                values[ref.secret] = seal.release(
                    loaded.document, circle=circle, workload=workload, digest=digest,
                    node=self.node, key=self._key,
                )  # fmt: skip
            except SecretError as error:
                raise SecretRefused(f"{type(error).__name__}: {error}") from None
        return values


def _pinned(work: Work) -> str | None:
    """The artifact the applied commit pins for the workload: its own digest, or its build's
    (as admission reads it)."""
    artifact = work.workload.artifact
    if artifact.digest is not None:
        return str(artifact.digest)
    build = work.desired.builds.get(artifact.build)
    return str(build.document.digest) if build is not None and build.document.digest else None


def mount_secrets(folder: Path, uid: int, values: Mapping[str, bytes]) -> None:
    """Mount the replica's private tmpfs at `folder` and write each value there (see the
    module). A leftover mount is taken away first; OSError when it cannot be made."""
    unmount_secrets(folder)
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder.parent.parent, 0o700)
    os.mkdir(folder, 0o700)
    options = f"size={TMPFS_BYTES},mode=0500,uid={uid},gid={uid}".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", flags, options) != 0:
        number = ctypes.get_errno()
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        raise OSError(number, f"cannot mount the secrets tmpfs: {os.strerror(number)}")
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for name, value in values.items():
                flags_w = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(name, flags_w, 0o400, dir_fd=dir_fd)
                try:
                    os.fchown(fd, uid, uid)
                    os.fchmod(fd, 0o400)
                    view = memoryview(value)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
        finally:
            os.close(dir_fd)
    except OSError:
        unmount_secrets(folder)
        raise


def unmount_secrets(folder: Path) -> None:
    """Take the replica's secrets away: unmount its tmpfs (the values go with it) and remove
    the folder. Nothing there is not an error."""
    for _ in range(8):  # a mount stacked on a mount: each goes
        if _libc.umount2(os.fsencode(folder), _MNT_DETACH) != 0:
            number = ctypes.get_errno()
            if number in (errno.EINVAL, errno.ENOENT):
                break
            raise OSError(number, f"cannot unmount {folder}: {os.strerror(number)}")
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        os.rmdir(folder)  # an empty mount point now; a folder with files was never ours
    else:
        os.unlink(folder)


def leftovers(state_dir: Path) -> list[tuple[str, int]]:
    """The (workload, slot) folders under STATE/secrets, as an earlier agent may leave them."""
    root = state_dir / "secrets"
    found = []
    for workload in sorted(root.iterdir()) if root.is_dir() else []:
        for slot in sorted(workload.iterdir()) if workload.is_dir() else []:
            if slot.name.isdigit():
                found.append((workload.name, int(slot.name)))
    return found


def folder_of(state_dir: Path, workload: str, slot: int) -> Path:
    return state_dir / "secrets" / workload / str(slot)
