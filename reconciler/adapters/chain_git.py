"""Read a proposed transition's facts out of the circle's Git repository (pygit2).

Everything the pure verifier (`reconciler.core.chain`) needs about `from -> to`: the changed
paths, the `to` tree and its sha256 manifest, ancestry, and the circle.yaml bytes on both sides.
Symlinks and submodules in the `to` tree are refused here unless the policy in force allows them.
"""

from __future__ import annotations

from typing import Any

import pygit2

from reconciler.adapters.gittree import listing
from reconciler.core.chain import ChainError, Transition
from reconciler.core.changes import changed_paths, check_entries, tree_sha256
from reconciler.model.circle import POLICY_FILE


def commit_of(repo: pygit2.Repository, revision: str) -> Any:
    try:
        found = repo.revparse_single(revision)
    except (KeyError, ValueError):
        raise ChainError(f"{revision}: no such commit") from None
    return found.peel(pygit2.Commit)


def policy_at(repo: pygit2.Repository, commit: Any) -> bytes:
    """The exact bytes of circle.yaml in `commit`."""
    try:
        entry = commit.tree[POLICY_FILE]
    except KeyError:
        raise ChainError(f"{str(commit.id)[:12]} has no {POLICY_FILE}") from None
    blob = repo.get(entry.id)
    if not isinstance(blob, pygit2.Blob):
        raise ChainError(f"{str(commit.id)[:12]}: {POLICY_FILE} is not a file")
    return bytes(blob.data)


def transition(
    repo: pygit2.Repository,
    *,
    ref: str,
    seq: int,
    from_commit: str | None,
    to_commit: str,
    allow_symlinks: bool = False,
    allow_submodules: bool = False,
) -> Transition:
    to = commit_of(repo, to_commit)
    new = listing(repo, to.tree)
    check_entries(new, allow_symlinks=allow_symlinks, allow_submodules=allow_submodules)
    start: Any = None
    if from_commit is None:
        old = None
        descends = True
        policy_from = None
    else:
        start = commit_of(repo, from_commit)
        old = listing(repo, start.tree)
        descends = repo.descendant_of(to.id, start.id)
        policy_from = policy_at(repo, start)
    return Transition(
        ref=ref,
        seq=seq,
        from_commit=None if from_commit is None else str(start.id),
        to_commit=str(to.id),
        to_tree=str(to.tree.id),
        tree_sha256=tree_sha256(new),
        changed=tuple(changed_paths(old, new)),
        descends=descends,
        policy_from=policy_from,
        policy_to=policy_at(repo, to),
    )
