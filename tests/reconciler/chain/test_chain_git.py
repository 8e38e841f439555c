"""The Human Chain over a real Git repository: the first commit approved by governance, a change
approved by two owners through the approvals ref, and a force-pushed rollback refused with the
node's state file left byte-identical."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from builders import sshsig
from reconciler.chain import approvals, node_state
from reconciler.chain import walk as chain_walk
from reconciler.chain.changes import TreeRefused
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.statements import NAMESPACE, Approval
from reconciler.chain.trees import transition
from reconciler.chain.values import Evidence, Introduction, NodeState, Transition, sha256
from reconciler.chain.verify import Equivocation, ForkError, Policies, Verifier, parse_policy
from tests.conftest import EXAMPLE
from tests.reconciler.chain.test_chain import KEYS, policy_text

NOW = 1_700_000_100


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip


def sign_and_file(
    repo: pygit2.Repository, intro: Introduction, step: Transition, *names: str, now: int = NOW
) -> None:
    data = Approval(
        circle=intro.circle,
        introduction=intro.commit,
        ref=step.ref,
        seq=step.seq,
        from_commit=step.from_commit,
        to_commit=step.to_commit,
        to_tree=step.to_tree,
        tree_sha256=step.tree_sha256,
        policy_sha256=sha256(step.policy_from if step.policy_from is not None else step.policy_to),
        issued_at=now - 10,
        expires_at=now + 3600,
    ).encode()
    for name in names:
        approvals.add(repo, data, sshsig.sign(data, KEYS[name], NAMESPACE))


def evidence(repo: pygit2.Repository, step: Transition) -> list[Evidence]:
    tree = approvals.snapshot(repo)
    filed = approvals.read_folder(repo, step.seq, step.to_commit, tree)
    return [Evidence(stored.statement, stored.signature) for stored in filed]


@pytest.fixture
def circle(tmp_path: Path) -> Path:
    root = tmp_path / "circle"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "circle.yaml").write_bytes(policy_text())
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the circle")
    return root


def test_a_chain_from_introduction_to_change_and_a_refused_rollback(
    circle: Path, tmp_path: Path
) -> None:
    repo = pygit2.Repository(str(circle))
    first = git(circle, "rev-parse", "HEAD")
    intro = Introduction("example-ai-circle", first, sha256((circle / "circle.yaml").read_bytes()))
    ref = "refs/heads/main"

    genesis = transition(repo, ref=ref, seq=1, from_commit=None, to_commit=first)
    assert "circle.yaml" in genesis.changed
    sign_and_file(repo, intro, genesis, "alice", "bob", "carol")
    state = Verifier(intro).verify(None, genesis, evidence(repo, genesis), NOW).state
    state_file = tmp_path / "node" / "state.json"
    state_file.parent.mkdir()
    node_state.save(state_file, state)

    workload = circle / "workloads/langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
    git(circle, "commit", "-q", "-am", "three replicas")
    second = git(circle, "rev-parse", "HEAD")
    change = transition(repo, ref=ref, seq=2, from_commit=first, to_commit=second)
    assert change.changed == ("workloads/langid.yaml",)

    sign_and_file(repo, intro, change, "alice")
    with pytest.raises(QuorumNotMet, match=r"rule workloads needs weight 2, has 1 \(alice\)"):
        Verifier(intro).verify(
            state,
            change,
            evidence(repo, change),
            NOW,
        )
    sign_and_file(repo, intro, change, "bob")
    state = (
        Verifier(intro)
        .verify(
            state,
            change,
            evidence(repo, change),
            NOW,
        )
        .state
    )
    node_state.save(state_file, state)
    assert state.seq == 2

    # Someone force-pushes main back to the first commit plus a different change.
    git(circle, "reset", "-q", "--hard", first)
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 9"))
    git(circle, "commit", "-q", "-am", "nine replicas, unapproved")
    rogue = git(circle, "rev-parse", "HEAD")
    before = state_file.read_bytes()
    forged = transition(repo, ref=ref, seq=3, from_commit=second, to_commit=rogue)
    assert forged.descends is False
    with pytest.raises(ForkError, match="does not descend from"):
        Verifier(intro).verify(
            node_state.load(state_file),
            forged,
            [],
            NOW,
        )
    assert state_file.read_bytes() == before


def test_a_symlink_is_refused_by_the_policy_in_force_before_any_signature(circle: Path) -> None:
    (circle / "workloads/evil.yaml").symlink_to("../circle.yaml")
    git(circle, "add", "-A")
    git(circle, "commit", "-q", "-m", "link")
    repo = pygit2.Repository(str(circle))
    head = repo.revparse_single("HEAD")
    step = transition(
        repo,
        ref="refs/heads/main",
        seq=2,
        from_commit=str(head.parents[0].id),
        to_commit=str(head.id),
    )
    assert step.links == ("workloads/evil.yaml",)
    assert step.changed == ("workloads/evil.yaml",)
    intro = Introduction("example-ai-circle", "0" * 40, sha256(step.policy_to))
    state = NodeState(str(step.from_commit), 1, sha256(step.policy_to))
    policy = parse_policy(step.policy_to)
    with pytest.raises(TreeRefused, match=r"workloads/evil\.yaml is a symbolic link"):
        Verifier(intro).verify(state, step, [], NOW)
    allowing = policy.model_copy(
        update={"consensus": policy.consensus.model_copy(update={"allow_symlinks": True})}
    )
    with pytest.raises(QuorumNotMet):  # allowed: now it is a matter of signatures
        Verifier(intro, policies=Policies(lambda data: allowing)).verify(state, step, [], NOW)


def test_walking_the_chain_cold_and_catching_an_equivocation(circle: Path) -> None:
    repo = pygit2.Repository(str(circle))
    ref = "refs/heads/main"
    intro = chain_walk.introduction(repo, ref)
    assert intro.commit == git(circle, "rev-parse", "HEAD")
    genesis = transition(repo, ref=ref, seq=1, from_commit=None, to_commit=intro.commit)
    sign_and_file(repo, intro, genesis, "alice", "bob", "carol")

    workload = circle / "workloads/langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
    git(circle, "commit", "-q", "-am", "three")
    three = git(circle, "rev-parse", "HEAD")
    sign_and_file(
        repo,
        intro,
        transition(repo, ref=ref, seq=2, from_commit=intro.commit, to_commit=three),
        "alice",
        "bob",
    )
    # An unapproved candidate for seq 2 (one signature) does not disturb the walk.
    git(circle, "checkout", "-q", "-b", "other", intro.commit)
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 4"))
    git(circle, "commit", "-q", "-am", "four")
    four = git(circle, "rev-parse", "HEAD")
    competing = transition(repo, ref=ref, seq=2, from_commit=intro.commit, to_commit=four)
    sign_and_file(repo, intro, competing, "carol")

    steps, state = chain_walk.Chain(repo, intro, ref).walk(NOW)
    assert [(s.seq, s.commit, s.signers) for s in steps] == [
        (1, intro.commit, ("alice", "bob", "carol")),
        (2, three, ("alice", "bob")),
    ]
    assert state is not None
    assert state.commit == three

    # Owners who sign two different commits for one seq: the walk refuses to pick one.
    sign_and_file(repo, intro, competing, "alice")
    with pytest.raises(Equivocation, match="seq 2 has 2 approved commits"):
        chain_walk.Chain(repo, intro, ref).walk(NOW)
