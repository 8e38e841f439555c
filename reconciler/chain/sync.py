"""Moving an owner's chain between clones: `land` a revision on main once it is approved, and
`push` / `pull` main together with the approvals ref.

Approvals made in different clones are files at different paths, so they merge as a union
(`approvals.merge`): a push rejected because a co-signer pushed first fetches, merges and tries
again. `main` only ever fast-forwards; a diverged main is reported, never merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pygit2

from reconciler.chain import approvals
from reconciler.chain.gitcli import GitFailed, git
from reconciler.chain.propose import Proposal
from reconciler.chain.walk import MAIN
from reconciler.errors import CheckFailed

REMOTE_MAIN = "refs/circle/remote/main"
REMOTE_APPROVALS = "refs/circle/remote/approvals"
ATTEMPTS = 5


def fast_forward(repo: pygit2.Repository, target: str) -> None:
    """Move main to `target`, and the work tree with it when main is checked out."""
    if not repo.is_bare and not repo.head_is_unborn and repo.head.name == MAIN:
        git(repo.workdir, "merge", "--ff-only", "--quiet", target)
    else:
        current = repo.references[MAIN]
        if not repo.descendant_of(pygit2.Oid(hex=target), current.target):
            raise CheckFailed(f"main cannot fast-forward to {target[:12]}")
        current.set_target(pygit2.Oid(hex=target), f"circle: fast-forward to {target[:12]}")


@dataclass(frozen=True)
class Landed:
    seq: int
    commit: str
    signers: tuple[str, ...]


def land(repo: pygit2.Repository, proposal: Proposal, revision: str) -> Landed:
    """Fast-forward main to the proposal's revision if it is an approved commit of the chain."""
    target = proposal.target
    landed = next((step for step in proposal.steps if step.commit == target), None)
    if landed is None:
        raise CheckFailed(
            f"{target[:12]} is not approved (the approved head is seq "
            f"{proposal.state.seq if proposal.state else 0}); see circle review {revision}"
        )
    main = str(repo.references[MAIN].target)
    if main != target:
        if repo.descendant_of(pygit2.Oid(hex=main), pygit2.Oid(hex=target)):
            raise CheckFailed(f"main ({main[:12]}) is already past {target[:12]}")
        fast_forward(repo, target)
    return Landed(landed.seq, target, landed.signers)


def fetch(repo: pygit2.Repository, remote: str) -> None:
    """REMOTE's main and approvals into refs/circle/remote/; a remote without approvals yet
    is no error (the partial glob matches nothing)."""
    for ref in (REMOTE_MAIN, REMOTE_APPROVALS):
        if ref in repo.references:
            repo.references.delete(ref)
    git(
        repo.path, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", remote,
        f"+{MAIN}:{REMOTE_MAIN}", f"+{approvals.REF}*:{REMOTE_APPROVALS}*",
    )  # fmt: skip


def merge_remote_approvals(repo: pygit2.Repository) -> None:
    theirs = approvals.head(repo, REMOTE_APPROVALS)  # a tree or blob there: ApprovalStoreError
    if theirs is not None:
        approvals.merge(repo, theirs.id)


def pull(repo: pygit2.Repository, remote: str) -> str:
    """Fetch REMOTE's main and approvals: union the approvals, fast-forward main. Says what
    main did: created, up to date, ahead or fast-forwarded."""
    fetch(repo, remote)
    merge_remote_approvals(repo)
    theirs = str(repo.references[REMOTE_MAIN].target)
    ours_ref = repo.references.get(MAIN)
    ours = str(ours_ref.target) if ours_ref is not None else None
    if ours is None:
        fresh = not repo.is_bare and repo.lookup_reference("HEAD").target == MAIN
        repo.references.create(MAIN, pygit2.Oid(hex=theirs))
        if fresh:  # a `git init` on main: check the circle out (never over a user's file)
            git(repo.workdir, "read-tree", "-m", "-u", MAIN)
        return "created"
    if ours == theirs or repo.descendant_of(pygit2.Oid(hex=ours), pygit2.Oid(hex=theirs)):
        return "up to date" if ours == theirs else "ahead"
    if repo.descendant_of(pygit2.Oid(hex=theirs), pygit2.Oid(hex=ours)):
        fast_forward(repo, theirs)
        return "fast-forwarded"
    raise CheckFailed(
        f"main ({ours[:12]}) and {remote}'s main ({theirs[:12]}) have diverged: rebase your "
        "commits onto it (approvals were merged)"
    )


def push(repo: pygit2.Repository, remote: str, retrying: Callable[[int], None]) -> list[str]:
    """Push main and the approvals ref to REMOTE together (atomically), merging co-signers'
    approvals when REMOTE has moved, up to ATTEMPTS times (`retrying(attempt)` says so).
    The refs pushed."""
    refs = [f"{MAIN}:{MAIN}"]
    if approvals.REF in repo.references:
        refs.append(f"{approvals.REF}:{approvals.REF}")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            git(repo.path, "push", "--quiet", "--atomic", "--", remote, *refs)
            break
        except GitFailed as error:
            if "rejected" not in error.stderr and "fetch first" not in error.stderr:
                raise
            if attempt == ATTEMPTS:
                raise CheckFailed(
                    f"{remote} kept moving: gave up after {ATTEMPTS} attempts"
                ) from None
            retrying(attempt)
            fetch(repo, remote)
            merge_remote_approvals(repo)
            theirs = repo.references[REMOTE_MAIN].target
            ours = repo.references[MAIN].target
            if theirs != ours and not repo.descendant_of(ours, theirs):
                raise CheckFailed(
                    f"{remote}'s main has commits that yours lacks: circle pull {remote} first"
                ) from None
    return [ref.partition(":")[0] for ref in refs]
