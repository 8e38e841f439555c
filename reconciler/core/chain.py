"""The Human Chain's verification of one transition, from a node's persisted state. Pure.

The order of checks, each a refusal with its own error (the state is never changed by one):

1. Position. With no state yet, the only acceptable transition is seq 1 to the introduction's
   own commit, whose circle.yaml hashes to the introduction's policy sha256. Otherwise the
   transition must be seq = state.seq + 1 (a lower or equal seq is a rollback, a higher one a
   gap), start from the applied commit, and lead to a descendant of it (not a jump to unrelated
   history).
2. Policy in force: the circle.yaml of the `from` commit, which must hash to the state's policy
   sha256 (for seq 1, the introduction's). A commit never authorizes itself.
3. Evidence: each approval counts only if its statement parses, names exactly this circle,
   introduction, ref, seq, from, to, tree, tree manifest and policy, is current at `now`, and
   carries a valid SSHSIG (namespace circle-approval-v1) by a key of a member of the policy in
   force. Everything else is excluded, with the reason kept for the error message.
4. Policy evolution (circle.yaml changed): same circle id, version + 1, `previous` = sha256 of
   the old circle.yaml bytes, and the proposed policy's governance met as well.
5. Quorum (`reconciler.core.quorum.enforce`) over the changed paths.

The result is the next node state; persisting it (atomically, 0600) is the adapter's job.
Equivocation (two approved `to` for one seq) is detected by the caller across candidates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from builders import BuildError, sshsig
from reconciler.core import quorum, statements
from reconciler.core.changes import TreeRefused
from reconciler.errors import CheckFailed
from reconciler.model import Circle
from reconciler.model.circle import POLICY_FILE, SigstoreIdentity, SshKey
from reconciler.model.types import ed25519_key_blob


class ChainError(CheckFailed):
    """A transition the node must not apply."""


class RollbackError(ChainError):
    pass


class SequenceGap(ChainError):
    pass


class ForkError(ChainError):
    pass


class PolicyError(ChainError):
    pass


@dataclass(frozen=True, slots=True)
class Introduction:
    circle: str
    commit: str
    policy_sha256: str


@dataclass(frozen=True, slots=True)
class NodeState:
    commit: str
    seq: int
    policy_sha256: str


@dataclass(frozen=True, slots=True)
class Transition:
    """The facts of one proposed step, as the Git adapter reads them."""

    ref: str
    seq: int
    from_commit: str | None
    to_commit: str
    to_tree: str
    tree_sha256: str
    changed: tuple[str, ...]
    descends: bool  # `to` descends from `from` (or, for seq 1, is the introduction's commit)
    policy_from: bytes | None  # circle.yaml at `from` (None for seq 1)
    policy_to: bytes  # circle.yaml at `to`
    links: tuple[str, ...] = ()  # symbolic links in the `to` tree
    submodules: tuple[str, ...] = ()  # submodules in the `to` tree


@dataclass(frozen=True, slots=True)
class Evidence:
    statement: bytes
    signature: str
    parsed: sshsig.SshSignature | None = None  # `sshsig.parse(signature)`, when already done


SshCheck = Callable[[bytes, sshsig.SshSignature], None]
"""Raises SignatureError unless the parsed SSHSIG signs the statement bytes (for the approval
namespace) with the key it carries. The default checks at once; a walk may check ahead."""


def check_ssh(statement: bytes, signature: sshsig.SshSignature) -> None:
    sshsig.verify_parsed(statement, signature, statements.NAMESPACE)


class IdentityVerifier(Protocol):
    """Verifies a keyless (sigstore) signature over `message` offline, against a pinned trust
    root, and returns the certificate's (identity, issuer); raises CheckFailed otherwise."""

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]: ...


@dataclass(frozen=True)
class Verdict:
    state: NodeState
    signers: tuple[str, ...]
    excluded: tuple[str, ...] = field(default_factory=tuple)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members_by_key(policy: Circle) -> dict[bytes, str]:
    """Member ids by the SSH key blobs of their Ed25519 keys."""
    return {
        ed25519_key_blob(key.key): member.id
        for member in policy.members
        for key in member.keys
        if isinstance(key, SshKey)
    }


def _members_by_identity(policy: Circle) -> dict[tuple[str, str], str]:
    return {
        (key.identity, key.issuer): member.id
        for member in policy.members
        for key in member.keys
        if isinstance(key, SigstoreIdentity)
    }


