"""The interface every storage backend offers, and the keys it accepts.

A backend stores opaque blobs under keys. Keys are built by `qss.store` from hexadecimal ids
and integers only (`s/<object id>/<share>/<segment>`, `m/<object id>/<version>`): a user's
object name never becomes a key, a path or a URL. Every backend checks keys with `check_key`
anyway, so a bug upstream cannot turn into a path traversal.

Every `put` is atomic: a reader sees the old value, the new value, or nothing; never part of
one. A put is visible at once and durable once `sync` returns: the store syncs every backend
before it commits a manifest, so one flush covers thousands of blocks instead of one fsync each
(a block lost to a crash before that is caught by its hash). `delete` is idempotent.

Every `get` is bounded: a blob larger than its `limit` (the caller knows the size of a share
or the most a manifest may have; `MAX_BLOB` otherwise) is refused before it is read, and every
network call has a total deadline, however slowly the peer answers. Errors are `BlobNotFound`
(no such key), `InvalidBlob` (what is there cannot be the blob: too large, or not a regular
file), `BackendUnavailable` (cannot reach it: network, connection refused, disk gone, no answer
in time) and `BackendError` (anything else).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from qss.codec import MAX_SEGMENT, TAG_BYTES
from qss.errors import BackendError
from qss.manifest import MAX_MANIFEST_BYTES

KEY = re.compile(r"[a-z0-9]+(/[a-z0-9][a-z0-9.-]{0,127}){0,8}")
MAX_KEY = 512
# The largest blob the store writes: a block of the largest segment with k = 1, or a manifest.
MAX_BLOB = max(MAX_SEGMENT + TAG_BYTES, MAX_MANIFEST_BYTES)


def check_key(key: str) -> str:
    """`key` if it is a valid blob key: lowercase letters, digits, '.', '-' and '/' separators,
    no empty, '.' or '..' components. Raises BackendError otherwise."""
    if len(key) > MAX_KEY or not KEY.fullmatch(key) or ".." in key.split("/"):
        raise BackendError(f"invalid blob key {key[:80]!r}")
    return key


@dataclass(frozen=True, slots=True)
class BackendInfo:
    url: str
    kind: str  # "dir", "redis", "http"
    free_bytes: int | None  # None where the backend cannot tell


@runtime_checkable
class Backend(Protocol):
    """A place to keep blobs. `name` and `failure_domain` are what placement reasons about."""

    name: str
    failure_domain: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str, limit: int = MAX_BLOB) -> bytes:
        """The blob; InvalidBlob, unread, if it holds more than `limit` bytes."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with `prefix`, in no particular order."""
        ...

    def info(self) -> BackendInfo: ...

    def sync(self) -> None:
        """Make every put so far durable."""
        ...

    def close(self) -> None: ...
