"""Every rule of the Human Chain, decided here and nowhere else. Pure: bytes and values in,
values or a refusal out; no Git, no files, no clock (`now` is given).

A `Verifier` holds one circle's trust anchor (its introduction) and judges what the Git shell
reads for it. The rules, in the order they are applied; each refusal is its own error class,
with a `Refusal` reason and a retry meaning (`reconciler.errors.Retry`), and the node's state
is never changed by one:

0. Direction of a source's main (`check_main`, before anything else is read): main must be
   the introduction's commit or descend from it (else another history: `ForkError`); a main
   behind the applied commit is a rollback (`RollbackError`), one beside it rewritten history
   (`ForkError`). Steps are applied only up to main: an approved step main does not contain
   waits.
1. Position (`Header`: the commit objects alone). With no state yet, the only acceptable
   transition is seq 1 to the introduction's own commit, whose circle.yaml hashes to the
   introduction's policy sha256. Otherwise the transition must be seq = state.seq + 1 (a lower
   or equal seq is a `RollbackError`, a higher one a `SequenceGap`) and start from the applied
   commit (`ForkError`).
2. Policy in force: the circle.yaml of the `from` commit, whose bytes must hash to the state's
   policy sha256 (for seq 1, the introduction's) before they are parsed (`PolicyError`). A
   commit never authorizes itself.
3. Vouching (`vouch`): each approval counts only if its statement parses, names exactly this
   circle, introduction, ref, seq, from, to, tree and policy (`MisplacedApproval`), is no longer
   valid than the policy's `approvalLifetime` plus `CLOCK_SKEW` (`LifetimeExceeded`), is not
   issued in the future, and carries a valid signature (`BadSignature`: SSHSIG, namespace
   circle-approval-v1, a sigstore bundle, or an ML-DSA-65 envelope whose context is that
   namespace: `reconciler.chain.mldsa`) of a member of the policy in force (`NotAMember`).
   Any kind of signature vouches; which kinds count is the quorum's business (rule 6). The
   others are excluded, each with its error. With no member's approval the candidate is
   refused here (`NotVouched`): nothing of its trees is read, nothing parsed.
4. Ancestry and tree facts (the shell reads them now): `to` descends from the applied commit
   (`ForkError`: not a jump to unrelated history), the sha256 manifest of the `to` tree each
   counted approval names (`MisplacedApproval`), and no symbolic link or submodule unless the
   policy allows them (`TreeRefused`).
5. Policy evolution (circle.yaml changed): the quorum of the policy in force is evaluated
   first, and only once it is met is the proposed circle.yaml parsed (a parse failure is a
   `PolicyError`); it must keep the circle id, bump the version by one, name the sha256 of the
   old bytes as `previous`, and its own governance must be met too, by its own members.
6. Quorum (`reconciler.chain.quorum`) over the changed paths, among approvals all current at
   one instant (`QuorumNotMet`); once met, a step stays approved, whatever the time now. Each
   rule counts the signatures its `signatures` setting names: any (classic), ML-DSA ones
   (post-quantum), or a classic and an ML-DSA one of the same member over the same statement
   bytes (hybrid).
7. One step per seq (`choose`): of the candidates filed for a seq, those that fail any rule are
   not this seq's step and never block it; two that pass are an `Equivocation`.

The verdict is the next node state; persisting it (atomically, 0600) is the shell's job.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from builders import BuildError, sshsig
from reconciler.chain import mldsa, quorum, statements
from reconciler.chain.changes import TreeRefused
from reconciler.chain.quorum import Excluded
from reconciler.chain.values import (
    Evidence,
    Header,
    IdentityVerifier,
    Introduction,
    MainFacts,
    MlDsaCheck,
    NodeState,
    SshCheck,
    Transition,
    sha256,
)
from reconciler.desired.documents import parse_document
from reconciler.desired.model import KINDS, Circle
from reconciler.desired.model.circle import POLICY_FILE, MlDsaKey, SigstoreIdentity, SshKey
from reconciler.desired.model.types import ed25519_key_blob, mldsa65_key_blob
from reconciler.desired.problems import DocumentError
from reconciler.errors import CheckFailed, Retry

CLOCK_SKEW = 300
"""Seconds an approval's validity window may exceed the policy's `approvalLifetime`: the
signer's clock and the clock `circle approve` read may differ by this much."""


