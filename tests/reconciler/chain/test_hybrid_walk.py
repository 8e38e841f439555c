"""What a cold walk of a hybrid chain reads once and what it still checks every time: an
ML-DSA envelope read in one pass decodes exactly as read line by line (and refuses the same
junk), one statement blob filed with several signatures is read once and still counted per
signature, and one statement decoded once still excludes every approval it is refused for.
On real repositories made by `ChainSimulator` with ML-DSA members and hybrid rules."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.chain import approvals, mldsa
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.statements import NAMESPACE
from reconciler.chain.verify import MisplacedApproval
from reconciler.chain.walk import Chain
from tests.chainsim import NOW, ChainSimulator

OWNERS = ("alice", "bob", "carol")
HYBRID = {"governance": "hybrid", "workloads": "hybrid", "default": "hybrid"}
KEY = MLDSA65PrivateKey.generate()
ARMORED = mldsa.sign(b'{"a statement":1}', KEY, NAMESPACE)


def line_by_line(armored: str) -> bytes:
    """The reading `mldsa` had before its one-pass read: every line stripped, then joined."""
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != mldsa.BEGIN or lines[-1] != mldsa.END:
        raise mldsa.MlDsaError("bad armor: expected BEGIN ... END")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise mldsa.MlDsaError("not valid base64") from None


def outcome(read: object, armored: str) -> bytes | str:
    try:
        return read(armored)  # type: ignore[operator, no-any-return]
    except mldsa.MlDsaError as error:
        return "bad armor" if "bad armor: expected" in str(error) else "not valid base64"


def in_body(text: str) -> str:
    """The envelope with `text` inserted inside its first base64 line."""
    lines = ARMORED.split("\n")
    lines[1] = lines[1][:10] + text + lines[1][10:]
    return "\n".join(lines)


def rewrapped(columns: int) -> str:
    body = "".join(ARMORED.splitlines()[1:-1])
    lines = [body[i : i + columns] for i in range(0, len(body), columns)]
    return "\n".join([mldsa.BEGIN, *lines, mldsa.END])


def one_pass(armored: str) -> bytes:
    return mldsa._dearmor(armored, mldsa.BEGIN, mldsa.END, "ML-DSA signature")


LAYOUTS = {
    "as written": ARMORED,
    "no final newline": ARMORED.rstrip("\n"),
    "CRLF": ARMORED.replace("\n", "\r\n"),
    "trailing spaces": ARMORED.replace("\n", "  \n"),
    "blank lines around": "\n\n" + ARMORED + "\n\n",
    "a blank line inside": ARMORED.replace("\n", "\n\n", 3),
    "64 columns": rewrapped(64),
    "a space inside a line": in_body(" "),
    "a tab inside a line": in_body("\t"),
    "a form feed": ARMORED.replace("\n", "\x0c", 2),
    "not base64": in_body("*"),
    "not ASCII": in_body("é"),
    "padding inside": in_body("="),
    "no body": f"{mldsa.BEGIN}\n{mldsa.END}\n",
    "only the armor": f"{mldsa.BEGIN}{mldsa.END}\n",
    "END missing": ARMORED.replace(mldsa.END, ""),
}


@pytest.mark.parametrize("armored", LAYOUTS.values(), ids=LAYOUTS)
def test_an_envelope_read_in_one_pass_decodes_as_read_line_by_line(armored: str) -> None:
    assert outcome(one_pass, armored) == outcome(line_by_line, armored)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(ARMORED) - 1), st.sampled_from("\n\r \t=+/Aé*-\x0b")),
        max_size=4,
    )
)
def test_any_changed_layout_decodes_or_is_refused_as_line_by_line(
    changes: list[tuple[int, str]],
) -> None:
    armored = ARMORED
    for at, text in changes:
        armored = armored[:at] + text + armored[at:]
    assert outcome(one_pass, armored) == outcome(line_by_line, armored)


@pytest.fixture
def sim(tmp_path: Path) -> ChainSimulator:
    made = ChainSimulator(tmp_path / "circle.git", pq=OWNERS, signatures=HYBRID)
    made.approve(1, None, made.first, OWNERS, pq=OWNERS)
    return made


def test_the_simulator_writes_each_members_mldsa_key_and_the_rules_modes(
    sim: ChainSimulator,
) -> None:
    policy = sim.read("circle.yaml").decode()
    for name in OWNERS:
        assert mldsa.public_key_line(sim.pq[name], f"{name}@pq") in policy
    assert mldsa.public_key_line(sim.pq["mallory"]) not in policy
    assert policy.count("      signatures: hybrid\n") == 3


def test_one_statement_filed_with_two_signatures_is_read_once_and_counted_per_signature(
    sim: ChainSimulator,
) -> None:
    to = sim.scale(5)
    sim.approve(2, sim.first, to, ["alice", "bob"], pq=["alice", "bob"])
    chain = Chain(sim.repo, sim.intro)
    filed = list(approvals.read_folder(sim.repo, 2, to, chain.approvals))

    assert len(filed) == 4
    assert len({item.statement for item in filed}) == 1  # one blob, four pairs
    assert {mldsa.is_envelope(item.signature) for item in filed} == {True, False}
    steps, state = chain.walk(NOW)
    assert state is not None
    assert state.commit == to
    assert steps[-1].signers == ("alice", "bob")


def test_a_statement_shared_by_several_approvals_is_refused_for_each(
    sim: ChainSimulator,
) -> None:
    """Decoded once, the statement still excludes every approval that carries it, each with
    its own entry, and a hybrid rule stays unmet by a member with one signature."""
    to = sim.scale(5)
    misplaced = sim.statement(2, sim.first, to, ref="refs/heads/other")
    approvals.add_many(
        sim.repo, sim.sign(misplaced, "alice", "bob") + sim.sign_mldsa(misplaced, "alice")
    )
    sim.approve(2, sim.first, to, ["carol"], pq=["carol"])
    chain = Chain(sim.repo, sim.intro)
    state = chain.walk(NOW)[1]
    assert state is not None
    assert state.seq == 1

    with pytest.raises(QuorumNotMet) as refused:
        chain.check(state, to, chain.evidence(2, to), NOW)
    wrong = [e for e in refused.value.excluded if isinstance(e.error, MisplacedApproval)]
    assert len(wrong) == 3
    assert all("approves another ref" in str(e.error) for e in wrong)
    assert "rule workloads needs weight 2 of hybrid signatures, has 1 (carol)" in str(refused.value)


def blob_of(armored: str) -> bytes:
    return base64.b64decode("".join(armored.strip().splitlines()[1:-1]))


def field_by_field(blob: bytes) -> mldsa.MlDsaSignature | str:
    try:
        return mldsa._parse_blob(blob)
    except mldsa.MlDsaError as error:
        return str(error)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_an_envelope_read_by_its_fixed_layout_reads_as_field_by_field(data: st.DataObject) -> None:
    """Any change of a length, a name, a byte or the size: the fixed layout's read gives what
    the field-by-field read gives, or leaves it to that read (which says what is wrong)."""
    blob = bytearray(blob_of(mldsa.sign(b"statement", KEY, data.draw(st.sampled_from(
        [NAMESPACE, "git", "x" * 255])))))  # fmt: skip
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.sampled_from([0, 8, 11, 15, 19, 28, 32, 1985, 1988, len(blob) - 1]))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([0, 0, 1, 100]))
    changed = bytes(blob[: len(blob) - cut])

    fixed = mldsa._parse_fixed(changed)
    expected = field_by_field(changed)
    if fixed is not None:
        assert fixed == expected
    armored = mldsa._armor(changed, mldsa.BEGIN, mldsa.END)
    if isinstance(expected, mldsa.MlDsaSignature):
        assert mldsa.parse(armored) == expected
    else:
        with pytest.raises(mldsa.MlDsaError) as refused:
            mldsa.parse(armored)
        assert str(refused.value) == expected


def test_every_real_envelope_is_read_by_its_fixed_layout() -> None:
    for context in (NAMESPACE, "g", "x" * 255):
        blob = blob_of(mldsa.sign(b"statement", KEY, context))
        fixed = mldsa._parse_fixed(blob)
        assert fixed is not None
        assert fixed == mldsa._parse_blob(blob)
        assert fixed.context == context
