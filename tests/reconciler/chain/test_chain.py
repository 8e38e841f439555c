"""Verifying transitions from an introduction and a node state: every refusal, by its error, and
the state is only ever the one a verified transition yields."""

from __future__ import annotations

import base64
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import sshsig
from reconciler.chain import node_state
from reconciler.chain.changes import TreeRefused
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.statements import NAMESPACE, Approval
from reconciler.chain.values import Evidence, Introduction, NodeState, Transition, sha256
from reconciler.chain.verify import (
    CLOCK_SKEW,
    BadSignature,
    Equivocation,
    ForkError,
    LifetimeExceeded,
    NotVouched,
    PolicyError,
    Refusal,
    RollbackError,
    SequenceGap,
    Verifier,
    refusal,
)
from reconciler.errors import ReconcilerError, Retry
from tests.conftest import EXAMPLE

KEYS = {name: Ed25519PrivateKey.generate() for name in ("alice", "bob", "carol", "mallory")}
NOW = 1_700_000_100
FIRST, SECOND, THIRD = "1" * 40, "2" * 40, "3" * 40


def policy_text(version: int = 1, previous: str | None = None) -> bytes:
    text = (EXAMPLE / "circle.yaml").read_text()
    for name in ("alice", "bob", "carol"):
        text = re.sub(
            rf"ssh-ed25519 \S+ {name}@example-circle",
            sshsig.public_key_line(KEYS[name], f"{name}@test"),
            text,
        )
    text = text.replace("version: 1\n", f"version: {version}\n")
    if previous:
        text = text.replace(f"version: {version}\n", f"version: {version}\nprevious: {previous}\n")
    return text.encode()


V1 = policy_text()
INTRO = Introduction("example-ai-circle", FIRST, sha256(V1))


def step(
    seq: int, previous: str | None, to: str, changed: tuple[str, ...], **extra: object
) -> Transition:
    base = Transition(
        ref="refs/heads/main",
        seq=seq,
        from_commit=previous,
        to_commit=to,
        to_tree="d" * 40,
        tree_sha256="e" * 64,
        changed=changed,
        descends=True,
        policy_from=None if seq == 1 else V1,
        policy_to=V1,
    )
    return replace(base, **extra)  # type: ignore[arg-type]


def approve(
    transition: Transition, *names: str, policy: bytes = V1, **extra: object
) -> list[Evidence]:
    fields = {
        "circle": INTRO.circle,
        "introduction": INTRO.commit,
        "ref": transition.ref,
        "seq": transition.seq,
        "from_commit": transition.from_commit,
        "to_commit": transition.to_commit,
        "to_tree": transition.to_tree,
        "tree_sha256": transition.tree_sha256,
        "policy_sha256": sha256(policy),
        "issued_at": NOW - 100,
        "expires_at": NOW + 86_400,
    }
    fields.update(extra)
    data = Approval(**fields).encode()  # type: ignore[arg-type]
    return [Evidence(data, sshsig.sign(data, KEYS[name], NAMESPACE)) for name in names]


GENESIS = step(1, None, FIRST, ("circle.yaml", "workloads/langid.yaml"))
STATE_1 = NodeState(FIRST, 1, sha256(V1))
CHANGE = step(2, FIRST, SECOND, ("workloads/langid.yaml",))


def test_the_first_commit_needs_governance_and_yields_the_first_state() -> None:
    verdict = Verifier(INTRO).verify(None, GENESIS, approve(GENESIS, "alice", "bob", "carol"), NOW)
    assert verdict.state == STATE_1
    assert verdict.signers == ("alice", "bob", "carol")
    with pytest.raises(QuorumNotMet, match="rule governance needs weight 3, has 2"):
        Verifier(INTRO).verify(None, GENESIS, approve(GENESIS, "alice", "bob"), NOW)


def test_a_change_with_quorum_advances_the_state() -> None:
    verdict = Verifier(INTRO).verify(STATE_1, CHANGE, approve(CHANGE, "alice", "carol"), NOW)
    assert verdict.state == NodeState(SECOND, 2, sha256(V1))


