"""The Human Chain's verification of one transition, from a node's persisted state. Pure.

The order of checks, each a refusal with its own error (the state is never changed by one).
Nothing of the proposed commit is read or parsed until step 3 has found a member who vouches
for it, so content nobody in the circle signed can cost a node nothing but a signature check:

1. Position (`Header`: the commit object alone). With no state yet, the only acceptable
   transition is seq 1 to the introduction's own commit, whose circle.yaml hashes to the
   introduction's policy sha256. Otherwise the transition must be seq = state.seq + 1 (a lower
   or equal seq is a rollback, a higher one a gap), start from the applied commit, and lead to
   a descendant of it (not a jump to unrelated history).
2. Policy in force: the circle.yaml of the `from` commit, whose bytes must hash to the state's
   policy sha256 (for seq 1, the introduction's) before they are parsed. A commit never
   authorizes itself.
3. Vouching: each approval counts only if its statement parses, names exactly this circle,
   introduction, ref, seq, from, to, tree and policy, is no longer valid than the policy's
   `approvalLifetime` (plus `CLOCK_SKEW`), and carries a valid signature (SSHSIG, namespace
   circle-approval-v1, or a sigstore bundle) of a member of the policy in force. Everything
   else is excluded, with its reason kept for the error message. With no member's approval
   the candidate is refused here (`NotVouched`), before its tree is read.
4. Tree facts (the adapter reads them now): the sha256 manifest of the `to` tree each counted
   approval names, and no symbolic link or submodule unless the policy allows them.
5. Policy evolution (circle.yaml changed): the quorum of the policy in force is evaluated
   first, and only once it is met is the proposed circle.yaml parsed (a parse failure is a
   `PolicyError`); it must keep the circle id, bump the version by one, name the sha256 of the
   old bytes as `previous`, and its own governance must be met too.
6. Quorum (`reconciler.chain.quorum`) over the changed paths, among approvals all current at one
   instant.

The result is the next node state; persisting it (atomically, 0600) is the adapter's job.
Equivocation (two approved `to` for one seq) is detected by the caller across candidates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from builders import BuildError, sshsig
from reconciler.chain import quorum, statements
from reconciler.chain.changes import TreeRefused
from reconciler.chain.quorum import Excluded
from reconciler.desired.documents import parse_document
from reconciler.desired.model import KINDS, Circle
from reconciler.desired.model.circle import POLICY_FILE, SigstoreIdentity, SshKey
from reconciler.desired.model.types import ed25519_key_blob
from reconciler.errors import CheckFailed, DocumentError

CLOCK_SKEW = 300
"""Seconds an approval's validity window may exceed the policy's `approvalLifetime`: the
signer's clock and the clock `circle approve` read may differ by this much."""


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


class NotVouched(quorum.QuorumNotMet):
    """No member of the policy in force validly approved exactly this transition: nothing of
    it is read further."""


class LifetimeExceeded(statements.StatementError):
    """An approval valid for longer than the policy in force lets one be."""


class MisplacedApproval(statements.StatementError):
    """An approval of another circle, ref, seq, parent, commit, tree or policy."""


class NotAMember(ChainError):
    """An approval signed by a key of no member of the policy that counts it."""


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
class Header:
    """What one proposed step is, from its commit object and ancestry alone: enough to place
    it on the chain and to check who vouches for it (steps 1 to 3)."""

    ref: str
    seq: int
    from_commit: str | None
    to_commit: str
    to_tree: str
    descends: bool  # `to` descends from `from` (or, for seq 1, is the introduction's commit)
    policy_in_force: bytes  # circle.yaml at `from` (at `to` for seq 1)


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

    @property
    def header(self) -> Header:
        return Header(
            self.ref, self.seq, self.from_commit, self.to_commit, self.to_tree, self.descends,
            self.policy_to if self.policy_from is None else self.policy_from,
        )  # fmt: skip


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
    policy: Circle  # the policy at the new state
    excluded: tuple[Excluded, ...] = field(default_factory=tuple)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_policy(data: bytes) -> Circle:
    """circle.yaml bytes as a policy; PolicyError (never another exception) otherwise."""
    try:
        loaded = parse_document(data, POLICY_FILE, [KINDS["Circle"]])
    except DocumentError as error:
        raise PolicyError(f"{POLICY_FILE} is not a valid policy: {error}") from None
    assert isinstance(loaded.document, Circle)
    return loaded.document


