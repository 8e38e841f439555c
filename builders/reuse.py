"""Where the bytes of a new version can be taken from without fetching or rewriting them: the
files of artifacts already installed beside it (the previous version, mostly).

A file of an installed artifact may be reused only while its seal holds (`builders.seal`):
same boot, and the file's inode, size, mode, mtime, ctime and link count exactly as when its
bytes were last verified or written from verified chunks. Then its bytes are, chunk by chunk,
what its verified manifest says, and a chunk of the new version with the same digest at any
offset of it can be copied in the kernel instead of being read, hashed and written. A file
edited since (which moves its ctime) is never a source: its chunks come from the verified
store or the network, hashed on the way. The check is made when a file is opened for reuse
and again once its ranges have been copied, so a change in between voids what was copied.

Wholly unchanged files (same digest, size and mode) are hard-linked instead: no byte is
copied. They then share an inode with the older version, whose seal stops holding for them
(the link count moved): that tree is verified in full the next time it is started.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from builders.chunks import ChunkError, ChunkStore
from builders.manifest import ArtifactManifest, Chunk, Entry, ManifestRefused, decode
from builders.seal import Seal, entry_facts, read_seal, sealed_ids, tree_facts

MAX_BASES = 4  # installed artifacts looked at as sources, the most recently sealed first
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Base:
    """An installed artifact whose seal holds: its folder's name and verified manifest."""

    name: str
    manifest: ArtifactManifest
    seal: Seal
    facts: dict[str, list[object]] = field(compare=False, repr=False)


@dataclass(slots=True)
class Run:
    """`size` bytes of a new file at `offset`, from `base`'s file `path` at `source_offset`;
    `chunks` the new file's chunks the run covers."""

    base: Base
    path: str
    source_offset: int
    offset: int
    size: int
    chunks: list[tuple[int, Chunk]]  # (offset in the new file, chunk)


@dataclass
class FilePlan:
    """How one new file is made: a link to a base's file, or reused runs plus new chunks."""

    entry: Entry
    link: tuple[Base, str] | None = None
    runs: list[Run] = field(default_factory=list)
    new: list[tuple[int, Chunk]] = field(default_factory=list)  # (offset, chunk)

    @property
    def reuses(self) -> bool:
        return self.link is not None or bool(self.runs)


def find_bases(
    artifacts_root: Path, seals: Path, store: ChunkStore, boot_id: str, exclude: str
) -> list[Base]:
    """The installed artifacts whose seals hold now (their manifests from the store)."""
    bases: list[Base] = []
    for artifact_id in sealed_ids(seals):
        if len(bases) == MAX_BASES:
            break
        if artifact_id == exclude:
            continue
        seal = read_seal(seals, artifact_id)
        name = artifact_id.removeprefix("sha256:")
        if seal is None or not seal.holds(boot_id, tree_facts(artifacts_root / name)):
            continue
        try:
            manifest = decode(store.get_manifest(artifact_id), artifact_id, allow_symlinks=True)
        except (ChunkError, ManifestRefused):
            continue
        bases.append(Base(name, manifest, seal, seal.file_facts()))
    return bases


def plan_files(manifest: ArtifactManifest, bases: list[Base]) -> dict[str, FilePlan]:
    """For each file of `manifest`, what can come from `bases` (their seals held a moment
    ago; each file is checked again when it is opened)."""
    wholes: dict[tuple[str | None, int, str | None], tuple[Base, str]] = {}
    places: dict[str, tuple[Base, str, int]] = {}
    for base in bases:
        for entry in base.manifest.files():
            wholes.setdefault((entry.sha256, entry.size, entry.mode), (base, entry.path))
            offset = 0
            for chunk in entry.chunks:
                places.setdefault(chunk.sha256, (base, entry.path, offset))
                offset += chunk.size
    plans: dict[str, FilePlan] = {}
    for entry in manifest.files():
        plan = plans[entry.path] = FilePlan(entry)
        plan.link = wholes.get((entry.sha256, entry.size, entry.mode)) if entry.size else None
        if plan.link is not None:
            continue
        offset = 0
        for chunk in entry.chunks:
            place = places.get(chunk.sha256)
            last = plan.runs[-1] if plan.runs else None
            if place is None:
                plan.new.append((offset, chunk))
            elif (
                last is not None
                and last.base is place[0]
                and last.path == place[1]
                and last.offset + last.size == offset
                and last.source_offset + last.size == place[2]
            ):
                last.size += chunk.size
                last.chunks.append((offset, chunk))
            else:
                base, path, source_offset = place
                plan.runs.append(
                    Run(base, path, source_offset, offset, chunk.size, [(offset, chunk)])
                )
            offset += chunk.size
    return plans


class SealedFile:
    """A base's file opened for reuse, only if its seal holds for it (else `fd` is -1)."""

    def __init__(self, root_fd: int, base: Base, path: str) -> None:
        self.base, self.path, self.fd = base, path, -1
        self.expected = base.facts.get(path)
        with contextlib.suppress(OSError):
            self.fd = _open_below(root_fd, f"{base.name}/{path}")
            if not self.holds():
                self.close()

    def holds(self) -> bool:
        """Whether the open file is still exactly as sealed."""
        if self.fd < 0 or self.expected is None:
            return False
        try:
            return entry_facts(self.path, os.fstat(self.fd)) == self.expected
        except OSError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def keep_what_holds(root_fd: int, plans: dict[str, FilePlan]) -> None:
    """Drop from `plans` every link and run whose base file's seal no longer holds: those
    bytes will be fetched or taken from the store instead."""
    verdicts: dict[tuple[str, str], bool] = {}

    def holds(base: Base, path: str) -> bool:
        key = (base.name, path)
        if key not in verdicts:
            with SealedFile(root_fd, base, path) as sealed:
                verdicts[key] = sealed.holds()
        return verdicts[key]

    for plan in plans.values():
        if plan.link is not None and not holds(*plan.link):
            plan.link = None
            offset = 0
            for chunk in plan.entry.chunks:
                plan.new.append((offset, chunk))
                offset += chunk.size
        kept = []
        for run in plan.runs:
            if holds(run.base, run.path):
                kept.append(run)
            else:
                plan.new.extend(run.chunks)
        plan.runs = kept
        plan.new.sort(key=lambda item: item[0])


def open_parent(root_fd: int, base: Base, path: str) -> int:
    """A descriptor of the base's folder that holds `path` (for `os.link`); OSError."""
    parent = posixpath.dirname(path)
    return _open_below(root_fd, f"{base.name}/{parent}" if parent else base.name, folder=True)


def _open_below(root_fd: int, relative: str, *, folder: bool = False) -> int:
    """Open `relative` below `root_fd` one name at a time, following no symlink."""
    names = relative.split("/")
    fd = os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    try:
        for name in names[:-1]:
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(names[-1], _DIR_FLAGS if folder else _READ_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
