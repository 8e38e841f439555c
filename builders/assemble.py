"""Write an artifact's tree into its staging folder, taking every byte from where it is
cheapest and still known good (see `builders.reuse`), while the missing chunks are fetched:

1. folders, then every file: a hard link to an unchanged file of an installed version, or a
   new file whose reused ranges are copied in the kernel (`builders.kernel_copy`) from a
   sealed file of one; meanwhile the swarm fetches what no installed version holds;
2. the new chunks of each file, from the verified store (hashed on read) as they arrive: a
   file with nothing reused is written in order and its whole digest checked as well;
3. symlinks.

`direct` (a node's materialization, with seals): fetched chunks do not go through the store.
Each is hashed once, on arrival, by the fetching thread, and handed (`deliver`, the swarm's
sink) to one landing thread that writes it straight into every place of the tree that needs
it, so that the fetching threads go back to receiving instead of queueing on the file's lock;
the files are created before the first chunk is asked for. Chunks the store holds already
are read from it (verified on read) into their places. Every place is accounted for: one
never written (a chunk wanted in a new place while it was landing) is fetched again, and the
tree is refused if it stays unwritten.
No whole-file digest is taken on this path (it would need every byte read again): every byte
is in a verified chunk, and the full check (after a reboot, periodically) compares the
whole-file digest too, as for a file with reused ranges.

A reused range counts only if its base file's seal still holds after the copy; if not, those
chunks are fetched and written over it. With `durable`, every file and folder is fsynced (the
bytes are on disk when this returns); without, durability is the seal's business: a tree from
another boot is hashed in full before it is used (`builders.seal`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
from collections import deque
from collections.abc import Callable, Sequence
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
LANDING_BYTES = 64 * 1024 * 1024  # verified chunks waiting to be written (`direct`), at most
_OPEN_FILES = 16  # files the landing thread keeps open


@dataclass
class Assembly:
    """How a materialization got its bytes (for benchmarks, logs and metrics)."""

    linked_files: int = 0
    linked_bytes: int = 0
    reused: CopyCounts = field(default_factory=CopyCounts)  # ranges of installed versions
    from_store: int = 0  # bytes written from the local store (hashed on read)
    direct: int = 0  # bytes written straight from arrivals into the tree (`direct`)
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
        direct: bool = False,
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
        self.direct = direct
        self.fetch: Sequence[Chunk] = ()  # `direct`: asked for once the files exist
        self._lock = threading.Lock()
        self._places: dict[str, set[tuple[str, int]]] = {}  # digest -> (path, offset)
        self._sizes: dict[str, int] = {}
        self._landed: set[tuple[str, int]] = set()
        self._fetched: set[str] = set()  # digests the swarm delivers (`direct`)
        self._staging_fd = -1
        self._lander: _Lander | None = None
        self._fds: dict[str, int] = {}  # the landing thread's open files
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
        with self._lock:
            self._staging_fd = staging_fd
        if self.direct:
            self._lander = _Lander(self._land)
        try:
            self._write()
        finally:
            if self._lander is not None:
                self._lander.close()  # what it raised was raised by `_write` already
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            with self._lock:  # the caller closes it: nothing is read through it from now on
                self._staging_fd = -1

    def _write(self) -> None:
        with ParentCache(self._staging_fd) as parents:
            for entry in self.manifest.entries:
                if entry.type is EntryType.DIR:
                    self._folder(parents, entry)
            for entry in self.order:
                self._create(parents, self.plans[entry.path])
            if self.direct:
                # Every file exists now: the fetching threads may write into any of them.
                for plan in self.plans.values():
                    self._add_places(plan.entry.path, plan.new)
                self._fetched.update(chunk.sha256 for chunk in self.fetch)
                self.swarm.want(self.fetch)
            for entry in self.order:
                self._copy_runs(parents, self.plans[entry.path])
            for entry in self.order:
                self._fill(parents, self.plans[entry.path])
            for entry in self.manifest.entries:
                if entry.type is EntryType.SYMLINK:
                    self._symlink(parents, entry)
            self.swarm.finish(self.progress)
            if self._lander is not None:
                self._lander.flush()
                self._sweep()
                if self.durable:
                    for entry in self.order:
                        if self.plans[entry.path].link is None:
                            self._open_and(parents, entry, lambda fd: None)

    def read_landed(self, digest: str, limit: int) -> bytes | None:
        """`direct`: the bytes of a chunk that arrived (waiting to be written, or read back
        from the staging tree) for the node's chunk server, which hashes them before it
        serves them; None if it has not arrived."""
        waiting = self._lander.waiting(digest) if self._lander is not None else None
        if waiting is not None:
            return waiting if len(waiting) <= limit else None
        with self._lock:
            size = self._sizes.get(digest, limit + 1)
            written = sorted(self._places.get(digest, set()) & self._landed)
            if self._staging_fd < 0 or not written or size > limit:
                return None
            path, offset = written[0]
        fd = self._open_landing(path)
        if fd is None:
            return None
        try:
            data = os.pread(fd, size, offset)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) == size else None

    def deliver(self, chunk: Chunk, data: bytes) -> None:
        """`direct`: a chunk verified on arrival, to be written at every place of the tree
        that needs it (called by the swarm, from a fetching thread). Handed to the landing
        thread, so that the fetching threads go on receiving while the disk takes its time
        (waits while LANDING_BYTES wait already); raises what writing an earlier one raised."""
        if self._lander is None:
            raise MaterializeError(f"chunk {chunk.sha256} arrived before the tree was laid out")
        self._lander.put(chunk, data)

    def _open_landing(self, path: str) -> int | None:
        """The staging tree's file `path` opened for reading, from a thread other than the
        writer's; None once the tree is written (or the file cannot be opened)."""
        with self._lock:  # the caller closes the staging folder once `write` returns
            if self._staging_fd < 0:
                return None
            try:
                return self._open_staged(path, READ_FLAGS)
            except OSError:
                return None

    def _land(self, chunk: Chunk, data: bytes) -> None:
        """In the landing thread: `data` at every place of the tree that needs it."""
        with self._lock:
            places = sorted(self._places.get(chunk.sha256, ()))
        for path, offset in places:
            fd = self._fds.get(path)
            if fd is None:
                fd = self._fds[path] = self._open(path)
                while len(self._fds) > _OPEN_FILES:
                    os.close(self._fds.pop(next(iter(self._fds))))
            self._write_at(fd, self._entry(path), offset, chunk, data)
        with self._lock:
            self._landed.update(places)
            self.assembly.direct += len(data) * len(places)

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

    def _create(self, parents: ParentCache, plan: FilePlan) -> None:
        """The file, empty with its mode, or a hard link to a base's unchanged one."""
        entry = plan.entry
        assert entry.mode is not None  # decode guarantees it
        parent, name = posixpath.split(entry.path)
        parent_fd = parents.open(parent)
        linking = plan.link is not None
        if linking and self._link(parent_fd, name, plan):
            return
        plan.link = None
        try:
            fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        except OSError as error:
            raise MaterializeError(
                f"cannot create file {entry.path!r}: {error.strerror}"
            ) from error
        try:
            os.fchmod(fd, MODES[entry.mode])  # exact, whatever the umask
        except OSError as error:
            raise MaterializeError(
                f"cannot set the mode of {entry.path!r}: {error.strerror}"
            ) from error
        finally:
            os.close(fd)
        if linking:  # the link could not be made: its chunks are written instead
            self._fetch_instead(plan, [(offset, chunk) for offset, chunk in _offsets(entry)])

    def _copy_runs(self, parents: ParentCache, plan: FilePlan) -> None:
        def copy(fd: int) -> None:
            for run in list(plan.runs):
                self._copy_run(fd, plan, run)

        if plan.link is None and plan.runs:
            self._open_and(parents, plan.entry, copy, sync=False)

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
        wanted = [chunk for _, chunk in chunks if not self.store.has(chunk.sha256)]
        if self.direct:
            self._add_places(plan.entry.path, chunks)
            self._fetched.update(chunk.sha256 for chunk in wanted)
        self.swarm.want(wanted, first=True)

    def _add_places(self, path: str, chunks: list[tuple[int, Chunk]]) -> None:
        """`direct`: where in the tree each chunk goes (known before it is asked for)."""
        with self._lock:
            for offset, chunk in chunks:
                self._places.setdefault(chunk.sha256, set()).add((path, offset))
                self._sizes[chunk.sha256] = chunk.size

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
        if self.direct:
            if any(chunk.sha256 not in self._fetched for _, chunk in plan.new):
                self._open_and(parents, entry, lambda fd: self._from_store(fd, plan), sync=False)
        elif plan.runs:
            self._open_and(parents, entry, lambda fd: self._patch(fd, plan))
        else:
            self._open_and(parents, entry, lambda fd: self._stream(fd, entry))

    def _open_and(
        self,
        parents: ParentCache,
        entry: Entry,
        work: Callable[[int], None],
        *,
        sync: bool = True,
    ) -> None:
        parent, name = posixpath.split(entry.path)
        try:
            fd = os.open(name, WRITE_FLAGS, dir_fd=parents.open(parent))
        except OSError as error:
            raise MaterializeError(f"cannot open file {entry.path!r}: {error.strerror}") from error
        try:
            work(fd)
            if sync and self.durable:
                _sync(fd, entry)
        finally:
            os.close(fd)

    def _from_store(self, fd: int, plan: FilePlan) -> None:
        """`direct`: the new chunks of a file that the store holds (verified on read), each
        at its place; one the store lost or refused since is fetched instead."""
        for offset, chunk in plan.new:
            if chunk.sha256 in self._fetched:
                continue  # the swarm writes it
            try:
                data = self.store.get(chunk.sha256, chunk.size)
            except ChunkError:
                with self._lock:
                    self._fetched.add(chunk.sha256)
                self.swarm.want([chunk], first=True)
                continue
            self._write_at(fd, plan.entry, offset, chunk, data)
            with self._lock:
                self._landed.add((plan.entry.path, offset))
            self.assembly.from_store += len(data)

    def _open(self, path: str) -> int:
        """The staging tree's file `path`, opened for writing (from the landing thread)."""
        try:
            return self._open_staged(path, WRITE_FLAGS)
        except OSError as error:
            raise MaterializeError(f"cannot open file {path!r}: {error.strerror}") from error

    def _open_staged(self, path: str, flags: int) -> int:
        """The staging tree's file `path` opened with `flags`, by descriptor from the staging
        folder down (no symlink followed); OSError as the system says."""
        parent, name = posixpath.split(path)
        parent_fd = open_dir(self._staging_fd, parent)
        try:
            return os.open(name, flags, dir_fd=parent_fd)
        finally:
            os.close(parent_fd)

    def _write_at(self, fd: int, entry: Entry, offset: int, chunk: Chunk, data: bytes) -> None:
        try:
            _pwrite_all(fd, data, offset)
        except OSError as error:
            raise MaterializeError(
                f"cannot write file {entry.path!r} at chunk {_index_at(entry, offset)} "
                f"({chunk.sha256}): {error.strerror}"
            ) from error

    def _entry(self, path: str) -> Entry:
        return self.plans[path].entry

    def _sweep(self) -> None:
        """`direct`: every place written, else those chunks fetched again, then refused."""
        for attempt in range(2):
            with self._lock:
                left = {
                    chunk.sha256: chunk
                    for plan in self.plans.values()
                    for offset, chunk in plan.new
                    if (plan.entry.path, offset) not in self._landed
                }
            if not left:
                return
            if attempt:
                digest, chunk = next(iter(left.items()))
                raise MaterializeError(
                    f"chunk {digest} ({chunk.size} bytes) was not written in every place of "
                    f"the tree that needs it ({len(left)} chunks left unwritten)"
                )
            with self._lock:
                self._fetched.update(left)
            self.swarm.want(list(left.values()), first=True)
            self.swarm.finish(self.progress)
            if self._lander is not None:
                self._lander.flush()

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


