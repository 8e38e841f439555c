"""Quorum: whether the owners who signed a change are enough for the paths it touches. Pure.

The rules of `circle.yaml` (DESIGN.md section 4):

- A rule applies to a change when one of its patterns matches one of the changed paths. Every
  rule that applies must be satisfied; a change that touches nothing no rule covers cannot
  exist, because a valid policy has a catch-all.
- A rule is satisfied when the members among its signers hold at least `threshold` weight and
  every `required` member signed. A member counts once per rule, however many keys it signed
  with; signers who are not members of the rule count nothing for it.
- A change to `circle.yaml` must satisfy the old policy (the one in force: a commit never
  authorizes itself) AND the governance rule of the new policy.
- A rule's `signatures` says which signatures make a member a signer for it: `classic`, any
  valid signature of the member's keys; `post-quantum`, an ML-DSA one; `hybrid`, a classic one
  AND an ML-DSA one over the same statement bytes (`Signers`).

Two APIs, as python-tuf has: `evaluate` reports (what `circle review` shows: who signed, what
is missing, per rule) and `enforce` raises (what a node calls). Signers are member ids; turning
verified signatures into member ids is the caller's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from builders.paths import matches_any
from reconciler.desired.model import Circle
from reconciler.desired.model.circle import GOVERNANCE_RULE, POLICY_FILE, Rule, SignatureMode
from reconciler.errors import CheckFailed, Retry

CATCH_ALL = "**"  # the pattern of a rule that covers every path


@dataclass(frozen=True, slots=True)
class Excluded:
    """An approval that does not count, and the error that says why (its own class per reason:
    another transition, no member's key, a bad signature, too long a lifetime, expired...)."""

    index: int  # its position in the evidence, from 1
    error: Exception

    def __str__(self) -> str:
        return f"#{self.index}: {self.error}"


class QuorumNotMet(CheckFailed):
    """The signatures do not satisfy every rule the change triggers; `excluded` holds the
    approvals that were not counted, each with its reason. More approvals may still come."""

    retry = Retry.WAITING

    def __init__(self, message: str, excluded: Sequence[Excluded] = ()) -> None:
        super().__init__(message)
        self.excluded = tuple(excluded)


@dataclass(frozen=True, slots=True)
class Signers:
    """Who signed, by the kind of signature: `classic`, members with any valid signature (an
    ML-DSA one included); `post_quantum`, with a valid ML-DSA signature; `hybrid`, with a
    classic and an ML-DSA signature of the same statement bytes."""

    classic: frozenset[str]
    post_quantum: frozenset[str] = frozenset()
    hybrid: frozenset[str] = frozenset()

    @classmethod
    def of(cls, signers: Iterable[str] | Signers) -> Signers:
        """`signers` as Signers: plain member ids are classic signers only (kinds unknown)."""
        return signers if isinstance(signers, Signers) else cls(frozenset(signers))

    def counted(self, mode: SignatureMode) -> frozenset[str]:
        """The members a rule with `signatures: mode` counts."""
        if mode == "post-quantum":
            return self.post_quantum
        if mode == "hybrid":
            return self.hybrid
        return self.classic


_SHORT_OF = {
    "hybrid": "a classic and an ML-DSA signature of one statement",
    "post-quantum": "an ML-DSA signature",
}


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    policy: str  # "current" or "proposed" (governance of a new circle.yaml)
    threshold: int
    weight: int  # what the counted signers hold
    signed: tuple[str, ...]  # members of the rule who signed, counted once
    unsigned: tuple[str, ...]  # members of the rule who could still sign
    required_missing: tuple[str, ...]
    paths: tuple[str, ...]  # the changed paths that trigger the rule (a sample)
    signatures: SignatureMode = "classic"  # which signatures the rule counts
    uncounted: tuple[str, ...] = ()  # members who signed, but not with what the rule counts

    @property
    def satisfied(self) -> bool:
        return self.weight >= self.threshold and not self.required_missing

    def explain(self) -> str:
        """`rule workloads needs weight 2, has 1 (alice); missing one of: bob, carol`."""
        who = f" ({', '.join(self.signed)})" if self.signed else ""
        kind = "" if self.signatures == "classic" else f" of {self.signatures} signatures"
        text = f"rule {self.rule} needs weight {self.threshold}{kind}, has {self.weight}{who}"
        if self.policy != "current":
            text = f"{self.policy} policy: {text}"
        if self.uncounted:
            short = _SHORT_OF.get(self.signatures, "a counted signature")
            text += f"; not counted, without {short}: {', '.join(self.uncounted)}"
        if self.required_missing:
            text += f"; required: {', '.join(self.required_missing)}"
        if self.weight < self.threshold and self.unsigned:
            text += f"; {missing(self.threshold - self.weight, self.unsigned)}"
        return text


def missing(short: int, unsigned: Sequence[str]) -> str:
    """`missing one of: bob, carol`, or, when one more signer is not enough, `missing weight
    2 from: alice, bob, carol` (never "one of" when all three are needed)."""
    if short <= 1:
        return f"missing one of: {', '.join(unsigned)}"
    return f"missing weight {short} from: {', '.join(unsigned)}"


@dataclass(frozen=True, slots=True)
class QuorumResult:
    rules: tuple[RuleResult, ...]

    @property
    def satisfied(self) -> bool:
        return all(rule.satisfied for rule in self.rules)

    @property
    def unmet(self) -> tuple[RuleResult, ...]:
        return tuple(rule for rule in self.rules if not rule.satisfied)


def _members(policy: Circle, rule: Rule) -> list[str]:
    """The rule's members, each once (a member counts once per rule, however often listed)."""
    listed = rule.members if rule.members is not None else [m.id for m in policy.members]
    return list(dict.fromkeys(listed))


def _result(
    policy: Circle, rule: Rule, every: Signers, paths: Sequence[str], which: str
) -> RuleResult:
    weights = {member.id: member.weight for member in policy.members}
    members = _members(policy, rule)
    signers = every.counted(rule.signatures)
    signed = tuple(m for m in members if m in signers)
    return RuleResult(
        rule=rule.name,
        policy=which,
        threshold=rule.threshold,
        weight=sum(weights.get(m, 0) for m in signed),
        signed=signed,
        unsigned=tuple(m for m in members if m not in signers),
        required_missing=tuple(m for m in rule.required if m not in signers),
        paths=tuple(paths[:5]),
        signatures=rule.signatures,
        uncounted=tuple(m for m in members if m not in signers and m in every.classic),
    )


def triggered(policy: Circle, changed: Iterable[str]) -> list[tuple[Rule, list[str]]]:
    """The rules a change triggers, each with the changed paths that trigger it.

    A transition that changes no path still moves the approved head: the catch-all rules
    (pattern `**`) decide it."""
    paths = sorted(set(changed))
    if not paths:
        return [(rule, []) for rule in policy.consensus.rules if CATCH_ALL in rule.paths]
    found = []
    for rule in policy.consensus.rules:
        hits = [path for path in paths if matches_any(rule.paths, path)]
        if hits:
            found.append((rule, hits))
    return found


def evaluate(
    policy: Circle,
    changed: Iterable[str],
    signers: Iterable[str] | Signers,
    *,
    proposed: Circle | None = None,
    proposed_signers: Iterable[str] | Signers | None = None,
) -> QuorumResult:
    """Report, rule by rule, whether `signers` (member ids, or `Signers` by kind of
    signature; plain ids count as classic signatures only) satisfy the change.

    `policy` is the policy in force (the one in the parent commit). When the change rewrites
    circle.yaml, pass the new policy as `proposed`: its governance rule must be met too, by
    `proposed_signers` (the signers among the new policy's members, new members included, as
    TUF's root rotation requires the new root's threshold; default: `signers`).
    """
    signer_set = Signers.of(signers)
    proposed_set = signer_set if proposed_signers is None else Signers.of(proposed_signers)
    paths = sorted(set(changed))
    results = [
        _result(policy, rule, signer_set, hits, "current")
        for rule, hits in triggered(policy, paths)
    ]
    if POLICY_FILE in paths and proposed is not None:
        governance = proposed.rule(GOVERNANCE_RULE)
        if governance is not None:
            results.append(_result(proposed, governance, proposed_set, [POLICY_FILE], "proposed"))
    return QuorumResult(tuple(results))


def enforce(
    policy: Circle,
    changed: Iterable[str],
    signers: Iterable[str] | Signers,
    *,
    proposed: Circle | None = None,
) -> QuorumResult:
    """`evaluate`, raising QuorumNotMet naming every unmet rule."""
    changed = list(changed)
    if POLICY_FILE in changed and proposed is None:
        raise QuorumNotMet(f"{POLICY_FILE} changes: the proposed policy must be evaluated too")
    return check(evaluate(policy, changed, signers, proposed=proposed))


def check(result: QuorumResult) -> QuorumResult:
    """`result` if it is met; QuorumNotMet naming every unmet rule otherwise."""
    if not result.rules:
        raise QuorumNotMet("no rule covers the change (the policy has no catch-all rule)")
    if not result.satisfied:
        raise QuorumNotMet("; ".join(rule.explain() for rule in result.unmet))
    return result