def _check_position(intro: Introduction, state: NodeState | None, step: Transition) -> None:
    if state is None:
        if step.seq != 1 or step.from_commit is not None or step.to_commit != intro.commit:
            raise ForkError(
                f"the first approved transition must be seq 1 to the introduction's commit "
                f"{intro.commit[:12]}; got seq {step.seq} to {step.to_commit[:12]}"
            )
        if sha256(step.policy_to) != intro.policy_sha256:
            raise PolicyError("circle.yaml of the first commit does not match the introduction")
        return
    if step.seq <= state.seq:
        raise RollbackError(
            f"seq {step.seq} ({step.to_commit[:12]}) is not after the applied seq {state.seq} "
            f"({state.commit[:12]}): refusing to go back"
        )
    if step.seq != state.seq + 1:
        raise SequenceGap(f"seq {step.seq} skips seq {state.seq + 1}")
    if step.from_commit != state.commit:
        raise ForkError(
            f"seq {step.seq} starts from {str(step.from_commit)[:12]}, not the applied "
            f"{state.commit[:12]}"
        )
    if not step.descends:
        raise ForkError(f"{step.to_commit[:12]} does not descend from {state.commit[:12]}")
    if step.policy_from is None or sha256(step.policy_from) != state.policy_sha256:
        raise PolicyError("circle.yaml at the applied commit does not match the node's state")


def _check_evolution(old: Circle, old_bytes: bytes, new: Circle) -> None:
    if new.id != old.id:
        raise PolicyError(f"circle.yaml changes the circle id from {old.id} to {new.id}")
    if new.version != old.version + 1:
        raise PolicyError(
            f"circle.yaml goes from version {old.version} to {new.version}; expected "
            f"{old.version + 1}"
        )
    if new.previous != sha256(old_bytes):
        raise PolicyError("circle.yaml does not name the sha256 of the previous policy")


def _check_tree(policy: Circle, step: Transition) -> None:
    if step.links and not policy.consensus.allow_symlinks:
        raise TreeRefused(f"{step.links[0]} is a symbolic link, and the policy allows none")
    if step.submodules and not policy.consensus.allow_submodules:
        raise TreeRefused(f"{step.submodules[0]} is a submodule, and the policy allows none")


@dataclass(frozen=True, slots=True)
class _Members:
    by_key: dict[bytes, str]
    by_identity: dict[tuple[str, str], str]


_MEMBERS: dict[str, _Members] = {}  # by policy sha256: a walk meets few policies, many steps


def _members_of(policy: Circle, policy_sha: str) -> _Members:
    """The member maps of a policy, built once per policy version (its key blobs decoded)."""
    found = _MEMBERS.get(policy_sha)
    if found is None:
        if len(_MEMBERS) > 64:
            _MEMBERS.clear()
        found = _MEMBERS[policy_sha] = _Members(
            members_by_key(policy), _members_by_identity(policy)
        )
    return found


def _signer(
    members: _Members, item: Evidence, identities: IdentityVerifier | None, ssh: SshCheck
) -> str | None:
    """The member whose valid signature `item` holds, or None when it is no member's."""
    if item.parsed is None and item.signature.lstrip().startswith("{"):  # a sigstore bundle
        if identities is None:
            raise ChainError("a sigstore approval, and no sigstore trust root is configured")
        return members.by_identity.get(identities.identify(item.statement, item.signature))
    parsed = item.parsed or sshsig.parse(item.signature)
    member = members.by_key.get(parsed.public_key)
    if member is not None:
        ssh(item.statement, parsed)
    return member


@dataclass(frozen=True, slots=True)
class _Counted:
    """A valid approval by a member, and when it is current."""

    member: str
    issued_at: int
    expires_at: int
    index: int  # its position in the evidence, for messages


def _signers(
    intro: Introduction,
    step: Transition,
    members: _Members,
    policy_sha: str,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None,
    ssh: SshCheck,
) -> tuple[list[_Counted], list[str]]:
    counted: list[_Counted] = []
    excluded: list[str] = []
    expected = (
        intro.circle, intro.commit, step.ref, step.seq, step.from_commit, step.to_commit,
        step.to_tree, step.tree_sha256, policy_sha,
    )  # fmt: skip
    for index, item in enumerate(evidence, start=1):
        try:
            approval = statements.decode(item.statement)
            found = (
                approval.circle, approval.introduction, approval.ref, approval.seq,
                approval.from_commit, approval.to_commit, approval.to_tree,
                approval.tree_sha256, approval.policy_sha256,
            )  # fmt: skip
            if found != expected:
                wrong = [
                    name
                    for name, mine, theirs in zip(_BOUND, expected, found, strict=True)
                    if mine != theirs
                ]
                excluded.append(f"#{index}: approves another {', '.join(wrong)}")
                continue
            if approval.issued_at > now:
                approval.check_current(now)  # refused: issued in the future
            member = _signer(members, item, identities, ssh)
            if member is None:
                excluded.append(f"#{index}: signed by a key of no member")
                continue
        except (CheckFailed, BuildError) as error:
            excluded.append(f"#{index}: {error}")
            continue
        counted.append(_Counted(member, approval.issued_at, approval.expires_at, index))
    return counted, excluded


