"""Materialize an artifact from its manifest (DESIGN.md section 5): check the manifest bytes
against the pinned id before anything else, fetch only the chunks the local store lacks, write
the tree entry by entry into a private staging folder (never by extracting an archive), verify
every file, then rename it into place and switch `current` with one atomic replace.

Layout under `artifacts_root`:

    <hex of the id>/     a verified artifact; never changed after its rename
    current -> <hex>     the version a node starts (a relative symlink)
    .staging-<random>/   work in progress; removed on any failure

Chunks come from the sources in order, each asked for exactly the chunk's size. A source that
cannot be reached or does not answer within its deadline (SourceUnavailable) is reported once
through `on_problem` and tried last from then on, so one stalled peer costs one deadline, not
one per chunk; a chunk no source delivers raises ChunkUnavailable naming what each said.
`on_chunk` hears where each chunk came from, once verified: `store` for those it held already,
else the source whose bytes were kept (for a node's metrics of bytes by origin).

Errors (all `BuildError`; a manifest that does not match its id raises `ManifestRefused`):

    MaterializeError        materialization failed; the previous `current` is untouched
     ├── ChunkUnavailable   no source has a chunk that hashes to its name
     └── TreeMismatch       a tree on disk differs from its manifest
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import posixpath
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from builders import BuildError
from builders.chunks import (
    ChunkError,
    ChunkMissing,
    ChunkSource,
    ChunkStore,
    SourceUnavailable,
    chunk_digest,
)
from builders.manifest import ArtifactManifest, Chunk, Entry, EntryType, decode

CURRENT = "current"
STAGING_PREFIX = ".staging-"
_MODES = {"0644": 0o644, "0755": 0o755}
_DIR_MODE = 0o755
_BLOCK = 1024 * 1024
# O_NOFOLLOW on every open below the root: a name that became a symlink is an error, not a path.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO swapped in for a file cannot hang verification.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class MaterializeError(BuildError):
    """An artifact could not be materialized; nothing outside `.staging-*` was changed."""


class ChunkUnavailable(MaterializeError):
    """No source could supply a chunk whose bytes hash to its name."""


class TreeMismatch(MaterializeError):
    """A materialized tree differs from its manifest (content, mode, type or extra entries)."""


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
) -> Path:
    """Make `artifacts_root/<hex>` hold exactly the artifact `artifact_id` and point `current`
    at it (`switch=False` pre-stages the next version and leaves `current` alone); returns that
    folder. `on_problem` hears, once per source, that it stalled or could not be reached (it
    may be called from fetching threads), and `on_chunk` (source, bytes) where each chunk came
    from (see the module; from fetching threads too). Raises ManifestRefused or
    MaterializeError."""
    manifest = decode(manifest_bytes, artifact_id, allow_symlinks=allow_symlinks)
    if workers < 1:
        raise MaterializeError(f"workers must be at least 1, got {workers}")
    final_name = artifact_id.removeprefix("sha256:")
    label = f"artifact {artifact_id[:23]}"
    try:
        artifacts_root.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(artifacts_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise MaterializeError(f"{artifacts_root}: cannot open: {error.strerror}") from error
    try:
        if not _installed(root_fd, final_name, manifest, label):
            fetcher = _Fetcher(manifest, sources, store, on_problem, on_chunk)
            fetcher.fetch_missing(workers, progress)
            _build(root_fd, STAGING_PREFIX + secrets.token_hex(8), manifest, fetcher, label)
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


# -- fetching ------------------------------------------------------------------------------------


class _Fetcher:
    """The chunks an artifact needs, in fetch order (prefetch files first), the files that
    need each (so a refusal can name them), and the sources that stalled (tried last)."""

    def __init__(
        self,
        manifest: ArtifactManifest,
        sources: Sequence[ChunkSource],
        store: ChunkStore,
        on_problem: Callable[[str], None] | None = None,
        on_chunk: Callable[[ChunkSource, int], None] | None = None,
    ) -> None:
        self.sources = tuple(sources)
        self.store = store
        self.on_problem = on_problem
        self.on_chunk = on_chunk
        self._demoted: set[int] = set()  # positions in `sources`
        self._demoted_lock = threading.Lock()
        prefetch = set(manifest.prefetch)
        files = sorted(manifest.files(), key=lambda entry: entry.path not in prefetch)
        self.plan: dict[str, Chunk] = {}
        self.needed_by: dict[str, list[str]] = {}
        for entry in files:
            for chunk in entry.chunks:
                self.plan.setdefault(chunk.sha256, chunk)
                users = self.needed_by.setdefault(chunk.sha256, [])
                if entry.path not in users[-1:]:
                    users.append(entry.path)

    def fetch_missing(self, workers: int, progress: Callable[[Progress], None] | None) -> None:
        missing: list[Chunk] = []
        for chunk in self.plan.values():
            if not self.store.has(chunk.sha256):
                missing.append(chunk)
            elif self.on_chunk is not None:
                self.on_chunk(self.store, chunk.size)
        if not missing:
            return
        bytes_total = sum(chunk.size for chunk in missing)
        chunks_done = bytes_done = 0
        queue = iter(missing)
        pending: dict[Future[bytes], Chunk] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="materialize-fetch") as pool:
            try:
                while True:
                    # A bounded window, not one future per chunk: a model may have millions.
                    for chunk in itertools.islice(queue, 2 * workers - len(pending)):
                        pending[pool.submit(self.fetch, chunk)] = chunk
                    if not pending:
                        break
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        chunk = pending.pop(future)
                        future.result()
                        chunks_done += 1
                        bytes_done += chunk.size
                        if progress is not None:
                            progress(Progress(chunks_done, len(missing), bytes_done, bytes_total))
            finally:
                for future in pending:
                    future.cancel()

    def _order(self) -> list[tuple[int, ChunkSource]]:
        """The sources in their order, those that stalled or failed to connect last."""
        with self._demoted_lock:
            demoted = set(self._demoted)
        return sorted(enumerate(self.sources), key=lambda item: item[0] in demoted)

    def _demote(self, position: int, error: SourceUnavailable) -> None:
        with self._demoted_lock:
            first = position not in self._demoted
            self._demoted.add(position)
        if first and self.on_problem is not None:
            self.on_problem(f"{error}; it is tried last from now on")

    def fetch(self, chunk: Chunk) -> bytes:
        """Try each source in order; keep the first answer that hashes to the chunk's name."""
        problems: list[str] = []
        for position, source in self._order():
            try:
                data = source.get(chunk.sha256, chunk.size)
            except ChunkMissing:
                problems.append(f"{source.name}: missing")
                continue
            except SourceUnavailable as error:
                self._demote(position, error)
                problems.append(f"{source.name}: {error}")
                continue
            except (ChunkError, OSError) as error:
                problems.append(f"{source.name}: {error}")
                continue
            found = chunk_digest(data)
            if found != chunk.sha256 or len(data) != chunk.size:
                problems.append(f"{source.name}: sent {len(data)} bytes hashing to {found[:16]}")
                continue
            try:
                self.store.put(data, chunk.sha256)
            except ChunkError as error:
                raise MaterializeError(
                    f"chunk {chunk.sha256} (needed by {self._files(chunk)}): {error}"
                ) from error
            if self.on_chunk is not None:
                self.on_chunk(source, chunk.size)
            return data
        tried = "; ".join(problems) or "no sources configured"
        raise ChunkUnavailable(
            f"chunk {chunk.sha256} ({chunk.size} bytes, needed by {self._files(chunk)}) "
            f"is available from none of {len(self.sources)} sources: {tried}"
        )

    def read(self, chunk: Chunk) -> bytes:
        """The chunk from the store, fetched again if the store's copy went missing or bad
        since the fetch (the store removes a copy that fails its check)."""
        try:
            return self.store.get(chunk.sha256, chunk.size)
        except ChunkError:
            return self.fetch(chunk)

    def _files(self, chunk: Chunk) -> str:
        users = self.needed_by.get(chunk.sha256, [])
        shown = ", ".join(repr(path) for path in users[:3])
        return shown + (f" and {len(users) - 3} more" if len(users) > 3 else "")


