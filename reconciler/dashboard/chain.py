"""The Chain page's data: the approved transitions, verified from the introduction as `circle
log` does, and every pending proposal (a branch tip past the approved head, or a commit that
approvals are filed for) reviewed as `circle review` does: what it changes, who signed, who is
missing, which approvals are stale.

Read from an owner's clone; every value is the chain's own verdict, never the store's.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.chain import approvals, headcache
from reconciler.chain.propose import propose, trusted_introduction
from reconciler.chain.review import review
from reconciler.chain.walk import MAIN, Chain
from reconciler.desired.review import Action, Change
from reconciler.errors import ReconcilerError

MAX_PROPOSALS = 32  # newest first; more are counted, not reviewed
MAX_TITLE = 200
# An env value in a desired-state change ("env.TOKEN a -> b") is never shown.
_ENV_DETAIL = re.compile(r"(env\.\S+) (?:(added|removed)\b)?.*", re.DOTALL)


@dataclass(frozen=True)
class Refs:
    """What the chain page depends on: every ref's target. Unchanged refs, unchanged page."""

    targets: tuple[tuple[str, str], ...]


def refs_of(repo_dir: Path) -> Refs:
    repo = pygit2.Repository(str(repo_dir))
    found = []
    for name in repo.references:
        if name.startswith(("refs/heads/", "refs/circle/")):
            with contextlib.suppress(KeyError, ValueError, pygit2.GitError):
                found.append((name, str(repo.references[name].resolve().target)))
    return Refs(tuple(sorted(found)))


def chain_page(repo_dir: Path, now: int) -> dict[str, Any]:
    """The approved steps (oldest first) and the pending proposals (newest first)."""
    repo = pygit2.Repository(str(repo_dir))
    found = trusted_introduction(repo, None, now)
    walker = Chain(repo, found.intro, MAIN)
    steps, state = headcache.walk(repo, walker, now)
    approved = [
        {
            "seq": step.seq,
            "commit": step.commit,
            "time": _commit(repo, step.commit).commit_time,
            "title": _title(_commit(repo, step.commit)),
            "signers": list(step.signers),
            "policyVersion": step.policy_version,
        }
        for step in steps
    ]
    head = state.commit if state is not None else None
    seq = state.seq + 1 if state is not None else 1
    candidates = _candidates(repo, head, seq)
    proposals: list[dict[str, Any]] = []
    for target, branches in candidates[:MAX_PROPOSALS]:
        commit = _commit(repo, target)
        row: dict[str, Any] = {
            "revision": target,
            "branches": branches,
            "title": _title(commit),
            "time": commit.commit_time,
        }
        try:
            done = review(repo, propose(repo, target, now, None, found.intro), now, None)
        except ReconcilerError as error:
            row |= {"approved": False, "error": str(error).splitlines()[0]}
        else:
            row |= _without_env_values(done.to_json())
        proposals.append(row)
    return {
        "circle": found.intro.circle,
        "introduction": found.intro.commit,
        "head": None if state is None else {"seq": state.seq, "commit": state.commit},
        "approved": approved,
        "proposals": proposals,
        "moreProposals": max(0, len(candidates) - MAX_PROPOSALS),
        "foreignRoots": list(found.foreign_roots),
    }


def _candidates(repo: pygit2.Repository, head: str | None, seq: int) -> list[tuple[str, list[str]]]:
    """Commits that could be the next transition: branch tips (main's among them) past the
    approved head, and the `to` commits approvals are filed for at `seq`; newest first, each
    with the branches at it."""
    branches: dict[str, list[str]] = {}
    for name in repo.branches.local:
        with contextlib.suppress(KeyError, ValueError, pygit2.GitError):
            target = str(repo.branches.local[name].peel(pygit2.Commit).id)
            if target != head:  # main too: owners commit there, then approve
                branches.setdefault(target, []).append(name)
    filed = approvals.folders(repo, seq, approvals.snapshot(repo))
    targets = set(branches) | {to for to in filed if re.fullmatch(r"[0-9a-f]{40}", to)}
    if head is not None:  # a branch already merged into main is no proposal
        head_oid = pygit2.Oid(hex=head)
        targets = {
            t for t in targets
            if t in repo and not repo.descendant_of(head_oid, pygit2.Oid(hex=t))
        }  # fmt: skip
    else:
        targets = {t for t in targets if t in repo}
    ordered = sorted(targets, key=lambda t: (-_commit(repo, t).commit_time, t))
    return [(t, sorted(branches.get(t, []))) for t in ordered]


def _commit(repo: pygit2.Repository, commit: str) -> pygit2.Commit:
    return repo.revparse_single(commit).peel(pygit2.Commit)


def _title(commit: pygit2.Commit) -> str:
    return commit.message.strip().splitlines()[0][:MAX_TITLE] if commit.message.strip() else ""


def _without_env_values(report: dict[str, Any]) -> dict[str, Any]:
    for change in report["changes"]:
        change["details"] = [_redacted(detail) for detail in change["details"]]
        change["line"] = Change(
            change["subject"], Action(change["action"]), tuple(change["details"]), change["path"]
        ).line()
    return report


def _redacted(detail: str) -> str:
    found = _ENV_DETAIL.fullmatch(detail)
    if found is None:
        return detail
    return f"{found.group(1)} {found.group(2) or 'changed'} (value not shown)"
