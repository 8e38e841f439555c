"""A workload's volumes on this node: each volume's objects read from its Quantum Safe Storage
backends with the circle's storage key, or, on a node without it, as a recipient the objects
are shared with (the node's X-Wing key, KEY.x-wing, opens its entry under its node name:
`qss.recipients`), verified, and kept in a read-only cache that the replicas see at their
mount paths.

    STATE/volumes/<volume>/<view>/<object name>   one verified view of a volume's objects

An object is pinned by the approved commit: by its QSS `id` (the hash of its manifest, share
hashes included), or by its `build`, whose approved artifact digest fixes the file's sha256
(the artifact's file of the object's name, or its only file). Every share is hashed before it
is decoded and every segment authenticated (`qss.store`); the decrypted bytes are then hashed
against the pin. An object with neither pin is the one object of its name that the storage
key (or the node's entry) opens; two such objects are ambiguous and refused. A view is
written into a private staging folder and renamed into place whole: a replica never sees half
a volume. A view is hashed again before a start only when its stat facts changed (as artifacts are,
`reconciler.node.artifacts`), so a restart does not rehash a large model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from qss.durable import write_atomically
from qss.errors import StorageError
from qss.manifest import Manifest
from qss.recipients import Recipient, RecipientKey
from qss.store import Store
from reconciler.desired.model.volume import Volume, VolumeObject
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError, ReconcilerError, Retry
from reconciler.files import read_bounded, remove_tree
from reconciler.node.artifacts import Artifacts, ArtifactUnavailable, tree_facts
from reconciler.secrets import xwing
from reconciler.wiring import volume_store

_BLOCK = 1 << 20
_MAX_SEEN = 1 << 20


class VolumeUnavailable(ReconcilerError):
    """A volume's objects cannot be read, or do not match what the commit pins."""

    retry = Retry.TRANSIENT


@dataclass(frozen=True)
class Pin:
    """What an object must be: its QSS id, or the sha256 of its bytes (from a build)."""

    name: str
    object_id: str | None
    sha256: str | None

    @property
    def label(self) -> str:
        if self.object_id is not None:
            return f"id {self.object_id[:12]}"
        return f"sha256 {self.sha256[:12]}" if self.sha256 else "unpinned"


