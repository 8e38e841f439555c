"""The chunks of a node's installed trees, as a `ChunkSource` its chunk server serves to peers:
a node keeps one copy of each byte (in the tree), not a second one in its chunk store.

A chunk is served as a range of an installed file only while that tree's seal holds for the
file (`builders.seal`: the same boot; the file's inode, size, mode, mtime, ctime and link
count exactly as sealed), checked when the file is opened and again after the range is read,
and the range is hashed before it is sent, as the store hashes every chunk it reads: a tree
edited after its seal is never served from, and neither is a tree sealed in another boot, a
tree without a seal, or a staging folder left by a crash.

While a materialization is writing a tree (`lend`), the chunks it has already written are
served from its staging file too: those bytes were verified on arrival, and they are hashed
again as they are read, so that the node serves what it holds to its peers while it is still
fetching the rest, as it did when every chunk went through the store.

Which trees hold which chunks is computed from their manifests (in the store) when the set of
seals changes, not per request.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builders.chunks import MAX_CHUNK, ChunkError, ChunkMissing, ChunkStore, check_digest
from builders.chunks import chunk_digest as digest_of
from builders.manifest import ManifestRefused, decode
from builders.reuse import Base, SealedFile
from builders.seal import read_boot_id, read_seal, seal_path, sealed_ids

MAX_TREES = 16  # installed trees served from, the most recently sealed first
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Landing(Protocol):
    """A tree being written: the verified bytes of a chunk it has written, if any."""

    def read_landed(self, digest: str, limit: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class _Place:
    base: Base
    path: str
    offset: int
    size: int


class SealedTrees:
    """The chunks of the trees under `artifacts_root` whose seals (in `seals`) hold; their
    manifests are read from `store`. Thread-safe."""

    def __init__(
        self,
        artifacts_root: Path,
        seals: Path,
        store: ChunkStore,
        *,
        boot_id: Callable[[], str] = read_boot_id,
    ) -> None:
        self.root = artifacts_root
        self.seals = seals
        self.store = store
        self.boot_id = boot_id
        self.name = f"trees:{artifacts_root}"
        self._lock = threading.Lock()
        self._key: tuple[tuple[str, int, int, int], ...] | None = None
        self._places: dict[str, list[_Place]] = {}
        self._landings: list[Landing] = []

    @contextlib.contextmanager
    def lend(self, landing: Landing) -> Iterator[None]:
        """Serve what `landing` has written while it writes (see the module)."""
        with self._lock:
            self._landings.append(landing)
        try:
            yield
        finally:
            with self._lock:
                self._landings.remove(landing)

    def has(self, digest: str) -> bool:
        check_digest(digest)
        boot = self.boot_id()
        for place in self._index().get(digest, ()):
            if boot and place.base.seal.boot_id == boot and self._holds(place):
                return True
        return self._landed(digest, MAX_CHUNK) is not None

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        check_digest(digest)
        data = self._landed(digest, limit)
        if data is not None:
            return data
        boot = self.boot_id()
        for place in self._index().get(digest, ()):
            if place.size > limit or not boot or place.base.seal.boot_id != boot:
                continue
            data = self._read(place)
            if data is not None and digest_of(data) == digest:
                return data
        raise ChunkMissing(f"chunk {digest[:16]} is in no sealed tree under {self.root}")

    # -- inside --------------------------------------------------------------------------

    def _landed(self, digest: str, limit: int) -> bytes | None:
        with self._lock:
            landings = list(self._landings)
        for landing in landings:
            data = landing.read_landed(digest, limit)
            if data is not None and digest_of(data) == digest:
                return data
        return None

    def _holds(self, place: _Place) -> bool:
        try:
            root_fd = os.open(self.root, _ROOT_FLAGS)
        except OSError:
            return False
        try:
            with SealedFile(root_fd, place.base, place.path) as sealed:
                return sealed.holds()
        finally:
            os.close(root_fd)

    def _read(self, place: _Place) -> bytes | None:
        """The range, if the file's seal holds before and after it is read."""
        try:
            root_fd = os.open(self.root, _ROOT_FLAGS)
        except OSError:
            return None
        try:
            with SealedFile(root_fd, place.base, place.path) as sealed:
                if not sealed.holds():
                    return None
                try:
                    data = _pread_exactly(sealed.fd, place.size, place.offset)
                except OSError:
                    return None
                # Checked again after the read: an edit meanwhile voids what was read.
                return data if sealed.holds() else None
        finally:
            os.close(root_fd)

    def _index(self) -> dict[str, list[_Place]]:
        """digest -> where it sits in sealed trees; rebuilt when a seal changes."""
        found: list[tuple[str, int, int, int]] = []
        for artifact_id in sealed_ids(self.seals)[:MAX_TREES]:
            try:
                info = os.stat(seal_path(self.seals, artifact_id))
            except OSError:
                continue
            found.append((artifact_id, info.st_ino, info.st_mtime_ns, info.st_size))
        key = tuple(found)
        with self._lock:
            if key == self._key:
                return self._places
        places: dict[str, list[_Place]] = {}
        for artifact_id, *_ in key:
            base = self._base(artifact_id)
            if base is None:
                continue
            for entry in base.manifest.files():
                offset = 0
                for chunk in entry.chunks:
                    places.setdefault(chunk.sha256, []).append(
                        _Place(base, entry.path, offset, chunk.size)
                    )
                    offset += chunk.size
        with self._lock:
            self._key, self._places = key, places
        return places

    def _base(self, artifact_id: str) -> Base | None:
        seal = read_seal(self.seals, artifact_id)
        if seal is None:
            return None
        try:
            manifest = decode(
                self.store.get_manifest(artifact_id), artifact_id, allow_symlinks=True
            )
        except (ChunkError, ManifestRefused):
            return None
        return Base(artifact_id.removeprefix("sha256:"), manifest, seal, seal.file_facts())


def _pread_exactly(fd: int, size: int, offset: int) -> bytes:
    parts: list[bytes] = []
    done = 0
    while done < size:
        part = os.pread(fd, min(size - done, 1024 * 1024), offset + done)
        if not part:
            raise OSError("the file ended before the range")
        parts.append(part)
        done += len(part)
    return b"".join(parts)
