"""Seals: what an installed artifact tree looked like when its bytes were last known good, and
in which boot. A tree is trusted again without hashing only while its seal holds.

A seal is written right after a tree was materialized from verified bytes or hashed in full
against its manifest. It records, for every entry, what any change would touch (type and mode,
size, inode, mtime, ctime, link count: root can set an mtime back, no one can set a ctime),
and the boot id (`/proc/sys/kernel/random/boot_id`). Durability is a matter of verification:
materialized files are not flushed byte by byte, so after a crash their bytes may never have
reached the disk; a seal from another boot is therefore void, and the tree is hashed in full
before it is started or reused. A seal's own file is written atomically but not flushed either:
a lost or torn seal only costs a full check.

    <seals>/<hex>.json   {"format": "circle-seal/1", "artifact": "sha256:<hex>",
                          "boot": "<boot id>", "facts": [[path, mode, size, ino, mtime_ns,
                                                          ctime_ns, nlink], ...]}
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

FORMAT = "circle-seal/1"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_MAX_SEAL = 64 << 20
Facts = list[list[object]]


def read_boot_id(path: Path = BOOT_ID) -> str:
    """This boot's id, or "" where the system has none (then no seal ever holds)."""
    try:
        return path.read_text(encoding="ascii").strip()[:64]
    except (OSError, UnicodeDecodeError):
        return ""


@dataclass(frozen=True)
class Seal:
    artifact_id: str
    boot_id: str
    facts: Facts

    def holds(self, boot_id: str, facts: Facts | None) -> bool:
        """Whether the tree is as sealed, in the boot it was sealed in."""
        return bool(boot_id) and self.boot_id == boot_id and facts == self.facts

    def file_facts(self) -> dict[str, list[object]]:
        return {str(entry[0]): entry for entry in self.facts}


def seal_path(seals: Path, artifact_id: str) -> Path:
    return seals / f"{artifact_id.removeprefix('sha256:')}.json"


def read_seal(seals: Path, artifact_id: str) -> Seal | None:
    """The seal of `artifact_id`, or None (none, unreadable, another format or artifact)."""
    try:
        with open(seal_path(seals, artifact_id), "rb") as handle:
            data = handle.read(_MAX_SEAL + 1)
        document = json.loads(data)
    except (OSError, ValueError):
        return None
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("artifact") != artifact_id
        or not isinstance(document.get("boot"), str)
        or not isinstance(document.get("facts"), list)
    ):
        return None
    return Seal(artifact_id, document["boot"], document["facts"])


def write_seal(seals: Path, artifact_id: str, tree: Path, boot_id: str) -> Seal | None:
    """Seal `tree` as it is now (the caller has just verified or written it)."""
    facts = tree_facts(tree)
    if facts is None or not boot_id:
        forget_seal(seals, artifact_id)
        return None
    document = {"format": FORMAT, "artifact": artifact_id, "boot": boot_id, "facts": facts}
    seals.mkdir(mode=0o700, parents=True, exist_ok=True)
    replace_file(seal_path(seals, artifact_id), json.dumps(document).encode(), mode=0o600)
    return Seal(artifact_id, boot_id, facts)


def forget_seal(seals: Path, artifact_id: str) -> None:
    with contextlib.suppress(OSError):
        seal_path(seals, artifact_id).unlink()


def sealed_ids(seals: Path) -> list[str]:
    """The artifacts with a seal, the most recently sealed first."""
    try:
        found = [
            (entry.stat().st_mtime_ns, entry.name)
            for entry in os.scandir(seals)
            if entry.name.endswith(".json") and len(entry.name) == 69
        ]
    except OSError:
        return []
    return ["sha256:" + name.removesuffix(".json") for _, name in sorted(found, reverse=True)]


def replace_file(path: Path, data: bytes, *, mode: int = 0o644, sync: bool = False) -> None:
    """Put `data` at `path` atomically (temporary file + rename): never seen half-written.
    Flushed only with `sync`: for what is verified on every read, a torn copy after a crash
    is refused and fetched again, so it need not be."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def tree_facts(root: Path) -> Facts | None:
    """Every entry below `root` (never following a symlink) with what a change would touch:
    type and mode, size, inode, mtime, ctime and link count. None if it cannot be read."""
    found: Facts = []
    try:
        _walk(root, "", found)
    except OSError:
        return None
    return found


def entry_facts(relative: str, status: os.stat_result) -> list[object]:
    return [
        relative,
        status.st_mode,
        status.st_size,
        status.st_ino,
        status.st_mtime_ns,
        status.st_ctime_ns,
        status.st_nlink,
    ]


def _walk(folder: Path, prefix: str, found: Facts) -> None:
    status = os.lstat(folder)
    found.append(entry_facts(prefix or ".", status))
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            relative = f"{prefix}/{entry.name}" if prefix else entry.name
            status = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                _walk(Path(entry.path), relative, found)
            else:
                found.append(entry_facts(relative, status))
