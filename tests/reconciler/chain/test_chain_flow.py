"""The Human Chain as a newcomer meets it, end to end over real Git repositories: three
`ssh-keygen` keys, `circle init`, the first commit approved, a node following a shared remote,
a workload change that `verify` refuses with one signature and accepts with two, co-signers in
two clones pushing at once, `land`, `review`, and a force-pushed rollback that `follow` refuses
while the node's state file stays byte-identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Result

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> dict[str, Path]:
    """Keys made by ssh-keygen, a circle made by `circle init` with its first commit approved
    by all three owners and pushed to a bare `origin`."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("alice", "bob", "carol"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(keys / name)],
            check=True, timeout=60,
        )  # fmt: skip
    owner = tmp_path / "owner"
    members = [a for n in ("alice", "bob", "carol") for a in ("--member", f"{n}={keys / n}.pub")]
    made = circle("init", str(owner), "--name", "demo", *members, "--threshold", "2")
    assert made.code == 0, made.stderr
    for name in ("alice", "bob", "carol"):
        assert circle("approve", "--repo", str(owner), "--key", str(keys / name)).code == 0
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    pushed = circle("push", str(origin), "--repo", str(owner))
    assert pushed.code == 0, pushed.stderr
    intro = tmp_path / "introduction.json"
    intro.write_text(circle("introduction", "--repo", str(owner)).stdout)
    return {
        "keys": keys,
        "owner": owner,
        "origin": origin,
        "intro": intro,
        "node": tmp_path / "node",
    }


def follow(circle: Callable[..., Result], world: dict[str, Path]) -> Result:
    return circle(
        "follow", str(world["origin"]), "--introduction", str(world["intro"]),
        "--state", str(world["node"]), "-o", "json",
    )  # fmt: skip


def add_workload(owner: Path, replicas: int) -> str:
    target = owner / "workloads/langid.yaml"
    target.parent.mkdir(exist_ok=True)
    text = (EXAMPLE / "workloads/langid.yaml").read_text()
    target.write_text(text.replace("replicas: 2", f"replicas: {replicas}"))
    git(owner, "add", "-A")
    git(owner, "commit", "-q", "-m", f"langid: {replicas} replicas")
    return git(owner, "rev-parse", "HEAD")


