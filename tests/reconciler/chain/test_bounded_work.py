"""Junk costs a node, and an owner, bounded work; and what a source drops, a node keeps.

The findings of an independent attack test, each a class: oversized commit objects, signature
blobs and documents are refused from their object header, unread; approval pairs by keys that
are no member's are not read at all; a tree too deep to walk is a refusal; a node keeps every
approval it has seen even when the source's approvals ref is emptied, made a tag or a blob;
git never takes a remote for an option, nor opens a FIFO in the quarantine repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from builders import sshsig
from reconciler.chain import approvals
from reconciler.chain.trees import MAX_COMMIT_BYTES
from reconciler.chain.verify import NotVouched
from reconciler.chain.walk import MAIN, Chain
from reconciler.errors import ReconcilerError
from tests.chainsim import NOW
from tests.conftest import Result, git
from tests.reconciler.chain.test_chain_attacks import (
    OWNERS,
    Node,
    file_by_hand,
    key_name,
    make_node,
)
from tests.reconciler.chain.test_hostile_repository import sign_anything

_AUTHOR = pygit2.Signature("mallory", "m@example.org", 1_700_000_000, 0)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


def huge_commit(node: Node, parent: str, size: int) -> str:
    repo = node.sim.repo
    tree = repo.get(parent).tree_id
    return str(
        repo.create_commit(None, _AUTHOR, _AUTHOR, "x" * size, tree, [pygit2.Oid(hex=parent)])
    )


def test_an_oversized_commit_is_refused_unread_as_main_and_as_a_candidate(node: Node) -> None:
    before = node.state_file.read_bytes()
    junk = huge_commit(node, node.second, MAX_COMMIT_BYTES + 1)
    node.sim.reset(junk)
    with pytest.raises(
        ReconcilerError, match=rf"is a commit of \d+ bytes, over the {MAX_COMMIT_BYTES}"
    ):
        node.advance()
    node.sim.reset(node.second)
    side = huge_commit(node, node.second, MAX_COMMIT_BYTES + 1)
    sign_anything(node, side, *OWNERS)  # even signed by everyone: no real change needs one
    third = node.sim.scale(4)
    node.approve(third, "alice", "bob")
    done = node.advance()
    assert [step.commit for step in done.applied] == [third]
    assert node.state_file.read_bytes() != before


def test_pairs_by_no_members_key_are_not_read(node: Node) -> None:
    """The folder of a candidate is read by the SIGNER part of file names: a pair filed under a
    name that is no member's key is skipped unread (here: a blob that is not even there)."""
    to = node.sim.scale(7)
    [(statement, signature)] = node.sim.sign(node.statement(to), "alice")
    file_by_hand(node.sim.repo, 3, to, key_name(node.sim.keys["alice"]), statement, signature)
    tree = approvals.snapshot(node.sim.repo)
    members = {key_name(node.sim.keys[name]) for name in OWNERS}
    read = list(approvals.read_folder(node.sim.repo, 3, to, tree, members))
    assert [stored.statement for stored in read] == [statement]
    nobody = {hashlib.sha256(b"nobody").hexdigest()[:16]}
    assert list(approvals.read_folder(node.sim.repo, 3, to, tree, nobody)) == []


def test_a_signature_blob_over_the_limit_is_no_approval(node: Node) -> None:
    to = node.sim.scale(7)
    [(statement, signature)] = node.sim.sign(node.statement(to), "alice")
    padded = signature + " " * approvals.MAX_SIGNATURE_BYTES  # still valid armor, too large
    file_by_hand(node.sim.repo, 3, to, key_name(node.sim.keys["alice"]), statement, padded)
    assert sshsig.parse(padded).public_key == sshsig.parse(signature).public_key
    assert Chain(node.sim.repo, node.sim.intro).candidates(3)[to] == []


def test_a_folder_named_after_no_commit_is_no_candidate(node: Node) -> None:
    ghost = "0123456789abcdef0123456789abcdef01234567"
    file_by_hand(node.sim.repo, 3, ghost, "a" * 16, b"{}", "junk")
    assert Chain(node.sim.repo, node.sim.intro).candidate_commits(3) == []


def test_a_tree_too_deep_to_walk_is_one_refusal(node: Node) -> None:
    repo = node.sim.repo
    inner = repo.TreeBuilder()
    inner.insert("leaf.yaml", repo.create_blob(b"x: 1\n"), pygit2.GIT_FILEMODE_BLOB)
    oid = inner.write()
    for _ in range(sys.getrecursionlimit() + 200):
        level = repo.TreeBuilder()
        level.insert("d", oid, pygit2.GIT_FILEMODE_TREE)
        oid = level.write()
    base = repo.TreeBuilder(repo.get(node.second).tree)
    base.insert("src", oid, pygit2.GIT_FILEMODE_TREE)
    to = str(
        repo.create_commit(
            None, _AUTHOR, _AUTHOR, "deep", base.write(), [pygit2.Oid(hex=node.second)]
        )
    )
    node.sim.reset(to)
    chain = Chain(repo, node.sim.intro)
    with pytest.raises(ReconcilerError, match="nested too deeply to be read"):
        chain.check(node.state(), to, [], NOW, vouched_first=False)
    with pytest.raises(NotVouched):  # a node never walks it: nobody vouched for it
        chain.check(node.state(), to, [], NOW)


