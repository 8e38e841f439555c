"""Build an artifact from a folder: the `archive` builder (fixed-size chunks) and the `model`
builder (content-defined chunks, so an edit to a multi-GB file changes only the chunks around
it). Deterministic by construction.

What goes into the manifest is only what the tree means: paths (sorted by their UTF-8 bytes),
types, 0644/0755 (from the owner's execute bit: the umask, owner and mtimes play no part),
sizes, hashes and chunks. The result is passed through the same gate a node uses
(`builders.manifest.decode`), so a build fails with the message a node would give.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyfastcdc import FastCDC

from builders import BuildError
from builders.chunks import ChunkStore
from builders.manifest import ArtifactManifest, Chunk, Chunking, Entry, EntryType, decode
from builders.paths import matches_any

ARCHIVE_CHUNKING = Chunking("fixed", 4 * 1024 * 1024, 4 * 1024 * 1024, 4 * 1024 * 1024)
# 512 KiB on average (ADR 0008): an edit moves about a quarter of what 1 MiB chunks would
# cost more requests and a manifest twice as long. A build that declares `chunking` keeps it.
MODEL_CHUNKING = Chunking("fastcdc", 128 * 1024, 512 * 1024, 2 * 1024 * 1024)
_READ = 4 * 1024 * 1024


@dataclass(frozen=True)
class TreeBuild:
    """What to build: a source folder, which of its files, and how to chunk them."""

    source: Path
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    chunking: Chunking = ARCHIVE_CHUNKING
    allow_symlinks: bool = False
    prefetch: tuple[str, ...] = ()  # patterns of files a node fetches first
    labels: Mapping[str, str] = field(default_factory=dict)


def walk(root: Path, relative: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every path under `root` with its lstat, in sorted order, never following a link."""
    folder = root / relative if relative else root
    with os.scandir(folder) as entries:
        names = sorted(
            (entry.name for entry in entries),
            key=lambda name: name.encode("utf-8", "surrogateescape"),
        )
    for name in names:
        path = f"{relative}/{name}" if relative else name
        status = os.lstat(root / path)
        yield path, status
        if stat.S_ISDIR(status.st_mode):
            yield from walk(root, path)


def _chunks(
    path: Path, chunking: Chunking, store: ChunkStore
) -> tuple[str, tuple[Chunk, ...], int]:
    """The file's sha256, its chunks (stored), and its size."""
    whole = hashlib.sha256()
    chunks: list[Chunk] = []
    if chunking.algorithm == "fixed":
        with open(path, "rb") as handle:
            while data := handle.read(chunking.max):
                whole.update(data)
                chunks.append(Chunk(store.put(data), len(data)))
    else:
        if path.stat().st_size == 0:
            return whole.hexdigest(), (), 0
        cutter = FastCDC(chunking.avg, min_size=chunking.min, max_size=chunking.max)
        for piece in cutter.cut_file(str(path)):
            data = bytes(piece.data)
            whole.update(data)
            chunks.append(Chunk(store.put(data), len(data)))
    return whole.hexdigest(), tuple(chunks), sum(chunk.size for chunk in chunks)


def build_tree(spec: TreeBuild, store: ChunkStore) -> ArtifactManifest:
    """Chunk every selected file of `spec.source` into `store`; the artifact's manifest."""
    if not spec.source.is_dir():
        raise BuildError(f"{spec.source}: the build source is not a folder")
    files: list[Entry] = []
    folders: set[str] = set()
    for path, status in walk(spec.source):
        if stat.S_ISDIR(status.st_mode):
            continue
        if not matches_any(spec.include, path) or matches_any(spec.exclude, path):
            continue
        if stat.S_ISLNK(status.st_mode):
            if not spec.allow_symlinks:
                raise BuildError(f"{path}: a symbolic link, and this build allows none")
            files.append(Entry(path, EntryType.SYMLINK, target=os.readlink(spec.source / path)))
        elif stat.S_ISREG(status.st_mode):
            digest, chunks, size = _chunks(spec.source / path, spec.chunking, store)
            if size != status.st_size:
                raise BuildError(f"{path}: changed while it was being built")
            mode = "0755" if status.st_mode & stat.S_IXUSR else "0644"
            files.append(Entry(path, EntryType.FILE, mode, size, digest, chunks))
        else:
            raise BuildError(
                f"{path}: not a regular file, folder or link (a device, pipe or socket)"
            )
        parent = os.path.dirname(path)
        while parent:
            folders.add(parent)
            parent = os.path.dirname(parent)
    entries = [Entry(folder, EntryType.DIR, "0755") for folder in folders] + files
    prefetch = tuple(
        e.path for e in files if e.type is EntryType.FILE and matches_any(spec.prefetch, e.path)
    )
    manifest = ArtifactManifest(tuple(entries), spec.chunking, prefetch, dict(spec.labels))
    # The node's gate, applied at build time: a build never produces what a node would refuse.
    return decode(manifest.encode(), manifest.artifact_id, allow_symlinks=spec.allow_symlinks)
