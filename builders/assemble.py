"""Write an artifact's tree into its staging folder, taking every byte from where it is
cheapest and still known good (see `builders.reuse`), while the missing chunks are fetched:

1. folders, then every file: a hard link to an unchanged file of an installed version, or a
   new file whose reused ranges are copied in the kernel (`builders.kernel_copy`) from a
   sealed file of one; meanwhile the swarm fetches what no installed version holds;
2. the new chunks of each file, from the verified store (hashed on read) as they arrive: a
   file with nothing reused is written in order and its whole digest checked as well;
3. symlinks.

A reused range counts only if its base file's seal still holds after the copy; if not, those
chunks are fetched and written over it. With `durable`, every file and folder is fsynced (the
bytes are on disk when this returns); without, durability is the seal's business: a tree from
another boot is hashed in full before it is used (`builders.seal`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.dirfd import NEW_FILE_FLAGS, READ_FLAGS, WRITE_FLAGS, ParentCache, open_dir
from builders.faults import MaterializeError
from builders.kernel_copy import CopyCounts, copy_range
from builders.manifest import ArtifactManifest, Chunk, Entry, EntryType
from builders.reuse import FilePlan, Run, SealedFile, open_parent
from builders.swarm import Arrival, SourceStats, Swarm

MODES = {"0644": 0o644, "0755": 0o755}
DIR_MODE = 0o755


@dataclass
class Assembly:
    """How a materialization got its bytes (for benchmarks, logs and metrics)."""

    linked_files: int = 0
    linked_bytes: int = 0
    reused: CopyCounts = field(default_factory=CopyCounts)  # ranges of installed versions
    from_store: int = 0  # bytes written from the local store (hashed on read)
    fetched: int = 0  # bytes of chunks fetched for this materialization
    sources: list[SourceStats] = field(default_factory=list)


class Writer:
    """Writes one tree (see the module); `progress` hears each fetched chunk arrive."""

    def __init__(
        self,
        root_fd: int,
        manifest: ArtifactManifest,
        plans: dict[str, FilePlan],
        store: ChunkStore,
        swarm: Swarm,
        *,
        durable: bool,
        progress: Callable[[Arrival], None] | None,
        on_chunk: Callable[[ChunkSource, int], None] | None,
    ) -> None:
        self.root_fd = root_fd
        self.manifest = manifest
        self.plans = plans
        self.store = store
        self.swarm = swarm
        self.durable = durable
        self.progress = progress
        self.on_chunk = on_chunk
        self.assembly = Assembly()
        prefetch = set(manifest.prefetch)
        # Fetch order: prefetch files first, then by path; the writer follows the same order.
        self.order = sorted(manifest.files(), key=lambda entry: entry.path not in prefetch)

    def missing(self) -> list[Chunk]:
        """The chunks to fetch: new ones the store lacks, each once, in fetch order."""
        seen: set[str] = set()
        missing: list[Chunk] = []
        for entry in self.order:
            plan = self.plans[entry.path]
            for _, chunk in plan.new:
                if chunk.sha256 in seen:
                    continue
                seen.add(chunk.sha256)
                if not self.store.has(chunk.sha256):
                    missing.append(chunk)
                elif self.on_chunk is not None:
                    self.on_chunk(self.store, chunk.size)
            if self.on_chunk is not None:
                # Taken from an installed version: local bytes, as the store's are.
                kept = plan.entry.chunks if plan.link is not None else ()
                for chunk in (*kept, *(c for run in plan.runs for _, c in run.chunks)):
                    self.on_chunk(self.store, chunk.size)
        return missing

    def write(self, staging_fd: int) -> None:
        with ParentCache(staging_fd) as parents:
            for entry in self.manifest.entries:
                if entry.type is EntryType.DIR:
                    self._folder(parents, entry)
            for entry in self.order:
                self._lay_out(parents, self.plans[entry.path])
            for entry in self.order:
                self._fill(parents, self.plans[entry.path])
            for entry in self.manifest.entries:
                if entry.type is EntryType.SYMLINK:
                    self._symlink(parents, entry)
        self.swarm.finish(self.progress)

    # -- pass 1 --------------------------------------------------------------------------

    def _folder(self, parents: ParentCache, entry: Entry) -> None:
        parent, name = posixpath.split(entry.path)
        try:
            parent_fd = parents.open(parent)
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
            try:
                os.fchmod(fd, DIR_MODE)  # exact, whatever the umask
            finally:
                os.close(fd)
        except OSError as error:
            raise MaterializeError(
                f"cannot create folder {entry.path!r}: {error.strerror}"
            ) from error

    def _symlink(self, parents: ParentCache, entry: Entry) -> None:
        assert entry.target is not None  # decode guarantees it
        parent, name = posixpath.split(entry.path)
        try:
            os.symlink(entry.target, name, dir_fd=parents.open(parent))
        except OSError as error:
            raise MaterializeError(
                f"cannot create symlink {entry.path!r}: {error.strerror}"
            ) from error

    def _lay_out(self, parents: ParentCache, plan: FilePlan) -> None:
        entry = plan.entry
        assert entry.mode is not None  # decode guarantees it
        parent, name = posixpath.split(entry.path)
        parent_fd = parents.open(parent)
        if plan.link is not None:
            if self._link(parent_fd, name, plan):
                return
            self._fetch_instead(plan, [(offset, chunk) for offset, chunk in _offsets(entry)])
            plan.link = None
        try:
            fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        except OSError as error:
            raise MaterializeError(
                f"cannot create file {entry.path!r}: {error.strerror}"
            ) from error
        try:
            try:
                os.fchmod(fd, MODES[entry.mode])  # exact, whatever the umask
            except OSError as error:
                raise MaterializeError(
                    f"cannot set the mode of {entry.path!r}: {error.strerror}"
                ) from error
            for run in list(plan.runs):
                self._copy_run(fd, plan, run)
        finally:
            os.close(fd)

    def _link(self, parent_fd: int, name: str, plan: FilePlan) -> bool:
        """Hard-link the base's file if its seal holds; False if it cannot be (then the file
        is written instead)."""
        assert plan.link is not None
        base, path = plan.link
        with SealedFile(self.root_fd, base, path) as sealed:
            if not sealed.holds():
                return False
            try:
                source_parent = open_parent(self.root_fd, base, path)
            except OSError:
                return False
            try:
                os.link(
                    posixpath.basename(path),
                    name,
                    src_dir_fd=source_parent,
                    dst_dir_fd=parent_fd,
                    follow_symlinks=False,
                )
            except OSError:
                return False
            finally:
                os.close(source_parent)
            before = os.fstat(sealed.fd)
            linked = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            expected = sealed.expected or []
            # The link moved its count and ctime; what a write would move must not have.
            unchanged = linked.st_ino == before.st_ino and [
                before.st_mode,
                before.st_size,
                before.st_mtime_ns,
            ] == [expected[1], expected[2], expected[4]]
            if not unchanged:
                os.unlink(name, dir_fd=parent_fd)  # the name was swapped or the file changed
                return False
        self.assembly.linked_files += 1
        self.assembly.linked_bytes += plan.entry.size
        return True

    def _copy_run(self, fd: int, plan: FilePlan, run: Run) -> None:
        with SealedFile(self.root_fd, run.base, run.path) as sealed:
            copied = CopyCounts()
            if sealed.holds():
                try:
                    copied = copy_range(sealed.fd, run.source_offset, fd, run.offset, run.size)
                except OSError:
                    copied = CopyCounts()
                    sealed.close()
            # Checked again after the copy: an edit meanwhile voids what was copied.
            if sealed.holds():
                self.assembly.reused.add(copied)
                return
        plan.runs.remove(run)
        self._fetch_instead(plan, run.chunks)

    def _fetch_instead(self, plan: FilePlan, chunks: list[tuple[int, Chunk]]) -> None:
        plan.new.extend(chunks)
        plan.new.sort(key=lambda item: item[0])
        self.swarm.want(
            [chunk for _, chunk in chunks if not self.store.has(chunk.sha256)], first=True
        )

    # -- pass 2 --------------------------------------------------------------------------

    def _fill(self, parents: ParentCache, plan: FilePlan) -> None:
        entry = plan.entry
        if plan.link is not None:
            if self.durable:  # flushed already in all likelihood: an installed file
                parent, name = posixpath.split(entry.path)
                try:
                    fd = os.open(name, READ_FLAGS, dir_fd=parents.open(parent))
                except OSError as error:
                    raise MaterializeError(
                        f"cannot open file {entry.path!r}: {error.strerror}"
                    ) from error
                try:
                    _sync(fd, entry)
                finally:
                    os.close(fd)
            return
        if plan.runs:
            self._open_and(parents, entry, lambda fd: self._patch(fd, plan))
        else:
            self._open_and(parents, entry, lambda fd: self._stream(fd, entry))

    def _open_and(self, parents: ParentCache, entry: Entry, work: Callable[[int], None]) -> None:
        parent, name = posixpath.split(entry.path)
        try:
            fd = os.open(name, WRITE_FLAGS, dir_fd=parents.open(parent))
        except OSError as error:
            raise MaterializeError(f"cannot open file {entry.path!r}: {error.strerror}") from error
        try:
            work(fd)
            if self.durable:
                _sync(fd, entry)
        finally:
            os.close(fd)

    def _stream(self, fd: int, entry: Entry) -> None:
        """A file with nothing reused: written in order, its whole digest checked too."""
        whole = hashlib.sha256()
        for index, chunk in enumerate(entry.chunks):
            data = self._chunk(chunk)
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

    def _patch(self, fd: int, plan: FilePlan) -> None:
        """The new chunks of a file that reuses ranges, each at its offset."""
        entry = plan.entry
        for offset, chunk in plan.new:
            data = self._chunk(chunk)
            try:
                _pwrite_all(fd, data, offset)
            except OSError as error:
                index = _index_at(entry, offset)
                raise MaterializeError(
                    f"cannot write file {entry.path!r} at chunk {index} ({chunk.sha256}): "
                    f"{error.strerror}"
                ) from error
        try:
            size = os.fstat(fd).st_size
        except OSError as error:
            raise MaterializeError(f"cannot stat file {entry.path!r}: {error.strerror}") from error
        if size != entry.size:
            raise MaterializeError(
                f"file {entry.path!r} holds {size} bytes once written, the manifest says "
                f"{entry.size}"
            )

    def _chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes from the store (verified on read), once the swarm has them;
        fetched again if the store's copy went missing or bad meanwhile."""
        for attempt in range(2):
            self.swarm.wait(chunk, self.progress)
            fresh = self.swarm.take(chunk)  # verified as it arrived
            if fresh is not None:
                self.assembly.from_store += len(fresh)
                return fresh
            try:
                data = self.store.get(chunk.sha256, chunk.size)
            except ChunkError:
                if attempt:
                    raise
                self.swarm.want([chunk], first=True)
                continue
            self.assembly.from_store += len(data)
            return data
        raise AssertionError("unreachable")


def sync_folders(staging_fd: int, manifest: ArtifactManifest) -> None:
    """fsync every folder, so the names as well as the bytes survive a crash."""
    for path in ["", *(entry.path for entry in manifest.entries if entry.type is EntryType.DIR)]:
        fd = open_dir(staging_fd, path)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _offsets(entry: Entry) -> list[tuple[int, Chunk]]:
    offset, found = 0, []
    for chunk in entry.chunks:
        found.append((offset, chunk))
        offset += chunk.size
    return found


def _index_at(entry: Entry, offset: int) -> int:
    for index, (at, _) in enumerate(_offsets(entry)):
        if at == offset:
            return index
    return -1


def _sync(fd: int, entry: Entry) -> None:
    try:
        os.fsync(fd)
    except OSError as error:
        raise MaterializeError(f"cannot sync file {entry.path!r}: {error.strerror}") from error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