@pytest.mark.parametrize(
    ("transition", "evidence", "error", "message"),
    [
        (
            CHANGE,
            approve(CHANGE, "alice"),
            QuorumNotMet,
            "rule workloads needs weight 2, has 1 (alice)",
        ),
        (step(1, None, FIRST, ("x",)), [], RollbackError, "not after the applied seq 1"),
        (step(3, SECOND, THIRD, ("x",)), [], SequenceGap, "seq 3 skips seq 2"),
        (
            step(2, THIRD, SECOND, ("x",)),
            [],
            ForkError,
            "starts from 333333333333, not the applied",
        ),
        (replace(CHANGE, descends=False), [], ForkError, "does not descend from"),
        (
            CHANGE,
            approve(CHANGE, "alice") + approve(CHANGE, "mallory"),
            QuorumNotMet,
            "#2: signed by a key of no member",
        ),
        (
            CHANGE,
            approve(CHANGE, "alice", "bob", circle="other-circle"),
            QuorumNotMet,
            "approves another circle",
        ),
        (
            CHANGE,
            approve(CHANGE, "alice", "bob", ref="refs/heads/dev"),
            QuorumNotMet,
            "approves another ref",
        ),
        (
            CHANGE,
            approve(CHANGE, "alice", "bob", to_commit=THIRD),
            QuorumNotMet,
            "approves another to commit",
        ),
        (
            CHANGE,
            approve(CHANGE, "alice", issued_at=NOW - 90_000, expires_at=NOW - 80_000)
            + approve(CHANGE, "bob"),
            QuorumNotMet,
            "expired at",
        ),
        (
            CHANGE,
            approve(CHANGE, "alice", "bob", policy=b"another policy"),
            QuorumNotMet,
            "approves another policy sha256",
        ),
    ],
    ids=[
        "one-signature",
        "rollback",
        "gap",
        "fork",
        "unrelated-history",
        "outsider-key",
        "other-circle",
        "other-ref",
        "other-commit",
        "expired",
        "other-policy",
    ],
)
def test_refusals(
    transition: Transition, evidence: list[Evidence], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Verifier(INTRO).verify(STATE_1, transition, evidence, NOW)


def test_a_policy_change_must_evolve_by_one_version_and_meet_both_governances() -> None:
    v2 = policy_text(version=2, previous=sha256(V1))
    change = step(2, FIRST, SECOND, ("circle.yaml",), policy_to=v2)
    everyone = approve(change, "alice", "bob", "carol")
    assert Verifier(INTRO).verify(STATE_1, change, everyone, NOW).state.policy_sha256 == sha256(v2)

    skipped = policy_text(version=3, previous=sha256(V1))
    with pytest.raises(PolicyError, match="from version 1 to 3; expected 2"):
        Verifier(INTRO).verify(
            STATE_1,
            replace(change, policy_to=skipped),
            everyone,
            NOW,
        )
    with pytest.raises(QuorumNotMet, match="rule governance needs weight 3, has 2"):
        Verifier(INTRO).verify(STATE_1, change, approve(change, "alice", "bob"), NOW)


def test_a_state_whose_policy_does_not_match_is_refused() -> None:
    wrong = NodeState(FIRST, 1, "0" * 64)
    with pytest.raises(PolicyError, match="does not match the node's state"):
        Verifier(INTRO).verify(wrong, CHANGE, approve(CHANGE, "alice", "bob"), NOW)


def test_a_first_transition_elsewhere_than_the_introduction_is_refused() -> None:
    with pytest.raises(ForkError, match="must be seq 1 to the introduction's commit"):
        Verifier(INTRO).verify(None, step(1, None, SECOND, ("x",)), [], NOW)


def test_the_state_file_is_private_atomic_and_refused_when_others_can_touch_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    assert node_state.load(path) is None
    node_state.save(path, STATE_1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert node_state.load(path) == STATE_1
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]

    before = path.read_bytes()
    path.chmod(0o644)
    with pytest.raises(node_state.StateFileError, match="permissions 0644 are too open"):
        node_state.load(path)
    assert path.read_bytes() == before


def test_a_refused_transition_leaves_the_state_file_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    node_state.save(path, STATE_1)
    before = path.read_bytes()
    state = node_state.load(path)
    # The node applies a transition as: verify, then save. A refusal never reaches the save.
    with pytest.raises(RollbackError):
        Verifier(INTRO).verify(state, GENESIS, [], NOW)
    assert path.read_bytes() == before
    assert node_state.load(path) == STATE_1


def test_a_quorum_needs_approvals_current_together_and_then_stays_met() -> None:
    """Alice's approval expired before bob signed: no instant had both, refused. Approvals
    that were current together long ago still approve the step (a node joining an idle circle
    follows it), however long ago they expired."""
    apart = approve(CHANGE, "alice", issued_at=NOW - 90_000, expires_at=NOW - 80_000)
    apart += approve(CHANGE, "bob", issued_at=NOW - 70_000, expires_at=NOW + 10)
    with pytest.raises(QuorumNotMet, match=r"#1: approval of seq 2 \(2{12}\) expired at"):
        Verifier(INTRO).verify(STATE_1, CHANGE, apart, NOW)
    together = approve(CHANGE, "alice", issued_at=NOW - 90_000, expires_at=NOW - 80_000)
    together += approve(CHANGE, "bob", issued_at=NOW - 85_000, expires_at=NOW - 75_000)
    verdict = Verifier(INTRO).verify(STATE_1, CHANGE, together, NOW)
    assert verdict.signers == ("alice", "bob")


def test_an_approval_valid_longer_than_the_policy_allows_does_not_count() -> None:
    """The policy's approvalLifetime bounds every statement's validity window (plus the stated
    clock skew), whatever the signer wrote: issued a year ago and expiring in a century is
    refused with its own error, at signing time and forever after."""
    lifetime = 7 * 86_400  # the example policy's approvalLifetime
    year, century = 365 * 86_400, 100 * 365 * 86_400
    forever = approve(CHANGE, "alice", "bob", issued_at=NOW - year, expires_at=NOW + century)
    with pytest.raises(QuorumNotMet) as refused:
        Verifier(INTRO).verify(STATE_1, CHANGE, forever, NOW)
    reason = (
        f"approval of seq 2 is valid for {year + century} s, longer than the policy's "
        f"approvalLifetime of {lifetime} s (+ {CLOCK_SKEW} s clock skew)"
    )
    assert f"#1: {reason}; #2: {reason}" in str(refused.value)
    assert "rule workloads needs weight 2, has 0" in str(refused.value)
    assert [type(item.error) for item in refused.value.excluded] == [LifetimeExceeded] * 2
    with pytest.raises(NotVouched) as unvouched:  # what a node meets before reading the tree
        Verifier(INTRO).vouch(STATE_1, CHANGE.header, forever, NOW)
    assert [type(item.error) for item in unvouched.value.excluded] == [LifetimeExceeded] * 2

    at_the_limit = approve(
        CHANGE, "alice", "bob", issued_at=NOW - 100, expires_at=NOW - 100 + lifetime + CLOCK_SKEW
    )
    assert Verifier(INTRO).verify(STATE_1, CHANGE, at_the_limit, NOW).signers == ("alice", "bob")
    one_over = approve(
        CHANGE, "alice", issued_at=NOW - 100, expires_at=NOW - 99 + lifetime + CLOCK_SKEW
    )
    with pytest.raises(QuorumNotMet, match="has 1 \\(bob\\)") as one:
        Verifier(INTRO).verify(STATE_1, CHANGE, one_over + approve(CHANGE, "bob"), NOW)
    assert [type(item.error) for item in one.value.excluded] == [LifetimeExceeded]
    # An applied step stays applied: the window is the statement's, whatever the time now.
    assert Verifier(INTRO).verify(STATE_1, CHANGE, at_the_limit, NOW + 10 * year).state.seq == 2


@pytest.mark.parametrize(
    ("error", "reason", "retry"),
    [
        (RollbackError("x"), Refusal.ROLLBACK, Retry.STALLED),
        (SequenceGap("x"), Refusal.SEQUENCE_GAP, Retry.STALLED),
        (ForkError("x"), Refusal.FORK, Retry.STALLED),
        (PolicyError("x"), Refusal.POLICY, Retry.STALLED),
        (Equivocation("x"), Refusal.EQUIVOCATION, Retry.STALLED),
        (NotVouched("x"), Refusal.NOT_VOUCHED, Retry.WAITING),
        (QuorumNotMet("x"), Refusal.QUORUM_NOT_MET, Retry.WAITING),
        (TreeRefused("x"), Refusal.TREE, Retry.STALLED),
        (LifetimeExceeded("x"), Refusal.LIFETIME, Retry.STALLED),
        (BadSignature("x"), Refusal.BAD_SIGNATURE, Retry.STALLED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_every_refusal_has_a_reason_and_a_retry_meaning(
    error: Exception, reason: Refusal, retry: Retry
) -> None:
    assert refusal(error) is reason
    assert isinstance(error, ReconcilerError)
    assert error.retry is retry


def test_a_tampered_signature_is_excluded_as_a_bad_signature() -> None:
    [good] = approve(CHANGE, "bob")
    blob = bytearray(base64.b64decode("".join(good.signature.splitlines()[1:-1])))
    blob[-1] ^= 1  # the last byte of the Ed25519 signature itself
    body = base64.b64encode(bytes(blob)).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    armor = "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"])
    tampered = Evidence(good.statement, armor + "\n")
    with pytest.raises(QuorumNotMet) as refused:
        Verifier(INTRO).verify(STATE_1, CHANGE, [tampered, *approve(CHANGE, "alice")], NOW)
    [excluded] = refused.value.excluded
    assert isinstance(excluded.error, BadSignature)
    assert "the message or signature was altered" in str(excluded)
