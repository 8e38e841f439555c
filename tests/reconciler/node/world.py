"""A real circle for the node agent's tests: the example circle with fresh owner keys and one
node key per node (made by the `circle` command), its secrets sealed anew to those nodes (each
value in KEYS/NAME.secret), its first commit approved by every owner, and the introduction its
nodes pin."""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.desired.folder import check_circle_dir
from reconciler.local.make import seal_anew
from reconciler.secrets import keys as kem_keys
from tests.conftest import EXAMPLE, Result, git

OWNERS = ("alice", "bob", "carol")
NODES = ("node-a", "node-b", "node-c")


@dataclass(frozen=True)
class World:
    root: Path
    circle: Path  # the owners' repository (SOURCE for the nodes)
    intro: Path
    keys: Path
    store_url: str | None = None  # default: a SQLite file in root
    cgroup_parent: str = "circle-test"  # this world's replicas' control groups, removed after

    def node_key(self, name: str) -> Path:
        return self.keys / name

    def store(self) -> str:
        return self.store_url or f"sqlite:{self.root / 'state.db'}"


def make_world(
    root: Path, circle: Callable[..., Result], edit: Callable[[Path], None] | None = None
) -> World:
    """The example circle with fresh keys; `edit` may change its files before the first
    commit (which every owner approves)."""
    repo = root / "circle"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", ".*cache"))
    if edit is not None:
        edit(repo)
    keys = root / "keys"
    keys.mkdir()
    text = (repo / "circle.yaml").read_text()
    for name in OWNERS:
        assert circle("keygen", str(keys / name), "-C", name).code == 0
        line = (keys / f"{name}.pub").read_text().strip()
        text = re.sub(rf"ssh-ed25519 \S+ {name}@example-circle", line, text)
    (repo / "circle.yaml").write_text(text)
    kem_lines = {}
    for name in NODES:
        assert circle("node", "keygen", str(keys / name), "-C", name).code == 0
        document = repo / "nodes" / f"{name}.yaml"
        line = (keys / f"{name}.pub").read_text().strip()
        kem_lines[name] = kem_keys.public_path(keys / name).read_text().strip()
        text = re.sub(r"^publicKey: .*", f"publicKey: {line}", document.read_text(), flags=re.M)
        document.write_text(
            re.sub(r"^kemPublicKey: .*", f"kemPublicKey: {kem_lines[name]}", text, flags=re.M)
        )
    seal_anew(repo, check_circle_dir(repo).state, kem_lines, lambda name: keys / f"{name}.secret")
    git(root, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the circle")
    for name in OWNERS:
        done = circle("approve", "--repo", str(repo), "--key", str(keys / name))
        assert done.code == 0, done.stderr
    intro = root / "intro.json"
    intro.write_text(circle("introduction", "--repo", str(repo)).stdout)
    return World(root, repo, intro, keys, cgroup_parent=f"circle-test-{secrets.token_hex(4)}")


def uid_range(name: str) -> str:
    """Each agent of a world its own uids, as agents sharing a machine must have."""
    base = 420_000 + 1000 * (NODES.index(name) if name in NODES else len(NODES))
    return f"{base}-{base + 999}"


def release(world: World) -> None:
    """Kill whatever still runs in this world's control groups and remove them."""
    from tests.reconciler.node.runtime_world import release_cgroups

    release_cgroups(world.cgroup_parent)


def commit_change(
    world: World, circle: Callable[..., Result], path: str, old: str, new: str
) -> str:
    """Edit `path` in the owners' repository, commit it, approve it by every owner; its id."""
    target = world.circle / path
    text = target.read_text()
    assert old in text, (old, path)
    target.write_text(text.replace(old, new, 1))
    git(world.circle, "commit", "-q", "-am", f"{path}: {new}")
    for name in OWNERS:  # until its rules are met: then the commit is the approved head
        done = circle("approve", "--repo", str(world.circle), "--key", str(world.keys / name))
        assert done.code == 0 or "is the approved head already" in done.stderr, done.stderr
    return git(world.circle, "rev-parse", "HEAD")


def run_agent(world: World, name: str, *extra: str) -> subprocess.Popen[str]:
    """`circle node run` for node `name` as a real process (short leases for tests); its
    stderr goes to ROOT/NAME.log."""
    command = [
        sys.executable, "-m", "reconciler", "node", "run", "--source", str(world.circle),
        "--introduction", str(world.intro), "--state", str(world.root / name),
        "--key", str(world.node_key(name)), "--store", world.store(),
        "--ttl", "3", "--keepalive", "0.5", "--fetch-interval", "0.5",
        "--address", "http://127.0.0.1:0", "--cgroup-parent", world.cgroup_parent,
        "--uids", uid_range(name), "--stop-workloads", "--grace", "2", *extra,
    ]  # fmt: skip
    with (world.root / f"{name}.log").open("w") as log:  # the child keeps its own copy
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)


SLEEPER = """\
apiVersion: circle/v1
kind: Workload
name: langid
artifact:
  build: langid-service
  digest: {digest}
command: [/bin/sh, -c, "exec sleep 3600"]
replicas: 2
placement:
  minFailureDomains: 2
resources:
  cpu: 100m
  memory: 64Mi
"""


def pin_sleeper(repo: Path, digest: str) -> None:
    """The example's workload as a process that sleeps, at artifact `digest` (and its build's
    lock at it too)."""
    (repo / "workloads" / "langid.yaml").write_text(SLEEPER.format(digest=digest))
    build = repo / "builds" / "langid-service.yaml"
    found = r"digest: sha256:[0-9a-f]{64}"
    build.write_text(re.sub(found, f"digest: {digest}", build.read_text(), count=1))


def stop_agents(agents: Iterable[subprocess.Popen[str]]) -> None:
    """SIGTERM to every agent still running, then wait for each (killed after 30 s)."""
    agents = list(agents)
    for process in agents:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in agents:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