class Volumes:
    """The node's volume cache (see the module)."""

    def __init__(
        self,
        state_dir: Path,
        storage_key: bytes | None,
        artifacts: Artifacts,
        *,
        kem_key: xwing.XWingPrivateKey | None = None,
        node: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.root = state_dir / "volumes"
        self.storage_key = storage_key
        self.artifacts = artifacts
        self.kem_key = kem_key
        self.node = node  # this node's name, once it is known: the recipient it reads as

    def ensure(self, name: str, desired: DesiredState) -> Path:
        """The folder holding volume `name`'s objects, verified; VolumeUnavailable."""
        loaded = desired.volumes.get(name)
        if loaded is None:
            raise VolumeUnavailable(f"volume {name!r} is not in the approved commit")
        volume = loaded.document
        pins = [self._pin(item, desired) for item in volume.objects]
        view = hashlib.sha256(
            repr([(volume.name, p.name, p.object_id, p.sha256) for p in pins]).encode()
        ).hexdigest()[:24]
        target = self.root / volume.name / view
        seen = self.root / volume.name / f".seen-{view}.json"
        if target.is_dir() and _recorded(seen) == tree_facts(target):
            return target  # nothing changed since it was last hashed: not hashed again
        if target.is_dir() and all(self._intact(target / p.name, p) for p in pins):
            _record(seen, target)
            return target
        recipient = None if self.storage_key is not None else self._recipient(volume, desired)
        self._fill(volume, desired, pins, target, recipient)
        _record(seen, target)
        return target

    def _recipient(self, volume: Volume, desired: DesiredState) -> RecipientKey:
        """What opens the volume's objects on a node without the storage key: its X-Wing key,
        as its node name, when the volume is shared with it."""
        node = self.node()
        if self.kem_key is None or node is None:
            missing = "no X-Wing key (KEY.x-wing)" if self.kem_key is None else "no name yet"
            raise VolumeUnavailable(
                f"volume {volume.name}: no storage key on this node (give the agent "
                f"--storage-key), and {missing} to read it as a recipient"
            )
        shared_with = volume.recipient_nodes(desired.nodes)
        if node not in shared_with:
            raise VolumeUnavailable(
                f"volume {volume.name}: no storage key on this node (give the agent "
                f"--storage-key), and the volume is not shared with node {node} (recipients: "
                f"{', '.join(shared_with) or 'none'})"
            )
        key = self.kem_key
        return RecipientKey(node, key.public_bytes, partial(xwing.decapsulate, key))

    def _pin(self, item: VolumeObject, desired: DesiredState) -> Pin:
        if item.id is not None or item.build is None:
            return Pin(item.name, item.id, None)
        build = desired.builds.get(item.build)
        digest = build.document.digest if build is not None else None
        if digest is None:
            raise VolumeUnavailable(f"object {item.name}: build {item.build} has no digest")
        try:
            manifest = self.artifacts.manifest(digest)
        except (ArtifactUnavailable, StorageError) as error:
            raise VolumeUnavailable(f"object {item.name}: {error}") from error
        files = list(manifest.files())
        match = [f for f in files if f.path == item.name] or (files if len(files) == 1 else [])
        if not match or match[0].sha256 is None:
            raise VolumeUnavailable(
                f"object {item.name}: artifact {digest[:19]} of build {item.build} has no "
                f"file {item.name!r} (and not exactly one file)"
            )
        return Pin(item.name, None, match[0].sha256)

    def _intact(self, path: Path, pin: Pin) -> bool:
        """A cached object still hashes to its pin (the id's pins were checked on fill)."""
        if pin.sha256 is None:
            return path.is_file() and not path.is_symlink()
        return _file_sha256(path) == pin.sha256

    def _fill(
        self,
        volume: Volume,
        desired: DesiredState,
        pins: list[Pin],
        target: Path,
        recipient: RecipientKey | None,
    ) -> None:
        try:
            opened = volume_store(desired, volume.name, timeout=30.0)
        except (InputError, StorageError) as error:
            raise VolumeUnavailable(f"volume {volume.name}: {error}") from error
        store = opened.store
        staging = target.parent / f".staging-{secrets.token_hex(6)}"
        try:
            staging.mkdir(parents=True, mode=0o700)
            for pin in pins:
                self._fetch(store, volume.name, pin, staging / pin.name, recipient)
            os.chmod(staging, 0o555)  # noqa: S103 - read-only to all: replicas only read it
            with contextlib.suppress(FileNotFoundError):
                old = target.parent / f".old-{secrets.token_hex(6)}"
                os.rename(target, old)
                _remove(old)
            os.rename(staging, target)
        except OSError as error:
            raise VolumeUnavailable(f"volume {volume.name}: {error.strerror}") from error
        finally:
            _remove(staging)

    def _fetch(
        self, store: Store, volume: str, pin: Pin, out: Path, recipient: RecipientKey | None
    ) -> None:
        try:
            if pin.object_id is not None:
                candidates = [store.find_manifest(pin.object_id)]
            else:
                listing = store.list_objects()
                candidates = [m for m in listing.manifests if m.content.name == pin.name]
            if not candidates:
                raise VolumeUnavailable(f"volume {volume}: no object named {pin.name!r}")
            if pin.sha256 is None and pin.object_id is None and len(candidates) > 1:
                raise VolumeUnavailable(
                    f"volume {volume}: {len(candidates)} objects are named {pin.name!r}; pin "
                    "one with `id` (or `build`) in volumes/"
                )
            problems: list[str] = []
            for manifest in candidates:
                problem = self._get(store, manifest, pin, out, recipient)
                if problem is None:
                    os.chmod(out, 0o444)
                    return
                problems.append(problem)
            raise VolumeUnavailable(f"volume {volume}: object {pin.name}: {'; '.join(problems)}")
        except StorageError as error:
            raise VolumeUnavailable(f"volume {volume}: object {pin.name}: {error}") from error

    def _get(
        self, store: Store, manifest: Manifest, pin: Pin, out: Path, recipient: RecipientKey | None
    ) -> str | None:
        store.get(manifest.object_id, out, storage_key=self.storage_key, recipient=recipient)
        if pin.sha256 is not None:
            found = _file_sha256(out)
            if found != pin.sha256:
                out.unlink()
                return (
                    f"{manifest.object_id[:12]} holds sha256 {str(found)[:12]}, the approved "
                    f"build pins {pin.sha256[:12]}"
                )
        return None


def volume_recipients(desired: DesiredState, name: str) -> tuple[Recipient, ...]:
    """The nodes volume `name` is shared with (its `recipients`), each with its kemPublicKey:
    what `circle qss put/share --volume` and `circle up` wrap the data key for. InputError for
    one that is not admitted or has no kemPublicKey (`circle validate` says where)."""
    loaded = desired.volumes.get(name)
    if loaded is None:
        return ()
    found = []
    for node_name in loaded.document.recipient_nodes(desired.nodes):
        node = desired.nodes.get(node_name)
        line = node.document.kem_public_key if node is not None else None
        if line is None:
            raise InputError(
                f"volume {name} is shared with node {node_name}, which is not admitted or has "
                "no kemPublicKey (circle validate says where)"
            )
        found.append(Recipient(node_name, xwing.parse_public_key(line)))
    return tuple(found)


def _recorded(path: Path) -> object:
    try:
        return json.loads(read_bounded(path, _MAX_SEEN))
    except (ReconcilerError, ValueError):
        return None


def _record(path: Path, target: Path) -> None:
    write_atomically(path, json.dumps(tree_facts(target)), mode=0o600)


def _file_sha256(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        remove_tree(path)