def members_by_key(policy: Circle) -> dict[bytes, str]:
    """Member ids by the SSH key blobs of their Ed25519 keys."""
    return {
        ed25519_key_blob(key.key): member.id
        for member in policy.members
        for key in member.keys
        if isinstance(key, SshKey)
    }


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy with what verification looks up in it."""

    circle: Circle
    sha256: str
    by_key: dict[bytes, str]
    by_identity: dict[tuple[str, str], str]


class Policies:
    """Policies parsed once per distinct bytes, with their member maps: a walk meets few
    policies and many steps. The parser is `parse_policy` unless another is given."""

    def __init__(self, parse: Callable[[bytes], Circle] = parse_policy) -> None:
        self._parse = parse
        self._known: dict[str, Policy] = {}

    def __call__(self, data: bytes) -> Policy:
        digest = sha256(data)
        found = self._known.get(digest)
        if found is None:
            circle = self._parse(data)
            identities = {
                (key.identity, key.issuer): member.id
                for member in circle.members
                for key in member.keys
                if isinstance(key, SigstoreIdentity)
            }
            found = self._known[digest] = Policy(circle, digest, members_by_key(circle), identities)
        return found


def _check_position(intro: Introduction, state: NodeState | None, step: Header) -> None:
    if state is None:
        if step.seq != 1 or step.from_commit is not None or step.to_commit != intro.commit:
            raise ForkError(
                f"the first approved transition must be seq 1 to the introduction's commit "
                f"{intro.commit[:12]}; got seq {step.seq} to {step.to_commit[:12]}"
            )
        if sha256(step.policy_in_force) != intro.policy_sha256:
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
    if sha256(step.policy_in_force) != state.policy_sha256:
        raise PolicyError("circle.yaml at the applied commit does not match the node's state")


def _check_evolution(old: Policy, new: Circle) -> None:
    if new.id != old.circle.id:
        raise PolicyError(f"circle.yaml changes the circle id from {old.circle.id} to {new.id}")
    if new.version != old.circle.version + 1:
        raise PolicyError(
            f"circle.yaml goes from version {old.circle.version} to {new.version}; expected "
            f"{old.circle.version + 1}"
        )
    if new.previous != old.sha256:
        raise PolicyError(
            f"circle.yaml does not name the sha256 of the previous policy (expected previous: "
            f"{old.sha256})"
        )


def _check_tree(policy: Circle, step: Transition) -> None:
    if step.links and not policy.consensus.allow_symlinks:
        raise TreeRefused(f"{step.links[0]} is a symbolic link, and the policy allows none")
    if step.submodules and not policy.consensus.allow_submodules:
        raise TreeRefused(f"{step.submodules[0]} is a submodule, and the policy allows none")


def _signer(
    members: Policy, item: Evidence, identities: IdentityVerifier | None, ssh: SshCheck
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
    tree_sha256: str  # the manifest it names: checked once the tree is read (step 4)
    index: int  # its position in the evidence, for messages


_BOUND = (
    "circle", "introduction", "ref", "seq", "from commit", "to commit", "to tree",
    "policy sha256",
)  # fmt: skip


def _signers(
    intro: Introduction,
    step: Header,
    in_force: Policy,
    members: Policy,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None,
    ssh: SshCheck,
) -> tuple[list[_Counted], list[Excluded]]:
    """The approvals in `evidence` validly signed by members of `members` (the policy in force,
    or a proposed one) for exactly `step`, and why each other one does not count."""
    counted: list[_Counted] = []
    excluded: list[Excluded] = []
    expected = (
        intro.circle, intro.commit, step.ref, step.seq, step.from_commit, step.to_commit,
        step.to_tree, in_force.sha256,
    )  # fmt: skip
    lifetime = in_force.circle.consensus.approval_lifetime
    for index, item in enumerate(evidence, start=1):
        try:
            approval = statements.decode(item.statement)
            found = (
                approval.circle, approval.introduction, approval.ref, approval.seq,
                approval.from_commit, approval.to_commit, approval.to_tree,
                approval.policy_sha256,
            )  # fmt: skip
            if found != expected:
                wrong = [
                    name
                    for name, mine, theirs in zip(_BOUND, expected, found, strict=True)
                    if mine != theirs
                ]
                raise MisplacedApproval(f"approves another {', '.join(wrong)}")
            window = approval.expires_at - approval.issued_at
            if window > lifetime + CLOCK_SKEW:
                raise LifetimeExceeded(
                    f"approval of seq {approval.seq} is valid for {window} s, longer than the "
                    f"policy's approvalLifetime of {lifetime} s (+ {CLOCK_SKEW} s clock skew)"
                )
            if approval.issued_at > now:
                approval.check_current(now)  # refused: issued in the future
            member = _signer(members, item, identities, ssh)
            if member is None:
                raise NotAMember("signed by a key of no member")
        except (CheckFailed, BuildError) as error:
            excluded.append(Excluded(index, error))
            continue
        counted.append(
            _Counted(member, approval.issued_at, approval.expires_at, approval.tree_sha256, index)
        )
    return counted, excluded


def _detail(excluded: Sequence[Excluded]) -> str:
    return f" (excluded: {'; '.join(map(str, excluded))})" if excluded else ""


def _current(counted: Sequence[_Counted], at: int) -> set[str]:
    return {c.member for c in counted if c.issued_at <= at < c.expires_at}


def _in_force(
    intro: Introduction, state: NodeState | None, step: Header, policies: Policies
) -> Policy:
    """Steps 1 and 2: the transition's place, and the policy in force, parsed only once its
    bytes are the ones the state (or the introduction) pins."""
    _check_position(intro, state, step)
    return policies(step.policy_in_force)


@dataclass(frozen=True)
class Vouched:
    """Step 3 passed for `header`: the approvals by members of the policy in force (their tree
    manifests not checked yet), and why the others do not count."""

    header: Header
    in_force: Policy
    counted: tuple[_Counted, ...]
    excluded: tuple[Excluded, ...]


def vouch(
    intro: Introduction,
    state: NodeState | None,
    header: Header,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None = None,
    *,
    policies: Policies | None = None,
    ssh: SshCheck = check_ssh,
) -> Vouched:
    """Steps 1 to 3: what may be known of a candidate before any of its content is read.
    NotVouched unless a member of the policy in force validly approved exactly this step."""
    in_force = _in_force(intro, state, header, policies or Policies())
    counted, excluded = _signers(intro, header, in_force, in_force, evidence, now, identities, ssh)
    if not counted:
        raise NotVouched(
            f"seq {header.seq} ({header.to_commit[:12]}): no valid approval by a member of the "
            f"policy in force{_detail(excluded)}",
            excluded,
        )
    return Vouched(header, in_force, tuple(counted), tuple(excluded))


@dataclass(frozen=True)
class Assessment:
    """What the evidence for one (well-placed) transition amounts to, met or not."""

    signers: tuple[str, ...]
    excluded: tuple[Excluded, ...]
    quorum: quorum.QuorumResult
    next_state: NodeState
    policy: Circle | None  # at `to`; None while a proposed one waits for the quorum in force


def _met_at(
    counted: Sequence[_Counted], evaluate: Callable[[int], quorum.QuorumResult], now: int
) -> tuple[int, quorum.QuorumResult] | None:
    """The instant at which the quorum holds among approvals all current then, if any.

    Collecting signatures must fit in the approval lifetime; once met, a step stays approved
    (a node joining a circle idle for months still follows it). `now` is tried first: usually
    every approval is still current."""
    instants = sorted({c.issued_at for c in counted}, reverse=True)
    for instant in [now, *instants]:
        result = evaluate(instant)
        if result.rules and result.satisfied:
            return instant, result
    return None


def assess(
    intro: Introduction,
    state: NodeState | None,
    step: Transition,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None = None,
    *,
    policies: Policies | None = None,
    ssh: SshCheck = check_ssh,
    vouched: Vouched | None = None,
    in_force_first: bool = False,
) -> Assessment:
    """Check everything but the quorum (position, policy, tree, evolution: ChainError), and
    report the quorum rule by rule: what `circle review` shows and `verify` enforces.

    `vouched` carries steps 1 to 3 when `vouch` ran already. With `in_force_first`, a proposed
    circle.yaml is parsed only once the quorum of the policy in force is met (step 5);
    otherwise it is reported on at once."""
    policies = policies or Policies()
    header = step.header
    if vouched is None:
        vouched = Vouched(header, _in_force(intro, state, header, policies), (), ())
        counted, excluded = _signers(
            intro, header, vouched.in_force, vouched.in_force, evidence, now, identities, ssh
        )
    elif vouched.header != header:
        raise ValueError("vouched for another transition")
    else:
        counted, excluded = list(vouched.counted), list(vouched.excluded)
    in_force = vouched.in_force
    _check_tree(in_force.circle, step)
    counted, wrong_tree = _same_tree(counted, step.tree_sha256)
    excluded += wrong_tree
    next_state = NodeState(step.to_commit, step.seq, sha256(step.policy_to))
    policy_changed = POLICY_FILE in step.changed
    evolution = policy_changed and state is not None

    def in_force_only(instant: int) -> quorum.QuorumResult:
        return quorum.evaluate(in_force.circle, step.changed, _current(counted, instant))

    if evolution and in_force_first and _met_at(counted, in_force_only, now) is None:
        return _unmet(counted, excluded, in_force_only(now), next_state, None, step, now)
    after = in_force.circle
    proposed: list[_Counted] | None = None
    if evolution:
        new = policies(step.policy_to)
        _check_evolution(in_force, new.circle)
        after = new.circle
        # The new policy's governance is met by its own members' signatures (of the same
        # statement): a member being added can co-sign their own admission.
        proposed, _ = _signers(intro, header, in_force, new, evidence, now, identities, ssh)
        proposed, _ = _same_tree(proposed, step.tree_sha256)

    def at(instant: int) -> quorum.QuorumResult:
        return quorum.evaluate(
            in_force.circle,
            step.changed,
            _current(counted, instant),
            proposed=after if policy_changed else None,
            proposed_signers=None if proposed is None else _current(proposed, instant),
        )

    met = _met_at([*counted, *(proposed or [])], at, now)
    if met is None:
        return _unmet(counted, excluded, at(now), next_state, after, step, now)
    instant, result = met
    return Assessment(
        tuple(sorted(_current(counted, instant))), tuple(excluded), result, next_state, after
    )


def _same_tree(counted: list[_Counted], tree_sha256: str) -> tuple[list[_Counted], list[Excluded]]:
    """Step 4 for each approval: it must name the sha256 manifest of the tree as read."""
    kept = [c for c in counted if c.tree_sha256 == tree_sha256]
    wrong = [
        Excluded(c.index, MisplacedApproval("approves another tree sha256"))
        for c in counted
        if c not in kept
    ]
    return kept, wrong


def _unmet(
    counted: Sequence[_Counted],
    excluded: list[Excluded],
    result: quorum.QuorumResult,
    next_state: NodeState,
    after: Circle | None,
    step: Transition,
    now: int,
) -> Assessment:
    excluded = excluded + [
        Excluded(
            c.index,
            statements.StatementError(
                f"approval of seq {step.seq} ({step.to_commit[:12]}) expired at {c.expires_at}"
            ),
        )
        for c in counted
        if c.expires_at <= now
    ]
    return Assessment(
        tuple(sorted(_current(counted, now))), tuple(excluded), result, next_state, after
    )


def verify(
    intro: Introduction,
    state: NodeState | None,
    step: Transition,
    evidence: Sequence[Evidence],
    now: int,
    identities: IdentityVerifier | None = None,
    *,
    policies: Policies | None = None,
    ssh: SshCheck = check_ssh,
    vouched: Vouched | None = None,
) -> Verdict:
    """The node state after `step`, or a ChainError saying why it must not be applied.

    `identities` verifies sigstore approvals; without it they are excluded, with the reason."""
    found = assess(
        intro, state, step, evidence, now, identities,
        policies=policies, ssh=ssh, vouched=vouched, in_force_first=True,
    )  # fmt: skip
    try:
        quorum.check(found.quorum)
    except quorum.QuorumNotMet as error:
        raise quorum.QuorumNotMet(
            f"seq {step.seq} ({step.to_commit[:12]}): {error}{_detail(found.excluded)}",
            found.excluded,
        ) from None
    assert found.policy is not None  # a met quorum parsed the policy at `to`
    return Verdict(found.next_state, found.signers, found.policy, found.excluded)