def _current(counted: Sequence[_Counted], at: int) -> set[str]:
    return {c.member for c in counted if c.issued_at <= at < c.expires_at}


_BOUND = (
    "circle", "introduction", "ref", "seq", "from commit", "to commit", "to tree",
    "tree sha256", "policy sha256",
)  # fmt: skip


@dataclass(frozen=True)
class Assessment:
    """What the evidence for one (well-placed) transition amounts to, met or not."""

    signers: tuple[str, ...]
    excluded: tuple[str, ...]
    quorum: quorum.QuorumResult
    next_state: NodeState


def assess(
    intro: Introduction,
    state: NodeState | None,
    step: Transition,
    policy_from: Circle | None,
    policy_to: Circle,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None = None,
    *,
    ssh: SshCheck = check_ssh,
) -> Assessment:
    """Check everything but the quorum (position, policy, tree, evolution: ChainError), and
    report the quorum rule by rule: what `circle review` shows and `verify` enforces."""
    _check_position(intro, state, step)
    if state is None:
        in_force, in_force_bytes = policy_to, step.policy_to
    else:
        assert policy_from is not None  # a state implies a `from` policy
        assert step.policy_from is not None
        in_force, in_force_bytes = policy_from, step.policy_from
    _check_tree(in_force, step)
    in_force_sha = sha256(in_force_bytes)
    counted, excluded = _signers(
        intro, step, _members_of(in_force, in_force_sha), in_force_sha, evidence, now,
        identities, ssh,
    )  # fmt: skip
    policy_changed = POLICY_FILE in step.changed
    proposed: list[_Counted] | None = None
    if policy_changed and state is not None:
        _check_evolution(in_force, in_force_bytes, policy_to)
        # The new policy's governance is met by its own members' signatures (of the same
        # statement): a member being added can co-sign their own admission.
        new_members = _members_of(policy_to, sha256(step.policy_to))
        proposed, _ = _signers(
            intro, step, new_members, in_force_sha, evidence, now, identities, ssh
        )

    def at(instant: int) -> quorum.QuorumResult:
        return quorum.evaluate(
            in_force,
            step.changed,
            _current(counted, instant),
            proposed=policy_to if policy_changed else None,
            proposed_signers=None if proposed is None else _current(proposed, instant),
        )

    # Quorum must hold among approvals all current at one instant: the latest issuedAt that
    # completes it. Collecting signatures must fit in the approval lifetime; once met, a step
    # stays approved (a node joining a circle idle for months still follows it).
    instants = sorted({c.issued_at for c in [*counted, *(proposed or [])]}, reverse=True)
    met: tuple[int, quorum.QuorumResult] | None = None
    for instant in [now, *instants]:  # now first: usually every approval is still current
        result = at(instant)
        if result.rules and result.satisfied:
            met = instant, result
            break
    instant, result = met if met is not None else (now, at(now))
    if met is None:
        excluded += [
            f"#{c.index}: approval of seq {step.seq} ({step.to_commit[:12]}) expired at "
            f"{c.expires_at}"
            for c in counted
            if c.expires_at <= now
        ]
    signers = _current(counted, instant)
    return Assessment(
        tuple(sorted(signers)),
        tuple(excluded),
        result,
        NodeState(step.to_commit, step.seq, sha256(step.policy_to)),
    )


def verify(
    intro: Introduction,
    state: NodeState | None,
    step: Transition,
    policy_from: Circle | None,
    policy_to: Circle,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None = None,
    *,
    ssh: SshCheck = check_ssh,
) -> Verdict:
    """The node state after `step`, or a ChainError saying why it must not be applied.

    `identities` verifies sigstore approvals; without it they are excluded, with the reason."""
    found = assess(intro, state, step, policy_from, policy_to, evidence, now, identities, ssh=ssh)
    try:
        quorum.check(found.quorum)
    except quorum.QuorumNotMet as error:
        detail = f" (excluded: {'; '.join(found.excluded)})" if found.excluded else ""
        raise quorum.QuorumNotMet(
            f"seq {step.seq} ({step.to_commit[:12]}): {error}{detail}"
        ) from None
    return Verdict(found.next_state, found.signers, found.excluded)