# -- writing -------------------------------------------------------------------------------------


def _build(
    root_fd: int, staging_name: str, manifest: ArtifactManifest, fetcher: _Fetcher, label: str
) -> None:
    """Write, verify and install the tree; the staging folder never outlives this call."""
    final_name = manifest.artifact_id.removeprefix("sha256:")
    step = "stage"
    try:
        os.mkdir(staging_name, 0o700, dir_fd=root_fd)
        staging_fd = os.open(staging_name, _DIR_FLAGS, dir_fd=root_fd)
        try:
            _write_entries(staging_fd, manifest, fetcher)
            _sync_dirs(staging_fd, manifest)
            # Contents were hashed as they were written (from chunks verified on read); what
            # is left to check is the tree itself: every entry, its type, mode and size.
            _verify_at(staging_fd, manifest, label, root_mode=0o700, content=False)
            # Private while half-written; the artifact's own mode only once it is complete.
            os.fchmod(staging_fd, _DIR_MODE)
            os.fsync(staging_fd)
        finally:
            os.close(staging_fd)
        step = "install"
        _install(root_fd, staging_name, final_name, manifest, label)
    except OSError as error:
        raise MaterializeError(f"{label}: cannot {step} it: {error.strerror}") from error
    finally:
        _remove(root_fd, staging_name)


