"""A node's runtime for tests, with real parts: artifacts built by the archive builder into a
chunk store, a real `Runtime` on real bubblewrap sandboxes, real control groups (a group of
this test's own, removed after), real uids, and the control circuit's secrets laid out in the
node's folder as an agent keeps them (node key, chain state, store file, repository,
quarantine), so that a test can assert a workload reaches none of them.

    with RuntimeWorld.make(tmp_path) as world:
        digest = world.artifact({"main.py": "print('hi')"})
        world.run("hello", digest, ["python3", "/artifact/main.py"])
        world.wait_phase("hello", Phase.READY)
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from builders.chunks import ChunkStore
from builders.tree import TreeBuild, build_tree
from reconciler.desired.model.workload import Workload
from reconciler.desired.repository import DesiredState
from reconciler.files import remove_tree
from reconciler.node.artifacts import Artifacts
from reconciler.node.cgroups import CgroupError, Cgroups
from reconciler.node.identity import NodeKey
from reconciler.node.records import Phase
from reconciler.node.runtime import ReplicaStatus, Runtime, RuntimeConfig, RuntimeEvent, Work
from reconciler.node.sandbox import BWRAP
from reconciler.node.uids import UidTable
from reconciler.node.volumes import Volumes
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName

NODE = "node-a"
COMMIT = "c0" * 20
MIB = 1024 * 1024


def needs_sandbox() -> None:
    """Skip unless this machine can run sandboxes: root, bubblewrap, cgroups."""
    if os.geteuid() != 0:
        pytest.skip("the runtime needs root (bubblewrap without a user namespace)")
    if not os.access(BWRAP, os.X_OK):
        pytest.skip(f"{BWRAP} is missing: bash .ci/setup installs bubblewrap")


@dataclass
class RuntimeWorld:
    root: Path
    state: Path  # the node's folder, as `circle node run --state`
    source: ChunkStore  # where artifacts come from (the configured source)
    cgroup_parent: str
    runtime: Runtime
    events: list[RuntimeEvent] = field(default_factory=list)
    works: dict[tuple[str, int], Work] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        root: Path,
        *,
        grace: float = 2.0,
        check_interval: float = 10.0,
        storage_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> RuntimeWorld:
        needs_sandbox()
        state = root / "state"
        state.mkdir(mode=0o700)
        _control_circuit(state)
        source = ChunkStore(root / "source")
        parent = f"circle-test-{secrets.token_hex(4)}"
        runtime = make_runtime(
            state, source, parent, grace=grace, check_interval=check_interval,
            storage_key=storage_key, clock=clock,
        )  # fmt: skip
        return cls(root, state, source, parent, runtime)

    def __enter__(self) -> RuntimeWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runtime.close(stop=True)
        release_cgroups(self.cgroup_parent)

    # -- artifacts and workloads --------------------------------------------------------

    def artifact(self, files: Mapping[str, str | bytes], *, modes: Mapping[str, int] = {}) -> str:
        """Build an archive artifact of `files` (path -> content) into the source store."""
        folder = self.root / f"src-{secrets.token_hex(4)}"
        for path, content in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            target.chmod(modes.get(path, 0o644))
        manifest = build_tree(TreeBuild(folder, labels={"builder": "archive"}), self.source)
        self.source.put_manifest(manifest.artifact_id, manifest.encode())
        return manifest.artifact_id

    def run(
        self,
        name: str,
        digest: str,
        command: list[str],
        *,
        slot: int = 0,
        seq: int = 1,
        memory: int = 64 * MIB,
        cpu: int = 500,
        desired: DesiredState | None = None,
        **fields: Any,
    ) -> Work:
        """Start (or change) replica `slot` of workload `name`."""
        workload = workload_document(name, digest, command, memory=memory, cpu=cpu, **fields)
        assignment = Assignment(
            WorkloadName(name), slot, NodeName(NODE), CommitId(COMMIT), seq,
            ArtifactDigest(digest), cpu, memory, (), 1,
        )  # fmt: skip
        work = Work(assignment, workload, desired or DesiredState())
        self.works[(name, slot)] = work
        self.runtime.sync(dict(self.works))
        return work

    def remove(self, name: str, slot: int = 0) -> None:
        del self.works[(name, slot)]
        self.runtime.sync(dict(self.works))

    # -- watching -----------------------------------------------------------------------

    def status(self, name: str, slot: int = 0) -> ReplicaStatus | None:
        for status in self.runtime.statuses():
            if (status.workload, status.slot) == (name, slot):
                return status
        return None

    def wait(
        self, condition: Callable[[], bool], seconds: float = 30.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met in {seconds:g} s; events: {self.said()}")
            time.sleep(0.02)

    def wait_status(
        self, name: str, *, phase: Phase | None = None, reason: str | None = None,
        slot: int = 0, seconds: float = 30.0,
    ) -> ReplicaStatus:  # fmt: skip
        def reached() -> bool:
            found = self.status(name, slot)
            return (
                found is not None
                and (phase is None or found.phase is phase)
                and (reason is None or found.reason == reason)
            )

        self.wait(
            reached, seconds, f"{name}/{slot} {phase} {reason} (now {self.status(name, slot)})"
        )
        found = self.status(name, slot)
        assert found is not None
        return found

    def said(self) -> list[RuntimeEvent]:
        self.events += self.runtime.take_events()
        return list(self.events)

    def reasons(self) -> list[str]:
        return [event.reason for event in self.said()]

    def log_text(self, name: str, slot: int = 0) -> str:
        from reconciler.node.logs import read_log, replica_log_dir

        folder = replica_log_dir(self.state, name, slot)
        return "\n".join(line.text for line in read_log(folder)) if folder.is_dir() else ""

    def pids(self, name: str, slot: int = 0) -> set[int]:
        return self.runtime._cgroup(name, slot).pids()


def make_runtime(
    state: Path,
    source: ChunkStore,
    cgroup_parent: str,
    *,
    grace: float = 2.0,
    check_interval: float = 10.0,
    storage_key: bytes | None = None,
    clock: Callable[[], float] = time.time,
) -> Runtime:
    """A runtime over `state` (another one over the same folder plays a restarted agent)."""
    artifacts = Artifacts(state, lambda: [source])
    return Runtime(
        RuntimeConfig(state, NODE, grace=grace, check_interval=check_interval),
        artifacts=artifacts,
        volumes=Volumes(state, storage_key, artifacts),
        cgroups=Cgroups.detect(cgroup_parent),
        uids=UidTable(state / "uids.json", (430_000, 430_999)),
        clock=clock,
    )


def workload_document(
    name: str,
    digest: str,
    command: list[str],
    *,
    memory: int = 64 * MIB,
    cpu: int = 500,
    **fields: Any,
) -> Workload:
    body: dict[str, Any] = {
        "apiVersion": "circle/v1",
        "kind": "Workload",
        "name": name,
        "artifact": {"build": name, "digest": digest},
        "command": command,
        "replicas": 1,
        "resources": {"cpu": f"{cpu}m", "memory": memory},
    }
    body.update(fields)
    return Workload.model_validate(body)


def _control_circuit(state: Path) -> None:
    """What an agent keeps in its folder: each a secret a workload must never read."""
    NodeKey.generate(state / "node.key", "node-a")
    (state / "node.json").write_text('{"commit": "secret-state"}\n')
    (state / "state.db").write_bytes(b"SQLite format 3\x00 secret-store")
    (state / "repo.git").mkdir()
    (state / "repo.git" / "HEAD").write_text("ref: refs/heads/secret-repo\n")
    (state / "repo.git" / "refs" / "quarantine").mkdir(parents=True)
    (state / "repo.git" / "refs" / "quarantine" / "main").write_text("secret-quarantine\n")
    (state / "store.token").write_text("secret-token\n")
    for path in state.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def release_cgroups(parent: str) -> None:
    """Kill whatever still runs in the groups below `parent` and remove them."""
    try:
        bases = Cgroups.detect(parent).bases.values()
    except CgroupError:
        return
    for base in bases:
        if not base.is_dir():
            continue
        for folder, _, _ in sorted(os.walk(base), key=lambda entry: -len(entry[0])):
            procs = Path(folder) / "cgroup.procs"
            for _ in range(200):
                pids = [int(p) for p in procs.read_text().split()] if procs.exists() else []
                if not pids:
                    break
                for pid in pids:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.005)
            with suppress(OSError):
                os.rmdir(folder)


@contextmanager
def runtime_world(root: Path, **options: Any) -> Iterator[RuntimeWorld]:
    world = RuntimeWorld.make(root, **options)
    try:
        yield world
    finally:
        world.close()
        remove_tree(world.state / "work")
