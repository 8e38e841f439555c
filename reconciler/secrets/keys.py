"""A node's X-Wing key files, beside its node key (the shell around `xwing`'s armor).

    PATH.x-wing      the private key (the 32-byte seed, armored), 0600, the agent's own
    PATH.x-wing.pub  `x-wing BASE64 comment`: `kemPublicKey` in nodes/NAME.yaml

`circle node keygen PATH` makes both with the node key; `generate` refuses to overwrite, and
`load` refuses a link, a file of another uid or one that others may read, as ssh does.
"""

from __future__ import annotations

import os
from pathlib import Path

from qss.durable import write_atomically
from reconciler.files import read_private
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
    return read(private_path(node_key))


def read(path: Path) -> xwing.XWingPrivateKey:
    """The X-Wing private key file at `path`, held to the rules of `load`."""
    data = read_private(path, MAX_KEY_BYTES, "KEM key", KemKeyError)
    if len(data) > MAX_KEY_BYTES:
        raise KemKeyError(f"{path}: over {MAX_KEY_BYTES} bytes; not an X-Wing key")
    try:
        return xwing.decode_private_key(data)
    except KemError as error:
        raise KemKeyError(f"{path}: {error}") from None