class Refusal(enum.StrEnum):
    """Why a step or an approval is refused, as a node's status names it (Kubernetes style)."""

    ROLLBACK = "Rollback"
    SEQUENCE_GAP = "SequenceGap"
    FORK = "Fork"
    POLICY = "PolicyInvalid"
    NOT_VOUCHED = "NotVouched"
    QUORUM_NOT_MET = "QuorumNotMet"
    TREE = "TreeRefused"
    EQUIVOCATION = "Equivocation"
    MISPLACED = "MisplacedApproval"
    LIFETIME = "LifetimeExceeded"
    BAD_SIGNATURE = "BadSignature"
    NOT_A_MEMBER = "NotAMember"
    STATEMENT = "InvalidStatement"
    UNREADABLE = "Unreadable"


class ChainError(CheckFailed):
    """A transition the node must not apply."""

    reason: ClassVar[Refusal] = Refusal.UNREADABLE


class RollbackError(ChainError):
    reason = Refusal.ROLLBACK


class SequenceGap(ChainError):
    reason = Refusal.SEQUENCE_GAP


class ForkError(ChainError):
    reason = Refusal.FORK


class PolicyError(ChainError):
    reason = Refusal.POLICY


class Equivocation(ChainError):
    """Two different commits approved for one sequence number: a person must resolve it."""

    reason = Refusal.EQUIVOCATION


class BadSignature(ChainError):
    """An approval whose signature does not verify (or cannot be read)."""

    reason = Refusal.BAD_SIGNATURE


class NotAMember(ChainError):
    """An approval signed by a key of no member of the policy that counts it."""

    reason = Refusal.NOT_A_MEMBER


class NotVouched(quorum.QuorumNotMet):
    """No member of the policy in force validly approved exactly this transition: nothing of
    it is read further. Approvals may still come."""

    reason: ClassVar[Refusal] = Refusal.NOT_VOUCHED
    retry = Retry.WAITING


class LifetimeExceeded(statements.StatementError):
    """An approval valid for longer than the policy in force lets one be."""


class MisplacedApproval(statements.StatementError):
    """An approval of another circle, ref, seq, parent, commit, tree or policy."""


def refusal(error: BaseException) -> Refusal:
    """The reason a node's status gives for `error`."""
    if isinstance(error, ChainError | NotVouched):
        return error.reason
    if isinstance(error, quorum.QuorumNotMet):
        return Refusal.QUORUM_NOT_MET
    if isinstance(error, TreeRefused):
        return Refusal.TREE
    if isinstance(error, LifetimeExceeded):
        return Refusal.LIFETIME
    if isinstance(error, MisplacedApproval):
        return Refusal.MISPLACED
    if isinstance(error, statements.StatementError):
        return Refusal.STATEMENT
    return Refusal.UNREADABLE


def check_ssh(statement: bytes, signature: sshsig.SshSignature) -> None:
    sshsig.verify_parsed(statement, signature, statements.NAMESPACE)


def check_mldsa(statement: bytes, signature: mldsa.MlDsaSignature) -> None:
    mldsa.verify_parsed(statement, signature, statements.NAMESPACE)


@dataclass(frozen=True)
class Verdict:
    state: NodeState
    signers: tuple[str, ...]
    policy: Circle  # the policy at the new state
    excluded: tuple[Excluded, ...] = field(default_factory=tuple)


def parse_policy(data: bytes) -> Circle:
    """circle.yaml bytes as a policy; PolicyError (never another exception) otherwise."""
    try:
        loaded = parse_document(data, POLICY_FILE, [KINDS["Circle"]])
    except DocumentError as error:
        raise PolicyError(f"{POLICY_FILE} is not a valid policy: {error}") from None
    assert isinstance(loaded.document, Circle)
    return loaded.document


def members_by_key(policy: Circle) -> dict[bytes, str]:
    """Member ids by the key blobs of their Ed25519 keys (SSH wire blobs) and ML-DSA keys
    (`mldsa65_key_blob`: never equal to an SSH blob)."""
    found: dict[bytes, str] = {}
    for member in policy.members:
        for key in member.keys:
            if isinstance(key, SshKey):
                found[ed25519_key_blob(key.key)] = member.id
            elif isinstance(key, MlDsaKey):
                found[mldsa65_key_blob(key.key)] = member.id
    return found


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

    DIGESTS = 64  # policy texts whose sha256 is kept (a walk meets a few, at every step)

    def __init__(self, parse: Callable[[bytes], Circle] = parse_policy) -> None:
        self._parse = parse
        self._known: dict[str, Policy] = {}
        self._digests: dict[bytes, str] = {}

    def digest(self, data: bytes) -> str:
        """sha256 of the policy text `data`, hashed once per distinct bytes (a step checks the
        policy in force several times: each a hash of several KiB, which gives up the GIL to
        the threads that check signatures ahead, and waits to get it back)."""
        found = self._digests.get(data)
        if found is None:
            if len(self._digests) >= self.DIGESTS:
                self._digests.clear()
            found = self._digests[data] = sha256(data)
        return found

    def __call__(self, data: bytes) -> Policy:
        digest = self.digest(data)
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


