"""Content-addressed chunks: the local store and the sources a node fetches missing chunks from.

A chunk is named by the sha256 of its bytes. The local store keeps it at
`<root>/sha256/ab/cd/<hex>`, writes it atomically (temp file + rename; fsynced too unless the
store is made with `durable=False`) and verifies it on every read: a chunk that does not hash
to its name is refused (and removed from the store), never returned. Which is why a node's store
need not flush: a chunk torn by a crash is refused on its next read and fetched again.
`ChunkSource` is what materialization reads from: the local store, a peer's store over HTTP
(`circle artifact serve`), later QSS.

Every read is bounded: a source's `get` takes the most bytes the chunk may have (materialization
knows each chunk's size from the manifest), a store reads at most that (and a manifest at most
`MAX_MANIFEST`), and opens only regular files, never following a symlink or waiting on a FIFO.
A source that cannot be reached or does not answer in time raises SourceUnavailable, so that
the next one is tried.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from builders import BuildError
from builders.manifest import Limits
from builders.seal import replace_file
from qss.durable import write_atomically

_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_CHUNK = 64 * 1024 * 1024
MAX_MANIFEST = Limits().max_manifest_bytes
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
# O_NONBLOCK: a FIFO planted at a chunk's path must not hang the read (it is refused below).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ChunkError(BuildError):
    """A chunk that is missing, corrupt, or cannot be read or written."""


class ChunkMissing(ChunkError):
    pass


class ChunkCorrupt(ChunkError):
    pass


class SourceUnavailable(ChunkError):
    """A source that cannot be reached, or did not answer within its deadline."""


def chunk_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ChunkError(f"{str(digest)[:80]!r} is not a chunk digest (64 lowercase hex digits)")
    return digest


@runtime_checkable
class ChunkSource(Protocol):
    """Where chunks can be read from. `get` returns bytes that the caller verifies again,
    never more than `limit` of them (ChunkError beyond)."""

    name: str

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes: ...

    def has(self, digest: str) -> bool: ...


class ChunkStore:
    """A local content-addressed chunk store; also a `ChunkSource`."""

    def __init__(self, root: Path, *, create: bool = True, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self.name = f"store:{root}"
        if create:
            try:
                (root / "sha256").mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ChunkError(f"{root}: cannot create a chunk store: {error.strerror}") from None
        elif not (root / "sha256").is_dir():
            raise ChunkError(f"{root}: not a chunk store (no sha256/ folder)")

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        path = self.path(digest)
        try:
            data = _read_regular(path, MAX_CHUNK)
        except FileNotFoundError:
            raise ChunkMissing(f"chunk {digest[:16]} is not in {self.root}") from None
        except _NotRegular:
            data = None  # a symlink, FIFO or folder where the chunk should be
        except OSError as error:
            raise ChunkError(f"chunk {digest[:16]}: cannot read: {error.strerror}") from None
        if data is None or chunk_digest(data) != digest:
            # Bit rot or tampering: never hand it out, and let the next fetch replace it.
            with contextlib.suppress(OSError):
                path.unlink()
            raise ChunkCorrupt(f"chunk {digest[:16]} in {self.root} does not match its digest")
        if len(data) > limit:  # a good chunk, not the one the caller expects: kept
            raise ChunkError(
                f"chunk {digest[:16]} in {self.root} holds {len(data)} bytes, more than the "
                f"{limit} expected"
            )
        return data

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store `data` (checked against `digest` when given); returns its digest."""
        if len(data) > MAX_CHUNK:
            raise ChunkError(f"a chunk of {len(data)} bytes exceeds {MAX_CHUNK}")
        actual = chunk_digest(data)
        if digest is not None and actual != digest:
            raise ChunkCorrupt(f"chunk claimed to be {digest[:16]} hashes to {actual[:16]}")
        target = self.path(actual)
        if target.is_file():
            return actual
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.durable:
                write_atomically(target, data)
            else:
                replace_file(target, data)
        except OSError as error:
            raise ChunkError(f"chunk {actual[:16]}: cannot write: {error.strerror}") from None
        return actual

    def manifest_path(self, artifact_id: str) -> Path:
        if not artifact_id.startswith("sha256:"):
            raise ChunkError(f"{artifact_id[:80]!r} is not an artifact id (sha256:<64 hex>)")
        return self.root / "manifests" / f"{check_digest(artifact_id.removeprefix('sha256:'))}.json"

    def put_manifest(self, artifact_id: str, data: bytes) -> None:
        """Keep an artifact's manifest bytes beside its chunks (checked against the id)."""
        if "sha256:" + chunk_digest(data) != artifact_id:
            raise ChunkCorrupt(f"manifest bytes do not hash to {artifact_id}")
        target = self.manifest_path(artifact_id)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, data)
        except OSError as error:
            raise ChunkError(f"{target}: cannot write: {error.strerror}") from None

    def get_manifest(self, artifact_id: str) -> bytes:
        """The manifest bytes of `artifact_id`, as stored (the caller's gate checks them)."""
        path = self.manifest_path(artifact_id)
        try:
            data = _read_regular(path, MAX_MANIFEST)
        except FileNotFoundError:
            raise ChunkMissing(f"no manifest of {artifact_id} in {self.root}") from None
        except _NotRegular as error:
            raise ChunkCorrupt(f"{path}: {error}") from None
        except OSError as error:
            raise ChunkError(f"{path}: cannot read: {error.strerror}") from None
        if data is None:
            raise ChunkCorrupt(f"{path}: holds more than the {MAX_MANIFEST} bytes of a manifest")
        return data

    def digests(self) -> Iterator[str]:
        for path in (self.root / "sha256").glob("??/??/*"):
            if _DIGEST.fullmatch(path.name):
                yield path.name

    def collect_garbage(self, live: Iterable[str]) -> int:
        """Delete every chunk not in `live` (and stale temporary files); returns how many."""
        keep = set(live)
        removed = 0
        for path in (self.root / "sha256").glob("??/??/*"):
            if path.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed


class _NotRegular(OSError):
    pass


def _read_regular(path: Path, most: int) -> bytes | None:
    """The bytes of the regular file at `path`, or None, unread, if it holds more than `most`
    (nor is more than `most` + 1 ever read of one that grows); _NotRegular for what is not a
    regular file, which is never followed (a symlink) or waited on (a FIFO)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _NotRegular("a symlink is there, not a file (never followed)") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = _KINDS.get(stat.S_IFMT(info.st_mode), "something else")
            raise _NotRegular(f"{what} is there, not a file")
        if info.st_size > most:
            return None
        parts = []
        left = most + 1
        while left > 0:
            part = os.read(fd, min(left, 1024 * 1024))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        data = b"".join(parts)
        return data if len(data) <= most else None
    finally:
        os.close(fd)
