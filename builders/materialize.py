"""Materialize an artifact from its manifest (DESIGN.md section 5): check the manifest bytes
against the pinned id before anything else, fetch only the chunks that neither the local store
nor an installed version holds, write the tree entry by entry into a private staging folder
(never by extracting an archive), verify it, then rename it into place and switch `current`
with one atomic replace.

Layout under `artifacts_root`:

    <hex of the id>/     a verified artifact; never changed after its rename
    current -> <hex>     the version a node starts (a relative symlink)
    .staging-<random>/   work in progress; removed on any failure

Where the bytes come from, cheapest first: hard links to unchanged files and kernel copies
(reflinks where the filesystem has them) of unchanged ranges of installed versions whose seals
hold (`builders.reuse`, `builders.seal`; only with `seals`); chunks of the verified local
store; chunks fetched from every source at once (`builders.swarm`), each verified on
arrival, while the tree is being written. With `seals` (a node), fetched chunks go straight
into the tree, not into the store (`builders.assemble`, `direct`): the node keeps one copy
and serves it from the sealed tree (`builders.sealed_trees`; `serving` lends it the tree
while it is written). A source that cannot be reached or stalls is
reported once through `on_problem` and tried last from then on; one that sends wrong bytes is
dropped; a chunk no source delivers raises ChunkUnavailable naming what each said. `on_chunk`
hears where each chunk came from, once verified: `store` for those held already (in the store
or an installed version), else the source whose bytes were kept.

Durability: with `durable` (the default) every file and folder is fsynced before the rename.
A node passes `durable=False` and `seals`: nothing is flushed byte by byte, the tree is sealed
with the boot id instead, and a tree whose seal is from another boot is hashed in full before
it is trusted again (here, and by the node before every start).

Errors (all `BuildError`; a manifest that does not match its id raises `ManifestRefused`):

    MaterializeError        materialization failed; the previous `current` is untouched
     ├── ChunkUnavailable   no source has a chunk that hashes to its name
     └── TreeMismatch       a tree on disk differs from its manifest
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from builders.assemble import DIR_MODE, MODES, Assembly, Writer, sync_folders
from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.dirfd import DIR_FLAGS, READ_FLAGS, ParentCache
from builders.faults import ChunkUnavailable, MaterializeError, TreeMismatch
from builders.manifest import ArtifactManifest, Entry, EntryType, decode
from builders.reuse import find_bases, keep_what_holds, plan_files
from builders.seal import forget_seal, read_boot_id, read_seal, tree_facts, write_seal
from builders.sealed_trees import SealedTrees
from builders.swarm import HEDGE_AFTER, Arrival, Swarm

__all__ = [
    "CURRENT",
    "STAGING_PREFIX",
    "Assembly",
    "ChunkUnavailable",
    "MaterializeError",
    "Progress",
    "TreeMismatch",
    "materialize",
    "sweep_staging",
    "verify_tree",
]

CURRENT = "current"
STAGING_PREFIX = ".staging-"
_MODES = MODES
_DIR_MODE = DIR_MODE
_BLOCK = 1024 * 1024
_DIR_FLAGS = DIR_FLAGS
_READ_FLAGS = READ_FLAGS


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported from the calling thread after each fetched chunk."""

    chunks_done: int
    chunks_total: int
    bytes_done: int
    bytes_total: int


