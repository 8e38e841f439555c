"""A hybrid node beside classic ones: node-a's key gets an ML-DSA-65 half (`circle node keygen
--hybrid`, its document's new `publicKey` and `mldsaPublicKey` approved by the owners), node-b
and node-c keep their Ed25519 keys. Real `circle node run` processes on a real SQLite store
register, elect, place and judge each other's records; a value of node-a's with only its
Ed25519 half is refused as a forgery and reported. An agent whose key does not match its
document's halves refuses to run at all: every record it signed would be refused."""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from qss.durable import write_atomically
from reconciler.chain import mldsa
from reconciler.chain.follow import load_introduction
from reconciler.node import view
from reconciler.node.agent import Agent, AgentConfig
from reconciler.node.identity import MLDSA_SUFFIX, BadSignature, NodeKeyError
from reconciler.node.layout import Layout
from reconciler.node.leader import node_keys
from reconciler.node.records import Phase, Registration, open_record
from reconciler.store import open_store
from tests.conftest import Result, edit
from tests.reconciler.node.world import (
    NODES,
    World,
    commit_change,
    make_world,
    release,
    run_agent,
    stop_agents,
    uid_range,
)

CIRCLE = "example-ai-circle"
BEGIN = b"-----BEGIN CIRCLE ML-DSA SIGNATURE-----"
END_SSH = b"-----END SSH SIGNATURE-----\n"


def make_hybrid(world: World, circle: Callable[..., Result], name: str) -> str:
    """Re-key node `name` as an operator would: `circle node keygen --hybrid`, the printed
    `publicKey` and `mldsaPublicKey` lines (and the new `kemPublicKey`) pasted into
    nodes/NAME.yaml, the change approved by the owners. Its head."""
    for suffix in ("", ".pub", ".x-wing", ".x-wing.pub"):
        (world.keys / f"{name}{suffix}").unlink()
    made = circle("node", "keygen", str(world.node_key(name)), "-C", name, "--hybrid")
    assert made.code == 0, made.stderr
    printed = dict(
        line.split(": ", 1)
        for line in made.stdout.splitlines()
        if line.startswith(("publicKey: ", "mldsaPublicKey: "))
    )
    printed["kemPublicKey"] = (world.keys / f"{name}.x-wing.pub").read_text().strip()
    path = world.circle / "nodes" / f"{name}.yaml"
    text = path.read_text()
    for field in ("publicKey", "kemPublicKey"):
        text = re.sub(rf"^{field}: .*$", f"{field}: {printed[field]}", text, flags=re.MULTILINE)
    found = re.search(r"^publicKey: .*\n", text, re.MULTILINE)
    assert found is not None
    path.write_text(text)
    pasted = f"{found.group(0)}mldsaPublicKey: {printed['mldsaPublicKey']}\n"
    return commit_change(world, circle, f"nodes/{name}.yaml", found.group(0), pasted)


def three_replicas(repo: Path) -> None:
    edit(repo / "workloads" / "langid.yaml", "replicas: 2", "replicas: 3")


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> Iterator[World]:
    # Three replicas over the three nodes' three failure domains: one each.
    made = make_world(tmp_path, circle, edit=three_replicas)
    make_hybrid(made, circle, "node-a")
    yield made
    release(made)


def key_copy(world: World, name: str, half: str) -> World:
    """The world as an agent sees it that has node `name`'s Ed25519 key with `half`: 'none',
    'own' (its own ML-DSA half) or 'other' (a fresh ML-DSA-65 key); its own folders, the
    world's store."""
    root = world.root / f"{name}-with-{half}-half"
    folder = root / "keys"
    folder.mkdir(parents=True)
    shutil.copy(world.node_key(name), folder / name)  # the mode (0600) comes along
    target = folder / f"{name}{MLDSA_SUFFIX}"
    if half == "own":
        shutil.copy(world.keys / f"{name}{MLDSA_SUFFIX}", target)
    elif half == "other":
        write_atomically(
            target, mldsa.encode_private_key(MLDSA65PrivateKey.generate(), None), mode=0o600
        )
    return dataclasses.replace(world, root=root, keys=folder, store_url=world.store())


def agent(world: World, name: str) -> Agent:
    config = AgentConfig(
        source=str(world.circle),
        introduction=load_introduction(world.intro),
        state_dir=world.root / name,
        key_file=world.node_key(name),
        store_url=world.store(),
        ttl=30,
        keepalive=1.0,
        fetch_interval=0.0,
        address="http://127.0.0.1:0",
        cgroup_parent=world.cgroup_parent,
        uids=tuple(int(n) for n in uid_range(name).split("-")),  # type: ignore[arg-type]
        stop_workloads=True,
        grace=1.0,
    )
    return Agent(config, say=lambda line: None)


