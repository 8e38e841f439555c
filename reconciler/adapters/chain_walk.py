"""Walk the approved chain of a repository from its introduction (cold verification).

For seq 1, 2, ... the approvals ref is searched for transitions of that seq; each candidate
`to` is read from Git and verified from the state the previous step produced. Exactly one
candidate may verify per seq: two approved `to` commits for one seq are an equivocation and
stop the walk with an error; none ends the chain there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pygit2

from reconciler.adapters import approvals
from reconciler.adapters.chain_git import policy_at, transition
from reconciler.core import statements
from reconciler.core.chain import (
    ChainError,
    Evidence,
    Introduction,
    NodeState,
    Verdict,
    sha256,
    verify,
)
from reconciler.core.documents import parse_document
from reconciler.errors import CheckFailed, DocumentError
from reconciler.model import KINDS, Circle


class Equivocation(ChainError):
    """Two different commits approved for one sequence number."""


@dataclass(frozen=True)
class Step:
    seq: int
    commit: str
    signers: tuple[str, ...]
    policy_version: int


def policy(data: bytes) -> Circle:
    try:
        loaded = parse_document(data, "circle.yaml", [KINDS["Circle"]])
    except DocumentError as error:
        raise ChainError(f"circle.yaml is not a valid policy: {error}") from None
    assert isinstance(loaded.document, Circle)
    return loaded.document


def introduction(repo: pygit2.Repository, ref: str = "refs/heads/main") -> Introduction:
    """This repository's introduction: its circle id, first commit and first policy's sha256."""
    walker = repo.walk(repo.references[ref].target, pygit2.enums.SortMode.TOPOLOGICAL)
    roots = [commit for commit in walker if not commit.parents]
    if len(roots) != 1:
        raise ChainError(f"{ref} has {len(roots)} root commits; a circle has exactly one")
    first = policy_at(repo, roots[0])  # the blob alone: no need to read the whole tree
    return Introduction(policy(first).id, str(roots[0].id), sha256(first))


def evidence_for(repo: pygit2.Repository, seq: int, to: str) -> list[Evidence]:
    """The approvals filed for the transition `seq` -> `to`."""
    return _candidates(repo).get(seq, {}).get(to, [])


def _candidates(repo: pygit2.Repository) -> dict[int, dict[str, list[Evidence]]]:
    found: dict[int, dict[str, list[Evidence]]] = {}
    for stored in approvals.read(repo):
        seq_text, to, _ = stored.path.split("/", 2)
        found.setdefault(int(seq_text), {}).setdefault(to, []).append(
            Evidence(stored.statement, stored.signature)
        )
    return found


def walk(
    repo: pygit2.Repository, intro: Introduction, ref: str, now: int
) -> tuple[list[Step], NodeState | None]:
    """Every approved step from the introduction, and the state after the last one."""
    candidates = _candidates(repo)
    state: NodeState | None = None
    steps: list[Step] = []
    seq = 1
    while seq in candidates:
        approved: list[tuple[str, Verdict, Circle]] = []
        for to, evidence in sorted(candidates[seq].items()):
            found = _try(repo, intro, ref, seq, state, to, evidence, now)
            if found is not None:
                approved.append((to, *found))
        if len(approved) > 1:
            commits = ", ".join(to[:12] for to, _, _ in approved)
            raise Equivocation(f"seq {seq} has {len(approved)} approved commits ({commits})")
        if not approved:
            break
        to, verdict, policy_to = approved[0]
        state = verdict.state
        steps.append(Step(seq, to, verdict.signers, policy_to.version))
        seq += 1
    return steps, state


def _try(
    repo: pygit2.Repository,
    intro: Introduction,
    ref: str,
    seq: int,
    state: NodeState | None,
    to: str,
    evidence: Sequence[Evidence],
    now: int,
) -> tuple[Verdict, Circle] | None:
    """The verdict and the new policy if `to` is an approved seq `seq`; None if it is not this
    chain's next step."""
    try:
        step = transition(
            repo, ref=ref, seq=seq, from_commit=state.commit if state else None, to_commit=to
        )
        before = policy(step.policy_from) if step.policy_from is not None else None
        after = policy(step.policy_to)
        return verify(intro, state, step, before, after, evidence, now), after
    except (CheckFailed, statements.StatementError):
        return None
