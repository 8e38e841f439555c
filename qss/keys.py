"""The circle's storage key on disk: the key that wraps every object's data key.

Format (`qss-storage-key/1`, JSON): `{"format": ..., "keyId": ..., "key": base64 of 32 bytes}`.
Written with mode 0600 and never overwritten by accident; refused when group or others may
read it, as ssh refuses a private key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from pathlib import Path

from qss.codec import KEY_BYTES, key_id
from qss.durable import write_atomically
from qss.errors import StorageError

FORMAT = "qss-storage-key/1"
MAX_KEY_FILE = 4096


class KeyFileError(StorageError):
    """A storage key file that is missing, malformed or too widely readable."""


def generate_key_file(path: Path, *, overwrite: bool = False) -> str:
    """Write a new random storage key to `path` (0600); returns its key id."""
    key = secrets.token_bytes(KEY_BYTES)
    text = json.dumps(
        {"format": FORMAT, "keyId": key_id(key), "key": base64.b64encode(key).decode()}, indent=2
    )
    try:
        write_atomically(path, text + "\n", mode=0o600, exclusive=not overwrite)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists; refusing to overwrite a key (use --force)") from None
    return key_id(key)


def read_secret_file(path: Path, what: str) -> bytes:
    """The bytes of a secret file, refused when group or others may read it (as ssh does)."""
    try:
        # O_NONBLOCK: a FIFO given as the file must be refused, not waited on for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise KeyFileError(f"{path}: cannot open the {what}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{path}: not a regular file")
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: permissions {stat.S_IMODE(mode):04o} are too open; "
                f"the {what} must be readable by its owner only (chmod 600 {path})"
            )
        return handle.read(MAX_KEY_FILE + 1)


def read_token_file(path: Path) -> str:
    """A bearer token: the first line of an owner-only file, not empty."""
    lines = read_secret_file(path, "token").decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token or len(token) > 1024 or not token.isprintable():
        raise KeyFileError(f"{path}: expected a token of 1-1024 printable characters on line 1")
    return token


def read_key_file(path: Path) -> bytes:
    """The storage key in `path`, after checking its permissions and format."""
    data = read_secret_file(path, "storage key")
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise ValueError(f"expected format {FORMAT}")
        key = base64.b64decode(document["key"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise KeyFileError(f"{path}: not a storage key file ({error})") from None
    if len(key) != KEY_BYTES or document.get("keyId") != key_id(key):
        raise KeyFileError(f"{path}: the key does not match its key id (damaged file?)")
    return key
