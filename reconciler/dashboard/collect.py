"""What the dashboard shows, read once a second by one thread and served from memory: the
store's records (verified against the circle's nodes, as `circle get` reads them), the chain
(re-verified only when a ref moved), and a short history per workload for the charts.

A request never touches the store or the repository: however many browsers are open, the
circle is read at the collector's pace. When the store is unreachable the last snapshot stays,
with `error` saying why and since when.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.dashboard.chain import Refs, chain_page, refs_of
from reconciler.errors import ReconcilerError
from reconciler.node import tables, view
from reconciler.store import StateStore, StoreError, open_store

HISTORY = 900  # samples per workload: 15 minutes at one a second
MAX_EVENTS = 500  # newest first
Snapshot = dict[str, Any]


@dataclass(frozen=True)
class Sources:
    store_url: str
    repo: Path


class Collector:
    """Reads the circle every `interval` s from its own thread; `snapshot()` is the latest."""

    def __init__(
        self,
        sources: Sources,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = sources
        self.interval = interval
        self.clock = clock
        self._store: StateStore | None = None
        self._refs: Refs | None = None
        self._circle: view.Circle | None = None
        self._chain: dict[str, Any] = {}
        self._history: dict[str, deque[tuple[int, int, int, float | None]]] = {}
        self._seen: dict[str, float] = {}  # node -> when its lease was last seen held
        self._snapshot: Snapshot = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def start(self) -> Collector:
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._store is not None:
            self._store.close()
            self._store = None

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self) -> None:
        """One read of the circle; on failure the last snapshot stays, saying why."""
        now = self.clock()
        try:
            self._read_chain(int(now))
            assert self._circle is not None
            if self._store is None:
                self._store = open_store(self.sources.store_url, timeout=5)
            seen = view.read(self._store, self._circle)
            found, forged = view.events(self._store, self._circle)
        except (ReconcilerError, OSError, pygit2.GitError) as error:
            if isinstance(error, StoreError) and self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.close()
                self._store = None  # opened again on the next pass
            with self._lock:
                before = self._snapshot.get("error") or {}
                since = before.get("since", int(now))
                self._snapshot = {**self._snapshot, "error": {"message": str(error),
                                                              "since": since}}  # fmt: skip
            return
        workloads = tables.workloads(seen)
        self._sample(int(now), workloads["workloads"])
        for node in seen.nodes:
            self._seen[node.registration.node] = now
        snapshot: Snapshot = {
            "circle": self._circle.id,
            "generatedAt": now,
            "revision": seen.revision,
            "error": None,
            "chain": self._chain,
            "nodes": tables.nodes(seen),
            "seen": dict(self._seen),  # the lease is the heartbeat: when each was last held
            "workloads": workloads,
            "assignments": tables.assignments(seen),
            "volumes": tables.volumes(seen),
            "events": {
                "circle": self._circle.id,
                "events": tables.events(found, limit=MAX_EVENTS),
                "unverified": forged,
            },
            "history": {
                name: [list(sample) for sample in samples]
                for name, samples in sorted(self._history.items())
            },
        }
        with self._lock:
            self._snapshot = snapshot

    def _read_chain(self, now: int) -> None:
        """The chain page and the circle whose nodes' keys check the store's records: the
        approved head's (an unapproved commit on main admits no node), else main's tip."""
        refs = refs_of(self.sources.repo)
        if refs == self._refs and self._circle is not None:
            return
        try:
            chain = chain_page(self.sources.repo, now)
        except ReconcilerError as error:  # the rest of the circle is still worth showing
            chain = {"error": str(error).splitlines()[0], "head": None, "approved": [],
                     "proposals": [], "moreProposals": 0, "foreignRoots": []}  # fmt: skip
        head = chain["head"]
        if head is not None:
            self._circle = view.circle_at(self.sources.repo, head["commit"])
        else:
            self._circle = view.circle_from(self.sources.repo, None)
        self._chain = chain
        self._refs = refs

    def _sample(self, now: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            samples = self._history.setdefault(row["name"], deque(maxlen=HISTORY))
            samples.append((now, row["desired"], row["ready"], row["load"]))
        for gone in set(self._history) - {row["name"] for row in rows}:
            del self._history[gone]
