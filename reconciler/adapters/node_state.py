"""The node's persisted position on the chain: `{commit, seq, policySha256}`, one small file.

Written atomically (temp file, fsync, rename, fsync of the folder) with mode 0600 and refused on
read when group or others may write or read it: a node's state only moves forward, so whoever
could edit it could roll the node back.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from reconciler.core.chain import NodeState
from reconciler.errors import CheckFailed

FORMAT = "circle-node-state/1"
MAX_BYTES = 4096


class StateFileError(CheckFailed):
    """A state file that is unsafe (permissions) or unreadable."""


def load(path: Path) -> NodeState | None:
    """The persisted state, or None before the first transition (no file yet)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateFileError(f"{path}: cannot open the node state: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise StateFileError(
                f"{path}: permissions {stat.S_IMODE(info.st_mode):04o} are too open; the node "
                f"state must be the node agent's alone (chmod 600 {path})"
            )
        data = handle.read(MAX_BYTES + 1)
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise ValueError(f"expected format {FORMAT}")
        state = NodeState(
            str(document["commit"]), int(document["seq"]), str(document["policySha256"])
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StateFileError(f"{path}: not a node state file ({error})") from None
    return state


def save(path: Path, state: NodeState) -> None:
    """Replace the state file atomically; 0600 from the first byte."""
    data = json.dumps(
        {
            "format": FORMAT,
            "commit": state.commit,
            "seq": state.seq,
            "policySha256": state.policy_sha256,
        },
        sort_keys=True,
    ).encode()
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
