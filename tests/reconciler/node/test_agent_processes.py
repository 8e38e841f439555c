"""Three real `circle node run` processes on one SQLite store, following a real circle: they
register, elect one leader and place the example's replicas over the failure domains; the
leader killed with SIGKILL is replaced within its lease and its replica moves, nothing placed
twice; a node stopped with SIGTERM exits 0 and gives its lease back at once."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.node import view
from reconciler.node.records import EventRecord
from reconciler.store import open_store
from tests.conftest import Result
from tests.reconciler.node.world import NODES, World, make_world, release, run_agent
from tests.reconciler.store.etcd_process import find_etcd, running_etcd

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("the circle did not get there in time")


def seen(world: World) -> view.View:
    with open_store(world.store()) as store:
        return view.read(store, view.circle_from(world.circle, None))


def said(world: World) -> list[EventRecord]:
    with open_store(world.store()) as store:
        return view.events(store, view.circle_from(world.circle, None))[0]


def placed(world: World) -> dict[int, str]:
    """slot -> node; fails if a slot is held twice."""
    found: dict[int, str] = {}
    for item in seen(world).assignments:
        assert item.assignment.slot not in found, "a slot placed twice"
        found[item.assignment.slot] = item.assignment.node
    return found


def test_three_agents_form_a_circle_heal_and_hand_over(
    tmp_path: Path, circle: Callable[..., Result]
) -> None:
    converge_and_heal(make_world(tmp_path, circle))


def test_the_same_circle_on_a_real_etcd(tmp_path: Path, circle: Callable[..., Result]) -> None:
    executable = find_etcd()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("etcd not found: bash .ci/setup --test fetches it")
        pytest.skip("etcd not found (bash .ci/setup --test fetches it)")
    (tmp_path / "etcd").mkdir()
    with running_etcd(executable, tmp_path / "etcd") as server:
        world = dataclasses.replace(make_world(tmp_path, circle), store_url=server.url)
        converge_and_heal(world)


def converge_and_heal(world: World) -> None:
    agents: dict[str, subprocess.Popen[str]] = {name: run_agent(world, name) for name in NODES}
    try:
        wait_for(lambda: len(seen(world).nodes) == 3 and len(placed(world)) == 2)
        first = seen(world)
        assert first.leader in NODES
        assert first.forged == 0
        domains = {n.registration.node: n.registration.failure_domain for n in first.nodes}
        assert len({domains[node] for node in placed(world).values()}) == 2  # spread

        old = first.leader
        assert old is not None
        held = old in placed(world).values()
        agents[old].send_signal(signal.SIGKILL)
        agents[old].wait(timeout=30)
        wait_for(lambda: seen(world).leader not in (None, old), seconds=30)
        wait_for(lambda: len(placed(world)) == 2 and old not in placed(world).values())
        assert seen(world).epoch != first.epoch
        # The new leader never saw the old one's registration, yet says it lost the node
        # whose slots it moves.
        lost = [e.object for e in said(world) if e.reason == "NodeLost"]
        assert lost.count(f"node/{old}") == (1 if held else 0), lost

        now = seen(world)
        follower = next(name for name in NODES if name not in (old, now.leader))
        agents[follower].send_signal(signal.SIGTERM)
        assert agents[follower].wait(timeout=30) == 0
        assert follower not in {n.registration.node for n in seen(world).nodes}  # at once
        wait_for(lambda: len(placed(world)) >= 1 and follower not in placed(world).values())
    finally:
        for process in agents.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        release(world)
