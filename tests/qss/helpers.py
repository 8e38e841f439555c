"""Helpers of the store tests: clusters of real backends (directories, or prefixes of one real
redis-server) that can lose, corrupt and restore what they hold, and snapshots of everything
physically stored, to prove that a refused call changed nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from qss.backends import DirectoryBackend, RedisBackend
from qss.backends.base import MAX_BLOB, Backend, BackendInfo
from qss.codec import MIN_SEGMENT
from qss.errors import BackendError
from qss.manifest import Manifest
from qss.reports import GetResult
from qss.store import Store, manifest_key
from tests.qss.conftest import RedisServer, free_port

SEGMENT = MIN_SEGMENT
# Every key the store may write: hex and digits only, never anything of an object's name.
STORE_KEY = re.compile(r"s/[0-9a-f]{32}/[0-9]{1,3}/[0-9]+|m/[0-9a-f]{64}/[0-9]{10}")


def payload(size: int, seed: str = "") -> bytes:
    """`size` reproducible pseudo-random bytes (different for each seed)."""
    return hashlib.shake_256(f"qss-test/{seed}/{size}".encode()).digest(size)


def put_bytes(
    store: Store,
    staging: Path,
    data: bytes,
    storage_key: bytes,
    *,
    k: int,
    n: int,
    name: str | None = None,
    segment_size: int = SEGMENT,
) -> Manifest:
    """Store `data` through a file in `staging` (which is never a backend's directory)."""
    staging.mkdir(parents=True, exist_ok=True)
    source = staging / "source.bin"
    source.write_bytes(data)
    result = store.put(
        source, storage_key=storage_key, k=k, n=n, name=name, segment_size=segment_size
    )
    source.unlink()
    return result.manifest


def get_bytes(
    store: Store, object_id: str, storage_key: bytes, out_dir: Path
) -> tuple[bytes, GetResult]:
    """Read the object into a fresh file in `out_dir`; its bytes and the store's report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "object.out"
    result = store.get(object_id, out, storage_key=storage_key)
    data = out.read_bytes()
    out.unlink()
    return data, result


def listing(directory: Path) -> list[str]:
    """Every name in `directory`, hidden ones (temporary `.part` files) included."""
    return sorted(path.name for path in directory.iterdir())


def tree(base: Path) -> dict[str, bytes | None]:
    """Everything under `base`: file path -> content, directory path -> None."""
    return {
        str(path.relative_to(base)): None if path.is_dir() else path.read_bytes()
        for path in sorted(base.rglob("*"))
    }


def blobs(backend: Backend) -> dict[str, bytes]:
    """Every blob a backend holds, by key."""
    return {key: backend.get(key) for key in backend.list()}


class FaultyBackend:
    """A real backend with faults injected by rule, for the paths a healthy one never takes:
    from its `after`+1-th put of a key starting with `prefix` on, every such put fails with
    BackendError (as a full disk or a dropped connection would). Everything else is the real
    backend's."""

    def __init__(self, real: Backend, *, after: int, prefix: str = "") -> None:
        self.real = real
        self.after = after
        self.prefix = prefix
        self.puts = 0  # puts of matching keys seen so far
        self.name = real.name
        self.failure_domain = real.failure_domain

    def put(self, key: str, data: bytes) -> None:
        if key.startswith(self.prefix):
            self.puts += 1
            if self.puts > self.after:
                raise BackendError(f"{self.name}: injected failure")
        self.real.put(key, data)

    def get(self, key: str, limit: int = MAX_BLOB) -> bytes:
        return self.real.get(key, limit)

    def exists(self, key: str) -> bool:
        return self.real.exists(key)

    def delete(self, key: str) -> None:
        self.real.delete(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.real.list(prefix)

    def info(self) -> BackendInfo:
        return self.real.info()

    def sync(self) -> None:
        self.real.sync()

    def close(self) -> None:
        self.real.close()


@dataclass
class Cluster:
    """Backends (directories under `base`, or prefixes of a redis-server), each lost,
    corrupted and inspected by name."""

    base: Path
    backends: list[Backend]
    redis: RedisServer | None = None
    spares: list[Backend] = field(default_factory=list)

    @classmethod
    def of_directories(
        cls, base: Path, names: Iterable[str], domains: Iterable[str] | None = None
    ) -> Cluster:
        names = list(names)
        domain_list = list(domains) if domains is not None else names
        backends: list[Backend] = []
        for name, domain in zip(names, domain_list, strict=True):
            (base / name).mkdir(parents=True)
            backends.append(DirectoryBackend(base / name, name=name, failure_domain=domain))
        return cls(base, backends)

    @classmethod
    def of_redis(
        cls,
        base: Path,
        server: RedisServer,
        names: Iterable[str],
        domains: Iterable[str] | None = None,
    ) -> Cluster:
        """One redis-server as several backends: each keeps its blobs under `<name>:`."""
        names = list(names)
        domain_list = list(domains) if domains is not None else names
        backends: list[Backend] = [
            RedisBackend(
                server.host, server.port, prefix=f"{name}:", name=name, failure_domain=domain
            )
            for name, domain in zip(names, domain_list, strict=True)
        ]
        return cls(base, backends, server)

    def close(self) -> None:
        for backend in [*self.backends, *self.spares]:
            backend.close()

    @property
    def names(self) -> list[str]:
        return [backend.name for backend in self.backends]

    def backend(self, name: str) -> Backend:
        return next(b for b in self.backends if b.name == name)

    @contextlib.contextmanager
    def failing(self, name: str, *, after: int, prefix: str = "") -> Iterator[FaultyBackend]:
        """Backend `name` fails its puts (`FaultyBackend`) for the stores made meanwhile."""
        index = self.names.index(name)
        real = self.backends[index]
        faulty = FaultyBackend(real, after=after, prefix=prefix)
        self.backends[index] = faulty
        try:
            yield faulty
        finally:
            self.backends[index] = real

    def store(self, names: Iterable[str] | None = None, *, workers: int = 2) -> Store:
        """A store over every backend, or over the named ones only (the others unconfigured)."""
        chosen = self.names if names is None else list(names)
        return Store([self.backend(name) for name in chosen], workers=workers)

    def root(self, name: str) -> Path:
        backend = self.backend(name)
        assert isinstance(backend, DirectoryBackend)
        return backend.root

    # -- losing things -------------------------------------------------------------------------

    def wipe(self, name: str) -> None:
        """The backend answers but holds nothing any more (a replaced, empty disk)."""
        backend = self.backend(name)
        if isinstance(backend, DirectoryBackend):
            for child in backend.root.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            for key in list(backend.list()):
                backend.delete(key)
        assert list(backend.list()) == []

    def unmount(self, name: str) -> None:
        """The backend cannot be reached: its directory is gone, or its server does not answer
        (a backend of the same name pointed at a closed port takes its place)."""
        backend = self.backend(name)
        if isinstance(backend, DirectoryBackend):
            shutil.rmtree(backend.root)
            return
        index = self.backends.index(backend)
        backend.close()
        self.backends[index] = RedisBackend(
            "127.0.0.1",
            free_port(),
            name=name,
            failure_domain=backend.failure_domain,
            connect_timeout=2,
            timeout=2,
        )

    def lose(self, name: str, how: str) -> None:
        {"wiped": self.wipe, "unmounted": self.unmount}[how](name)

    # -- looking at and editing what is stored ---------------------------------------------

    def snapshot(self) -> dict[str, dict[str, bytes]]:
        """Every blob of every reachable backend (directory backends: every file, so stray
        temporary files show up too)."""
        result: dict[str, dict[str, bytes]] = {}
        for backend in self.backends:
            if isinstance(backend, DirectoryBackend):
                if backend.root.exists():
                    result[backend.name] = {
                        path: data for path, data in tree(backend.root).items() if data is not None
                    }
            else:
                result[backend.name] = blobs(backend)
        return result

    def stored_keys(self) -> set[str]:
        return {key for backend in self.backends for key in backend.list()}

    def share_keys(self, manifest: Manifest, share: int) -> list[str]:
        nonce = manifest.content.object_nonce.hex()
        return [f"s/{nonce}/{share}/{index}" for index in range(len(manifest.content.shares))]

    def holder(self, manifest: Manifest, share: int) -> Backend:
        name = manifest.backend_of(share)
        assert name is not None
        return self.backend(name)

    def edit_share(
        self,
        manifest: Manifest,
        share: int,
        edit: Callable[[bytes], bytes],
        segments: Iterable[int] | None = None,
    ) -> None:
        backend = self.holder(manifest, share)
        keys = self.share_keys(manifest, share)
        for index in range(len(keys)) if segments is None else segments:
            backend.put(keys[index], edit(backend.get(keys[index])))

    def rewrite_manifests(
        self, object_id: str, edit: Callable[[dict[str, Any]], None], *, new_id: bool = False
    ) -> str:
        """Apply `edit` to the JSON of every stored manifest of `object_id`, re-encode it
        canonically and put it back under the same key; with `new_id`, also recompute the
        `objectId` claim as a forger would. Returns the id the manifests claim."""
        claimed = object_id
        for backend in self.backends:
            for key in list(backend.list(f"m/{object_id}/")):
                document = json.loads(backend.get(key))
                edit(document)
                if new_id:
                    document["objectId"] = content_id(document["content"])
                claimed = document["objectId"]
                backend.put(key, rfc8785.dumps(document))
        return claimed

    def plant_manifest(self, object_id: str, data: bytes, version: int = 1) -> None:
        """Store `data` as version `version` of `object_id`'s manifest on every backend."""
        for backend in self.backends:
            backend.put(manifest_key(object_id, version), data)


def content_id(content: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(content)).hexdigest()