def materialize(
    artifact_id: str,
    manifest_bytes: bytes,
    *,
    sources: Sequence[ChunkSource],
    store: ChunkStore,
    artifacts_root: Path,
    workers: int = 4,
    allow_symlinks: bool = False,
    progress: Callable[[Progress], None] | None = None,
    switch: bool = True,
    on_problem: Callable[[str], None] | None = None,
    on_chunk: Callable[[ChunkSource, int], None] | None = None,
    seals: Path | None = None,
    boot_id: str | None = None,
    durable: bool = True,
    hedge_after: float = HEDGE_AFTER,
    deadline: float | None = None,
    on_assembled: Callable[[Assembly], None] | None = None,
    serving: SealedTrees | None = None,
) -> Path:
    """Make `artifacts_root/<hex>` hold exactly the artifact `artifact_id` and point `current`
    at it (`switch=False` pre-stages the next version and leaves `current` alone); returns that
    folder. `workers`: requests in flight per source. `on_problem` hears, once per source,
    that it stalled, could not be reached or sent wrong bytes, and `on_chunk` (source, bytes)
    where each chunk came from (both may be called from fetching threads). `seals`: the folder
    of seals (see the module) that lets installed versions be trusted without hashing and
    reused; `boot_id` this boot's (read from the system by default). `hedge_after`: seconds
    before a slow request is asked of a second source too; `deadline`: seconds for the whole
    transfer. `on_assembled` hears how the bytes were got. `serving`: the node's chunk server's
    view of its trees, which serves the chunks of this one while it is written. Raises
    ManifestRefused or MaterializeError."""
    manifest = decode(manifest_bytes, artifact_id, allow_symlinks=allow_symlinks)
    if workers < 1:
        raise MaterializeError(f"workers must be at least 1, got {workers}")
    final_name = artifact_id.removeprefix("sha256:")
    label = f"artifact {artifact_id[:23]}"
    boot = (read_boot_id() if boot_id is None else boot_id) if seals is not None else ""
    try:
        artifacts_root.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(artifacts_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise MaterializeError(f"{artifacts_root}: cannot open: {error.strerror}") from error
    try:
        if not _installed(root_fd, artifacts_root, manifest, label, seals, boot):
            bases = (
                find_bases(artifacts_root, seals, store, boot, artifact_id)
                if seals is not None
                else []
            )
            plans = plan_files(manifest, bases)
            keep_what_holds(root_fd, plans)
            with Swarm(
                sources,
                store,
                workers=workers,
                describe=_describer(manifest),
                on_problem=on_problem,
                on_chunk=on_chunk,
                hedge_after=hedge_after,
                deadline=deadline,
            ) as swarm:
                writer = Writer(
                    root_fd,
                    manifest,
                    plans,
                    store,
                    swarm,
                    durable=durable,
                    progress=None,
                    on_chunk=on_chunk,
                    direct=seals is not None,
                )
                missing = writer.missing()
                writer.progress = _progress_of(missing, progress)
                if writer.direct:
                    # Into the tree, not the store: served from it once sealed.
                    swarm.sink = writer.deliver
                    writer.fetch = missing  # asked for once the files exist
                else:
                    swarm.want(missing)
                lent = serving.lend(writer) if serving is not None else contextlib.nullcontext()
                with lent:
                    _build(root_fd, STAGING_PREFIX + secrets.token_hex(8), manifest, writer, label)
                writer.assembly.fetched = sum(stats.bytes for stats in swarm.stats)
                writer.assembly.sources = list(swarm.stats)
            if seals is not None:
                # Kept beside the chunks, so that this version can be a base for the next.
                with contextlib.suppress(ChunkError):
                    store.put_manifest(artifact_id, manifest_bytes)
                write_seal(seals, artifact_id, artifacts_root / final_name, boot)
            if on_assembled is not None:
                on_assembled(writer.assembly)
        if switch:
            _switch_current(root_fd, final_name, label)
    finally:
        os.close(root_fd)
    return artifacts_root / final_name


def verify_tree(directory: Path, manifest: ArtifactManifest) -> None:
    """Raise TreeMismatch naming the first entry of `directory` that differs from `manifest`
    (and, for a file, the first differing chunk). `directory` itself may be a symlink (such as
    `current`); nothing below it is followed."""
    try:
        root_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise TreeMismatch(f"{directory}: cannot open the folder: {error.strerror}") from error
    try:
        _verify_at(root_fd, manifest, str(directory))
    finally:
        os.close(root_fd)


def _describer(manifest: ArtifactManifest) -> Callable[[object], str]:
    """Names the files that need a chunk, for refusals (computed only when one is made)."""

    def describe(chunk: object) -> str:
        digest = getattr(chunk, "sha256", "")
        users = [e.path for e in manifest.files() if any(c.sha256 == digest for c in e.chunks)]
        prefetch = set(manifest.prefetch)
        users.sort(key=lambda path: path not in prefetch)
        shown = ", ".join(repr(path) for path in users[:3])
        return shown + (f" and {len(users) - 3} more" if len(users) > 3 else "")

    return describe


def _progress_of(
    missing: Sequence[object], progress: Callable[[Progress], None] | None
) -> Callable[[Arrival], None] | None:
    if progress is None:
        return None
    total = len(missing)
    bytes_total = sum(getattr(chunk, "size", 0) for chunk in missing)
    done = [0, 0]

    def report(arrival: Arrival) -> None:
        done[0] += 1
        done[1] += arrival.chunk.size
        progress(Progress(min(done[0], total), total, min(done[1], bytes_total), bytes_total))

    return report


# -- installing ----------------------------------------------------------------------------------


def _build(
    root_fd: int, staging_name: str, manifest: ArtifactManifest, writer: Writer, label: str
) -> None:
    """Write, check and install the tree; the staging folder never outlives this call."""
    step = "stage"
    try:
        os.mkdir(staging_name, 0o700, dir_fd=root_fd)
        staging_fd = os.open(staging_name, _DIR_FLAGS, dir_fd=root_fd)
        try:
            writer.write(staging_fd)
            if writer.durable:
                sync_folders(staging_fd, manifest)
            # Contents were checked as they were written (chunks verified on read, reused
            # ranges under a seal that held); what is left to check is the tree itself:
            # every entry, its type, mode and size.
            _verify_at(staging_fd, manifest, label, root_mode=0o700, content=False)
            # Private while half-written; the artifact's own mode only once it is complete.
            os.fchmod(staging_fd, _DIR_MODE)
            if writer.durable:
                os.fsync(staging_fd)
        finally:
            os.close(staging_fd)
        step = "install"
        _install(
            root_fd, staging_name, manifest.artifact_id.removeprefix("sha256:"), manifest, label
        )
    except OSError as error:
        raise MaterializeError(f"{label}: cannot {step} it: {error.strerror}") from error
    finally:
        _remove(root_fd, staging_name)


def _install(
    root_fd: int, staging_name: str, final_name: str, manifest: ArtifactManifest, label: str
) -> None:
    try:
        os.rename(staging_name, final_name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
        # Another materialization of this id won the race: one result, ours is discarded.
        if _verified(root_fd, final_name, manifest, label):
            return
        # What sits there is damaged: set it aside (inside the staging namespace, so a crash
        # leaves nothing else behind) and put the verified copy in its place.
        damaged = STAGING_PREFIX + secrets.token_hex(8)
        os.rename(final_name, damaged, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        try:
            os.rename(staging_name, final_name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        finally:
            _remove(root_fd, damaged)
    os.fsync(root_fd)


def _installed(
    root_fd: int,
    artifacts_root: Path,
    manifest: ArtifactManifest,
    label: str,
    seals: Path | None,
    boot_id: str,
) -> bool:
    """Whether the artifact's folder already holds it: its seal holds, or it is verified
    file by file (and sealed again)."""
    artifact_id = manifest.artifact_id
    final_name = artifact_id.removeprefix("sha256:")
    if seals is not None:
        seal = read_seal(seals, artifact_id)
        if seal is not None and seal.holds(boot_id, tree_facts(artifacts_root / final_name)):
            return True
    if not _verified(root_fd, final_name, manifest, label):
        if seals is not None:
            forget_seal(seals, artifact_id)
        return False
    if seals is not None:
        write_seal(seals, artifact_id, artifacts_root / final_name, boot_id)
    return True


def _verified(root_fd: int, final_name: str, manifest: ArtifactManifest, label: str) -> bool:
    """Whether `final_name` holds this artifact, verified file by file."""
    try:
        fd = os.open(final_name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError:
        return False
    try:
        _verify_at(fd, manifest, label)
    except TreeMismatch:
        return False
    finally:
        os.close(fd)
    return True


def _switch_current(root_fd: int, final_name: str, label: str) -> None:
    """Point `current` at `final_name` with one rename: a reader sees the old or the new."""
    temporary = f"{CURRENT}.tmp-{secrets.token_hex(8)}"
    try:
        os.symlink(final_name, temporary, dir_fd=root_fd)
        try:
            os.replace(temporary, CURRENT, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=root_fd)
            raise
        os.fsync(root_fd)
    except OSError as error:
        raise MaterializeError(f"{label}: cannot switch {CURRENT}: {error.strerror}") from error


def sweep_staging(root: Path) -> list[str]:
    """Remove what materializations killed mid-way left under `root` (staging folders, trees
    set aside): only for a caller that holds `root` alone, so that none is still being
    written. Returns the names removed; a missing `root` holds none."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return []
    try:
        left = sorted(name for name in os.listdir(root_fd) if name.startswith(STAGING_PREFIX))
        for name in left:
            _remove(root_fd, name)
        return left
    finally:
        os.close(root_fd)


def _remove(root_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.stat(name, dir_fd=root_fd, follow_symlinks=False).st_mode):
            # rmtree with dir_fd never follows a symlink inside the tree.
            shutil.rmtree(name, dir_fd=root_fd)
        else:
            os.unlink(name, dir_fd=root_fd)


# -- verifying -----------------------------------------------------------------------------------


def _verify_at(
    root_fd: int,
    manifest: ArtifactManifest,
    label: str,
    *,
    root_mode: int = _DIR_MODE,
    content: bool = True,
) -> None:
    try:
        _check_mode(os.fstat(root_fd), stat.S_ISDIR, root_mode, label, "the artifact folder")
        children: dict[str, set[str]] = {"": set()}
        with ParentCache(root_fd) as parents:
            for entry in manifest.entries:
                parent, name = posixpath.split(entry.path)
                children.setdefault(parent, set()).add(name)
                if entry.type is EntryType.DIR:
                    children.setdefault(entry.path, set())
                try:
                    parent_fd = parents.open(parent)
                except OSError as error:
                    raise TreeMismatch(
                        f"{label}: folder {parent!r}: cannot open: {error.strerror}"
                    ) from error
                _verify_entry(parent_fd, name, entry, label, content=content)
            for folder, expected in children.items():
                found = set(os.listdir(parents.open(folder)))
                for extra in sorted(found - expected):
                    shown = posixpath.join(folder, extra)
                    raise TreeMismatch(f"{label}: {shown!r} is not in the manifest")
    except OSError as error:
        raise TreeMismatch(f"{label}: cannot read the tree: {error.strerror}") from error


def _verify_entry(
    parent_fd: int, name: str, entry: Entry, label: str, *, content: bool = True
) -> None:
    where = f"{label}: {entry.type} {entry.path!r}"
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise TreeMismatch(f"{where} is missing") from None
    if entry.type is EntryType.DIR:
        _check_mode(info, stat.S_ISDIR, _DIR_MODE, label, entry.path)
    elif entry.type is EntryType.SYMLINK:
        if not stat.S_ISLNK(info.st_mode):
            raise TreeMismatch(f"{where} is not a symlink")
        target = os.readlink(name, dir_fd=parent_fd)
        if target != entry.target:
            raise TreeMismatch(f"{where} points to {target!r}, the manifest says {entry.target!r}")
    else:
        assert entry.mode is not None  # decode guarantees it
        _check_mode(info, stat.S_ISREG, _MODES[entry.mode], label, entry.path)
        fd = os.open(name, _READ_FLAGS, dir_fd=parent_fd)
        try:
            # fstat of what was opened: the name could have been swapped since the stat.
            info = os.fstat(fd)
            _check_mode(info, stat.S_ISREG, _MODES[entry.mode], label, entry.path)
            if info.st_size != entry.size:
                raise TreeMismatch(
                    f"{where} holds {info.st_size} bytes, the manifest says {entry.size}"
                )
            if content:
                _verify_content(fd, entry, where)
        finally:
            os.close(fd)


def _verify_content(fd: int, entry: Entry, where: str) -> None:
    """Hash chunk by chunk (streaming) so that a refusal names the first differing chunk."""
    whole = hashlib.sha256()
    offset = 0
    for index, chunk in enumerate(entry.chunks):
        part = hashlib.sha256()
        for block in _read_exactly(fd, chunk.size):
            part.update(block)
            whole.update(block)
        found = part.hexdigest()
        if found != chunk.sha256:
            raise TreeMismatch(
                f"{where}: chunk {index} ({chunk.sha256}, bytes {offset}-"
                f"{offset + chunk.size - 1}) hashes to {found}"
            )
        offset += chunk.size
    if os.read(fd, 1):
        raise TreeMismatch(f"{where} grew past {entry.size} bytes while being verified")
    if whole.hexdigest() != entry.sha256:
        raise TreeMismatch(
            f"{where} hashes to {whole.hexdigest()}, the manifest says {entry.sha256}"
        )


def _read_exactly(fd: int, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining:
        block = os.read(fd, min(_BLOCK, remaining))
        if not block:
            raise TreeMismatch(f"file shrank while being verified ({remaining} bytes short)")
        remaining -= len(block)
        yield block


def _check_mode(
    info: os.stat_result, is_kind: Callable[[int], bool], mode: int, label: str, path: str
) -> None:
    if not is_kind(info.st_mode):
        raise TreeMismatch(f"{label}: {path!r} has the wrong type ({stat.filemode(info.st_mode)})")
    found = stat.S_IMODE(info.st_mode)
    if found != mode:
        raise TreeMismatch(f"{label}: {path!r} has mode {found:04o}, expected {mode:04o}")