def test_a_newcomer_runs_a_circle_and_a_node_follows_it(
    world: dict[str, Path], circle: Callable[..., Result], tmp_path: Path
) -> None:
    keys, owner = world["keys"], world["owner"]
    first = follow(circle, world)
    assert first.code == 0, first.stderr
    assert first.json()["state"]["seq"] == 1
    state_file = world["node"] / "state.json"
    assert state_file.stat().st_mode & 0o777 == 0o600

    # A second owner's clone; a workload change proposed by the first.
    second = tmp_path / "second"
    git(tmp_path, "clone", "-q", str(world["origin"]), str(second))
    change = add_workload(owner, 3)
    assert circle("approve", "--repo", str(owner), "--key", str(keys / "alice")).code == 0
    one = circle("verify", "--repo", str(owner))
    assert one.code == 1
    assert "rule default needs weight 2, has 1 (alice); missing one of: bob, carol" in one.stdout
    review = circle("review", "--repo", str(owner), "-o", "markdown")
    assert review.code == 0
    assert "workload langid added" in review.stdout
    assert "| ❌ default | 1/2 | alice | bob, carol |" in review.stdout
    assert circle("push", str(world["origin"]), "--repo", str(owner)).code == 0

    # The node will not apply it yet: main is ahead of the newest approved step.
    waiting = follow(circle, world)
    assert waiting.code == 1
    assert "rule default needs weight 2, has 1 (alice)" in waiting.json()["refused"]
    assert waiting.json()["state"]["seq"] == 1

    # Bob and carol co-sign in two clones at once; the second push merges and retries.
    assert circle("pull", str(world["origin"]), "--repo", str(second)).code == 0
    assert git(second, "rev-parse", "HEAD") == change
    assert circle("approve", "--repo", str(second), "--key", str(keys / "bob")).code == 0
    assert circle("approve", "--repo", str(owner), "--key", str(keys / "carol")).code == 0
    assert circle("push", str(world["origin"]), "--repo", str(owner)).code == 0
    racing = circle("push", str(world["origin"]), "--repo", str(second))
    assert racing.code == 0, racing.stderr
    assert "merging its approvals" in racing.stderr
    assert circle("pull", str(world["origin"]), "--repo", str(owner)).code == 0
    two = circle("verify", "--repo", str(owner), "-o", "json")
    assert two.code == 0
    assert two.json()["signers"] == ["alice", "bob", "carol"]

    applied = follow(circle, world)
    assert applied.code == 0, applied.stdout
    policy = json.loads(world["intro"].read_text())["policySha256"]
    assert applied.json()["state"] == {"commit": change, "seq": 2, "policySha256": policy}

    # A branch, approved, then landed; landing something unapproved is refused.
    git(owner, "checkout", "-q", "-b", "scale")
    draft = add_workload(owner, 6)
    assert circle("approve", "scale", "--repo", str(owner), "--key", str(keys / "alice")).code == 0
    scaled = add_workload(owner, 4)  # the change moves on: alice's approval is now stale
    git(owner, "checkout", "-q", "main")
    refused = circle("land", "scale", "--repo", str(owner))
    assert refused.code == 1
    assert f"{scaled[:12]} is not approved" in refused.stderr
    review = circle("review", "scale", "--repo", str(owner))
    assert "workload langid: replicas 3 -> 4" in review.stdout
    assert f"alice: approves another version of the change ({draft[:12]})" in review.stdout
    for name in ("alice", "bob"):
        assert circle("approve", "scale", "--repo", str(owner), "--key", str(keys / name)).code == 0
    landed = circle("land", "scale", "--repo", str(owner))
    assert landed.code == 0, landed.stderr
    assert git(owner, "rev-parse", "main") == scaled
    assert (owner / "workloads/langid.yaml").read_text().count("replicas: 4") == 1
    assert circle("push", str(world["origin"]), "--repo", str(owner)).code == 0
    assert follow(circle, world).json()["state"]["seq"] == 3

    # Someone force-pushes main back to an older approved commit: refused, state untouched.
    before = state_file.read_bytes()
    git(owner, "push", "-q", "--force", str(world["origin"]), f"{change}:refs/heads/main")
    rollback = follow(circle, world)
    assert rollback.code == 1
    error = rollback.json()["error"]
    assert f"the source's main ({change[:12]}) is behind the applied seq 3" in error
    assert "refusing to roll back" in error
    assert state_file.read_bytes() == before

    # ... or to a rewritten history beside it: refused the same way.
    git(owner, "checkout", "-q", "--detach", change)
    (owner / "notes.txt").write_text("rewritten\n")
    git(owner, "add", "-A")
    git(owner, "commit", "-q", "-m", "rewritten")
    git(owner, "push", "-q", "--force", str(world["origin"]), "HEAD:refs/heads/main")
    fork = follow(circle, world)
    assert fork.code == 1
    assert "does not descend from the applied seq 3" in fork.json()["error"]
    assert state_file.read_bytes() == before


def test_follow_refuses_a_wide_state_file_and_a_wrong_introduction(
    world: dict[str, Path], circle: Callable[..., Result], tmp_path: Path
) -> None:
    assert follow(circle, world).code == 0
    state_file = world["node"] / "state.json"
    before = state_file.read_bytes()
    state_file.chmod(0o644)
    wide = follow(circle, world)
    assert wide.code == 1
    assert "permissions 0644 are too open" in wide.json()["error"]
    state_file.chmod(0o600)
    assert state_file.read_bytes() == before

    other = tmp_path / "other.json"
    intro = json.loads(world["intro"].read_text())
    other.write_text(json.dumps({**intro, "commit": "1" * 40}))
    stranger = circle(
        "follow", str(world["origin"]), "--introduction", str(other),
        "--state", str(tmp_path / "node2"),
    )  # fmt: skip
    assert stranger.code == 1
    assert "does not descend from the introduction 111111111111" in stranger.stderr

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = circle(
        "follow", str(world["origin"]), "--introduction", str(broken),
        "--state", str(tmp_path / "n3"),
    )  # fmt: skip
    assert bad.code == 2
    assert f"{broken}: not an introduction" in bad.stderr


