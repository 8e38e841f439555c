"""The artifacts a node runs: fetched, verified, installed read-only, and checked again before
every start and while replicas run (DESIGN.md section 5).

    STATE/chunks/          the node's chunk store (and manifests), served to its peers
    STATE/artifacts/<hex>  an installed artifact (root's, read-only to every workload)
    STATE/artifacts/.seen/<hex>.json   what the tree looked like when last verified

`ensure` gives a verified tree: the manifest comes from the local store or the first source
that has one whose bytes hash to the pinned id; the chunks from the local store first, then
the sources in order (peers, then configured sources); `builders.materialize` writes and
verifies the tree. An installed tree is trusted again only when nothing of it has changed
since its last full check: every entry's type, mode, size, inode, mtime and ctime (root can
set an mtime back, no one can set a ctime) and every folder's listing. Anything else is
hashed in full; a tree that differs from its manifest in one bit is refused (the caller hears
why, as ArtifactTampered), set aside and rebuilt from verified chunks. `check` does the same
for a tree in use, cheaply by default and in full when asked (periodically).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builders import BuildError
from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.manifest import ArtifactManifest, ManifestRefused, decode
from builders.materialize import TreeMismatch, materialize, verify_tree
from qss.durable import write_atomically
from reconciler.errors import ReconcilerError, Retry
from reconciler.files import read_bounded

SEEN = ".seen"
_MAX_SEEN = 64 << 20


class ArtifactUnavailable(ReconcilerError):
    """No source has the artifact's manifest or one of its chunks (or they do not verify)."""

    retry = Retry.TRANSIENT


@dataclass(frozen=True)
class Installed:
    """A verified artifact tree. `tampered`: what the check found before it was rebuilt."""

    path: Path
    manifest: ArtifactManifest
    tampered: str | None = None

    @property
    def builder(self) -> str:
        return self.manifest.labels.get("builder", "archive")


class Artifacts:
    """A node's artifacts (see the module). Thread-safe: one installation per id at a time."""

    def __init__(
        self,
        state_dir: Path,
        sources: Callable[[], Sequence[ChunkSource]] = list,
        *,
        say: Callable[[str], None] | None = None,
        on_chunk: Callable[[ChunkSource, int], None] | None = None,
    ) -> None:
        self.store = ChunkStore(state_dir / "chunks")
        self.root = state_dir / "artifacts"
        self.sources = sources
        self.say = say or (lambda line: None)
        self.on_chunk = on_chunk  # where each chunk of a materialization came from
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, artifact_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(artifact_id, threading.Lock())

    def manifest(self, artifact_id: str) -> ArtifactManifest:
        """The manifest of `artifact_id`, verified against it (kept in the local store)."""
        return decode(self._manifest_bytes(artifact_id, self.sources()), artifact_id)

    def ensure(self, artifact_id: str) -> Installed:
        """The artifact installed and verified (see the module); ArtifactUnavailable."""
        with self._lock(artifact_id):
            sources = self.sources()
            data = self._manifest_bytes(artifact_id, sources)
            manifest = decode(data, artifact_id)
            path = self.root / artifact_id.removeprefix("sha256:")
            tampered: str | None = None
            if path.is_dir():
                tampered = self._verify(path, manifest, full=False)
                if tampered is None:
                    return Installed(path, manifest)
            try:
                materialize(
                    artifact_id,
                    data,
                    sources=[self.store, *sources],
                    store=self.store,
                    artifacts_root=self.root,
                    switch=False,
                    on_problem=self.say,
                    on_chunk=self.on_chunk,
                )
            except BuildError as error:
                raise ArtifactUnavailable(f"artifact {artifact_id[:19]}: {error}") from error
            self._remember(path)
            return Installed(path, manifest, tampered)

    def check(self, installed: Installed, *, full: bool = False) -> str | None:
        """What differs in an installed tree from its manifest, or None when nothing does."""
        with self._lock(installed.manifest.artifact_id):
            return self._verify(installed.path, installed.manifest, full=full)

    # -- inside --------------------------------------------------------------------------

    def _manifest_bytes(self, artifact_id: str, sources: Sequence[ChunkSource]) -> bytes:
        problems: list[str] = []
        for source in [self.store, *sources]:
            getter = getattr(source, "get_manifest", None)
            if getter is None:
                continue
            try:
                data = bytes(getter(artifact_id))
                decode(data, artifact_id)
            except (ChunkError, ManifestRefused) as error:
                problems.append(f"{getattr(source, 'name', source)}: {error}")
                continue
            if source is not self.store:
                with contextlib.suppress(ChunkError):
                    self.store.put_manifest(artifact_id, data)
            return data
        said = "; ".join(problems[-3:]) or "no sources"
        raise ArtifactUnavailable(f"no source has the manifest of {artifact_id[:19]} ({said})")

    def _verify(self, path: Path, manifest: ArtifactManifest, *, full: bool) -> str | None:
        if not full and self._seen(path) == tree_facts(path):
            return None
        try:
            verify_tree(path, manifest)
        except TreeMismatch as error:
            return str(error)
        self._remember(path)
        return None

    def _seen_file(self, path: Path) -> Path:
        return self.root / SEEN / f"{path.name}.json"

    def _seen(self, path: Path) -> object:
        try:
            return json.loads(read_bounded(self._seen_file(path), _MAX_SEEN))
        except (ReconcilerError, ValueError):
            return None

    def _remember(self, path: Path) -> None:
        target = self._seen_file(path)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomically(target, json.dumps(tree_facts(path)), mode=0o600)


def tree_facts(root: Path) -> list[list[object]] | None:
    """Every entry below `root` (never following a symlink) with what a change would touch:
    type and mode, size, inode, mtime, ctime and link count. None if it cannot be read."""
    found: list[list[object]] = []
    try:
        _walk(root, "", found)
    except OSError:
        return None
    return found


def _walk(folder: Path, prefix: str, found: list[list[object]]) -> None:
    status = os.lstat(folder)
    found.append(_entry(prefix or ".", status))
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            relative = f"{prefix}/{entry.name}" if prefix else entry.name
            status = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                _walk(Path(entry.path), relative, found)
            else:
                found.append(_entry(relative, status))


def _entry(relative: str, status: os.stat_result) -> list[object]:
    return [
        relative,
        status.st_mode,
        status.st_size,
        status.st_ino,
        status.st_mtime_ns,
        status.st_ctime_ns,
        status.st_nlink,
    ]
