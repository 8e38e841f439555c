"""Where a revision falls on an owner's chain, and the statement an owner signs to approve it.

`propose` verifies the approved chain of a clone cold, from its introduction, and places a
revision after it: the approved head itself, or the transition `seq: head -> revision` that
`review`, `verify` and `approve` talk about. `statement` is what `circle approve` signs;
`signer` says which member a key is, in the policy in force or, for a step that admits them, in
the proposed one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2

from builders import BuildError, sshsig
from reconciler.chain import approvals, headcache, mldsa, statements
from reconciler.chain.follow import load_introduction
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.trees import desired_at
from reconciler.chain.values import (
    Evidence,
    IdentityVerifier,
    Introduction,
    NodeState,
    Transition,
    sha256,
)
from reconciler.chain.verify import check_mldsa, check_ssh, members_by_key
from reconciler.chain.walk import MAIN, Chain, Found, Step
from reconciler.desired.model import Circle
from reconciler.desired.model.circle import POLICY_FILE
from reconciler.desired.model.types import MLDSA65, member_key_blob
from reconciler.errors import CheckFailed, InputError


def trusted_introduction(
    repo: pygit2.Repository, introduction_file: Path | None, now: int
) -> Found:
    """The introduction given in a file, or the one main's history has (with the roots of
    other histories merged into main, which the caller names: they are never trusted)."""
    if introduction_file is not None:
        return Found(load_introduction(introduction_file))
    return headcache.introduction(repo, now)


@dataclass(frozen=True)
class Proposal:
    """Where the chain stands, and the transition a revision would be from there."""

    walker: Chain
    steps: list[Step]
    state: NodeState | None
    target: str
    seq: int

    @property
    def intro(self) -> Introduction:
        return self.walker.intro

    @property
    def approved(self) -> bool:
        """The revision is the approved head itself."""
        return self.state is not None and self.target == self.state.commit

    def transition(self) -> Transition:
        return self.walker.transition(self.state, self.target)

    def evidence(self) -> list[Evidence]:
        found: list[Evidence] = self.walker.candidates(self.seq).get(self.target, [])
        return found


def propose(
    repo: pygit2.Repository,
    revision: str,
    now: int,
    identities: IdentityVerifier | None,
    intro: Introduction,
) -> Proposal:
    """The approved chain (verified from `intro`) and `revision`'s place after it."""
    walker = Chain(repo, intro, MAIN, identities=identities)
    steps, state = headcache.walk(repo, walker, now)
    try:
        target = str(repo.revparse_single(revision).peel(pygit2.Commit).id)
    except (KeyError, ValueError, pygit2.InvalidSpecError):
        raise InputError(f"{revision}: no such commit") from None
    seq = (
        state.seq
        if state is not None and target == state.commit
        else (state.seq + 1 if state else 1)
    )
    return Proposal(walker, steps, state, target, seq)


def statement(proposal: Proposal, now: int) -> bytes:
    """The approval statement of `proposal`'s transition, valid for the policy's lifetime."""
    if proposal.approved:
        raise InputError(
            f"{proposal.target[:12]} is the approved head already (seq {proposal.seq})"
        )
    step = proposal.transition()
    in_force_bytes = step.header.policy_in_force
    in_force = proposal.walker.policy(in_force_bytes)
    return statements.Approval(
        circle=proposal.intro.circle,
        introduction=proposal.intro.commit,
        ref=MAIN,
        seq=proposal.seq,
        from_commit=step.from_commit,
        to_commit=step.to_commit,
        to_tree=step.to_tree,
        tree_sha256=step.tree_sha256,
        policy_sha256=sha256(in_force_bytes),
        issued_at=now,
        expires_at=now + in_force.consensus.approval_lifetime,
    ).encode()


def signer(proposal: Proposal, key_line: str) -> str | None:
    """The member whose key `key_line` is: in the policy in force, or in the proposed one for a
    step that changes circle.yaml (a member being admitted co-signs their admission)."""
    step = proposal.transition()
    blob = member_key_blob(key_line)
    member = members_by_key(proposal.walker.policy(step.header.policy_in_force)).get(blob)
    if member is None and POLICY_FILE in step.changed:
        member = members_by_key(proposal.walker.policy(step.policy_to)).get(blob)
    return member


def signed_by(policy: Circle, statement: bytes, signature: str) -> str | None:
    """The member of `policy` whose valid SSH or ML-DSA signature of `statement` this is, or
    None (sigstore bundles and junk included)."""
    try:
        if mldsa.is_envelope(signature):
            envelope = mldsa.parse(signature)
            member = members_by_key(policy).get(envelope.public_key)
            if member is not None:
                check_mldsa(statement, envelope)
            return member
        parsed = sshsig.parse(signature)
        member = members_by_key(policy).get(parsed.public_key)
        if member is not None:
            check_ssh(statement, parsed)
    except (BuildError, CheckFailed):
        return None
    return member