@pytest.mark.skipif(shutil.which("ssh-agent") is None, reason="needs ssh-agent")
def test_approve_through_ssh_agent_with_only_the_public_key(
    world: dict[str, Path],
    circle: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys, owner = world["keys"], world["owner"]
    add_workload(owner, 3)
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
        subprocess.run(["ssh-add", "-q", str(keys / "bob")], check=True, timeout=30)
        public_only = tmp_path / "bob.pub"
        shutil.copy(keys / "bob.pub", public_only)  # no private key beside it: the agent signs

        signed = circle(
            "approve", "--repo", str(owner), "--key", str(public_only), "--ssh-keygen", "-o", "json"
        )

        assert signed.code == 0, signed.stderr
        assert signed.json()["member"] == "bob"
        monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "no-agent.sock"))
        refused = circle("approve", "--repo", str(owner), "--key", str(public_only), "--ssh-keygen")
        assert refused.code == 2
        assert f"ssh-keygen -Y sign with {public_only}:" in refused.stderr
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
        assert circle("approve", "--repo", str(owner), "--key", str(keys / "alice")).code == 0
        assert circle("verify", "--repo", str(owner), "-o", "json").json()["signers"] == [
            "alice",
            "bob",
        ]
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_follow_watch_applies_a_push_as_it_lands(
    world: dict[str, Path], circle: Callable[..., Result]
) -> None:
    """`circle follow --watch` as a real process: it applies seq 1, then the change pushed
    while it runs, without being restarted."""
    keys, owner = world["keys"], world["owner"]
    command = [
        sys.executable, "-m", "reconciler", "follow", str(world["origin"]),
        "--introduction", str(world["intro"]), "--state", str(world["node"]),
        "--watch", "--interval", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_file = world["node"] / "state.json"
    try:
        wait_for(lambda: state_file.exists() and '"seq": 1' in state_file.read_text())
        time.sleep(2.5)  # two rounds (--interval 1) that find nothing new
        change = add_workload(owner, 3)
        for name in ("alice", "bob"):
            assert circle("approve", "--repo", str(owner), "--key", str(keys / name)).code == 0
        assert circle("push", str(world["origin"]), "--repo", str(owner)).code == 0
        wait_for(lambda: change in state_file.read_text())
        assert '"seq": 2' in state_file.read_text()
    finally:
        process.terminate()
        output, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors  # SIGTERM ends it cleanly
    assert not list(world["node"].glob(".state.json.tmp-*"))
    # (the line for seq 2 may be cut by the SIGTERM that follows its save at once)
    assert f"applied seq 1 ({json.loads(world['intro'].read_text())['commit'][:12]})" in output
    # Rounds that change nothing (one a second while the owner approves and pushes) are quiet.
    assert output.count("at seq 1 (") == 1, output


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_push_and_pull_with_relative_paths_and_a_fresh_clone(
    world: dict[str, Path],
    circle: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Remotes typed relative to where the owner stands; `pull` into a fresh `git init` checks
    the circle out; a remote without approvals is no error; a wrong remote is one clear line."""
    monkeypatch.chdir(tmp_path)
    fresh = tmp_path / "fresh"
    git(tmp_path, "init", "-q", "-b", "main", str(fresh))
    pulled = circle("pull", "origin.git", "--repo", "fresh")
    assert pulled.code == 0, pulled.stderr
    assert "main created" in pulled.stdout
    assert (fresh / "circle.yaml").read_bytes() == (world["owner"] / "circle.yaml").read_bytes()
    assert git(fresh, "status", "--porcelain") == ""
    assert circle("log", "--repo", "fresh", "-o", "json").json()[0]["seq"] == 1

    bare = tmp_path / "no-approvals.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(world["owner"], "push", "-q", str(bare), "main")
    assert circle("pull", "no-approvals.git", "--repo", "fresh").code == 0

    missing = circle("push", "nowhere.git", "--repo", "fresh")
    assert missing.code == 2
    assert missing.stderr.startswith("circle: error: git push: 'nowhere.git' does not appear")
    assert missing.stderr.count("\n") == 1


def test_two_follows_on_one_state_do_not_interleave(
    world: dict[str, Path], circle: Callable[..., Result]
) -> None:
    from reconciler.chain import follow as node

    with node.exclusive(world["node"]):
        busy = follow(circle, world)
    assert busy.code == 2
    assert "another `circle follow` is using this state" in busy.json()["error"]
    assert not (world["node"] / "state.json").exists()
    assert follow(circle, world).code == 0


def test_review_for_tools_and_for_the_approved_head(
    world: dict[str, Path], circle: Callable[..., Result]
) -> None:
    keys, owner = world["keys"], world["owner"]
    head = circle("review", "--repo", str(owner), "-o", "json").json()
    assert head["approved"] is True
    assert head["seq"] == 1
    assert head["signers"] == ["alice", "bob", "carol"]

    change = add_workload(owner, 3)
    assert circle("approve", "--repo", str(owner), "--key", str(keys / "carol")).code == 0
    pending = circle("review", "--repo", str(owner), "-o", "json").json()
    assert pending["revision"] == change
    assert pending["approved"] is False
    assert pending["changes"][0]["line"].startswith("workload langid added (")
    [rule] = pending["rules"]
    assert (rule["rule"], rule["weight"], rule["threshold"], rule["signed"]) == (
        "default", 1, 2, ["carol"]
    )  # fmt: skip
    assert rule["missing"] == ["alice", "bob"]
    text = circle("review", "--repo", str(owner))
    assert "NO  default: weight 1/2, signed by carol; missing one of: alice, bob" in text.stdout
    assert text.stdout.rstrip().endswith("not approved: 1 rule unmet")
