"""A node folder belongs to one agent at a time: a second `circle node run` on it is refused
before it touches anything (two would adopt, stop and clean up each other's replicas, secrets
and installs), and the agent that holds it first removes what a killed install left there.
Real agent processes against a real SQLite store and a real circle repository."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.node.agent import AGENT_LOCK
from tests.conftest import Result
from tests.reconciler.node.world import World, make_world, release, run_agent


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> Iterator[World]:
    made = make_world(tmp_path, circle)
    yield made
    release(made)


def wait_for(check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)


def test_a_second_agent_on_one_folder_is_refused_and_changes_nothing(world: World) -> None:
    folder = world.root / "node-a"
    folder.mkdir(mode=0o700)
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    leftover = artifacts / ".staging-killed"  # what an install killed mid-way leaves
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "half-written").write_bytes(b"x" * 4096)
    installed = artifacts / ("0" * 64)  # an ordinary entry beside it is not the sweep's
    installed.mkdir()

    first = run_agent(world, "node-a")
    try:
        lock = folder / AGENT_LOCK
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        wait_for(lambda: not leftover.exists())
        assert installed.is_dir()
        assert "removed 1 unfinished install(s)" in (world.root / "node-a.log").read_text()

        working = artifacts / ".staging-working"  # as if the first were installing now
        working.mkdir()
        second = subprocess.run(
            list(first.args),  # the very same command line
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1, second.stderr  # one line, no traceback
        assert f"{folder}: another agent runs on this node folder (pid {first.pid})" in (
            second.stderr
        )
        assert first.poll() is None  # the first one runs on
        assert lock.read_text().strip() == str(first.pid)
        assert working.is_dir()  # the refused one swept nothing
    finally:
        stop(first)

    # The lock goes with its process: the next agent on the folder runs.
    again = run_agent(world, "node-a")
    try:
        wait_for(lambda: (folder / AGENT_LOCK).read_text().strip() == str(again.pid))
        assert again.poll() is None
    finally:
        stop(again)
    assert os.stat(folder / AGENT_LOCK).st_mode & 0o077 == 0