class _Lander:
    """One thread that writes arrived chunks into the tree (`direct`): the fetching threads
    hand them over and go back to receiving, instead of queueing on the file's lock while the
    disk takes its time. At most LANDING_BYTES wait; a full queue makes the fetching threads
    wait (back-pressure). What writing one chunk raises is raised to whoever hands over the
    next, and by `flush`."""

    def __init__(self, write: Callable[[Chunk, bytes], None]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._pending: deque[tuple[Chunk, bytes]] = deque()
        self._bytes = 0
        self._stopping = False
        self._error: MaterializeError | None = None
        self._thread = threading.Thread(target=self._run, name="land", daemon=True)
        self._thread.start()

    def put(self, chunk: Chunk, data: bytes) -> None:
        with self._changed:
            while self._bytes and self._bytes + len(data) > LANDING_BYTES and not self._error:
                self._changed.wait()
            self._raise()
            self._pending.append((chunk, data))
            self._bytes += len(data)
            self._changed.notify_all()

    def waiting(self, digest: str) -> bytes | None:
        """The bytes of a chunk handed over and not yet written, if it is one."""
        with self._changed:
            return next((data for chunk, data in self._pending if chunk.sha256 == digest), None)

    def flush(self) -> None:
        """Until every chunk handed over is written."""
        with self._changed:
            while self._pending and self._error is None:
                self._changed.wait()
            self._raise()

    def close(self) -> None:
        """Write what is left, and end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise MaterializeError(str(self._error)) from self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending or self._error is not None:
                    return
                chunk, data = self._pending[0]
            try:
                self._write(chunk, data)
            except MaterializeError as error:
                failed: MaterializeError | None = error
            except OSError as error:
                failed = MaterializeError(f"chunk {chunk.sha256}: {error.strerror}")
            else:
                failed = None
            with self._changed:
                self._pending.popleft()
                self._bytes -= len(data)
                if failed is not None:
                    self._error = failed
                    self._pending.clear()
                    self._bytes = 0
                self._changed.notify_all()


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