def earlier_statement(proposal: Proposal, key_lines: Sequence[str], now: int) -> bytes | None:
    """The statement for this very transition that the member holding `key_lines` already
    signed and filed, still current at `now` (the one that expires last), or None.

    Signing it again with another of their keys makes the pair a hybrid rule counts: a hybrid
    member needs a classic and an ML-DSA signature of the same statement bytes, and a fresh
    statement (another `issuedAt`) would not pair with the first. Only their own validly
    signed statements are taken, and only one naming exactly this transition."""
    try:
        members = {signer(proposal, line) for line in key_lines}
    except ValueError:  # a .pub that is no key: the signing itself will say what is wrong
        return None
    if len(members) != 1 or None in members:
        return None
    (member,) = members
    step = proposal.transition()
    policies = [proposal.walker.policy(step.header.policy_in_force)]
    if POLICY_FILE in step.changed:
        policies.append(proposal.walker.policy(step.policy_to))
    wanted = (
        proposal.intro.circle, proposal.intro.commit, MAIN, proposal.seq, step.from_commit,
        step.to_commit, step.to_tree, step.tree_sha256, sha256(step.header.policy_in_force),
    )  # fmt: skip
    best: tuple[int, bytes] | None = None
    for item in proposal.evidence():
        try:
            approval = statements.decode(item.statement)
        except CheckFailed:
            continue
        named = (
            approval.circle, approval.introduction, approval.ref, approval.seq,
            approval.from_commit, approval.to_commit, approval.to_tree, approval.tree_sha256,
            approval.policy_sha256,
        )  # fmt: skip
        if named != wanted or not approval.issued_at <= now < approval.expires_at:
            continue
        if member not in {signed_by(policy, item.statement, item.signature) for policy in policies}:
            continue
        if best is None or approval.expires_at > best[0]:
            best = (approval.expires_at, item.statement)
    return None if best is None else best[1]


Sign = Callable[[bytes], tuple[str, str]]
"""Signs statement bytes: gives the signature (SSHSIG or ML-DSA envelope) and the signer's
public key line (`chain.signing`)."""


@dataclass(frozen=True)
class Approved:
    seq: int
    commit: str
    member: str
    path: str  # of the pair in the approvals ref
    key: str = ""  # the key file (as given) that signed
    key_type: str = "ssh-ed25519"  # or "ml-dsa-65"


def approve(
    repo: pygit2.Repository, proposal: Proposal, data: bytes, sign: Sign, key: str
) -> Approved:
    """Sign `data` (the `statement` of `proposal`) as the member whose key `sign` holds (`key`
    names it in messages) and file the pair in the approvals ref."""
    return approve_all(repo, proposal, data, [(sign, key)])[0]


def approve_all(
    repo: pygit2.Repository, proposal: Proposal, data: bytes, signs: list[tuple[Sign, str]]
) -> list[Approved]:
    """Sign `data` with every key of `signs` (each with the name messages give it) and file all
    the pairs in one commit of the approvals ref: a member's classic and ML-DSA signatures of
    the same statement bytes (what a hybrid rule counts), or none if one key fails."""
    made: list[tuple[str, str, str, str]] = []  # signature, member, key, key type
    for sign, key in signs:
        signature, key_line = sign(data)
        member = signer(proposal, key_line)
        if member is None:
            raise InputError(
                f"{key}: this key belongs to no member of circle {proposal.intro.circle}"
            )
        key_type = key_line.split(maxsplit=1)[0]
        try:
            if key_type == MLDSA65:
                mldsa.verify(data, signature, key_line, statements.NAMESPACE)
            else:
                sshsig.verify(data, signature, key_line, statements.NAMESPACE)
        except (BuildError, mldsa.MlDsaError) as error:
            raise InputError(f"{key}: the signature made does not verify: {error}") from None
        made.append((signature, member, key, key_type))
    paths = approvals.add_many(repo, [(data, signature) for signature, *_ in made])
    return [
        Approved(proposal.seq, proposal.target, member, path, key, key_type)
        for (_, member, key, key_type), path in zip(made, paths, strict=True)
    ]


class NeverApprovable(CheckFailed):
    """A transition no quorum could make approved: signing it would only mislead."""


def approvable(proposal: Proposal, now: int) -> None:
    """Refuse (`NeverApprovable`, naming the problem) a transition that breaks a chain rule
    other than the quorum (the policy's evolution, its placement, its tree): what `circle
    verify` would refuse whatever the signatures."""
    if proposal.approved:
        return
    try:
        # Everything but the quorum, the proposed policy read at once (as `circle review`
        # does; a node reads it only once the policy in force has its quorum).
        proposal.walker.verifier.assess(proposal.state, proposal.transition(), [], now)
    except CheckFailed as error:
        raise NeverApprovable(
            f"{proposal.target[:12]} can never be approved: {error}; fix the commit and "
            "propose it again"
        ) from None


def invalid_documents(repo: pygit2.Repository, proposal: Proposal) -> str | None:
    """What does not validate in the desired state at `proposal`'s revision (the first few
    problems), or None: nodes keep the last valid step until it does."""
    report = desired_at(repo, proposal.target)
    if not report.errors:
        return None
    shown = "; ".join(str(problem) for problem in report.errors[:3])
    more = f" and {len(report.errors) - 3} more" if len(report.errors) > 3 else ""
    return f"{shown}{more}"


@dataclass(frozen=True)
class Judged:
    """Whether the transition to a proposal's revision has quorum (or is the approved head)."""

    approved: bool
    signers: tuple[str, ...]
    unmet: str | None  # what is missing, when not approved


def judge(proposal: Proposal, now: int) -> Judged:
    """`circle verify`: the approved head, or the transition to it checked rule by rule."""
    last = proposal.steps[-1] if proposal.steps else None
    if proposal.approved:
        return Judged(True, last.signers if last else (), None)
    approvable(proposal, now)  # a transition no signature could save is said as such
    try:
        verdict = proposal.walker.check(
            proposal.state, proposal.target, proposal.evidence(), now, vouched_first=False
        )
    except QuorumNotMet as error:
        return Judged(False, (), str(error))
    return Judged(True, verdict.signers, None)
