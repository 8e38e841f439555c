"""A node's X-Wing key files, beside its node key (the shell around `xwing`'s armor).

    PATH.x-wing      the private key (the 32-byte seed, armored), 0600, the agent's own
    PATH.x-wing.pub  `x-wing BASE64 comment`: `kemPublicKey` in nodes/NAME.yaml

`circle node keygen PATH` makes both with the node key; `generate` refuses to overwrite, and
`load` refuses a link, a file of another uid or one that others may read, as ssh does.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from qss.durable import write_atomically
from reconciler.secrets import xwing
from reconciler.secrets.errors import KemError, KemKeyError

SUFFIX = ".x-wing"
MAX_KEY_BYTES = 4096


def private_path(node_key: Path) -> Path:
    return node_key.with_name(node_key.name + SUFFIX)


def public_path(node_key: Path) -> Path:
    return node_key.with_name(node_key.name + SUFFIX + ".pub")


def generate(node_key: Path, comment: str = "") -> xwing.XWingPrivateKey:
    """A new key pair for the node whose key is at `node_key`; neither file may exist yet."""
    private, public = private_path(node_key), public_path(node_key)
    for target in (private, public):
        if os.path.lexists(target):
            raise KemKeyError(f"{target}: exists; refusing to overwrite a key")
    key = xwing.generate()
    try:
        line = key.public_key_line(comment)
    except KemError as error:
        raise KemKeyError(str(error)) from None
    for target, data, mode in (
        (private, xwing.encode_private_key(key), 0o600),
        (public, (line + "\n").encode("ascii"), 0o644),
    ):
        try:
            write_atomically(target, data, mode=mode, exclusive=True)
        except FileExistsError:
            raise KemKeyError(f"{target}: exists; refusing to overwrite a key") from None
        except OSError as error:
            raise KemKeyError(f"{target}: cannot write the KEM key: {error.strerror}") from None
    return key


def exists(node_key: Path) -> bool:
    return os.path.lexists(private_path(node_key))


def load(node_key: Path) -> xwing.XWingPrivateKey:
    """The X-Wing key beside the node key at `node_key`: a regular file of this uid's that no
    one else may read. KemKeyError otherwise, never a byte of the key in the message."""
    path = private_path(node_key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise KemKeyError(f"{path}: the KEM key is a symbolic link") from None
        raise KemKeyError(f"{path}: cannot read the KEM key: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KemKeyError(f"{path}: the KEM key is not a regular file")
        if info.st_uid != os.geteuid():
            raise KemKeyError(
                f"{path}: the KEM key belongs to uid {info.st_uid}, not to this agent's uid "
                f"{os.geteuid()}"
            )
        if info.st_mode & 0o077:
            raise KemKeyError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; a KEM key "
                f"must be readable by its agent alone (chmod 600 {path})"
            )
        data = os.read(fd, MAX_KEY_BYTES + 1)
    except OSError as error:
        raise KemKeyError(f"{path}: cannot read the KEM key: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_BYTES:
        raise KemKeyError(f"{path}: over {MAX_KEY_BYTES} bytes; not an X-Wing key")
    try:
        return xwing.decode_private_key(data)
    except KemError as error:
        raise KemKeyError(f"{path}: {error}") from None
