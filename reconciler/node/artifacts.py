"""The artifacts a node runs: fetched, verified, installed read-only, and checked again before
every start and while replicas run (DESIGN.md section 5).

    STATE/chunks/          the node's chunk store: manifests (a tree's chunks live in the
                           tree only, served to peers from it while its seal holds)
    STATE/artifacts/<hex>  an installed artifact (root's, read-only to every workload)
    STATE/artifacts/.seen/<hex>.json   its seal: what the tree looked like when last known
                                       good, and in which boot (`builders.seal`)

`ensure` gives a verified tree: the manifest comes from the local store or the first source
that has one whose bytes hash to the pinned id; the bytes from installed versions whose seals
hold (hard links, kernel copies), the local store, then every source at once (peers, then
configured sources), each chunk verified on arrival and written straight into the tree;
`builders.materialize` writes and verifies the tree. Nothing is flushed
byte by byte (neither chunks nor trees): durability is verification. An installed tree is
trusted again only while its seal holds: the same boot, and nothing of it changed since its
last full check (every entry's type, mode, size, inode, mtime and ctime: root can set an mtime
back, no one can set a ctime; and every folder's listing). After a reboot, or on any change,
it is hashed in full before it is started; a tree that differs from its manifest in one bit is
refused (the caller hears why, as ArtifactTampered), set aside and rebuilt from verified
chunks (the node's other sealed trees, then its peers and sources). `check` does the same for
a tree in use, cheaply by default and in full when asked (periodically).

    STATE/artifacts/.staged/<hex>.json  a pre-staged tree (`stage`): materialized exactly as
                                       `ensure` does, before its quorum landed; never started
                                       by this, evicted by the node (`evict`) unless an
                                       assignment takes it: `ensure` then finds it in place,
                                       sealed, and only forgets this record

A pre-staged tree sits at its content address like an installed one, so that the install
when the quorum lands is no copy and no fetch: the tree was renamed into place when it was
staged, and the start checks its seal as for any other (`reconciler.node.prestage`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from builders import BuildError
from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.manifest import ArtifactManifest, ManifestRefused, decode
from builders.materialize import STAGING_PREFIX, TreeMismatch, materialize, verify_tree
from builders.seal import forget_seal, read_boot_id, read_seal, tree_facts, write_seal
from builders.sealed_trees import SealedTrees
from qss.durable import write_atomically
from reconciler.errors import ReconcilerError, Retry
from reconciler.files import read_bounded

__all__ = [
    "SEEN",
    "STAGED",
    "ArtifactUnavailable",
    "Artifacts",
    "Installed",
    "StagedTree",
    "tree_facts",
]

SEEN = ".seen"
STAGED = ".staged"
MAX_STAGED_RECORD = 4096


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


@dataclass(frozen=True)
class StagedTree:
    """A pre-staged tree no assignment took yet: its bytes, and when it was staged."""

    artifact_id: str
    size: int
    staged_at: int


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
        # What the node's chunk server serves besides the store: chunks go into the trees,
        # not the store, and are served from them (sealed) or while they are written.
        self.trees = SealedTrees(self.root, self.seals, self.store, boot_id=boot_id)
        self.sources = sources
        self.say = say or (lambda line: None)
        self.on_chunk = on_chunk  # where each chunk of a materialization came from
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.staged_records = self.root / STAGED
        # Told (from the installing thread) that an assignment took a pre-staged tree whose
        # seal held: it starts without a byte fetched.
        self.on_taken: Callable[[StagedTree], None] | None = None

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
            taken = self._forget_staged(artifact_id)  # an assignment runs it: no speculation
            tampered: str | None = None
            if path.is_dir():
                tampered = self._verify(path, manifest, full=False)
                if tampered is None:
                    if taken is not None and self.on_taken is not None:
                        self.on_taken(taken)
                    return Installed(path, manifest)
            try:
                self._install(artifact_id, data, sources)
            except BuildError as error:
                raise ArtifactUnavailable(f"artifact {artifact_id[:19]}: {error}") from error
            return Installed(path, manifest, tampered)

    def stage(
        self, artifact_id: str, *, now: int, deadline: float | None = None
    ) -> StagedTree | None:
        """Pre-stage `artifact_id`: materialized as `ensure` does (chunks verified on arrival,
        the tree sealed), recorded as staged, never started. None when it is installed
        already (not speculation: nothing to record). `deadline`: seconds for the transfer.
        ArtifactUnavailable, with nothing recorded."""
        with self._lock(artifact_id):
            sources = self.sources()
            data = self._manifest_bytes(artifact_id, sources)
            manifest = decode(data, artifact_id)
            path = self.root / artifact_id.removeprefix("sha256:")
            if path.is_dir() and self._staged_record(artifact_id) is None:
                return None
            record = StagedTree(artifact_id, sum(e.size for e in manifest.files()), now)
            self._write_staged(record)  # first: a crash half-way leaves it to evict
            try:
                self._install(artifact_id, data, sources, deadline)
            except BuildError as error:
                if not path.is_dir():
                    self._forget_staged(artifact_id)
                raise ArtifactUnavailable(f"artifact {artifact_id[:19]}: {error}") from error
            return record

    def _install(
        self,
        artifact_id: str,
        data: bytes,
        sources: Sequence[ChunkSource],
        deadline: float | None = None,
    ) -> None:
        """Materialize the tree as a node does: sealed, not flushed (durability is
        verification), not made `current`, its chunks served to peers as they land."""
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
            deadline=deadline,
            serving=self.trees,
        )

    def evict(self, artifact_id: str) -> StagedTree | None:
        """Remove a pre-staged tree that no assignment took (the tree out of its place with
        one rename, then deleted); None when there is none (taken since, or gone)."""
        with self._lock(artifact_id):
            record = self._staged_record(artifact_id)
            if record is None:
                return None
            path = self.root / artifact_id.removeprefix("sha256:")
            aside = self.root / (STAGING_PREFIX + secrets.token_hex(8))
            forget_seal(self.seals, artifact_id)
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, aside)
            shutil.rmtree(aside, ignore_errors=True)
            self._forget_staged(artifact_id)
            return record

    def staged(self) -> dict[str, StagedTree]:
        """The pre-staged trees no assignment took, by id; a record whose tree is gone (a
        crash while staging) is dropped."""
        found: dict[str, StagedTree] = {}
        try:
            names = sorted(os.listdir(self.staged_records))
        except FileNotFoundError:
            return found
        for name in names:
            hex_id = name.removesuffix(".json")
            artifact_id = f"sha256:{hex_id}"
            with self._lock(artifact_id):
                record = self._staged_record(artifact_id)
                if record is None:
                    continue
                if not (self.root / hex_id).is_dir():
                    self._forget_staged(artifact_id)
                    continue
                found[artifact_id] = record
        return found

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

    def _staged_path(self, artifact_id: str) -> Path:
        return self.staged_records / f"{artifact_id.removeprefix('sha256:')}.json"

    def _staged_record(self, artifact_id: str) -> StagedTree | None:
        """The record of a pre-staged tree; one unreadable or not this id's is none."""
        path = self._staged_path(artifact_id)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return None
        try:
            document = json.loads(read_bounded(path, MAX_STAGED_RECORD))
            record = StagedTree(artifact_id, int(document["size"]), int(document["stagedAt"]))
        except (ReconcilerError, ValueError, TypeError, KeyError, RecursionError):
            with contextlib.suppress(OSError):
                path.unlink()  # not a record this node wrote: its tree is evicted as none
            return None
        if document.get("artifact") != artifact_id:
            return None
        return record

    def _write_staged(self, record: StagedTree) -> None:
        self.staged_records.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {"artifact": record.artifact_id, "size": record.size,
                    "stagedAt": record.staged_at}  # fmt: skip
        write_atomically(self._staged_path(record.artifact_id), json.dumps(document), mode=0o600)

    def _forget_staged(self, artifact_id: str) -> StagedTree | None:
        record = self._staged_record(artifact_id)
        with contextlib.suppress(FileNotFoundError):
            self._staged_path(artifact_id).unlink()
        return record

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
