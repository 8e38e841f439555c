"""Post-quantum approvals: ML-DSA-65 signatures over the exact statement bytes, and rules that
count `classic`, `hybrid` or `post-quantum` signatures, on real Git repositories.

Every refusal is checked for its own error and for leaving the node's state file
byte-identical. Members sign with real keys: Ed25519 (SSHSIG) and ML-DSA-65 (`cryptography`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.chain import approvals, follow, mldsa, node_state
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.statements import NAMESPACE
from reconciler.chain.trees import commit_of
from reconciler.chain.values import NodeState, sha256
from reconciler.chain.verify import (
    BadSignature,
    NotAMember,
    NotVouched,
    PolicyError,
    parse_policy,
)
from reconciler.chain.walk import MAIN, Chain
from reconciler.desired.checks import check_document
from reconciler.desired.model import Circle
from tests.chainsim import NOW, ChainSimulator
from tests.reconciler.chain.test_chain_attacks import file_by_hand, next_policy, replace

OWNERS = ("alice", "bob", "carol")
POLICY = "circle.yaml"
Mode = str


def with_mldsa_keys(
    policy: bytes, keys: dict[str, MLDSA65PrivateKey], modes: dict[str, Mode]
) -> bytes:
    """`policy` (the simulator's) with an ML-DSA key after each listed member's SSH key, and
    each rule of `modes` counting those signatures."""
    text = policy.decode()
    for name, key in keys.items():
        line = mldsa.public_key_line(key, f"{name}@pq")
        added = f"      - type: ml-dsa-65\n        key: {line}\n"
        text, found = re.subn(
            rf"(        key: ssh-ed25519 \S+ {name}@test\n)",
            lambda match, added=added: match.group(1) + added,  # type: ignore[misc]
            text,
        )
        assert found == 1, name
    for rule, mode in modes.items():
        text = replace(f"    - name: {rule}\n", f"    - name: {rule}\n      signatures: {mode}\n")(
            text
        )
    return text.encode()


class PqSimulator(ChainSimulator):
    """The simulator's circle, its members (those of `pq_members`) also holding ML-DSA keys
    and its rules counting signatures as `modes` say. Mallory holds keys of both kinds."""

    def __init__(
        self, root: Path, modes: dict[str, Mode], pq_members: Iterable[str] = OWNERS
    ) -> None:
        super().__init__(root)
        self.pq = {name: MLDSA65PrivateKey.generate() for name in (*OWNERS, "mallory")}
        members = {name: self.pq[name] for name in pq_members}
        policy = with_mldsa_keys(self.read(POLICY), members, modes)
        # A new root: the same files, the circle introduced with the post-quantum policy.
        index = pygit2.Index()
        index.read_tree(commit_of(self.repo, self.first).tree)
        blob = self.repo.create_blob(policy)
        index.add(pygit2.IndexEntry(POLICY, blob, pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(self.repo)
        author = pygit2.Signature("sim", "sim@example.org", 1_700_000_000, 0)
        root_commit = self.repo.create_commit(None, author, author, "the circle", tree, [])
        self.repo.references.create(MAIN, root_commit, force=True)
        self.first = str(root_commit)

    def signed(
        self,
        statement: bytes,
        classic: Iterable[str] = (),
        pq: Iterable[str] = (),
        *,
        context: str = NAMESPACE,
    ) -> list[tuple[bytes, str]]:
        return self.sign(statement, *classic) + [
            (statement, mldsa.sign(statement, self.pq[name], context)) for name in pq
        ]

    def file(
        self,
        seq: int,
        start: str | None,
        to: str,
        classic: Iterable[str] = (),
        pq: Iterable[str] = (),
        **overrides: Any,
    ) -> bytes:
        data = self.statement(seq, start, to, **overrides)
        approvals.add_many(self.repo, self.signed(data, classic, pq))
        return data


@dataclass
class Follower:
    """A node following a PqSimulator: its state file, and one round of `follow.advance`."""

    sim: PqSimulator
    state_file: Path

    def state(self) -> NodeState:
        loaded = node_state.load(self.state_file)
        assert loaded is not None
        return loaded

    def advance(self, now: int = NOW) -> follow.Followed:
        refs = self.sim.repo.references
        refs.create(follow.MAIN, refs[MAIN].target, force=True)
        refs.create(follow.APPROVALS, refs[approvals.REF].target, force=True)
        return follow.advance(self.sim.repo, self.sim.intro, self.state_file, now)

    def check(self, to: str, now: int = NOW) -> None:
        """`Chain.check` of `state -> to` with what is filed for it: the refusal, as raised."""
        chain = Chain(self.sim.repo, self.sim.intro)
        state = self.state()
        chain.check(state, to, chain.candidates(state.seq + 1).get(to, []), now)

    def refused(self, to: str, error: type[Exception], message: str) -> Exception:
        """Assert that the step to `to` is refused with `error` saying `message`, that a node
        round applies nothing, and that its state file is left byte-identical."""
        before = self.state_file.read_bytes()
        with pytest.raises(error) as raised:
            self.check(to)
        assert message in str(raised.value), str(raised.value)
        done = self.advance()
        assert done.applied == ()
        assert done.refusal is not None
        assert message in done.refusal, done.refusal
        assert self.state_file.read_bytes() == before
        return raised.value


def follower(
    tmp_path: Path, modes: dict[str, Mode], pq_members: Iterable[str] = OWNERS
) -> Follower:
    """A PqSimulator at seq 1, approved by every owner with both kinds of keys, and a node
    that applied it."""
    sim = PqSimulator(tmp_path / "circle.git", modes, pq_members)
    pq = [name for name in OWNERS if name in set(pq_members)]
    sim.file(1, None, sim.first, OWNERS, pq)
    (tmp_path / "node").mkdir()
    node = Follower(sim, tmp_path / "node" / "state.json")
    done = node.advance()
    assert done.refusal is None, done.refusal
    assert node.state() == NodeState(sim.first, 1, sha256(sim.read(POLICY)))
    return node


# --- the envelope ------------------------------------------------------------------------------

KEY = MLDSA65PrivateKey.generate()
OTHER = MLDSA65PrivateKey.generate()
STATEMENT = b'{"an":"approval statement","seq":1}'


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_an_mldsa_signature_verifies_over_the_exact_statement_bytes() -> None:
    armored = mldsa.sign(STATEMENT, KEY, NAMESPACE)
    line = mldsa.public_key_line(KEY, "alice@pq")

    mldsa.verify(STATEMENT, armored, line, NAMESPACE)

    for at in (0, len(STATEMENT) // 2, len(STATEMENT) - 1):
        with pytest.raises(mldsa.MlDsaError, match="does not verify"):
            mldsa.verify(flip(STATEMENT, at), armored, line, NAMESPACE)
    with pytest.raises(mldsa.MlDsaError, match="does not verify"):
        mldsa.verify(STATEMENT + b" ", armored, line, NAMESPACE)
    with pytest.raises(mldsa.MlDsaError, match="by another key"):
        mldsa.verify(STATEMENT, armored, mldsa.public_key_line(OTHER), NAMESPACE)


def _blob(armored: str) -> bytes:
    return base64.b64decode("".join(armored.strip().splitlines()[1:-1]))


def _armor(blob: bytes) -> str:
    return mldsa._armor(blob, mldsa.BEGIN, mldsa.END)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_a_signature_changed_by_one_bit_or_made_for_another_context_is_refused() -> None:
    armored = mldsa.sign(STATEMENT, KEY, NAMESPACE)
    blob = _blob(armored)
    line = mldsa.public_key_line(KEY)

    with pytest.raises(mldsa.MlDsaError, match="does not verify"):
        mldsa.verify(STATEMENT, _armor(flip(blob, len(blob) - 1)), line, NAMESPACE)

    for_git = mldsa.sign(STATEMENT, KEY, "git")
    with pytest.raises(
        mldsa.MlDsaError, match="made for namespace 'git', not 'circle-approval-v1'"
    ):
        mldsa.verify(STATEMENT, for_git, line, NAMESPACE)
    # The same signature with its envelope claiming the approval namespace: the maths refuses.
    relabelled = _blob(for_git).replace(_string(b"git"), _string(NAMESPACE.encode()), 1)
    with pytest.raises(mldsa.MlDsaError, match="does not verify"):
        mldsa.verify(STATEMENT, _armor(relabelled), line, NAMESPACE)


def _envelope(
    *,
    magic: bytes = b"CIRCLEPQ",
    version: int = 1,
    key: bytes | None = None,
    context: bytes = NAMESPACE.encode(),
    signature: bytes = b"\x00" * mldsa.SIGNATURE_BYTES,
    trailing: bytes = b"",
) -> str:
    raw = _blob(mldsa.sign(STATEMENT, KEY, NAMESPACE))
    real_key = raw[16 : 16 + struct.unpack(">I", raw[12:16])[0]]
    return _armor(
        magic + struct.pack(">I", version) + _string(real_key if key is None else key)
        + _string(context) + _string(signature) + trailing
    )  # fmt: skip


RAW_KEY = _blob(mldsa.sign(STATEMENT, KEY, NAMESPACE))[16 + 4 + 9 + 4 :][:1952]
JUNK_ENVELOPES = {
    "no-armor": ("CIRCLEPQ", "bad armor: expected -----BEGIN CIRCLE ML-DSA SIGNATURE-----"),
    "not-base64": (
        f"{mldsa.BEGIN}\n!!!!\n{mldsa.END}\n",
        "bad armor: the ML-DSA signature is not valid base64",
    ),
    "bad-magic": (_envelope(magic=b"SSHSIG\x00\x00"), "not an ML-DSA approval envelope"),
    "version-2": (_envelope(version=2), "ML-DSA envelope version 2, expected 1"),
    "ed25519-key": (
        _envelope(key=_string(b"ssh-ed25519") + _string(b"k" * 32)),
        "the envelope's key is not an ml-dsa-65 key",
    ),
    "short-key": (
        _envelope(key=_string(b"ml-dsa-65") + _string(RAW_KEY[:-1])),
        "the envelope's key is not 1952 bytes",
    ),
    "empty-context": (_envelope(context=b""), "the envelope's context must be 1 to 255 bytes"),
    "short-signature": (
        _envelope(signature=b"\x00" * 3308),
        "the envelope holds a 3308-byte signature, expected 3309",
    ),
    "trailing-bytes": (_envelope(trailing=b"\x00"), "1 trailing bytes after the ML-DSA signature"),
    "truncated": (
        _armor(_blob(_envelope())[:-100]),
        "truncated ML-DSA signature",
    ),
    "huge": (f"{mldsa.BEGIN}\n" + "A" * 20_000 + f"\n{mldsa.END}\n", "over 16384"),
}

ARMORED_JUNK = [(armored, message) for armored, message in JUNK_ENVELOPES.values()
                if mldsa.is_envelope(armored)]  # fmt: skip


@pytest.mark.parametrize(("armored", "message"), JUNK_ENVELOPES.values(), ids=JUNK_ENVELOPES)
def test_junk_envelopes_are_refused_with_what_is_wrong(armored: str, message: str) -> None:
    with pytest.raises(mldsa.MlDsaError) as raised:
        mldsa.parse(armored)
    assert message in str(raised.value)


# --- hybrid rules ------------------------------------------------------------------------------


@pytest.fixture
def hybrid(tmp_path: Path) -> Follower:
    return follower(tmp_path, {"governance": "hybrid", "workloads": "hybrid"})


HYBRID_MISSING = "rule workloads needs weight 2 of hybrid signatures"
WITHOUT_PAIR = "not counted, without a classic and an ML-DSA signature of one statement"


def test_a_hybrid_rule_counts_a_member_with_both_signatures_of_one_statement(
    hybrid: Follower,
) -> None:
    sim = hybrid.sim
    second = sim.scale(3)
    sim.file(2, sim.first, second, ["alice", "bob"], ["alice", "bob"])

    done = hybrid.advance()

    assert done.refusal is None
    assert [(step.commit, step.signers) for step in done.applied] == [(second, ("alice", "bob"))]
    assert hybrid.state().commit == second


def _classic_only(sim: PqSimulator, to: str) -> None:
    sim.file(2, sim.first, to, ["alice", "bob"], [])


def _mldsa_only(sim: PqSimulator, to: str) -> None:
    sim.file(2, sim.first, to, [], ["alice", "bob"])


def _one_half_each(sim: PqSimulator, to: str) -> None:
    sim.file(2, sim.first, to, ["alice", "bob"], ["alice"])


def _halves_of_two_members(sim: PqSimulator, to: str) -> None:
    sim.file(2, sim.first, to, ["alice", "carol"], ["bob", "carol"])


def _two_statements(sim: PqSimulator, to: str) -> None:
    """Alice's classic and ML-DSA signatures are of two statements (issued a minute apart)."""
    sim.file(2, sim.first, to, ["alice", "bob"], ["bob"])
    sim.file(2, sim.first, to, [], ["alice"], now=NOW - 60)


def _mldsa_for_another_context(sim: PqSimulator, to: str) -> None:
    data = sim.statement(2, sim.first, to)
    pairs = sim.signed(data, ["alice", "bob"], ["alice"]) + sim.signed(
        data, pq=["bob"], context="git"
    )
    approvals.add_many(sim.repo, pairs)


HYBRID_REFUSALS: dict[str, tuple[Callable[[PqSimulator, str], None], str]] = {
    "classic-only": (_classic_only, f"has 0; {WITHOUT_PAIR}: alice, bob"),
    "mldsa-only": (_mldsa_only, f"has 0; {WITHOUT_PAIR}: alice, bob"),
    "one-member-with-one-half": (_one_half_each, f"has 1 (alice); {WITHOUT_PAIR}: bob"),
    "halves-of-two-members": (_halves_of_two_members, f"has 1 (carol); {WITHOUT_PAIR}: alice, bob"),
    "halves-of-two-statements": (_two_statements, f"has 1 (bob); {WITHOUT_PAIR}: alice"),
    "mldsa-for-another-context": (
        _mldsa_for_another_context,
        f"has 1 (alice); {WITHOUT_PAIR}: bob",
    ),
}


@pytest.mark.parametrize(("sign", "message"), HYBRID_REFUSALS.values(), ids=HYBRID_REFUSALS)
def test_a_hybrid_rule_refuses_a_member_without_both_signatures(
    hybrid: Follower, sign: Callable[[PqSimulator, str], None], message: str
) -> None:
    second = hybrid.sim.scale(3)
    sign(hybrid.sim, second)

    refused = hybrid.refused(second, QuorumNotMet, f"{HYBRID_MISSING}, {message}")

    assert isinstance(refused, QuorumNotMet)
    if sign is _mldsa_for_another_context:
        assert [type(item.error) for item in refused.excluded] == [BadSignature]
        assert "made for namespace 'git', not 'circle-approval-v1'" in str(refused.excluded[0])


def test_a_hybrid_rule_is_met_once_the_missing_halves_arrive(hybrid: Follower) -> None:
    sim = hybrid.sim
    second = sim.scale(3)
    data = sim.file(2, sim.first, second, ["alice", "bob"], [])
    hybrid.refused(second, QuorumNotMet, HYBRID_MISSING)

    approvals.add_many(sim.repo, sim.signed(data, pq=["alice", "bob"]))

    assert [step.commit for step in hybrid.advance().applied] == [second]


# --- post-quantum and classic rules ------------------------------------------------------------


@pytest.fixture
def post_quantum(tmp_path: Path) -> Follower:
    """Workloads count ML-DSA signatures only; carol holds no ML-DSA key."""
    return follower(tmp_path, {"workloads": "post-quantum"}, pq_members=("alice", "bob"))


def test_a_post_quantum_rule_counts_mldsa_signatures(post_quantum: Follower) -> None:
    sim = post_quantum.sim
    second = sim.scale(3)
    sim.file(2, sim.first, second, [], ["alice", "bob"])

    assert [step.signers for step in post_quantum.advance().applied] == [("alice", "bob")]


POST_QUANTUM_REFUSALS = {
    "classic-only-quorum": (["alice", "bob"], [], "has 0; not counted, without an ML-DSA "
                            "signature: alice, bob"),
    "classic-only-member": (["carol"], ["alice"], "has 1 (alice); not counted, without an "
                            "ML-DSA signature: carol"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("classic", "pq", "message"), POST_QUANTUM_REFUSALS.values(), ids=POST_QUANTUM_REFUSALS
)
def test_a_post_quantum_rule_counts_no_classic_signature(
    post_quantum: Follower, classic: list[str], pq: list[str], message: str
) -> None:
    sim = post_quantum.sim
    second = sim.scale(3)
    sim.file(2, sim.first, second, classic, pq)

    post_quantum.refused(
        second, QuorumNotMet, f"rule workloads needs weight 2 of post-quantum signatures, {message}"
    )


def test_a_classic_rule_counts_an_mldsa_signature_as_its_members(tmp_path: Path) -> None:
    node = follower(tmp_path, {})
    sim = node.sim
    second = sim.scale(3)
    sim.file(2, sim.first, second, ["bob"], ["alice"])

    assert [step.signers for step in node.advance().applied] == [("alice", "bob")]


# --- changing the setting is a governance change ----------------------------------------------


def test_downgrading_a_hybrid_governance_needs_its_hybrid_quorum(hybrid: Follower) -> None:
    sim = hybrid.sim
    old = sim.read(POLICY)
    classic = next_policy(old, replace("    - name: governance\n      signatures: hybrid\n",
                                       "    - name: governance\n"))  # fmt: skip
    downgrade = sim.commit({POLICY: classic})
    data = sim.file(2, sim.first, downgrade, OWNERS, [])

    hybrid.refused(
        downgrade,
        QuorumNotMet,
        "rule governance needs weight 3 of hybrid signatures, has 0; " + WITHOUT_PAIR,
    )

    approvals.add_many(sim.repo, sim.signed(data, pq=OWNERS))
    assert [step.commit for step in hybrid.advance().applied] == [downgrade]


def test_upgrading_to_hybrid_needs_the_new_governance_met_by_hybrid_signatures(
    tmp_path: Path,
) -> None:
    node = follower(tmp_path, {})
    sim = node.sim
    hybrid = next_policy(sim.read(POLICY), replace("    - name: governance\n",
                                                   "    - name: governance\n"
                                                   "      signatures: hybrid\n"))  # fmt: skip
    upgrade = sim.commit({POLICY: hybrid})
    data = sim.file(2, sim.first, upgrade, OWNERS, [])

    node.refused(
        upgrade,
        QuorumNotMet,
        "proposed policy: rule governance needs weight 3 of hybrid signatures, has 0",
    )

    approvals.add_many(sim.repo, sim.signed(data, pq=OWNERS))
    assert [step.commit for step in node.advance().applied] == [upgrade]


def test_changing_the_setting_without_a_version_bump_is_refused(hybrid: Follower) -> None:
    sim = hybrid.sim
    text = sim.read(POLICY).decode()
    same_version = text.replace("    - name: workloads\n      signatures: hybrid\n",
                                "    - name: workloads\n")  # fmt: skip
    change = sim.commit({POLICY: same_version.encode()})
    sim.file(2, sim.first, change, OWNERS, OWNERS)

    hybrid.refused(change, PolicyError, "circle.yaml goes from version 1 to 1; expected 2")


# --- junk in the approvals ref ----------------------------------------------------------------


def test_junk_envelopes_in_the_approvals_ref_are_refused_and_change_nothing(
    hybrid: Follower,
) -> None:
    sim = hybrid.sim
    second = sim.scale(3)
    data = sim.statement(2, sim.first, second)
    alice_key = mldsa.parse(mldsa.sign(data, sim.pq["alice"], NAMESPACE)).public_key
    signer = hashlib.sha256(alice_key).hexdigest()[:16]  # read, as alice's, by a walk
    for armored, _ in ARMORED_JUNK:
        file_by_hand(sim.repo, 2, second, signer, data, armored)
    before = sim.repo.references[approvals.REF].target

    refused = hybrid.refused(second, NotVouched, "no valid approval by a member")

    assert isinstance(refused, NotVouched)
    reasons = {str(item.error) for item in refused.excluded}
    for _, message in ARMORED_JUNK:
        assert any(message in reason for reason in reasons), message
    assert [type(item.error) for item in refused.excluded] == [BadSignature] * len(ARMORED_JUNK)

    # `circle approve --statement --signature` refuses to file junk: the ref stays.
    for armored, message in ARMORED_JUNK:
        with pytest.raises(mldsa.MlDsaError, match=re.escape(message)):
            approvals.add(sim.repo, data, armored)
    assert sim.repo.references[approvals.REF].target == before

    # Beside the junk, the real approvals still make the step.
    sim.file(2, sim.first, second, ["alice", "bob"], ["alice", "bob"])
    assert [step.commit for step in hybrid.advance().applied] == [second]


def test_an_mldsa_approval_by_no_member_is_refused_unverified(
    hybrid: Follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = hybrid.sim
    second = sim.scale(3)
    data = sim.statement(2, sim.first, second)
    approvals.add_many(sim.repo, sim.signed(data, pq=["mallory"]))
    verified: list[bytes] = []
    real = mldsa.verify_parsed

    def spy(message: bytes, signature: mldsa.MlDsaSignature, context: str) -> None:
        verified.append(message)
        real(message, signature, context)

    monkeypatch.setattr(mldsa, "verify_parsed", spy)

    refused = hybrid.refused(second, NotVouched, "no valid approval by a member")

    assert isinstance(refused, NotVouched)
    assert [type(item.error) for item in refused.excluded] == [NotAMember]
    assert verified == []


# --- the policy's own checks ------------------------------------------------------------------


def _policy_text(modes: dict[str, Mode], pq_members: Iterable[str]) -> bytes:
    keys = {name: MLDSA65PrivateKey.generate() for name in pq_members}
    text = (Path(__file__).parents[3] / "example-circle-repo" / POLICY).read_text()
    text = re.sub(r"(ssh-ed25519 \S+ )(\w+)@example-circle", r"\1\2@test", text)
    return with_mldsa_keys(text.encode(), keys, modes)


def _policy(modes: dict[str, Mode], pq_members: Iterable[str]) -> Circle:
    return parse_policy(_policy_text(modes, pq_members))


def test_a_hybrid_rule_its_members_cannot_meet_is_an_invalid_policy() -> None:
    with pytest.raises(PolicyError) as refused:
        _policy({"governance": "hybrid"}, ["alice", "bob"])

    assert str(refused.value).endswith(
        ": rule governance counts hybrid signatures and needs weight 3, but its members with a "
        "classic and an ML-DSA key hold only 2 (alice, bob): it could never be satisfied"
    )
    _policy({"workloads": "hybrid"}, ["alice", "bob"])  # 2 of 3: alice and bob can


def test_an_mldsa_key_of_two_members_is_a_finding() -> None:
    circle = _policy({}, ["alice"])
    alice = circle.member("alice")
    assert alice is not None
    document = circle.model_dump(by_alias=True, mode="json")
    for member in document["members"]:
        if member["id"] == "bob":
            member["keys"].append(alice.model_dump(by_alias=True, mode="json")["keys"][-1])
    shared = Circle.model_validate(document)

    assert [f.code for f in check_document(shared) if f.code.startswith("key.")] == ["key.shared"]


def test_a_quantum_safe_rule_under_a_classic_governance_is_warned_of() -> None:
    circle = _policy({"workloads": "hybrid"}, OWNERS)

    warned = [f for f in check_document(circle) if f.code == "rule.weaker-governance"]

    assert [(f.severity.value, f.path, f.message) for f in warned] == [
        (
            "warning",
            ("consensus", "rules", 1, "signatures"),
            "rule workloads counts hybrid signatures, but rule governance counts classic ones: "
            "whoever forges a classic signature (with a quantum computer) can rewrite "
            "circle.yaml, this rule with it",
        )
    ]
    hybrid_governance = _policy({"governance": "hybrid", "workloads": "hybrid"}, OWNERS)
    assert not [f for f in check_document(hybrid_governance) if f.severity.value == "warning"]


def test_a_cold_walk_checking_ahead_counts_what_a_step_by_step_walk_counts(
    hybrid: Follower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold walk checks the ML-DSA signatures ahead on a thread pool: a forged one among them
    is refused exactly as when each is checked in turn."""
    sim = hybrid.sim
    second = sim.scale(3)
    data = sim.file(2, sim.first, second, ["alice", "bob"], ["alice"])
    forged = _blob(mldsa.sign(data, sim.pq["bob"], NAMESPACE))
    approvals.add(sim.repo, data, _armor(flip(forged, len(forged) - 1)))
    third = sim.scale(4)
    sim.file(3, second, third, ["alice", "carol"], ["alice", "carol"])
    monkeypatch.setattr("reconciler.chain.walk._cores", lambda: 2)

    steps, state = sim.chain().walk(NOW)

    assert [step.seq for step in steps] == [1]  # seq 2 lacks bob's pair: the walk ends there
    assert state == hybrid.state()
    with pytest.raises(QuorumNotMet) as refused:
        hybrid.check(second)
    assert [type(item.error) for item in refused.value.excluded] == [BadSignature]
    assert "does not verify" in str(refused.value.excluded[0])

    approvals.add_many(sim.repo, sim.signed(data, pq=["bob"]))
    steps, state = sim.chain().walk(NOW)
    assert [(step.seq, step.signers) for step in steps] == [
        (1, OWNERS),
        (2, ("alice", "bob")),
        (3, ("alice", "carol")),
    ]
    assert state is not None
    assert state.commit == third


ENVELOPE = mldsa.sign(STATEMENT, KEY, NAMESPACE)


@settings(max_examples=200, deadline=None)
@given(
    at=st.integers(min_value=0, max_value=6000),
    byte=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=64),
)
def test_a_mutated_envelope_is_refused_with_the_envelope_error_never_a_crash(
    at: int, byte: int, cut: int
) -> None:
    original = _blob(ENVELOPE)
    blob = bytearray(original)
    blob[at % len(blob)] = byte
    mutated = bytes(blob[: len(blob) - cut])
    try:
        mldsa.verify(STATEMENT, _armor(mutated), mldsa.public_key_line(KEY), NAMESPACE)
    except mldsa.MlDsaError:
        return
    assert mutated == original  # only a byte set to the value it had passes