MISMATCHES = [
    ("declared-half-missing", "node-a", "none",
     "nodes/node-a.yaml declares an mldsaPublicKey, and this key has no {half}"),
    ("another-half", "node-a", "other",
     "the ML-DSA half {half} is not the mldsaPublicKey of nodes/node-a.yaml"),
    ("undeclared-half", "node-b", "other",
     "this key has an ML-DSA half ({half}), and nodes/node-b.yaml declares no mldsaPublicKey"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "half", "why"), [case[1:] for case in MISMATCHES], ids=[case[0] for case in MISMATCHES]
)
def test_an_agent_whose_key_halves_differ_from_its_document_refuses_to_run(
    world: World, name: str, half: str, why: str
) -> None:
    given = key_copy(world, name, half)
    node = agent(given, name)
    key = given.node_key(name)

    with pytest.raises(NodeKeyError) as refused:
        node.step()

    assert str(refused.value) == (
        f"{key}: {why.format(half=f'{key}{MLDSA_SUFFIX}')}: every record this agent signed "
        f"would be refused as a forgery; give the key that nodes/{name}.yaml names (or have its "
        "mldsaPublicKey changed)"
    )
    node.leave()
    assert node.name is None
    conditions = view.status_file(given.root / name)["conditions"]
    assert isinstance(conditions, list)
    assert [c["reason"] for c in conditions] == ["NodeKeyMismatch"]  # what agent.json says
    with open_store(world.store()) as store:
        assert store.range(Layout(CIRCLE).root).kvs == ()  # registered nothing, signed nothing


def test_the_hybrid_key_its_document_names_registers_with_both_halves(world: World) -> None:
    node = agent(key_copy(world, "node-a", "own"), "node-a")
    node.step()
    try:
        assert node.name == "node-a"
        with open_store(world.store()) as store:
            kv = store.get(Layout(CIRCLE).node("node-a"))
        assert kv is not None
        assert kv.value.count(BEGIN) == 1
        keys, mldsa_keys = node_keys(view.circle_from(world.circle, None).desired)
        assert open_record(kv.value, Registration, keys, mldsa_keys).record.node == "node-a"
        before = kv.mod_revision
        node.step()  # the same registration is not written again (ML-DSA is randomized)
        with open_store(world.store()) as store:
            again = store.get(Layout(CIRCLE).node("node-a"))
        assert again is not None
        assert again.mod_revision == before
    finally:
        node.leave()


def seen(world: World) -> view.View:
    with open_store(world.store()) as store:
        return view.read(store, view.circle_from(world.circle, None))


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.2)


def test_hybrid_and_classic_nodes_work_together_and_a_half_signed_value_is_forged(
    world: World,
) -> None:
    layout = Layout(CIRCLE)
    # The Ed25519 key alone is not node-a any more: that agent says so and exits 2. The other
    # three run: whichever leads opens the others' registrations and statuses, and they the
    # leader record and the assignments it signs (hybrid, if node-a leads). A circle's first
    # leader plans once every admitted node registered (or its TTL passed: long, so they have).
    alone = key_copy(world, "node-a", "none")
    agents = {"alone": run_agent(alone, "node-a")}
    agents |= {name: run_agent(world, name, "--ttl", "30") for name in NODES}
    try:

        def all_at_work() -> bool:
            now = seen(world)
            judged = {p.assignment.node for p in now.assignments if p.status is not None}
            return {n.registration.node for n in now.nodes} == set(NODES) == judged

        wait_for(all_at_work, "every node registered and judging its assignment")
        assert agents["alone"].wait(timeout=60) == 2
        log = (alone.root / "node-a.log").read_text()
        assert "declares an mldsaPublicKey, and this key has no" in log
        assert "Traceback" not in log
        now = seen(world)
        assert now.forged == 0
        assert now.leader in NODES
        assert {p.signer for p in now.assignments} == {now.leader}
        for placed in now.assignments:  # signed hybrid if, and only if, node-a leads
            assert placed.kv.value.count(BEGIN) == (1 if now.leader == "node-a" else 0)
        for placed in now.assignments:  # each node accepted its own: it says what it runs
            assert placed.status is not None
            assert placed.status.phase is not Phase.REFUSED, placed.status
        stored = {str(n.registration.node): n.kv.value for n in now.nodes}
        assert stored["node-a"].count(BEGIN) == 1  # signed with both halves
        assert BEGIN not in stored["node-b"] + stored["node-c"]  # as before

        # Someone with the store's credentials keeps node-a's registration, Ed25519 half only.
        classic_half = stored["node-a"].partition(END_SSH)[0] + END_SSH
        keys, mldsa_keys = node_keys(view.circle_from(world.circle, None).desired)
        with pytest.raises(BadSignature, match="signs hybrid, and the value has no ML-DSA"):
            open_record(classic_half, Registration, keys, mldsa_keys)
        assert open_record(classic_half, Registration, keys).record.node == "node-a"  # no half
        with open_store(world.store()) as store:
            store.put(layout.node("node-a"), classic_half)

        def reported() -> bool:
            with open_store(world.store()) as store:
                found, _ = view.events(store, view.circle_from(world.circle, None))
            return any(e.reason == "ForgedRecord" and e.object == "node/node-a" for e in found)

        wait_for(reported, "the leader reports the forged registration")
        after = seen(world)
        assert "node-a" not in {n.registration.node for n in after.nodes}
        assert after.forged >= 1
    finally:
        stop_agents(agents.values())
