"""The state store: etcd's semantics (revisions, compare-and-swap transactions, leases, watch
from a revision) over an embedded SQLite file or an etcd cluster. `reconciler.store.base`
states the semantics; `open_store(url)` opens a store by URL:

    sqlite:PATH                       one file on this machine (the embedded default)
    etcd://HOST:PORT[,HOST:PORT...]   an etcd cluster's client endpoints (plain HTTP)

`resolve_store_url` picks the URL to use: the one given, else $CIRCLE_STORE, else a default.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping

from reconciler.store import etcd, sqlite
from reconciler.store.base import (
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventKind,
    KeyValue,
    LeaseId,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    StateStore,
    Target,
    TxnOp,
    TxnResult,
    Watch,
)
from reconciler.store.errors import (
    BadRequest,
    BadStoreUrl,
    Compacted,
    FutureRevision,
    InvalidReply,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)
from reconciler.store.etcd import EtcdStore
from reconciler.store.sqlite import SqliteStore

__all__ = [
    "ENV_VAR",
    "BadRequest",
    "BadStoreUrl",
    "Compacted",
    "Compare",
    "Delete",
    "DeleteResult",
    "EtcdStore",
    "Event",
    "EventKind",
    "FutureRevision",
    "InvalidReply",
    "KeyValue",
    "LeaseId",
    "LeaseNotFound",
    "Op",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "Target",
    "TxnOp",
    "TxnResult",
    "Watch",
    "open_store",
    "parse_etcd_endpoints",
    "resolve_store_url",
]

ENV_VAR = "CIRCLE_STORE"
URL_FORMS = "sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...]"

_ENDPOINT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})")


def open_store(
    url: str,
    *,
    timeout: float | None = None,
    clock: Callable[[], float] | None = None,
) -> StateStore:
    """The store at `url`. `timeout` bounds each call (defaults: 30 s to wait for a busy
    SQLite file, 10 s for an etcd request); `clock` drives SQLite's lease expiry (etcd
    keeps its own time, so it cannot take one)."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        if not path or "\0" in path:
            raise BadStoreUrl(f"{url!r}: a sqlite store needs a file path: sqlite:PATH")
        return SqliteStore(
            path, clock=clock or time.time, timeout=timeout or sqlite.DEFAULT_TIMEOUT
        )
    if url.startswith("etcd://"):
        endpoints = parse_etcd_endpoints(url)
        if clock is not None:
            raise BadStoreUrl(f"{url}: etcd keeps its own time; a clock is for sqlite stores")
        return EtcdStore(endpoints, timeout=timeout or etcd.DEFAULT_TIMEOUT)
    raise BadStoreUrl(f"{url!r} is not a store URL: expected {URL_FORMS}")


def parse_etcd_endpoints(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs of an etcd:// URL, in order."""
    rest = url.removeprefix("etcd://").rstrip("/")
    endpoints: list[tuple[str, int]] = []
    for part in rest.split(","):
        match = _ENDPOINT.fullmatch(part)
        port = int(match["port"]) if match else 0
        if match is None or not 1 <= port <= 65535:
            raise BadStoreUrl(
                f"{url!r}: {part!r} is not HOST:PORT (etcd://HOST:PORT[,HOST:PORT...]; "
                "no path, user or query)"
            )
        endpoints.append((match["v6"] or match["host"], port))
    return endpoints


def resolve_store_url(
    explicit: str | None = None,
    *,
    default: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The store URL to use: `explicit` if given, else $CIRCLE_STORE if set, else `default`."""
    env = os.environ if environ is None else environ
    for candidate in (explicit, env.get(ENV_VAR) or None, default):
        if candidate:
            return candidate
    raise BadStoreUrl(f"no state store given: pass one or set {ENV_VAR} ({URL_FORMS})")