def _check_position(
    intro: Introduction,
    state: NodeState | None,
    step: Header,
    digest: Callable[[bytes], str] = sha256,
) -> None:
    if state is None:
        if step.seq != 1 or step.from_commit is not None or step.to_commit != intro.commit:
            raise ForkError(
                f"the first approved transition must be seq 1 to the introduction's commit "
                f"{intro.commit[:12]}; got seq {step.seq} to {step.to_commit[:12]}"
            )
        if digest(step.policy_in_force) != intro.policy_sha256:
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
    if digest(step.policy_in_force) != state.policy_sha256:
        raise PolicyError("circle.yaml at the applied commit does not match the node's state")


def check_evolution(old: Policy, new: Circle) -> None:
    """Rule 5: `new` keeps the circle id, is the next version and names `old`'s bytes as
    `previous`. `reconciler.desired.evolution` states the same rule as located problems for a
    working tree (the desired layer sits below the chain, so it cannot call this); a test pins
    that both refuse the same cases."""
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
    if step.from_commit is not None and not step.descends:
        raise ForkError(f"{step.to_commit[:12]} does not descend from {step.from_commit[:12]}")
    if step.links and not policy.consensus.allow_symlinks:
        raise TreeRefused(f"{step.links[0]} is a symbolic link, and the policy allows none")
    if step.submodules and not policy.consensus.allow_submodules:
        raise TreeRefused(f"{step.submodules[0]} is a submodule, and the policy allows none")


def _signer(
    members: Policy,
    item: Evidence,
    identities: IdentityVerifier | None,
    ssh: SshCheck,
    pq: MlDsaCheck,
) -> tuple[str | None, bool]:
    """The member whose valid signature `item` holds (None when it is no member's), and
    whether it is an ML-DSA signature."""
    if item.parsed is None:
        text = item.signature.lstrip()
        if text.startswith("{"):  # a sigstore bundle
            if identities is None:
                raise ChainError("a sigstore approval, and no sigstore trust root is configured")
            found = identities.identify(item.statement, item.signature)
            return members.by_identity.get(found), False
        if text.startswith(mldsa.BEGIN):
            return _mldsa_signer(members, item, pq), True
    try:
        parsed = item.parsed or sshsig.parse(item.signature)
        member = members.by_key.get(parsed.public_key)
        if member is not None:
            ssh(item.statement, parsed)
    except BuildError as error:  # sshsig's SignatureError
        raise BadSignature(str(error)) from None
    return member, False


def _mldsa_signer(members: Policy, item: Evidence, pq: MlDsaCheck) -> str | None:
    """The member whose valid ML-DSA signature `item` holds; the maths only for a member's key."""
    try:
        parsed = item.envelope or mldsa.parse(item.signature)
        member = members.by_key.get(parsed.public_key)
        if member is not None:
            pq(item.statement, parsed)
    except mldsa.MlDsaError as error:
        raise BadSignature(str(error)) from None
    return member


@dataclass(frozen=True, slots=True)
class _Counted:
    """A valid approval by a member, and when it is current."""

    member: str
    issued_at: int
    expires_at: int
    tree_sha256: str  # the manifest it names: checked once the tree is read (step 4)
    index: int  # its position in the evidence, for messages
    quantum_safe: bool = False  # an ML-DSA signature
    statement: bytes = b""  # the bytes signed: a hybrid pair signs the same ones


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
    pq: MlDsaCheck,
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
    # The same statement bytes come several times (one member's classic and ML-DSA signatures
    # of it, co-signers of one statement): decoded once (a refused one is decoded, and refused,
    # each time).
    decoded: dict[bytes, statements.Approval] = {}
    for index, item in enumerate(evidence, start=1):
        try:
            approval = decoded.get(item.statement)
            if approval is None:
                approval = decoded[item.statement] = statements.decode(item.statement)
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
            member, quantum_safe = _signer(members, item, identities, ssh, pq)
            if member is None:
                raise NotAMember("signed by a key of no member")
        except CheckFailed as error:
            excluded.append(Excluded(index, error))
            continue
        counted.append(
            _Counted(
                member,
                approval.issued_at,
                approval.expires_at,
                approval.tree_sha256,
                index,
                quantum_safe,
                item.statement,
            )
        )
    return counted, excluded


