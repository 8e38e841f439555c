"""The fault run, seeded and repeatable: on `circle up` (three nodes, 3 s leases), while a
rolling update is under way, random agents (the leader among them) are killed with SIGKILL 50
times at random moments and brought back, then one agent is frozen with SIGSTOP for longer than
its lease. Afterwards:

- the circle converges to the approved state (every slot at the new version, Ready);
- no replica of one assignment ever ran on two nodes at once while both agents were running
  and had had a lease's time to see the newer epoch (sampled every 0.2 s from the replicas'
  control groups and records);
- the event log has no gap (each agent's events are numbered 1, 2, 3 ... per process);
- every state file is intact (chain state, agent status, uid table, pid files, up.json).

CIRCLE_FAULT_SEED picks another run; the seed is printed when a run fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.chain.node_state import load as load_state
from reconciler.local import agents
from reconciler.local.site import Site
from reconciler.node import view
from tests.conftest import git, run_circle_process
from tests.reconciler.local.test_circle_up import assignments, events, wait_for
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CIRCLE_FAULT_SEED", "1717"))
KILLS = 50
TTL = 3
NODES = ("node-a", "node-b", "node-c")


class Watcher:
    """Samples which node runs a replica of which (slot, seq), and the agents' states."""

    def __init__(self, site: Site, bases: list[str]) -> None:
        self.site, self.bases = site, bases
        self.down: dict[str, float] = {}  # node -> since when its agent is dead or frozen
        self.back: dict[str, float] = dict.fromkeys(NODES, 0.0)  # when it last came back
        self.violations: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=10)

    def _running(self) -> dict[tuple[int, int], set[str]]:
        """(slot, seq) -> nodes where a replica of it has processes now."""
        found: dict[tuple[int, int], set[str]] = {}
        for node in NODES:
            for base in self.bases:
                for group in (Path(base) / node).glob("langid.*"):
                    procs = group / "cgroup.procs"
                    with contextlib.suppress(OSError):
                        if not procs.read_text().split():
                            continue
                        slot = int(group.name.split(".")[1])
                        record = self.site.node_dir(node) / "replicas" / "langid" / str(slot)
                        seq = _seq_of(record)
                        if seq is not None:
                            found.setdefault((slot, seq), set()).add(node)
                break  # one hierarchy (pids) says it
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            self.samples += 1
            for (slot, seq), nodes in self._running().items():
                if len(nodes) < 2:
                    continue
                # Both agents up, and each had a lease's time (and a pass) to see the epoch.
                settled = [
                    n for n in nodes if n not in self.down and now - self.back[n] > 2 * TTL + 2
                ]
                if len(settled) >= 2:
                    self.violations.append(
                        f"slot {slot} seq {seq} runs on {sorted(nodes)} at +{now:.1f}"
                    )


