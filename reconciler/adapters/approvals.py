"""Where approvals live: a dedicated ref of the circle's own Git repository.

    refs/circle/approvals -> commit -> tree
        <seq, 10 digits>/<to commit>/<signer key fingerprint, hex>.statement   exact bytes signed
        <seq, 10 digits>/<to commit>/<signer key fingerprint, hex>.sig         SSHSIG, armored

One file pair per (transition, signer), so co-signers never touch the same path: approvals made
in different clones merge as a union of trees, without conflicts. Nothing here is trusted: the
chain verifier checks every statement and signature it reads; this module only stores bytes.
Git notes are not used (one note per object, O(n) writes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pygit2

from builders import sshsig
from reconciler.core.statements import decode
from reconciler.errors import CheckFailed

REF = "refs/circle/approvals"
_AUTHOR = pygit2.Signature("circle", "circle@localhost", 0, 0)


class ApprovalStoreError(CheckFailed):
    """The approvals ref holds something that is not an approval pair, or cannot be updated."""


@dataclass(frozen=True, slots=True)
class StoredApproval:
    path: str  # of the statement, inside the approvals tree
    statement: bytes
    signature: str


def _key_name(signature: str) -> str:
    """The hex sha256 of the signer's key blob: a file name no two signers share."""
    return hashlib.sha256(sshsig.parse(signature).public_key).hexdigest()


def _head(repo: pygit2.Repository) -> pygit2.Commit | None:
    reference = repo.references.get(REF)
    if reference is None:
        return None
    commit: Any = repo.get(reference.target)
    if not isinstance(commit, pygit2.Commit):
        raise ApprovalStoreError(f"{REF} does not point to a commit")
    return commit


def _insert(repo: pygit2.Repository, tree: Any, parts: list[str], blob: pygit2.Oid) -> pygit2.Oid:
    """The id of `tree` with `blob` at `parts` (trees created on the way)."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    name = parts[0]
    if len(parts) == 1:
        builder.insert(name, blob, pygit2.GIT_FILEMODE_BLOB)
    else:
        existing = tree[name] if tree is not None and name in tree else None
        child = repo.get(existing.id) if existing is not None else None
        builder.insert(name, _insert(repo, child, parts[1:], blob), pygit2.GIT_FILEMODE_TREE)
    return builder.write()


def add(repo: pygit2.Repository, statement: bytes, signature: str) -> str:
    """File one approval (statement bytes as signed, and its signature); returns its path.

    The statement must parse and the signature must name a key; whether it verifies, and for
    whom, is the chain verifier's business. Adding the same pair again changes nothing.
    """
    approval = decode(statement)
    folder = f"{approval.seq:010d}/{approval.to_commit}"
    name = _key_name(signature)
    path = f"{folder}/{name}.statement"
    head = _head(repo)
    tree = head.tree if head is not None else None
    if (
        tree is not None
        and _read_blob(repo, tree, path) == statement
        and _read_blob(repo, tree, f"{folder}/{name}.sig") == signature.encode()
    ):
        return path
    parts = folder.split("/")
    updated = _insert(repo, tree, [*parts, f"{name}.statement"], repo.create_blob(statement))
    updated = _insert(
        repo, repo.get(updated), [*parts, f"{name}.sig"], repo.create_blob(signature.encode())
    )
    parents = [head.id] if head is not None else []
    message = f"approve seq {approval.seq}: {approval.to_commit[:12]}"
    commit = repo.create_commit(None, _AUTHOR, _AUTHOR, message, updated, parents)
    _move_ref(repo, head, commit)
    return path


def _move_ref(repo: pygit2.Repository, expected: pygit2.Commit | None, target: pygit2.Oid) -> None:
    """Move the ref only if nobody else moved it meanwhile (compare and swap)."""
    current = _head(repo)
    if (current.id if current else None) != (expected.id if expected else None):
        raise ApprovalStoreError(f"{REF} moved while an approval was being filed; try again")
    repo.references.create(REF, target, force=True)


def _read_blob(repo: pygit2.Repository, tree: Any, path: str) -> bytes | None:
    try:
        entry = tree[path]
    except KeyError:
        return None
    blob = repo.get(entry.id)
    return blob.data if isinstance(blob, pygit2.Blob) else None


def read(repo: pygit2.Repository, commit: pygit2.Oid | None = None) -> Iterator[StoredApproval]:
    """Every approval pair under the ref (or under `commit` of the approvals history)."""
    head = repo.get(commit) if commit is not None else _head(repo)
    if head is None:
        return
    if not isinstance(head, pygit2.Commit):
        raise ApprovalStoreError(f"{commit} is not a commit")
    for seq_entry in head.tree:
        seq_tree = repo.get(seq_entry.id)
        if not isinstance(seq_tree, pygit2.Tree):
            continue
        for to_entry in seq_tree:
            to_tree = repo.get(to_entry.id)
            if not isinstance(to_tree, pygit2.Tree):
                continue
            for entry in to_tree:
                if not str(entry.name).endswith(".statement"):
                    continue
                base = f"{seq_entry.name}/{to_entry.name}/{entry.name}"
                statement = _read_blob(repo, head.tree, base)
                signature = _read_blob(repo, head.tree, base.removesuffix(".statement") + ".sig")
                if statement is not None and signature is not None:
                    yield StoredApproval(base, statement, signature.decode("utf-8", "replace"))


def merge(repo: pygit2.Repository, other: pygit2.Oid) -> pygit2.Oid:
    """Union the approvals of `other` (fetched from another clone) into the ref.

    Pairs are added, never replaced: a path that exists on both sides with different bytes is
    kept as ours (either may be forged; the verifier decides), so a merge can only add.
    """
    head = _head(repo)
    theirs: Any = repo.get(other)
    if not isinstance(theirs, pygit2.Commit):
        raise ApprovalStoreError(f"{other} is not an approvals commit")
    if head is None:
        _move_ref(repo, None, theirs.id)
        return theirs.id
    if head.id == theirs.id or repo.descendant_of(head.id, theirs.id):
        return head.id
    if repo.descendant_of(theirs.id, head.id):
        _move_ref(repo, head, theirs.id)
        return theirs.id
    tree: Any = head.tree
    for approval in read(repo, theirs.id):
        for suffix, data in (
            (".statement", approval.statement),
            (".sig", approval.signature.encode()),
        ):
            path = approval.path.removesuffix(".statement") + suffix
            if _read_blob(repo, tree, path) is None:
                tree = repo.get(_insert(repo, tree, path.split("/"), repo.create_blob(data)))
    commit = repo.create_commit(
        None, _AUTHOR, _AUTHOR, "merge approvals", tree.id, [head.id, theirs.id]
    )
    _move_ref(repo, head, commit)
    return commit