def _write_entries(staging_fd: int, manifest: ArtifactManifest, fetcher: _Fetcher) -> None:
    # Sorted paths put every folder before what it holds, so one pass creates the tree.
    with _ParentCache(staging_fd) as parents:
        for entry in manifest.entries:
            parent, name = posixpath.split(entry.path)
            parent_fd = parents.open(parent)
            if entry.type is EntryType.DIR:
                try:
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
                    dir_fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                    try:
                        os.fchmod(dir_fd, _DIR_MODE)  # exact, whatever the umask
                    finally:
                        os.close(dir_fd)
                except OSError as error:
                    raise MaterializeError(
                        f"cannot create folder {entry.path!r}: {error.strerror}"
                    ) from error
            elif entry.type is EntryType.SYMLINK:
                assert entry.target is not None  # decode guarantees it
                try:
                    os.symlink(entry.target, name, dir_fd=parent_fd)
                except OSError as error:
                    raise MaterializeError(
                        f"cannot create symlink {entry.path!r}: {error.strerror}"
                    ) from error
            else:
                _write_file(parent_fd, name, entry, fetcher)


def _write_file(parent_fd: int, name: str, entry: Entry, fetcher: _Fetcher) -> None:
    assert entry.mode is not None  # decode guarantees it
    try:
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
    except OSError as error:
        raise MaterializeError(f"cannot create file {entry.path!r}: {error.strerror}") from error
    try:
        try:
            os.fchmod(fd, _MODES[entry.mode])  # exact, whatever the umask
        except OSError as error:
            raise MaterializeError(
                f"cannot set the mode of {entry.path!r}: {error.strerror}"
            ) from error
        whole = hashlib.sha256()
        for index, chunk in enumerate(entry.chunks):
            data = fetcher.read(chunk)  # verified against its digest on the way
            whole.update(data)
            try:
                _write_all(fd, data)
            except OSError as error:
                raise MaterializeError(
                    f"cannot write file {entry.path!r} at chunk {index} ({chunk.sha256}): "
                    f"{error.strerror}"
                ) from error
        if whole.hexdigest() != entry.sha256:
            raise MaterializeError(
                f"file {entry.path!r}: its chunks hash to {whole.hexdigest()}, the manifest "
                f"says {entry.sha256}"
            )
        try:
            os.fsync(fd)
        except OSError as error:
            raise MaterializeError(f"cannot sync file {entry.path!r}: {error.strerror}") from error
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_dirs(staging_fd: int, manifest: ArtifactManifest) -> None:
    """fsync every folder, so the names as well as the bytes survive a crash."""
    for path in ["", *(entry.path for entry in manifest.entries if entry.type is EntryType.DIR)]:
        fd = _open_dir(staging_fd, path)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _install(
    root_fd: int, staging_name: str, final_name: str, manifest: ArtifactManifest, label: str
) -> None:
    try:
        os.rename(staging_name, final_name, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
        # Another materialization of this id won the race: one result, ours is discarded.
        if _installed(root_fd, final_name, manifest, label):
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


def _installed(root_fd: int, final_name: str, manifest: ArtifactManifest, label: str) -> bool:
    """Whether `final_name` already holds this artifact, verified file by file."""
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
        with _ParentCache(root_fd) as parents:
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


# -- folders, opened one component at a time ----------------------------------------------------


def _open_dir(root_fd: int, relative: str) -> int:
    """Open a folder below `root_fd` one name at a time, following no symlink on the way."""
    fd = os.open(".", _DIR_FLAGS, dir_fd=root_fd)
    for name in relative.split("/") if relative else ():
        try:
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = next_fd
    return fd


class _ParentCache:
    """Keeps the last opened folder: sorted entries mostly share their parent with the one
    before, and a huge tree must not hold one descriptor per folder."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.path: str | None = None
        self.fd = -1

    def open(self, relative: str) -> int:
        if relative != self.path:
            self.close()
            self.fd = _open_dir(self.root_fd, relative)
            self.path = relative
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.path = -1, None

    def __enter__(self) -> _ParentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