# --- through the command line, against a served origin ------------------------------------------


def follow_cli(circle: Callable[..., Result], served: dict[str, Path], folder: Path) -> Result:
    return circle(
        "follow", str(served["origin"]), "--introduction", str(served["intro"]),
        "--state", str(folder), "-o", "json",
    )  # fmt: skip


def propose_two(circle: Callable[..., Result], served: dict[str, Path]) -> str:
    """A commit on a branch of the owner's clone, approved by two owners and pushed (main
    not landed yet)."""
    owner, keys = served["owner"], served["keys"]
    (owner / "README.md").write_text("hello\n")
    git(owner, "add", "README.md")
    git(owner, "commit", "-q", "-m", "readme")
    head = git(owner, "rev-parse", "HEAD")
    git(owner, "branch", "-q", "proposal", head)
    git(owner, "reset", "-q", "--hard", "HEAD~1")
    for name in ("alice", "bob"):
        signed = circle("approve", "proposal", "--repo", str(owner), "--key", str(keys / name))
        assert signed.code == 0, signed.stderr
    assert circle("push", str(served["origin"]), "--repo", str(owner)).code == 0
    git(owner, "push", "-q", str(served["origin"]), "proposal")  # the commit, for later
    return head


@pytest.mark.parametrize("drop", ["empty-tree", "tag", "blob", "deleted"])
def test_a_node_keeps_the_approvals_a_source_drops(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path], drop: str
) -> None:
    origin, folder = served["origin"], tmp_path / "node"
    head = propose_two(circle, served)
    assert follow_cli(circle, served, folder).json()["state"]["seq"] == 1  # approvals seen
    origin_repo = pygit2.Repository(str(origin))
    if drop == "empty-tree":
        empty = origin_repo.TreeBuilder().write()
        tip = origin_repo.references[approvals.REF].target
        wiped = origin_repo.create_commit(None, _AUTHOR, _AUTHOR, "wipe", empty, [tip])
        origin_repo.references.create(approvals.REF, wiped, force=True)
    elif drop == "tag":
        target = origin_repo.create_blob(b"")
        tag = origin_repo.create_tag("wipe", target, pygit2.enums.ObjectType.BLOB, _AUTHOR, "x")
        origin_repo.references.create(approvals.REF, tag, force=True)
    elif drop == "blob":
        origin_repo.references.create(approvals.REF, origin_repo.create_blob(b"x"), force=True)
    else:
        origin_repo.references.delete(approvals.REF)
    origin_repo.references.create(MAIN, pygit2.Oid(hex=head), force=True)  # main lands

    done = follow_cli(circle, served, folder)
    assert done.code == 0, done.stderr
    assert done.json()["state"] == {**done.json()["state"], "commit": head, "seq": 2}


def test_pull_refuses_a_remote_approvals_ref_that_is_a_blob(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path]
) -> None:
    origin_repo = pygit2.Repository(str(served["origin"]))
    origin_repo.references.create(approvals.REF, origin_repo.create_blob(b"x"), force=True)
    done = circle("pull", str(served["origin"]), "--repo", str(served["owner"]))
    assert done.code == 1
    assert done.stderr.strip().splitlines() == [
        "circle: error: refs/circle/remote/approvals points at a blob, not an approvals commit"
    ]


@pytest.mark.parametrize("command", ["follow", "pull", "push"])
def test_a_remote_is_never_an_option_to_git(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path], command: str
) -> None:
    marker = tmp_path / "ran"
    hostile = f"--upload-pack=touch {marker};git-upload-pack"
    if command == "follow":
        intro, state = str(served["intro"]), str(tmp_path / "n")
        args = ["follow", "--introduction", intro, "--state", state, "--", hostile]
    else:
        args = [command, "--repo", str(served["owner"]), "--", hostile]
    done = circle(*args)
    assert done.code == 2
    assert "a remote cannot start with '-'" in done.stderr
    assert not marker.exists()


def test_a_fifo_in_the_quarantine_repository_is_refused_at_once(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path]
) -> None:
    folder = tmp_path / "node"
    assert follow_cli(circle, served, folder).code == 0
    config = folder / "repo.git" / "config"
    config.unlink()
    os.mkfifo(config, 0o600)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "follow", str(served["origin"]),
         "--introduction", str(served["intro"]), "--state", str(folder)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"{config}: not a regular file of this agent's in the quarantine" in done.stderr
