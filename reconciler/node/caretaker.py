"""The leader's care of the circle's volumes: every `interval` seconds, each object of each
volume of the approved state is scrubbed (every block of every share read and hash-checked)
and, where a share is missing, corrupt or unreachable, repaired from any k healthy shares on
backends that hold none of it yet. Repair needs no data key: shares are rebuilt from shares
(`qss.store.Store.repair`), so the leader never holds what it could read the data with.

It works from a thread of its own (a scrub reads every byte) and tells the agent what it found
as events, which the agent signs and stores from its own loop:

    VolumeDegraded      (Warning) an object lost shares: which, where, its margin
    VolumeRepaired      (Normal)  shares rebuilt, where, the margin now
    VolumeRepairFailed  (Warning) fewer than k shares left, or no backend to rebuild on
    VolumeUnreachable   (Warning) a backend could not be listed (its objects not checked)

A healthy object says nothing; an object is told about again only when what is wrong changes.
Every scrub is also kept as `Scrubbed` (the last one per object, `latest`; the new ones by
`take_scrubbed`), which the agent signs into the store for `circle get volumes` and the
dashboard. The first round comes a few seconds after the start, then every `interval`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qss.errors import StorageError
from qss.reports import ObjectHealth, ShareStatus
from reconciler.desired.repository import DesiredState
from reconciler.errors import ReconcilerError
from reconciler.node.records import ShareState, VolumeStatus, fit_message
from reconciler.plan.inputs import NodeName
from reconciler.wiring import volume_store

FIRST_ROUND = 5.0  # seconds after the start: a new leader shows its volumes' health soon


@dataclass(frozen=True)
class Scrubbed:
    """The last scrub of one object: what it found, when, and the rebuilds so far."""

    volume: str
    object_id: str
    health: ObjectHealth
    at: float  # unix seconds
    repairs: int  # shares rebuilt since this caretaker started
    repaired_at: float | None


@dataclass(frozen=True)
class Finding:
    warning: bool
    reason: str
    volume: str
    message: str


class Caretaker:
    """Scrubs and repairs the volumes of `desired()` every `interval` s while `active()`."""

    def __init__(
        self,
        interval: float,
        desired: Callable[[], DesiredState | None],
        active: Callable[[], bool],
        on_finding: Callable[[], None],
    ) -> None:
        self.interval = interval
        self._desired = desired
        self._active = active
        self._on_finding = on_finding
        self._findings: list[Finding] = []
        self._told: dict[tuple[str, str], str] = {}  # (volume, object id) -> what was said
        self.latest: dict[tuple[str, str], Scrubbed] = {}  # (volume, object id) -> last scrub
        self._scrubbed: list[Scrubbed] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caretaker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def take(self) -> list[Finding]:
        with self._lock:
            found, self._findings = self._findings, []
        return found

    def snapshot(self) -> list[Scrubbed]:
        """The last scrub of every object, for readers on other threads."""
        with self._lock:
            return list(self.latest.values())

    def take_scrubbed(self) -> list[Scrubbed]:
        with self._lock:
            found, self._scrubbed = self._scrubbed, []
        return found

    def _run(self) -> None:
        wait = min(self.interval, FIRST_ROUND)
        while not self._stop.wait(wait):
            wait = self.interval
            desired = self._desired()
            if desired is None or not self._active():
                continue
            for name in sorted(desired.volumes):
                if self._stop.is_set() or not self._active():
                    break
                self.care(desired, name)

    def care(self, desired: DesiredState, name: str) -> None:
        """One round over volume `name`: scrub each object, repair what lost shares."""
        try:
            store = volume_store(desired, name).store
            inventory = store.object_ids()
        except (StorageError, ReconcilerError) as error:
            self._say(True, "VolumeUnreachable", name, f"volume {name}: {error}", ("", ""))
            return
        for failure in inventory.failed:
            message = (
                f"volume {name}: backend {failure.backend} could not be listed: "
                f"{failure.reason}; its objects were not checked"
            )
            self._say(True, "VolumeUnreachable", name, message, ("", failure.backend))
        for object_id in sorted(inventory.ids):
            about = (name, object_id)
            health: ObjectHealth | None = None
            try:
                health = store.scrub(object_id)
                if not health.lost:
                    self._told.pop(about, None)
                    self._keep(about, health)
                    continue
                label = f"{name}/{health.manifest.content.name}"
                message = f"{label}: {_lost(health)}; margin {health.margin}"
                self._say(True, "VolumeDegraded", name, message, about)
                result = store.repair(object_id, health)
                after = store.scrub(object_id)
            except (StorageError, ReconcilerError) as error:
                message = f"{name}/{object_id[:12]}: {error}"
                self._say(True, "VolumeRepairFailed", name, message, about)
                if health is not None:
                    self._keep(about, health)
                continue
            self._keep(about, after, rebuilt=len(result.repaired))
            rebuilt = [
                f"share {n} on {site.backend}" for n, site in sorted(result.repaired.items())
            ]
            state = "fully healthy" if not after.lost else _lost(after)
            message = (
                f"{label}: rebuilt {', '.join(rebuilt) or 'nothing'} without the data key; "
                f"{state}, margin {after.margin}"
            )
            self._say(False, "VolumeRepaired", name, message, about, force=True)
            if not after.lost:
                self._told.pop(about, None)

    def _keep(self, about: tuple[str, str], health: ObjectHealth, rebuilt: int = 0) -> None:
        now = time.time()
        before = self.latest.get(about)
        repairs = (before.repairs if before else 0) + rebuilt
        repaired_at = now if rebuilt else (before.repaired_at if before else None)
        scrubbed = Scrubbed(about[0], about[1], health, now, repairs, repaired_at)
        with self._lock:
            self.latest[about] = scrubbed
            self._scrubbed.append(scrubbed)

    def _say(
        self,
        warning: bool,
        reason: str,
        volume: str,
        message: str,
        about: tuple[str, str],
        *,
        force: bool = False,
    ) -> None:
        said = f"{reason}: {message}"
        if not force and self._told.get(about) == said:
            return
        self._told[about] = said
        with self._lock:
            self._findings.append(Finding(warning, reason, volume, message))
        self._on_finding()


def volume_status(node: str, scrubbed: Scrubbed) -> VolumeStatus:
    """The record of a scrub, as node `node` signs it into the store."""
    health = scrubbed.health
    content = health.manifest.content
    return VolumeStatus(
        node=NodeName(node),
        volume=scrubbed.volume,
        object=scrubbed.object_id,
        name=_fit(content.name, 255),
        k=content.k,
        n=content.n,
        shares=tuple(
            ShareState(s.share, _fit(s.backend, 128), _fit(s.failure_domain, 128), s.status.value)
            for s in sorted(health.shares, key=lambda share: share.share)
        ),
        margin=health.margin,
        scrubbed_at=int(scrubbed.at),
        repairs=scrubbed.repairs,
        repaired_at=None if scrubbed.repaired_at is None else int(scrubbed.repaired_at),
    )


def _fit(text: str, most: int) -> str:
    """`text` as one line of at most `most` bytes of UTF-8, never empty."""
    return fit_message(text).encode()[:most].decode("utf-8", "ignore") or "-"


def _lost(health: ObjectHealth) -> str:
    bad = [s for s in health.shares if s.status is not ShareStatus.HEALTHY]
    return ", ".join(f"share {s.share} on {s.backend} {s.status.value}" for s in bad)