def _detail(excluded: Sequence[Excluded]) -> str:
    return f" (excluded: {'; '.join(map(str, excluded))})" if excluded else ""


def _current(counted: Sequence[_Counted], at: int) -> set[str]:
    return {c.member for c in counted if c.issued_at <= at < c.expires_at}


def _signers_at(counted: Sequence[_Counted], at: int) -> quorum.Signers:
    """The members with approvals current at `at`, by kind of signature (`quorum.Signers`):
    a hybrid signer holds a classic and an ML-DSA signature of the very same statement."""
    current = [c for c in counted if c.issued_at <= at < c.expires_at]
    classic = frozenset(c.member for c in current)
    quantum_safe = [c for c in current if c.quantum_safe]
    if not quantum_safe:
        return quorum.Signers(classic)
    pairs = {(c.member, c.statement) for c in current if not c.quantum_safe}
    return quorum.Signers(
        classic,
        frozenset(c.member for c in quantum_safe),
        frozenset(c.member for c in quantum_safe if (c.member, c.statement) in pairs),
    )


@dataclass(frozen=True)
class Vouched:
    """Step 3 passed for `header`: the approvals by members of the policy in force (their tree
    manifests not checked yet), and why the others do not count."""

    header: Header
    in_force: Policy
    counted: tuple[_Counted, ...]
    excluded: tuple[Excluded, ...]


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


