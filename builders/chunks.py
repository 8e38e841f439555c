"""Content-addressed chunks: the local store and the sources a node fetches missing chunks from.

A chunk is named by the sha256 of its bytes. The local store keeps it at
`<root>/sha256/ab/cd/<hex>`, writes it atomically (temp file + fsync + rename) and verifies it on
every read: a chunk that does not hash to its name is refused (and removed from the store), never
returned. `ChunkSource` is what materialization reads from: the local store, a peer's store over
HTTP (`circle artifact serve`), later QSS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from builders import BuildError

_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_CHUNK = 64 * 1024 * 1024


class ChunkError(BuildError):
    """A chunk that is missing, corrupt, or cannot be read or written."""


class ChunkMissing(ChunkError):
    pass


class ChunkCorrupt(ChunkError):
    pass


def chunk_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ChunkError(f"{str(digest)[:80]!r} is not a chunk digest (64 lowercase hex digits)")
    return digest


@runtime_checkable
class ChunkSource(Protocol):
    """Where chunks can be read from. `get` returns bytes that the caller verifies again."""

    name: str

    def get(self, digest: str) -> bytes: ...

    def has(self, digest: str) -> bool: ...


class ChunkStore:
    """A local content-addressed chunk store; also a `ChunkSource`."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
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

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CHUNK + 1)
        except FileNotFoundError:
            raise ChunkMissing(f"chunk {digest[:16]} is not in {self.root}") from None
        except OSError as error:
            raise ChunkError(f"chunk {digest[:16]}: cannot read: {error.strerror}") from None
        if len(data) > MAX_CHUNK or chunk_digest(data) != digest:
            # Bit rot or tampering: never hand it out, and let the next fetch replace it.
            with contextlib.suppress(OSError):
                path.unlink()
            raise ChunkCorrupt(f"chunk {digest[:16]} in {self.root} does not match its digest")
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
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".tmp-{actual[:16]}-{secrets.token_hex(6)}"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
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
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            temporary.write_bytes(data)
            os.replace(temporary, target)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise ChunkError(f"{target}: cannot write: {error.strerror}") from None

    def get_manifest(self, artifact_id: str) -> bytes:
        """The manifest bytes of `artifact_id`, as stored (the caller's gate checks them)."""
        try:
            return self.manifest_path(artifact_id).read_bytes()
        except FileNotFoundError:
            raise ChunkMissing(f"no manifest of {artifact_id} in {self.root}") from None

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
