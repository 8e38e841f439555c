"""The artifacts a node runs: fetched, verified, installed read-only, and checked again before
every start and while replicas run (DESIGN.md section 5).

    STATE/chunks/          the node's chunk store (and manifests), served to its peers
    STATE/artifacts/<hex>  an installed artifact (root's, read-only to every workload)
    STATE/artifacts/.seen/<hex>.json   its seal: what the tree looked like when last known
                                       good, and in which boot (`builders.seal`)

`ensure` gives a verified tree: the manifest comes from the local store or the first source
that has one whose bytes hash to the pinned id; the bytes from installed versions whose seals
hold (hard links, kernel copies), the local store, then every source at once (peers, then
configured sources); `builders.materialize` writes and verifies the tree. Nothing is flushed
byte by byte (neither chunks nor trees): durability is verification. An installed tree is
trusted again only while its seal holds: the same boot, and nothing of it changed since its
last full check (every entry's type, mode, size, inode, mtime and ctime: root can set an mtime
back, no one can set a ctime; and every folder's listing). After a reboot, or on any change,
it is hashed in full before it is started; a tree that differs from its manifest in one bit is
refused (the caller hears why, as ArtifactTampered), set aside and rebuilt from verified
chunks. `check` does the same for a tree in use, cheaply by default and in full when asked
(periodically).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builders import BuildError
from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.manifest import ArtifactManifest, ManifestRefused, decode
from builders.materialize import TreeMismatch, materialize, verify_tree
from builders.seal import forget_seal, read_boot_id, read_seal, tree_facts, write_seal
from reconciler.errors import ReconcilerError, Retry

__all__ = ["SEEN", "ArtifactUnavailable", "Artifacts", "Installed", "tree_facts"]

SEEN = ".seen"


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
        boot_id: Callable[[], str] = read_boot_id,
    ) -> None:
        # Verified on every read, so a chunk torn by a crash is refused and fetched again.
        self.store = ChunkStore(state_dir / "chunks", durable=False)
        self.root = state_dir / "artifacts"
        self.seals = self.root / SEEN
        self.boot_id = boot_id  # a seal from another boot is void: hashed in full again
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
                    seals=self.seals,
                    boot_id=self.boot_id(),
                    durable=False,
                )
            except BuildError as error:
                raise ArtifactUnavailable(f"artifact {artifact_id[:19]}: {error}") from error
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
        artifact_id = manifest.artifact_id
        boot = self.boot_id()
        seal = read_seal(self.seals, artifact_id)
        if not full and seal is not None:
            if seal.holds(boot, tree_facts(path)):
                return None
            if seal.boot_id != boot:
                self.say(
                    f"artifact {artifact_id[:19]} was sealed in another boot (its bytes may "
                    "not have reached the disk): hashing it in full before it is used"
                )
        try:
            verify_tree(path, manifest)
        except TreeMismatch as error:
            forget_seal(self.seals, artifact_id)
            return str(error)
        write_seal(self.seals, artifact_id, path, boot)
        return None
