"""The approvals ref: one file pair per (transition, signer), exact bytes, union merges."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import sshsig
from reconciler.chain import approvals
from reconciler.chain.statements import NAMESPACE, Approval, StatementError


def statement(seq: int, to: str) -> bytes:
    return Approval(
        circle="example-ai-circle",
        introduction="a" * 40,
        ref="refs/heads/main",
        seq=seq,
        from_commit=None if seq == 1 else "b" * 40,
        to_commit=to,
        to_tree="d" * 40,
        tree_sha256="e" * 64,
        policy_sha256="f" * 64,
        issued_at=1_700_000_000,
        expires_at=1_700_604_800,
    ).encode()


def signed(data: bytes, key: Ed25519PrivateKey) -> str:
    return sshsig.sign(data, key, NAMESPACE)


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "circle"), bare=True)


def test_co_signers_file_side_by_side_and_bytes_come_back_exactly(
    repo: pygit2.Repository,
) -> None:
    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    data = statement(1, "c" * 40)

    first = approvals.add(repo, data, signed(data, alice))
    second = approvals.add(repo, data, signed(data, bob))
    again = approvals.add(repo, data, signed(data, alice))

    assert first != second
    assert again == first
    stored = sorted(approvals.read(repo), key=lambda a: a.path)
    assert [a.path for a in stored] == sorted([first, second])
    assert all(a.statement == data for a in stored)
    for item in stored:
        key = sshsig.parse(item.signature).public_key_line
        sshsig.verify(item.statement, item.signature, key, NAMESPACE)
    history = subprocess.run(
        ["git", "--git-dir", repo.path, "rev-list", "--count", approvals.REF],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    assert history == "2", "filing the same pair again adds no commit"


def test_approvals_made_in_two_clones_merge_as_a_union(tmp_path: Path) -> None:
    alice, bob = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ours = pygit2.init_repository(str(tmp_path / "ours"), bare=True)
    data = statement(1, "c" * 40)
    approvals.add(ours, data, signed(data, alice))
    theirs = pygit2.clone_repository(ours.path, str(tmp_path / "theirs"), bare=True)
    theirs.references.create(approvals.REF, ours.references[approvals.REF].target, force=True)
    approvals.add(theirs, data, signed(data, bob))
    later = statement(2, "9" * 40)
    approvals.add(ours, later, signed(later, alice))

    remote = ours.remotes.create("theirs", theirs.path)
    remote.fetch([f"+{approvals.REF}:refs/remotes/theirs/approvals"])
    merged = approvals.merge(ours, ours.references["refs/remotes/theirs/approvals"].target)

    assert ours.references[approvals.REF].target == merged
    assert sorted(a.statement for a in approvals.read(ours)) == sorted([data, data, later])


def test_a_malformed_statement_is_not_filed(repo: pygit2.Repository) -> None:
    with pytest.raises(StatementError, match="not JSON"):
        approvals.add(repo, b"not json", signed(b"not json", Ed25519PrivateKey.generate()))
    assert approvals.REF not in repo.references
