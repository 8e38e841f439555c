"""Where the desired state meets the builders and Quantum Safe Storage: a Build document as a
builder call, a signed provenance statement for it, the default chunk store, and a Volume as an
open qss Store. The CLI and the node agent both go through here."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import BuildError, provenance, sshsig
from builders.chunks import ChunkStore
from builders.manifest import ArtifactManifest, Chunking
from builders.python_app import PythonAppBuild, build_python_app
from builders.tree import ARCHIVE_CHUNKING, MODEL_CHUNKING, TreeBuild, build_tree
from qss.backends import open_backend
from qss.durable import write_atomically
from qss.store import Store
from reconciler.desired.model import Build, BuilderKind
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError


def default_chunk_store() -> Path:
    """`$XDG_CACHE_HOME/circle/store` (`~/.cache/circle/store`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "circle" / "store"


def run_build(build: Build, repo: Path, store: ChunkStore) -> ArtifactManifest:
    """Build one document's artifact into `store` (chunks and manifest)."""
    source = repo / build.source
    labels = {"build": build.name, "builder": build.builder.value}
    if build.builder is BuilderKind.PYTHON_APP:
        assert build.python is not None  # the document checks guarantee it
        wheelhouse = repo / build.python.wheelhouse if build.python.wheelhouse else None
        manifest = build_python_app(
            PythonAppBuild(
                source,
                repo / build.python.requirements,
                wheelhouse,
                tuple(build.include),
                tuple(build.exclude),
                tuple(build.prefetch),
                labels,
            ),
            store,
        )
    else:
        chunking = ARCHIVE_CHUNKING
        if build.builder is BuilderKind.MODEL:
            given = build.chunking
            chunking = (
                Chunking("fastcdc", given.min, given.avg, given.max) if given else MODEL_CHUNKING
            )
        manifest = build_tree(
            TreeBuild(
                source,
                tuple(build.include),
                tuple(build.exclude),
                chunking,
                build.allow_symlinks,
                tuple(build.prefetch),
                labels,
            ),
            store,
        )
    store.put_manifest(manifest.artifact_id, manifest.encode())
    return manifest


@dataclass(frozen=True)
class Signer:
    """Who signs a build's provenance: an Ed25519 key and the builder id it speaks for."""

    key: Ed25519PrivateKey
    builder_id: str


def load_signer(key_file: Path, passphrase_file: Path | None, builder_id: str | None) -> Signer:
    """The signer of `key_file`; its builder id is `builder_id`, else its public key's comment,
    else its fingerprint."""
    passphrase = passphrase_file.read_bytes().rstrip(b"\n") if passphrase_file else None
    try:
        key = sshsig.load_private_key(key_file.read_bytes(), passphrase)
    except BuildError as error:
        raise InputError(f"{key_file}: {error}") from error
    public = key_file.with_name(key_file.name + ".pub")
    fields = public.read_text(encoding="utf-8").split() if public.is_file() else []
    default = fields[2] if len(fields) > 2 else None
    identity = builder_id or default or sshsig.fingerprint(sshsig.public_key_line(key))
    return Signer(key, identity)


def attest(signer: Signer, build: Build, manifest: ArtifactManifest, store: ChunkStore) -> Path:
    """Sign the provenance of `manifest` and keep it in the store beside the manifest."""
    inputs = {entry.path: entry.sha256 or "" for entry in manifest.files()}
    document = provenance.statement(
        manifest.artifact_id,
        build.name,
        build.builder.value,
        inputs,
        signer.builder_id,
        {"command": "circle build", "build": build.name},
    )
    signed = provenance.attest(document, signer.key)
    folder = store.root / "attestations" / manifest.artifact_id.removeprefix("sha256:")
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(signer.builder_id.encode()).hexdigest()[:16]
    write_atomically(folder / f"{name}.intoto.json", signed.statement.decode())
    write_atomically(folder / f"{name}.intoto.json.sig", signed.signature)
    return folder / f"{name}.intoto.json"


@dataclass(frozen=True)
class VolumeStore:
    """A Volume's backends opened as one Store, with the shape its objects are written in."""

    store: Store
    k: int
    n: int
    segment_size: int


def volume_store(
    state: DesiredState, name: str, *, workers: int = 2, timeout: float | None = None
) -> VolumeStore:
    """The store of volume `name`: its backends, each in its own failure domain or in that of
    the node it names."""
    loaded = state.volumes.get(name)
    if loaded is None:
        known = ", ".join(sorted(state.volumes)) or "none"
        raise InputError(f"no valid volume {name!r} (volumes: {known})")
    volume = loaded.document
    opened = []
    for backend in volume.backends:
        node = state.nodes.get(backend.node) if backend.node else None
        domain = backend.failure_domain or (node.document.failure_domain if node else None)
        opened.append(
            open_backend(backend.url, name=backend.name, failure_domain=domain, timeout=timeout)
        )
    return VolumeStore(Store(opened, workers=workers), volume.k, volume.n, volume.segment_size)
