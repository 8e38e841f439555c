"""Pre-staging for real (ADR 0008, issue 15 part 3): two `circle node run` processes follow a
real circle whose workload runs v1 in their sandboxes, one replica each. A proposal moving it
to v2 gets one approval of the two its rule needs: both nodes stage v2 (ArtifactStaged) and go
on running v1. The second approval lands: the rolling update starts v2 from the staged trees
with the artifact source gone, so nothing can have been fetched (ArtifactStageUsed). Then v3
is staged, a bit of each staged tree is flipped (what a crash before the switch could leave),
and the quorum's starts are refused (ArtifactTampered) and v3 rebuilt from verified chunks
before it runs."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builders.chunks import ChunkStore
from builders.manifest import decode
from builders.materialize import verify_tree
from builders.tree import TreeBuild, build_tree
from reconciler.node import view
from reconciler.node.prestage import subject_of
from reconciler.node.records import EventRecord, Phase
from reconciler.store import open_store
from tests.builders.test_rapid_start import flip_bit
from tests.conftest import Result, git
from tests.reconciler.node.runtime_world import needs_sandbox
from tests.reconciler.node.world import (
    World,
    make_world,
    pin_sleeper,
    release,
    run_agent,
    stop_agents,
)

pytestmark = pytest.mark.slow

AGENTS = ("node-a", "node-b")


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.2)


def said(world: World) -> list[EventRecord]:
    with open_store(world.store()) as store:
        return view.events(store, view.circle_from(world.circle, None))[0]


def ready(world: World, digest: str) -> set[str]:
    """The nodes whose replica runs `digest` and is Ready, once both replicas do (else none)."""
    with open_store(world.store()) as store:
        placed = view.read(store, view.circle_from(world.circle, None)).assignments
    done = [
        item.assignment.node
        for item in placed
        if item.assignment.digest == digest
        and item.status is not None
        and item.status.phase is Phase.READY
    ]
    return set(done) if len(placed) == len(done) == 2 else set()


def told(world: World, reason: str, digest: str) -> set[str]:
    """The nodes that said `reason` of `digest`."""
    subject = subject_of(digest)
    found = {
        event.node for event in said(world) if (event.reason, event.object) == (reason, subject)
    }
    return {node for node in found if node is not None}


def artifact(root: Path, store: ChunkStore, payload: bytes) -> str:
    folder = root / f"src-{secrets.token_hex(4)}"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "payload.bin").write_bytes(payload)
    manifest = build_tree(TreeBuild(folder, labels={"builder": "archive"}), store)
    store.put_manifest(manifest.artifact_id, manifest.encode())
    return manifest.artifact_id


def propose(world: World, digest: str) -> None:
    """The workload at `digest`, committed on main: approved by nobody yet."""
    pin_sleeper(world.circle, digest)
    git(world.circle, "commit", "-q", "-am", f"langid at {digest[:19]}")


def approve(world: World, circle: Callable[..., Result], who: str) -> None:
    done = circle("approve", "--repo", str(world.circle), "--key", str(world.keys / who))
    assert done.code == 0, done.stderr


def test_a_node_stages_a_proposal_on_one_approval_and_switches_on_the_quorum(
    tmp_path: Path, circle: Callable[..., Result]
) -> None:
    needs_sandbox()
    source = ChunkStore(tmp_path / "source")
    block = secrets.token_bytes(1 << 20)
    v1 = artifact(tmp_path, source, block * 4)
    v2 = artifact(tmp_path, source, block * 3 + secrets.token_bytes(1 << 20))
    v3 = artifact(tmp_path, source, secrets.token_bytes(4 << 20))

    def minimal(repo: Path) -> None:
        for folder in ("volumes", "secrets"):
            shutil.rmtree(repo / folder, ignore_errors=True)
        pin_sleeper(repo, v1)

    world = make_world(tmp_path, circle, minimal)
    agents = [
        run_agent(world, name, "--artifact-source", str(source.root), "--prestage-budget", "64Mi")
        for name in AGENTS
    ]
    try:
        wait_for(lambda: ready(world, v1) == set(AGENTS), 120, "v1 Ready on both nodes")

        propose(world, v2)
        approve(world, circle, "alice")  # one of the two the workloads rule needs
        wait_for(lambda: told(world, "ArtifactStaged", v2) == set(AGENTS), 60, "v2 staged")
        manifest = decode(source.get_manifest(v2), v2)
        for name in AGENTS:
            verify_tree(tmp_path / name / "artifacts" / v2.removeprefix("sha256:"), manifest)
        assert ready(world, v1) == set(AGENTS)  # staged, never run

        gone = source.root.with_name("source-gone")
        source.root.rename(gone)  # from now on no byte of v2 can be fetched
        approve(world, circle, "bob")
        wait_for(lambda: bool(ready(world, v2)), 120, "v2 Ready")
        assert told(world, "ArtifactStageUsed", v2) == ready(world, v2)
        gone.rename(source.root)

        propose(world, v3)
        approve(world, circle, "alice")
        wait_for(lambda: told(world, "ArtifactStaged", v3) == set(AGENTS), 60, "v3 staged")
        files = [tmp_path / n / "artifacts" / v3.removeprefix("sha256:") / "data" / "payload.bin"
                 for n in AGENTS]  # fmt: skip
        original = files[0].read_bytes()
        for staged in files:
            flip_bit(staged, 123_457)  # a crash before the switch left this
        approve(world, circle, "bob")
        wait_for(lambda: bool(ready(world, v3)), 120, "v3 Ready")
        tampered = [e for e in said(world) if e.reason == "ArtifactTampered"]
        assert {str(e.node) for e in tampered} == ready(world, v3)
        assert all("payload.bin" in e.message for e in tampered)
        assert told(world, "ArtifactStageUsed", v3) == set()
        for name, staged in zip(AGENTS, files, strict=True):
            if name in ready(world, v3):
                assert staged.read_bytes() == original  # rebuilt from verified chunks
    finally:
        stop_agents(agents)
        release(world)
