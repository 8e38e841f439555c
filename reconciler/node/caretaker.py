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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from qss.errors import StorageError
from qss.reports import ObjectHealth, ShareStatus
from reconciler.desired.repository import DesiredState
from reconciler.errors import ReconcilerError
from reconciler.wiring import volume_store


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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
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
            try:
                health = store.scrub(object_id)
                if not health.lost:
                    self._told.pop(about, None)
                    continue
                label = f"{name}/{health.manifest.content.name}"
                message = f"{label}: {_lost(health)}; margin {health.margin}"
                self._say(True, "VolumeDegraded", name, message, about)
                result = store.repair(object_id, health)
                after = store.scrub(object_id)
            except (StorageError, ReconcilerError) as error:
                message = f"{name}/{object_id[:12]}: {error}"
                self._say(True, "VolumeRepairFailed", name, message, about)
                continue
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


def _lost(health: ObjectHealth) -> str:
    bad = [s for s in health.shares if s.status is not ShareStatus.HEALTHY]
    return ", ".join(f"share {s.share} on {s.backend} {s.status.value}" for s in bad)