def _seq_of(record: Path) -> int | None:
    """The seq of the assignment a replica folder's identity names."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        found = json.loads((record / "assignment.json").read_text())
        return int(found["seq"])
    return None


def change(site: Site, env: str) -> None:
    workload = site.repo / "workloads" / "langid.yaml"
    text = re.sub(r'\n  FAULT_ROUND: "\d+"', "", workload.read_text())
    marker = 'PYTHONUNBUFFERED: "1"'
    workload.write_text(text.replace(marker, f'{marker}\n  FAULT_ROUND: "{env}"', 1))
    git(site.repo, "commit", "-qam", f"langid: round {env}")
    for owner in ("alice", "bob"):
        done = run_circle_process("approve", "--repo", str(site.repo),
                                  "--key", str(site.owner_key(owner)))  # fmt: skip
        assert done.code == 0, done.stderr


def test_fifty_random_kills_and_a_freeze_during_a_rollout(tmp_path: Path) -> None:
    needs_sandbox()
    rng = random.Random(SEED)  # noqa: S311 - a repeatable run, not a secret
    site = Site(tmp_path / "up")
    try:
        done = run_circle_process("up", "--dir", str(site.root), "--ttl", str(TTL), "-o", "json")
        assert done.code == 0, done.stderr
        record = site.read_record()
        assert record is not None
        bases = [b for b in record.cgroup_bases if "/pids/" in b] or list(record.cgroup_bases[:1])
        watcher = Watcher(site, bases)
        with watcher.watching():
            change(site, "1")  # the rolling update the faults hit
            for kill in range(KILLS):
                if kill == KILLS // 2:
                    change(site, "2")  # a newer commit mid-run, pre-empting the first
                node = rng.choice(NODES)
                agent = agents.find(site, node)
                if agent is not None:
                    os.kill(agent.pid, signal.SIGKILL)
                    watcher.down[node] = time.monotonic()
                time.sleep(rng.uniform(0.05, 0.8))
                for name in NODES:  # what `circle up` does again: start what stopped
                    if agents.find(site, name) is None:
                        agents.start(site, record, name)
                        watcher.down.pop(name, None)
                        watcher.back[name] = time.monotonic()
                time.sleep(rng.uniform(0.05, 0.6))
            frozen = rng.choice(NODES)
            agent = agents.find(site, frozen)
            assert agent is not None
            watcher.down[frozen] = time.monotonic()
            os.kill(agent.pid, signal.SIGSTOP)
            time.sleep(TTL + 3)
            os.kill(agent.pid, signal.SIGCONT)
            watcher.down.pop(frozen)
            watcher.back[frozen] = time.monotonic()

            def converged() -> bool:
                rows = assignments(site.root)
                return len(rows) == 2 and all(
                    r["phase"] == "Ready" and r["seq"] == rows[0]["seq"] for r in rows
                )

            try:
                wait_for(converged, 180, f"convergence after the faults (seed {SEED})")
            except AssertionError:
                _tell(site)
                raise
            time.sleep(1)
        assert watcher.samples > 100
        assert watcher.violations == [], f"seed {SEED}"

        # The approved state: the newest approved commit's definition, seq 3, in both slots.
        rows = assignments(site.root)
        assert {r["seq"] for r in rows} == {3}, rows
        # Spread: both failure domains again, or, where the faults left both replicas in one
        # domain, said (SpreadShort): restoring it would stop a Ready replica below the ready
        # floor, which the planner never does (a known limit: no surge for a rebalance).
        if len({r["node"] for r in rows}) < 2:
            short = [e for e in events(site.root) if e["reason"] == "SpreadShort"]
            assert short, f"seed {SEED}: spread lost and not said"
            assert "failure domain" in short[-1]["message"]
        head = json.loads(run_circle_process("log", "--repo", str(site.repo), "-o", "json").stdout)
        approved = head[-1]["commit"]
        for node in NODES:
            state = load_state(site.node_dir(node) / "state.json")
            assert state is not None
            assert state.commit == approved, node
            assert view.status_file(site.node_dir(node))["node"] == node
            json.loads((site.node_dir(node) / "uids.json").read_text())
            assert agents.find(site, node) is not None
        assert site.read_record() == record

        # No gap: per node, the event numbers run 1, 2, 3 ... within each agent process (the
        # oldest may have been trimmed by the leader's bound, never one in the middle).
        numbers: dict[str, list[int]] = {}
        for event in sorted(_event_keys(site), key=lambda k: (k[0], k[2])):
            numbers.setdefault(event[1], []).append(event[2])
        for node, found in numbers.items():
            runs = _runs(found)
            for index, run in enumerate(runs):
                first = run[0] if index == 0 else 1
                assert run == list(range(first, first + len(run))), (node, run, f"seed {SEED}")
        assert sum(1 for e in events(site.root) if e["reason"] == "NodeLost") >= 1
    finally:
        run_circle_process("down", "--dir", str(site.root), "--purge")
    assert not site.root.exists()


def _tell(site: Site) -> None:
    """What the circle looks like, for a failed run's report."""
    print(json.dumps(assignments(site.root), indent=1))
    for event in events(site.root)[-40:]:
        print(event["node"], event["reason"], event["object"], event["message"])
    for node in NODES:
        log = site.log_file(node)
        print(f"--- {log}")
        print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))


def _event_keys(site: Site) -> list[tuple[int, str, int]]:
    """(ms, node, number) of every event key in the store."""
    from reconciler.store import open_store

    record = site.read_record()
    assert record is not None
    pattern = re.compile(rf"circles/{re.escape(record.circle)}/events/(\d+)-(.+)-(\d+)")
    with open_store(site.store_url) as store:
        keys = [kv.key for kv in store.range(f"circles/{record.circle}/events/").kvs]
    found = []
    for key in keys:
        match = pattern.fullmatch(key)
        assert match is not None, key
        found.append((int(match.group(1)), match.group(2), int(match.group(3))))
    return found


def _runs(numbers: list[int]) -> list[list[int]]:
    """Split a node's event numbers (by time) into one run per agent process: a run ends where
    the numbers start again from 1."""
    runs: list[list[int]] = []
    for number in numbers:
        if not runs or number == 1:
            runs.append([number])
        else:
            runs[-1].append(number)
    return runs