class Verifier:
    """The Human Chain of one circle, from its introduction: the rules above, applied to what
    the Git shell reads. It keeps the policies it parsed (a walk meets few policies and many
    steps); `ssh` and `mldsa_check` check SSH and ML-DSA signatures (a cold walk swaps in
    ones that check ahead) and `identities` sigstore bundles (without it, sigstore approvals
    are excluded)."""

    def __init__(
        self,
        intro: Introduction,
        *,
        identities: IdentityVerifier | None = None,
        ssh: SshCheck = check_ssh,
        policies: Policies | None = None,
        mldsa_check: MlDsaCheck = check_mldsa,
    ) -> None:
        self.intro = intro
        self.identities = identities
        self.ssh = ssh
        self.mldsa_check = mldsa_check
        self.policies = policies or Policies()

    # -- rule 0 -----------------------------------------------------------------------------

    def check_main(self, state: NodeState | None, main: MainFacts) -> None:
        """Refuse a source's main that is another history, behind the applied commit or
        beside it."""
        if main.target != self.intro.commit and not main.from_introduction:
            raise ForkError(
                f"the source's main ({main.target[:12]}) does not descend from the introduction "
                f"{self.intro.commit[:12]}: another history"
            )
        if state is None or state.commit == main.target:
            return
        if main.behind:
            raise RollbackError(
                f"the source's main ({main.target[:12]}) is behind the applied seq {state.seq} "
                f"({state.commit[:12]}): refusing to roll back"
            )
        if not main.ahead:
            raise ForkError(
                f"the source's main ({main.target[:12]}) does not descend from the applied seq "
                f"{state.seq} ({state.commit[:12]}): history was rewritten"
            )

    # -- rules 1 to 3 -----------------------------------------------------------------------

    def place(self, state: NodeState | None, step: Header) -> Policy:
        """Rules 1 and 2: the transition's place, and the policy in force, parsed only once
        its bytes are the ones the state (or the introduction) pins."""
        _check_position(self.intro, state, step, self.policies.digest)
        return self.policies(step.policy_in_force)

    def vouch(
        self, state: NodeState | None, header: Header, evidence: Sequence[Evidence], now: int
    ) -> Vouched:
        """Rules 1 to 3: what may be known of a candidate before any of its content is read.
        NotVouched unless a member of the policy in force validly approved exactly this step."""
        in_force = self.place(state, header)
        counted, excluded = _signers(
            self.intro,
            header,
            in_force,
            in_force,
            evidence,
            now,
            self.identities,
            self.ssh,
            self.mldsa_check,
        )
        if not counted:
            raise NotVouched(
                f"seq {header.seq} ({header.to_commit[:12]}): no valid approval by a member of "
                f"the policy in force{_detail(excluded)}",
                excluded,
            )
        return Vouched(header, in_force, tuple(counted), tuple(excluded))

    # -- rules 4 to 6 -----------------------------------------------------------------------

    def assess(
        self,
        state: NodeState | None,
        step: Transition,
        evidence: Sequence[Evidence],
        now: int,
        *,
        vouched: Vouched | None = None,
        in_force_first: bool = False,
    ) -> Assessment:
        """Check everything but the quorum (position, policy, tree, evolution: ChainError), and
        report the quorum rule by rule: what `circle review` shows and `verify` enforces.

        `vouched` carries rules 1 to 3 when `vouch` ran already. With `in_force_first`, a
        proposed circle.yaml is parsed only once the quorum of the policy in force is met
        (rule 5); otherwise it is reported on at once."""
        header = step.header
        if vouched is None:
            vouched = Vouched(header, self.place(state, header), (), ())
            counted, excluded = _signers(
                self.intro,
                header,
                vouched.in_force,
                vouched.in_force,
                evidence,
                now,
                self.identities,
                self.ssh,
                self.mldsa_check,
            )
        elif vouched.header != header:
            raise ValueError("vouched for another transition")
        else:
            counted, excluded = list(vouched.counted), list(vouched.excluded)
        in_force = vouched.in_force
        _check_tree(in_force.circle, step)
        counted, wrong_tree = _same_tree(counted, step.tree_sha256)
        excluded += wrong_tree
        next_state = NodeState(step.to_commit, step.seq, self.policies.digest(step.policy_to))
        policy_changed = POLICY_FILE in step.changed
        evolution = policy_changed and state is not None

        def in_force_only(instant: int) -> quorum.QuorumResult:
            return quorum.evaluate(in_force.circle, step.changed, _signers_at(counted, instant))

        if evolution and in_force_first and _met_at(counted, in_force_only, now) is None:
            return _unmet(counted, excluded, in_force_only(now), next_state, None, step, now)
        after = in_force.circle
        proposed: list[_Counted] | None = None
        if evolution:
            new = self.policies(step.policy_to)
            check_evolution(in_force, new.circle)
            after = new.circle
            # The new policy's governance is met by its own members' signatures (of the same
            # statement): a member being added can co-sign their own admission.
            proposed, _ = _signers(
                self.intro,
                header,
                in_force,
                new,
                evidence,
                now,
                self.identities,
                self.ssh,
                self.mldsa_check,
            )
            proposed, _ = _same_tree(proposed, step.tree_sha256)

        def at(instant: int) -> quorum.QuorumResult:
            return quorum.evaluate(
                in_force.circle,
                step.changed,
                _signers_at(counted, instant),
                proposed=after if policy_changed else None,
                proposed_signers=None if proposed is None else _signers_at(proposed, instant),
            )

        met = _met_at([*counted, *(proposed or [])], at, now)
        if met is None:
            return _unmet(counted, excluded, at(now), next_state, after, step, now)
        instant, result = met
        return Assessment(
            tuple(sorted(_current(counted, instant))), tuple(excluded), result, next_state, after
        )

    def verify(
        self,
        state: NodeState | None,
        step: Transition,
        evidence: Sequence[Evidence],
        now: int,
        *,
        vouched: Vouched | None = None,
    ) -> Verdict:
        """The node state after `step`, or the ChainError (QuorumNotMet) that refuses it."""
        found = self.assess(state, step, evidence, now, vouched=vouched, in_force_first=True)
        try:
            quorum.check(found.quorum)
        except quorum.QuorumNotMet as error:
            raise quorum.QuorumNotMet(
                f"seq {step.seq} ({step.to_commit[:12]}): {error}{_detail(found.excluded)}",
                found.excluded,
            ) from None
        assert found.policy is not None  # a met quorum parsed the policy at `to`
        return Verdict(found.next_state, found.signers, found.policy, found.excluded)

    # -- rule 7 -----------------------------------------------------------------------------

    def choose(
        self, seq: int, candidates: Sequence[tuple[str, Callable[[], Verdict]]]
    ) -> tuple[str, Verdict] | None:
        """The one step of `seq` among `candidates` (each `to` commit with the judgement of its
        transition): a candidate refused for any reason is not this seq's step; none passing
        is no step yet; two passing are an Equivocation."""
        approved: list[tuple[str, Verdict]] = []
        for to, judge in sorted(candidates, key=lambda candidate: candidate[0]):
            try:
                approved.append((to, judge()))
            except CheckFailed:
                continue
        if len(approved) > 1:
            commits = ", ".join(to[:12] for to, _ in approved)
            raise Equivocation(f"seq {seq} has {len(approved)} approved commits ({commits})")
        return approved[0] if approved else None
