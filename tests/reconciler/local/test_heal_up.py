"""Self-healing on `circle up`, each case an event with its reason:

- drift: an assignment deleted from the store is written again by the leader; a workload's
  process killed behind the agent's back is restarted in place;
- QSS: a backend's shares deleted and another's corrupted are found by the leader's scrub and
  rebuilt without the data key, and the volume is whole again (`circle qss scrub` exits 0);
- the leader lost (SIGKILL): another agent leads within the lease TTL, under a newer epoch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from reconciler.node.layout import Layout
from reconciler.store import open_store
from tests.conftest import run_circle_process
from tests.reconciler.local.test_circle_up import (
    assignments,
    events,
    replica_pids,
    status,
    wait_for,
)
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def said(site: Path, reason: str) -> list[dict[str, Any]]:
    return [e for e in events(site) if e["reason"] == reason]


def test_drift_lost_shares_and_a_lost_leader_are_healed(tmp_path: Path) -> None:
    needs_sandbox()
    site = tmp_path / "up"
    try:
        done = run_circle_process("up", "--dir", str(site), "--ttl", "3",
                                  "--scrub-interval", "2", "-o", "json")  # fmt: skip
        assert done.code == 0, done.stderr
        first = json.loads(done.stdout)

        # An assignment deleted from the store: the leader writes it again.
        with open_store(f"sqlite:{site / 'state.db'}") as store:
            keys = [kv.key for kv in store.range(Layout(first["circle"]).assignments).kvs]
            assert len(keys) == 2
            store.delete(keys[0])

        def restored() -> bool:
            rows = assignments(site)
            return len(rows) == 2 and all(row["phase"] == "Ready" for row in rows)

        wait_for(restored, 60, "the deleted assignment back and Ready")
        assert [e for e in said(site, "Scheduled") if "has no replica" in e["message"]]

        # The service killed behind the agent's back: restarted in place.
        row = assignments(site)[0]
        victims = replica_pids(site, row["node"])
        service = [
            p for p in victims if b"langid_service" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert service
        for pid in service:
            os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            again = [r for r in assignments(site) if r["slot"] == row["slot"]]
            return bool(again) and again[0]["restarts"] >= 1 and again[0]["phase"] == "Ready"

        wait_for(restarted, 60, "the killed service restarted and Ready")

        # Shares lost and corrupted: scrubbed, rebuilt, whole again.
        ghent = site / "qss" / "ghent-1"
        cairo = site / "qss" / "cairo-1"
        lost = [p for p in ghent.rglob("*") if p.is_file()]
        assert lost
        for path in lost:
            path.unlink()
        corrupt = next(p for p in cairo.rglob("*") if p.is_file() and p.stat().st_size > 64)
        data = bytearray(corrupt.read_bytes())
        data[len(data) // 2] ^= 0xFF
        corrupt.write_bytes(bytes(data))

        wait_for(lambda: bool(said(site, "VolumeRepaired")), 60, "VolumeRepaired")
        (degraded, *_) = said(site, "VolumeDegraded")
        assert degraded["object"] == "volume/model-data"
        assert "langid-model.json" in degraded["message"]
        assert "ghent-1 missing" in degraded["message"] or "ghent-1" in degraded["message"]
        repaired = said(site, "VolumeRepaired")[-1]
        assert "without the data key" in repaired["message"]
        assert "fully healthy" in repaired["message"]
        scrub = run_circle_process("qss", "scrub", "--volume", "model-data",
                                   "--repo", str(site / "circle"))  # fmt: skip
        assert scrub.code == 0, scrub.stdout + scrub.stderr

        # The leader lost: another one within the TTL, under a newer epoch.
        before = status(site)
        leader, epoch = before["leader"], before["epoch"]
        pid = next(a["pid"] for a in before["agents"] if a["node"] == leader)
        os.kill(pid, signal.SIGKILL)

        def new_leader() -> bool:
            now = status(site)
            return now["leader"] not in (None, leader) and (now["epoch"] or 0) > epoch

        wait_for(new_leader, 3 + 10, "a new leader")
        elected = [e for e in said(site, "LeaderElected") if leader not in e["message"]]
        assert elected
        wait_for(lambda: len([r for r in assignments(site) if r["phase"] == "Ready"]) == 2,
                 60, "2 Ready under the new leader")  # fmt: skip
    finally:
        run_circle_process("down", "--dir", str(site), "--purge")
    assert not site.exists()
