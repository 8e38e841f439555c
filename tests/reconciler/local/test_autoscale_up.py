"""Autoscaling inside the approved envelope, end to end: `circle up` on the example with a low
target, real load on the replicas' /predict, the leader scales up to the approved max (no new
commit), says why in an event, and scales back down to the min once the load is gone and the
stabilization window has passed."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import copy_example, run_circle_process
from tests.reconciler.local.test_circle_up import events, wait_for
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow


def workloads(site: Path) -> dict[str, Any]:
    done = run_circle_process("get", "workloads", "--repo", str(site / "circle"),
                              "--store", f"sqlite:{site / 'state.db'}", "-o", "json")  # fmt: skip
    assert done.code == 0, done.stderr
    (langid,) = json.loads(done.stdout)["workloads"]
    return dict(langid)


def load(endpoints: list[str], stop: threading.Event) -> None:
    body = json.dumps({"text": "Der Hund schläft im Haus."}).encode()
    while not stop.is_set():
        for endpoint in endpoints:
            request = urllib.request.Request(
                f"http://{endpoint.split('=', 1)[1]}/v1/predict",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(request, timeout=5).read()
            except OSError:
                time.sleep(0.05)


def test_load_scales_up_to_the_approved_max_and_back_down_after_the_window(
    tmp_path: Path,
) -> None:
    needs_sandbox()
    repo = copy_example(tmp_path / "repo")
    workload = repo / "workloads" / "langid.yaml"
    text = workload.read_text()
    assert "  target: 200\n" in text
    workload.write_text(text.replace("  target: 200\n", "  target: 5\n  cooldown: 8s\n"))
    site = tmp_path / "up"
    stop = threading.Event()
    try:
        done = run_circle_process("up", str(repo), "--dir", str(site), "--ttl", "3", "-o", "json")
        assert done.code == 0, done.stderr
        (langid,) = json.loads(done.stdout)["workloads"]
        assert (langid["ready"], langid["wanted"]) == (2, 2)
        workers = [
            threading.Thread(target=load, args=(langid["endpoints"], stop), daemon=True)
            for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        wait_for(lambda: workloads(site)["ready"] == 4, 90, "4 Ready under load")
        row = workloads(site)
        assert row["desired"] == 4
        assert row["replicas"] == 2  # the approved document is unchanged: no new commit
        assert row["autoscale"] == {"min": 2, "max": 4, "metric": "requests-per-second",
                                    "target": 5.0}  # fmt: skip
        scaled = [e for e in events(site) if e["reason"] == "Scaled"]
        assert scaled, "no Scaled event"
        assert scaled[0]["object"] == "workload/langid"
        assert "rps per replica > target 5" in scaled[0]["message"]
        assert scaled[0]["message"].startswith("langid 2 -> ")
        # up to the approved max, in one step or more, never past it
        assert any(e["message"].startswith(("langid 2 -> 4", "langid 3 -> 4")) for e in scaled)
        assert not any("-> 5" in e["message"] for e in scaled)

        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        wait_for(lambda: workloads(site)["placed"] == 2, 90, "back to 2 without load")
        down = [e for e in events(site) if e["reason"] == "Scaled" and "-> 2" in e["message"]]
        assert down, [e["message"] for e in events(site) if e["reason"] == "Scaled"]
        assert "< target 5" in down[-1]["message"]
    finally:
        stop.set()
        run_circle_process("down", "--dir", str(site), "--purge")
    assert not site.exists()
