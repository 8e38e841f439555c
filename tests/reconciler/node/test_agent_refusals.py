"""A node runs nothing it should not: assignments written straight into the state store (it is
untrusted) are judged by the node's own chain, each refusal an event and a signed status saying
why. The agent runs in-process, one pass at a time, against a real SQLite store and a real
circle repository; node-b's key plays the leader."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.chain.follow import load_introduction
from reconciler.node.agent import Agent, AgentConfig
from reconciler.node.identity import NodeKey, RecordKind
from reconciler.node.layout import Layout
from reconciler.node.records import (
    AssignmentStatus,
    EventRecord,
    LeaderRecord,
    Phase,
    Registration,
    open_record,
    sign_assignment,
    sign_record,
)
from reconciler.plan import Assignment, CommitId, NodeName, WorkloadName
from reconciler.store import StateStore, open_store
from tests.conftest import Result, git
from tests.reconciler.node.world import World, commit_change, make_world, release, uid_range


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> Iterator[World]:
    made = make_world(tmp_path, circle)
    yield made
    while STARTED:  # what each agent started (chunk server, replicas, lease) ends with it
        STARTED.pop().leave()
    release(made)


STARTED: list[Agent] = []


def agent(world: World, name: str, key: Path | None = None) -> Agent:
    config = AgentConfig(
        source=str(world.circle),
        introduction=load_introduction(world.intro),
        state_dir=world.root / name,
        key_file=key or world.node_key(name),
        store_url=world.store(),
        ttl=30,
        keepalive=1.0,
        fetch_interval=0.0,
        settle=0.0,
        address="http://127.0.0.1:0",
        cgroup_parent=world.cgroup_parent,
        uids=tuple(int(n) for n in uid_range(name).split("-")),  # type: ignore[arg-type]
        stop_workloads=True,
        grace=1.0,
    )
    made = Agent(config, say=lambda line: None)
    STARTED.append(made)
    return made


def keys_of(world: World) -> dict[str, str]:
    return {
        name: (world.keys / f"{name}.pub").read_text().strip()
        for name in ("node-a", "node-b", "node-c")
    }


def events(store: StateStore, world: World) -> list[EventRecord]:
    layout = Layout("example-ai-circle")
    return [
        open_record(kv.value, EventRecord, keys_of(world)).record
        for kv in store.range(layout.events).kvs
    ]


@dataclasses.dataclass
class Scene:
    world: World
    node: Agent
    store: StateStore
    leader_key: NodeKey
    epoch: int
    good: Assignment


@pytest.fixture
def scene(world: World) -> Iterator[Scene]:
    """node-a registered at seq 1; node-b holds the leader key (epoch)."""
    store = open_store(world.store())
    layout = Layout("example-ai-circle")
    leader_key = NodeKey.load(world.node_key("node-b"))
    lease = store.grant(120)
    record = sign_record(leader_key, "node-b", LeaderRecord(NodeName("node-b"), int(time.time())))
    epoch = store.put(layout.leader, record, lease=lease).revision
    node = agent(world, "node-a")
    node.step()
    assert node.name == "node-a"
    assert node.leadership is None
    head = git(world.circle, "rev-parse", "HEAD")
    workload = node.chain.desired.workloads["langid"].document  # type: ignore[union-attr]
    good = Assignment(
        WorkloadName("langid"), 0, NodeName("node-a"), CommitId(head), 1,
        workload.artifact.digest, workload.resources.cpu, workload.resources.memory, (), epoch,
    )  # type: ignore[arg-type]  # fmt: skip
    yield Scene(world, node, store, leader_key, epoch, good)
    node.leave()


def put_assignment(scene: Scene, assignment: Assignment, key: NodeKey, signer: str) -> None:
    layout = Layout("example-ai-circle")
    where = layout.assignment(assignment.workload, assignment.slot, assignment.seq)
    scene.store.put(where, sign_assignment(key, signer, assignment))


def status_of(scene: Scene, assignment: Assignment) -> AssignmentStatus | None:
    layout = Layout("example-ai-circle")
    where = layout.status("node-a", assignment.workload, assignment.slot, assignment.seq)
    kv = scene.store.get(where)
    if kv is None:
        return None
    return open_record(kv.value, AssignmentStatus, keys_of(scene.world)).record


def test_the_leaders_assignment_for_the_applied_commit_is_accepted(scene: Scene) -> None:
    """Accepted, the node tries to run it: no source has its artifact here, which it says."""
    put_assignment(scene, scene.good, scene.leader_key, "node-b")
    deadline = time.monotonic() + 30
    while True:
        scene.node.step()
        status = status_of(scene, scene.good)
        if status is not None and status.reason == "ArtifactUnavailable":
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status.phase is Phase.PENDING
    assert "no source has the manifest of sha256:e80f98d2ab2" in status.message
    reasons = [e.reason for e in events(scene.store, scene.world)]
    assert "AssignmentAccepted" in reasons
    assert "AssignmentRefused" not in reasons


def unapproved_commit(scene: Scene) -> Assignment:
    target = scene.world.circle / "README.md"
    target.write_text("not approved\n")
    git(scene.world.circle, "add", "README.md")
    git(scene.world.circle, "commit", "-q", "-m", "unapproved")
    head = git(scene.world.circle, "rev-parse", "HEAD")
    return dataclasses.replace(scene.good, commit=CommitId(head), seq=2)


CASES: list[tuple[str, Callable[[Scene], Assignment], str, str]] = [
    ("commit-not-on-chain", unapproved_commit, "CommitNotOnChain",
     "is not seq 2 of the chain this node verified"),
    ("digest-differs", lambda s: dataclasses.replace(s.good, digest="sha256:" + "0" * 64),
     "DigestMismatch", "is not the one the commit pins"),
    ("resources-differ", lambda s: dataclasses.replace(s.good, cpu=8000), "ResourcesMismatch",
     "cpu 8000m and memory 268435456 differ from the commit's cpu 500m"),
    ("deposed-leaders-epoch", lambda s: dataclasses.replace(s.good, epoch=s.epoch - 1),
     "StaleEpoch", "this node has seen epoch"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("forge", "reason", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_an_assignment_that_breaks_a_rule_is_refused_and_nothing_runs(
    scene: Scene, forge: Callable[[Scene], Assignment], reason: str, fragment: str
) -> None:
    forged = forge(scene)
    put_assignment(scene, forged, scene.leader_key, "node-b")
    scene.node.step()
    status = status_of(scene, forged)
    assert status is not None
    assert (status.phase, status.reason) == (Phase.REFUSED, reason)
    assert fragment in status.message
    refused = [e for e in events(scene.store, scene.world) if e.reason == "AssignmentRefused"]
    assert len(refused) == 1
    assert refused[0].message.startswith(f"{reason}: ")
    assert refused[0].message.endswith("; nothing runs")
    assert not any(d.accepted for d in scene.node.decisions.values())


@pytest.mark.parametrize("signer", ["node-b", "mallory"], ids=["unsigned-forgery", "not-admitted"])
def test_an_assignment_no_admitted_node_signed_is_refused_unread(scene: Scene, signer: str) -> None:
    stranger = NodeKey(Ed25519PrivateKey.generate())
    put_assignment(scene, scene.good, stranger, signer)
    scene.node.step()
    assert status_of(scene, scene.good) is None  # nothing said about it: it is no assignment
    [refused] = [e for e in events(scene.store, scene.world) if e.reason == "AssignmentRefused"]
    assert "not signed by an admitted node" in refused.message
    assert not any(d.accepted for d in scene.node.decisions.values())


def test_a_forged_registration_is_left_out_of_the_plan(world: World) -> None:
    """node-a leads alone; someone with store access registers node-c with another key."""
    node = agent(world, "node-a")
    node.step()
    assert node.leadership is not None
    store = open_store(world.store())
    layout = Layout("example-ai-circle")
    stranger = NodeKey(Ed25519PrivateKey.generate())
    fake = Registration.from_body(
        open_record(
            store.get(layout.node("node-a")).value, Registration, keys_of(world)
        ).record.to_body()  # type: ignore[union-attr]
        | {"node": "node-c", "failureDomain": "site-dubai"}
    )
    store.put(
        layout.node("node-c"), stranger.sign(RecordKind.REGISTRATION, "node-c", fake.to_body())
    )
    node.step()
    forged = [e for e in events(store, world) if e.reason == "ForgedRecord"]
    assert [e.object for e in forged] == ["node/node-c"]
    nodes = {a.node for _, a in node_assignments(store, world)}
    assert "node-c" not in nodes


def node_assignments(store: StateStore, world: World) -> list[tuple[str, Assignment]]:
    from reconciler.node.records import open_assignment

    layout = Layout("example-ai-circle")
    return [
        (kv.key, open_assignment(kv.value, keys_of(world)).record)
        for kv in store.range(layout.assignments).kvs
    ]


def test_a_node_whose_key_is_in_no_node_document_registers_nothing(
    world: World, tmp_path: Path
) -> None:
    stray = tmp_path / "stray"
    NodeKey.generate(stray, "stray")
    node = agent(world, "node-x", key=stray)
    node.step()
    assert node.name is None
    assert [c.reason for c in node.conditions] == ["NodeNotAdmitted"]
    store = open_store(world.store())
    assert store.range(Layout("example-ai-circle").root).kvs == ()


def test_a_new_approved_commit_is_followed_registered_and_planned(
    world: World, circle: Callable[..., Result]
) -> None:
    node = agent(world, "node-a")
    node.step()
    commit_change(world, circle, "workloads/langid.yaml", "replicas: 2", "replicas: 3")
    node.step()
    store = open_store(world.store())
    kv = store.get(Layout("example-ai-circle").node("node-a"))
    assert kv is not None
    registration = open_record(kv.value, Registration, keys_of(world)).record
    assert registration.seq == 2
    placed = node_assignments(store, world)
    # Scaling is no new version (as a Deployment's pod template hash): the new slot runs the
    # definition the others run, of seq 1, and nothing rolls.
    assert sorted((a.slot, a.seq) for _, a in placed) == [(0, 1), (1, 1), (2, 1)]


def test_a_changed_definition_rolls_out_only_beside_its_old_replicas(
    world: World, circle: Callable[..., Result]
) -> None:
    node = agent(world, "node-a")
    node.step()
    commit_change(world, circle, "workloads/langid.yaml", "PYTHONUNBUFFERED: \"1\"",
                  "PYTHONUNBUFFERED: \"1\"\n  LANGID_MODE: strict")  # fmt: skip
    node.step()
    store = open_store(world.store())
    placed = node_assignments(store, world)
    said = events(store, world)
    store.close()
    # A new version starts beside an old replica, on another node (a node runs one replica of
    # a slot). With node-a the only node alive, the update waits and says why: nothing of
    # seq 1 is taken down below the ready count.
    assert sorted(a.seq for _, a in placed) == [1, 1]
    (blocked,) = [e for e in said if e.reason == "RolloutBlocked"]
    assert blocked.object == "workload/langid"
    assert "only node-a has room, and it runs the slot's old replica" in blocked.message


def test_an_approved_commit_whose_documents_do_not_validate_keeps_the_last_valid_state(
    world: World, circle: Callable[..., Result]
) -> None:
    node = agent(world, "node-a")
    node.step()
    store = open_store(world.store())
    before = sorted((a.slot, a.seq) for _, a in node_assignments(store, world))
    assert before == [(0, 1), (1, 1)]
    # A duplicate key: approved by the quorum (approve does not validate), refused by nodes.
    commit_change(world, circle, "workloads/langid.yaml", 'PYTHONUNBUFFERED: "1"',
                  'PYTHONUNBUFFERED: "1"\n  PYTHONUNBUFFERED: "0"')  # fmt: skip
    node.step()
    assert node.chain.state is not None
    assert node.chain.state.seq == 2  # the chain moved on: the commit is approved
    assert node.chain.in_force is not None
    assert node.chain.in_force.seq == 1  # ... but seq 1's documents stay in force
    assert sorted((a.slot, a.seq) for _, a in node_assignments(store, world)) == before
    (said,) = [e for e in events(store, world) if e.reason == "InvalidDesiredState"]
    assert said.object.startswith("commit/")
    assert "workloads/langid.yaml:" in said.message
    assert "seq 1 (" in said.message
    assert "stays in force" in said.message
    assert node.conditions[0].reason == "InvalidDesiredState"
    # An agent that starts now finds the last valid step itself.
    fresh = agent(world, "node-b")
    fresh.step()
    assert fresh.chain.in_force is not None
    assert fresh.chain.in_force.seq == 1
    assert fresh.chain.desired is not None
    assert "langid" in fresh.chain.desired.workloads

    # A newer valid commit is taken up at once, and says nothing more.
    commit_change(world, circle, "workloads/langid.yaml", '\n  PYTHONUNBUFFERED: "0"', "")
    node.step()
    assert node.chain.in_force is not None
    assert node.chain.in_force.seq == 3
    assert node.conditions[0].reason == "Reconciled"
    told = [e.node for e in events(store, world) if e.reason == "InvalidDesiredState"]
    assert sorted(told) == ["node-a", "node-b"]  # each agent said it once
    store.close()
