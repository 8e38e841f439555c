"""`circle up` end to end, with real processes: the example circle comes up from nothing and
answers; run again, it starts nothing twice; a change with one owner's approval changes
nothing, with the quorum's it is applied at once; a node killed with SIGKILL (agent and
replicas) is healed elsewhere; `circle up` brings the node back; `circle down --purge` leaves
no process, control group or file behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import Result, git, run_circle_process
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.25)


def up(site: Path, *extra: str) -> Result:
    return run_circle_process("up", "--dir", str(site), "--ttl", "3", *extra)


def status(site: Path) -> Any:
    done = run_circle_process("status", "--dir", str(site), "-o", "json")
    assert done.code in (0, 1), done.stderr
    return json.loads(done.stdout)


def assignments(site: Path) -> list[dict[str, Any]]:
    done = run_circle_process("get", "assignments", "--repo", str(site / "circle"),
                              "--store", f"sqlite:{site / 'state.db'}", "-o", "json")  # fmt: skip
    assert done.code == 0, done.stderr
    return list(json.loads(done.stdout)["assignments"])


def events(site: Path) -> list[dict[str, Any]]:
    done = run_circle_process("events", "--repo", str(site / "circle"),
                              "--store", f"sqlite:{site / 'state.db'}", "-o", "json")  # fmt: skip
    assert done.code == 0, done.stderr
    return list(json.loads(done.stdout))


def predict(endpoint: str) -> str:
    request = urllib.request.Request(
        f"http://{endpoint.split('=', 1)[1]}/v1/predict",
        data=json.dumps({"text": "Le chien et le chat dorment dans la maison."}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["language"])


def replica_pids(site: Path, node: str) -> set[int]:
    record = json.loads((site / "up.json").read_text())
    found: set[int] = set()
    for base in record["cgroupBases"]:
        for folder, _, files in os.walk(Path(base) / node):
            if "cgroup.procs" in files:
                found |= {int(p) for p in (Path(folder) / "cgroup.procs").read_text().split()}
    return found


def ready_on(site: Path) -> list[str]:
    return sorted(row["node"] for row in assignments(site) if row["phase"] == "Ready")


def test_circle_up_heals_applies_the_quorum_and_goes_down_clean(tmp_path: Path) -> None:
    needs_sandbox()
    site = tmp_path / "up"
    try:
        done = up(site, "-o", "json")
        assert done.code == 0, done.stderr
        first = json.loads(done.stdout)
        assert first["converged"] is True
        (langid,) = first["workloads"]
        assert (langid["ready"], langid["wanted"]) == (2, 2)
        assert [predict(endpoint) for endpoint in langid["endpoints"]] == ["fr", "fr"]
        pids = {agent["node"]: agent["pid"] for agent in first["agents"]}
        assert len(pids) == 3
        assert all(pids.values())

        # Again: it reports, and starts nothing twice.
        again = up(site)
        assert again.code == 0, again.stderr
        assert "nothing to start" in again.stdout
        assert "curl -s http://127.0.0.1:" in again.stdout
        assert {a["node"]: a["pid"] for a in status(site)["agents"]} == pids

        # One owner's approval is not the quorum: nothing changes.
        repo = site / "circle"
        workload = repo / "workloads" / "langid.yaml"
        workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
        git(repo, "commit", "-qam", "langid: three replicas")
        keys = site / "keys" / "owners"
        alice = run_circle_process("approve", "--repo", str(repo), "--key", str(keys / "alice"))
        assert alice.code == 0, alice.stderr
        time.sleep(2)
        assert len(assignments(site)) == 2
        # The second one's is: the nodes follow at once, and the new slot spreads.
        bob = run_circle_process("approve", "--repo", str(repo), "--key", str(keys / "bob"))
        assert bob.code == 0, bob.stderr
        wait_for(lambda: len(ready_on(site)) == 3, 60, "3/3 Ready after the quorum")
        assert ready_on(site) == ["node-a", "node-b", "node-c"]
        assert all(row["seq"] == 1 for row in assignments(site))  # scaling rolls nothing

        # A node lost with everything it ran: its replica comes back elsewhere.
        leader = status(site)["leader"]
        victim = next(node for node in ("node-a", "node-b", "node-c") if node != leader)
        os.kill(pids[victim], signal.SIGKILL)
        for pid in replica_pids(site, victim):
            with contextlib.suppress(ProcessLookupError):  # it may end while the rest goes
                os.kill(pid, signal.SIGKILL)

        def healed() -> bool:
            on = ready_on(site)
            return len(on) == 3 and victim not in on

        wait_for(healed, 60, f"3/3 Ready without {victim}")
        said = {(e["reason"], e["object"]) for e in events(site)}
        assert ("NodeLost", f"node/{victim}") in said
        assert not status(site)["converged"] or victim not in status(site)["nodes"]

        # circle up brings the lost node back, and only it.
        back = up(site)
        assert back.code == 0, back.stderr
        assert f"started {victim} (2 already running)" in back.stdout
        now = {a["node"]: a["pid"] for a in status(site)["agents"]}
        assert now[victim] != pids[victim]
        assert {n: p for n, p in now.items() if n != victim} == {
            n: p for n, p in pids.items() if n != victim
        }
    finally:
        down = run_circle_process("down", "--dir", str(site), "--purge", "-o", "json")
    assert down.code == 0, down.stderr
    assert down.json()["purged"] is True
    assert sorted(down.json()["stopped"]) == ["node-a", "node-b", "node-c"]
    assert not site.exists()
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(site) in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []
