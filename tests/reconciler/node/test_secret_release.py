"""Sealed secrets released on a real node: the workload the secret names, running the pinned
artifact, reads it at /run/secrets/NAME (0400, its own uid, the env var names the path); no
other workload gets it or sees its tmpfs; it goes when the replica stops, and a restarted agent
takes away what an earlier one left; each refusal (artifact not the pinned one or not among the
secret's digests, a workload not bound, a node not a recipient, a rotated key, a broken seal,
no KEM key) fails the start with SecretRefused and its own error; the value is never in the
node's folder, its events or its statuses."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from reconciler.desired.documents import Loaded
from reconciler.desired.model import Secret
from reconciler.desired.model.circle import Circle
from reconciler.desired.repository import DesiredState
from reconciler.node import secrets as secret_files
from reconciler.node.records import Phase
from reconciler.node.runtime import Work
from reconciler.node.secrets import Releaser
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName
from reconciler.secrets import seal, xwing
from tests.reconciler.node.runtime_world import (
    COMMIT,
    MIB,
    NODE,
    RuntimeWorld,
    make_runtime,
    needs_sandbox,
    runtime_world,
    workload_document,
)

CIRCLE = "test-circle"
VALUE = b"sk-live-9q2w-release-test-value-never-shown"
KEY = xwing.generate()
OTHER_KEY = xwing.generate()

READER = """\
import hashlib, os, stat, sys, time
path = os.environ.get("TOKEN_FILE", "/run/secrets/token")
try:
    data = open(path, "rb").read()
    info = os.stat(path)
    print("read", hashlib.sha256(data).hexdigest(), oct(stat.S_IMODE(info.st_mode)),
          info.st_uid, os.getuid(), path, flush=True)
except OSError as error:
    print("unreadable", type(error).__name__, flush=True)
for probe in sys.argv[1:]:
    print("probe", probe, os.path.exists(probe), flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture(autouse=True)
def _sandboxes() -> None:
    needs_sandbox()


def sealed(
    workloads: tuple[str, ...],
    digests: tuple[str, ...] = (),
    *,
    to: dict[str, xwing.XWingPrivateKey] | None = None,
    name: str = "token",
) -> Secret:
    keys = to if to is not None else {NODE: KEY}
    lines = {node: key.public_key_line(node) for node, key in keys.items()}
    return seal.seal(VALUE, seal.Binding(CIRCLE, name, workloads, digests), lines)


def desired_with(*secrets: Secret) -> DesiredState:
    circle = cast(Any, Circle).model_construct(id=CIRCLE)
    return DesiredState(
        circle=cast(Any, Loaded)("circle.yaml", circle, None, ""),
        secrets={s.name: cast(Any, Loaded)(f"secrets/{s.name}.yaml", s, None, "") for s in secrets},
    )


def start(
    world: RuntimeWorld,
    name: str,
    digest: str,
    desired: DesiredState,
    *,
    pinned: str | None = None,
    probes: tuple[str, ...] = (),
    secrets: list[dict[str, str]] | None = None,
) -> Work:
    """Start workload `name` running `digest`; the commit pins `pinned` (default: the same)."""
    command = ["python3", "/artifact/reader.py", *probes]
    refs = [{"secret": "token", "env": "TOKEN_FILE"}] if secrets is None else secrets
    workload = workload_document(name, pinned or digest, command, secrets=refs)
    assignment = Assignment(
        WorkloadName(name), 0, NodeName(NODE), CommitId(COMMIT), 1,
        ArtifactDigest(digest), 500, 64 * MIB, (), 1,
    )  # fmt: skip
    work = Work(assignment, workload, desired)
    world.works[(name, 0)] = work
    world.runtime.sync(dict(world.works))
    return work


def with_releaser(world: RuntimeWorld, key: xwing.XWingPrivateKey | None = KEY) -> list[Any]:
    """Give the world's runtime this node's releaser; the list gets each (workload, secret)."""
    released: list[tuple[str, str]] = []
    world.runtime.secrets = Releaser(NODE, key)
    world.runtime.on_release = lambda workload, secret: released.append((workload, secret))
    return released


def lines(world: RuntimeWorld, name: str, prefix: str) -> list[str]:
    return [line for line in world.log_text(name).splitlines() if line.startswith(prefix)]


def assert_nowhere(world: RuntimeWorld) -> None:
    """The value is in no file of the node's folder, no event and no status."""
    for path in world.state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert VALUE not in path.read_bytes(), path
    for event in world.said():
        assert VALUE.decode() not in repr(event)
    for status in world.runtime.statuses():
        assert VALUE.decode() not in repr(status)


def test_the_named_workload_reads_it_and_no_other_does(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        released = with_releaser(world)
        digest = world.artifact({"reader.py": READER})
        desired = desired_with(sealed(("api",), (digest,)))
        folder = secret_files.folder_of(world.state, "api", 0)
        start(world, "api", digest, desired)
        world.wait_status("api", phase=Phase.READY)
        world.wait(lambda: bool(lines(world, "api", "read ")), what="the secret read")
        uid = world.runtime.uids.uid_of("api")
        want = hashlib.sha256(VALUE).hexdigest()
        assert lines(world, "api", "read ") == [f"read {want} 0o400 {uid} {uid} /run/secrets/token"]
        assert os.path.ismount(folder)
        info = os.stat(folder / "token")
        assert (info.st_mode & 0o777, info.st_uid) == (0o400, uid)
        event = next(e for e in world.said() if e.reason == "SecretReleased")
        assert event.subject == "assignment/api/0"
        assert event.message == (
            f"secret token to workload api running {digest} on node {NODE}, commit {COMMIT}"
        )
        assert released == [("api", "token")]

        # A workload the secret does not name: refused, and it has nothing.
        start(world, "other", digest, desired)
        refused = world.wait_status("other", reason="SecretRefused")
        assert "NotReleased" in refused.message
        assert "not other" in refused.message
        assert not secret_files.folder_of(world.state, "other", 0).exists()

        # A workload that names no secret cannot reach the first one's tmpfs.
        start(world, "snoop", digest, desired, secrets=[],
              probes=("/run/secrets", str(folder), f"/proc/1/root{folder}"))  # fmt: skip
        world.wait(lambda: len(lines(world, "snoop", "probe ")) == 3, what="the probes")
        assert lines(world, "snoop", "unreadable ") == ["unreadable FileNotFoundError"]
        assert all(line.endswith(" False") for line in lines(world, "snoop", "probe "))
        assert released == [("api", "token")]

        world.remove("api")
        world.wait(lambda: world.status("api") is None, what="api retired")
        assert not os.path.ismount(folder)
        assert not folder.exists()
        assert_nowhere(world)


def test_a_stopped_replica_loses_it_and_a_new_agent_clears_leftovers(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        with_releaser(world)
        digest = world.artifact({"reader.py": READER})
        desired = desired_with(sealed(("api",)))
        folder = secret_files.folder_of(world.state, "api", 0)
        start(world, "api", digest, desired)
        world.wait_status("api", phase=Phase.READY)
        assert os.path.ismount(folder)
        world.runtime.close(stop=True)
        assert not os.path.ismount(folder)
        assert not folder.exists()

        # An agent that died with a replica's secrets mounted: the next one takes them away.
        ghost = secret_files.folder_of(world.state, "ghost", 3)
        secret_files.mount_secrets(ghost, 430_999, {"token": VALUE})
        assert os.path.ismount(ghost)
        world.runtime = make_runtime(world.state, world.source, world.cgroup_parent)
        assert world.runtime.adopt() == 0
        assert not os.path.ismount(ghost)
        assert not ghost.exists()
        assert_nowhere(world)


def test_an_adopted_replica_keeps_its_secrets_until_it_stops(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        with_releaser(world)
        digest = world.artifact({"reader.py": READER})
        start(world, "api", digest, desired_with(sealed(("api",))))
        world.wait_status("api", phase=Phase.READY)
        folder = secret_files.folder_of(world.state, "api", 0)
        world.runtime.close(stop=False)
        assert os.path.ismount(folder)
        world.runtime = make_runtime(world.state, world.source, world.cgroup_parent)
        released = with_releaser(world)
        assert world.runtime.adopt() == 1
        world.runtime.sync(dict(world.works))
        world.wait_status("api", phase=Phase.READY)
        assert "Adopted" in world.reasons()
        assert os.path.ismount(folder)
        assert released == []  # running on, not released again
        world.remove("api")
        world.wait(lambda: world.status("api") is None, what="api retired")
        assert not folder.exists()
        assert_nowhere(world)


def _flip(secret: Secret) -> Secret:
    raw = bytearray(base64.b64decode(secret.ciphertext))
    raw[0] ^= 1
    data = secret.model_dump(by_alias=True)
    data["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    return Secret.model_validate(data)


# name -> (the secret, given the running and the pinned digests; the running digest, given
# them; the releaser's key; what the message must say)
Case = tuple[
    Callable[[str, str], Secret],
    Callable[[str, str], str],
    xwing.XWingPrivateKey | None,
    str,
]
REFUSALS: dict[str, Case] = {
    "artifact-not-pinned": (
        lambda good, bad: sealed(("artifact-not-pinned",)),
        lambda good, bad: bad,
        KEY,
        "would run artifact {bad}, and commit " + COMMIT + " pins {good}",
    ),
    "digest-not-bound": (
        lambda good, bad: sealed(("digest-not-bound",), (bad,)),
        lambda good, bad: good,
        KEY,
        "NotReleased: secret token is bound to artifacts {bad}; workload digest-not-bound "
        "runs {good}",
    ),
    "not-a-recipient": (
        lambda good, bad: sealed(("not-a-recipient",), to={"node-b": OTHER_KEY}),
        lambda good, bad: good,
        KEY,
        "NotARecipient: secret token is not sealed to node " + NODE + " (sealed to node-b)",
    ),
    "key-rotated": (
        lambda good, bad: sealed(("key-rotated",), to={NODE: OTHER_KEY}),
        lambda good, bad: good,
        KEY,
        "WrongRecipient: secret token: node " + NODE + "'s copy is sealed to KEM key",
    ),
    "seal-broken": (
        lambda good, bad: _flip(sealed(("seal-broken",))),
        lambda good, bad: good,
        KEY,
        "SealBroken: secret token: the ciphertext does not authenticate",
    ),
    "no-kem-key": (
        lambda good, bad: sealed(("no-kem-key",)),
        lambda good, bad: good,
        None,
        "node " + NODE + " has no KEM key",
    ),
}


def test_every_refusal_fails_the_start_with_its_own_reason(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        good = world.artifact({"reader.py": READER})
        bad = world.artifact({"reader.py": READER + "# changed\n"})
        released: list[list[Any]] = []
        for name, (secret, running, key, said) in REFUSALS.items():
            released.append(with_releaser(world, key))
            start(world, name, running(good, bad), desired_with(secret(good, bad)), pinned=good)
            status = world.wait_status(name, phase=Phase.PENDING, reason="SecretRefused")
            assert said.format(good=good, bad=bad) in status.message, name
            assert not secret_files.folder_of(world.state, name, 0).exists(), name
            assert world.pids(name) == set(), name
        assert released == [[]] * len(REFUSALS)
        assert "SecretReleased" not in world.reasons()
        assert world.reasons().count("SecretRefused") >= len(REFUSALS)
        assert_nowhere(world)
