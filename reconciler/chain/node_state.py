"""The node's persisted position on the chain, `{commit, seq, policySha256}`, and the folder that
holds it.

A node's state only moves forward, so whoever could edit it could roll the node back; whoever
could swap the folder's quarantine repository or plant a file in it could do worse. So the
folder must be the node agent's alone (`check_folder`, as OpenSSH's StrictModes checks a home
folder): owned by the agent's user, writable by nobody else, in folders nobody else can write
(a sticky one such as /tmp is fine: others cannot replace what is ours there). Every file in it
is opened without following links and without blocking (`open_private`), and refused unless it
is a regular file of ours that only we can read or write. The state file is written atomically
(temp file, fsync, rename, fsync of the folder) with mode 0600, and read with exact JSON types.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from qss.durable import write_atomically
from reconciler.chain.values import NodeState
from reconciler.errors import CheckFailed

FORMAT = "circle-node-state/1"
MAX_BYTES = 4096
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"format", "commit", "seq", "policySha256"}


class StateFileError(CheckFailed):
    """A state file or folder that is unsafe (owner, permissions, type) or unreadable."""


def check_folder(folder: Path, *, create: bool = True) -> None:
    """Refuse unless `folder` is a real folder of this user's that no one else may write, in
    folders no one else may replace it from; make it (0700) when missing and `create`."""
    folder = Path(os.path.abspath(folder))
    _check_ancestors(folder.parent)
    if create:
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise StateFileError(
                f"{folder}: cannot make the node folder: {error.strerror}"
            ) from None
    try:
        info = os.lstat(folder)
    except OSError as error:
        raise StateFileError(f"{folder}: cannot use the node folder: {error.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise StateFileError(f"{folder}: the node folder is a symbolic link; give the real path")
    if not stat.S_ISDIR(info.st_mode):
        raise StateFileError(f"{folder}: not a folder")
    if info.st_uid != os.geteuid():
        raise StateFileError(
            f"{folder}: the node folder belongs to uid {info.st_uid}, not to this agent's uid "
            f"{os.geteuid()}"
        )
    if info.st_mode & 0o022:
        raise StateFileError(
            f"{folder}: permissions {stat.S_IMODE(info.st_mode):04o} let others write the node "
            f"folder; it must be the node agent's alone (chmod 700 {folder})"
        )


def _check_ancestors(parent: Path) -> None:
    """Every folder above the node folder: owned by root or by us, and writable by no one else
    unless sticky (then others cannot rename or remove what is ours in it)."""
    real = Path(os.path.realpath(parent))
    for folder in [real, *real.parents]:
        try:
            info = os.stat(folder)
        except FileNotFoundError:
            continue  # made below, by us
        except OSError as error:
            raise StateFileError(f"{folder}: cannot check: {error.strerror}") from None
        owner_ok = info.st_uid in (0, os.geteuid())
        shared = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if not owner_ok or shared:
            why = f"belongs to uid {info.st_uid}" if not owner_ok else "is writable by others"
            raise StateFileError(
                f"{folder}: {why}, so others could replace the node folder inside it; choose a "
                "node folder under folders only root or this agent's user can write"
            )


def open_private(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of regular file `path`, ours and private (0600 or less): never a link,
    never a FIFO or device (opened without blocking), never a folder."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise
    except OSError as error:
        what = "a symbolic link" if os.path.islink(path) else error.strerror
        raise StateFileError(f"{path}: cannot open the node state: {what}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise StateFileError(f"{path}: belongs to uid {info.st_uid}, not to this agent's")
        if info.st_mode & 0o077:
            raise StateFileError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; the node "
                f"state must be the node agent's alone (chmod 600 {path})"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def load(path: Path) -> NodeState | None:
    """The persisted state, or None before the first transition (no file yet)."""
    try:
        fd = open_private(path)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    try:
        return parse(data)
    except (ValueError, RecursionError) as error:
        raise StateFileError(f"{path}: not a node state file ({error})") from None


def parse(data: bytes) -> NodeState:
    """State file bytes, with exact JSON types; ValueError saying what is wrong otherwise."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"over {MAX_BYTES} bytes")
    document = json.loads(data)
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise ValueError(f"expected exactly the fields {sorted(_FIELDS)}")
    if document["format"] != FORMAT:
        raise ValueError(f"expected format {FORMAT}")
    commit, seq, policy = document["commit"], document["seq"], document["policySha256"]
    if not (isinstance(commit, str) and _SHA1.fullmatch(commit)):
        raise ValueError("commit must be a full commit id (40 hex digits)")
    if not (type(seq) is int and 1 <= seq < 2**53):
        raise ValueError("seq must be a whole number from 1")
    if not (isinstance(policy, str) and _SHA256.fullmatch(policy)):
        raise ValueError("policySha256 must be 64 hex digits")
    return NodeState(commit, seq, policy)


def save(path: Path, state: NodeState) -> None:
    """Replace the state file durably and atomically; 0600 from the first byte."""
    data = json.dumps(
        {
            "format": FORMAT,
            "commit": state.commit,
            "seq": state.seq,
            "policySha256": state.policy_sha256,
        },
        sort_keys=True,
    ).encode()
    write_atomically(path, data + b"\n", mode=0o600)
