"""What approving a revision would approve, in the owners' terms: the transition's desired-state
changes, the quorum rule by rule, and the approvals that went stale (`circle review`).

Stale approvals are valid signatures by members that do not count for this transition: made
for another version of the change, before the approved head moved, or expired. They are named
so that their signer signs again; they are never counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pygit2

from reconciler.chain import approvals, statements
from reconciler.chain.propose import Proposal, signed_by
from reconciler.chain.trees import commit_of, files_at
from reconciler.chain.values import IdentityVerifier
from reconciler.chain.verify import Assessment
from reconciler.desired.model import Circle
from reconciler.desired.repository import PathRole, classify
from reconciler.desired.review import Change, describe_changes
from reconciler.errors import CheckFailed


@dataclass(frozen=True)
class Stale:
    member: str
    seq: int
    to: str
    reason: str


@dataclass(frozen=True)
class Review:
    revision: str
    seq: int
    from_commit: str | None
    assessment: Assessment
    changes: list[Change]
    stale: list[Stale]
    instants: frozenset[int]  # when the clock could change this review: `answers.window`

    @property
    def approved(self) -> bool:
        return bool(self.assessment.quorum.rules) and self.assessment.quorum.satisfied

    def to_json(self) -> dict[str, Any]:
        """The review as `circle review -o json` prints it (and the dashboard serves it)."""
        found = self.assessment
        return {
            "revision": self.revision,
            "seq": self.seq,
            "from": self.from_commit,
            "approved": self.approved,
            "changes": [
                {"subject": c.subject, "action": str(c.action), "details": list(c.details),
                 "path": c.path, "line": c.line()}
                for c in self.changes
            ],
            "rules": [
                {"rule": r.rule, "policy": r.policy, "threshold": r.threshold, "weight": r.weight,
                 "signed": list(r.signed), "missing": list(r.unsigned),
                 "requiredMissing": list(r.required_missing), "satisfied": r.satisfied,
                 "paths": list(r.paths)}
                for r in found.quorum.rules
            ],
            "signers": list(found.signers),
            "excluded": [str(item) for item in found.excluded],
            "stale": [
                {"member": s.member, "seq": s.seq, "to": s.to, "reason": s.reason}
                for s in self.stale
            ],
        }  # fmt: skip


def review(
    repo: pygit2.Repository, proposal: Proposal, now: int, identities: IdentityVerifier | None
) -> Review:
    """The review of `proposal`'s transition (not the approved head itself)."""
    walker = proposal.walker
    facts = proposal.transition()
    found = walker.verifier.assess(proposal.state, facts, proposal.evidence(), now)
    start = None if proposal.state is None else commit_of(repo, proposal.state.commit)

    def document(path: str) -> bool:
        return classify(path)[0] is PathRole.DOCUMENT

    changes = describe_changes(
        None if start is None else files_at(repo, start, facts.changed, document),
        files_at(repo, commit_of(repo, proposal.target), facts.changed, document),
        facts.changed,
    )
    in_force = walker.policy(facts.header.policy_in_force)
    instants: set[int] = set()
    stale = stale_approvals(
        repo, in_force, proposal.seq, facts.from_commit, proposal.target, now, instants
    )
    return Review(
        proposal.target, proposal.seq, facts.from_commit, found, changes, stale, frozenset(instants)
    )


def stale_approvals(
    repo: pygit2.Repository,
    policy: Circle,
    seq: int,
    start: str | None,
    target: str,
    now: int,
    instants: set[int] | None = None,
) -> list[Stale]:
    """Approvals by members that do not count for `seq: start -> target`, and why. They are
    looked for where `circle approve` files them and a walk reads them: every folder of `seq`,
    and `target`'s folder under the earlier seqs. `instants` gains every `issuedAt` and
    `expiresAt` of seq's statements: the clock instants that can change the answer."""
    found: list[Stale] = []
    for stored in _filed(repo, seq, target):
        try:
            approval = statements.decode(stored.statement)
        except CheckFailed:
            continue
        if instants is not None and approval.seq == seq:
            instants.update((approval.issued_at, approval.expires_at))
        if approval.seq == seq and approval.to_commit == target:
            if approval.expires_at <= now:
                reason = "expired"
            elif approval.from_commit != start:
                reason = "made from another approved head"
            else:
                continue  # current: counted (or excluded with its reason) by the assessment
        elif approval.seq == seq:
            reason = f"approves another version of the change ({approval.to_commit[:12]})"
        elif approval.to_commit == target:
            reason = f"made for seq {approval.seq}, before the approved head moved"
        else:
            continue
        member = signed_by(policy, stored.statement, stored.signature)
        if member is not None:
            found.append(Stale(member, approval.seq, approval.to_commit, reason))
    return found


def _filed(repo: pygit2.Repository, seq: int, target: str) -> Iterator[approvals.StoredApproval]:
    """The pairs filed under `seq`, and under `<s>/<target>` for every earlier `s`: one tree
    lookup per seq, no blob read but those (the stale scan's cost on a 10,000-step chain)."""
    tree = approvals.snapshot(repo)
    if tree is None:
        return
    yield from approvals.read_seq(repo, seq, tree)
    for entry in tree:
        name = str(entry.name)
        if name.isdigit() and int(name) != seq:
            yield from approvals.read_folder(repo, int(name), target, tree)
