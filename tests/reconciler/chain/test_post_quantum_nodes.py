"""Hybrid node keys: a node key with an ML-DSA-65 half signs its registrations and the leader
its assignments with both keys; a reader that knows the node's ML-DSA key needs both halves,
and Ed25519-only nodes keep working as they did."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.chain import mldsa
from reconciler.node.identity import (
    MLDSA_SUFFIX,
    BadSignature,
    MalformedRecord,
    NodeKey,
    NodeKeyError,
    RecordKind,
)
from reconciler.node.records import (
    open_assignment,
    open_record,
    sign_assignment,
    sign_record,
)
from tests.reconciler.node.test_records import ASSIGNMENT, REGISTRATION
from tests.reconciler.node.test_records import KEY_A as CLASSIC_A


@pytest.fixture(scope="module")
def hybrid_a(tmp_path_factory: pytest.TempPathFactory) -> NodeKey:
    return NodeKey.generate(tmp_path_factory.mktemp("node") / "node-a", "a@node", hybrid=True)


def _keys(key: NodeKey) -> tuple[dict[str, str], dict[str, str]]:
    assert key.mldsa_public_key_line is not None
    return {"a": key.public_key_line}, {"a": key.mldsa_public_key_line}


def test_a_hybrid_node_key_is_two_0600_files_and_two_public_lines(tmp_path: Path) -> None:
    path = tmp_path / "node-key"

    made = NodeKey.generate(path, "n1@node", hybrid=True)

    half = path.with_name(path.name + MLDSA_SUFFIX)
    for private in (path, half):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public = half.with_name(half.name + ".pub").read_text()
    assert public == f"{made.mldsa_public_key_line}\n"
    assert public.startswith("ml-dsa-65 ")
    assert public.endswith(" n1@node\n")
    loaded = NodeKey.load(path)
    assert loaded.mldsa_public_key_line is not None
    assert loaded.mldsa_public_key_line.split()[:2] == public.split()[:2]
    with pytest.raises(NodeKeyError, match="exists; refusing to overwrite a key"):
        NodeKey.generate(path, hybrid=True)

    half.chmod(0o644)
    with pytest.raises(NodeKeyError, match=r"permissions 0644 are too open"):
        NodeKey.load(path)


def test_hybrid_registrations_and_assignments_open_with_both_keys(hybrid_a: NodeKey) -> None:
    keys, mldsa_keys = _keys(hybrid_a)
    registration = sign_record(hybrid_a, "a", REGISTRATION)
    assert registration.count(b"-----END CIRCLE ML-DSA SIGNATURE-----\n") == 1

    opened = open_record(registration, type(REGISTRATION), keys, mldsa_keys)
    assert opened.record == REGISTRATION
    assignment = open_assignment(sign_assignment(hybrid_a, "a", ASSIGNMENT), keys, mldsa_keys)
    assert assignment.record == ASSIGNMENT


def test_an_ed25519_only_node_works_as_before_beside_hybrid_ones(hybrid_a: NodeKey) -> None:
    value = sign_record(CLASSIC_A, "a", REGISTRATION)
    assert b"ML-DSA" not in value
    assert open_record(value, type(REGISTRATION), {"a": CLASSIC_A.public_key_line}).record == (
        REGISTRATION
    )
    # Another node being hybrid changes nothing for this one.
    other = {"b": str(hybrid_a.mldsa_public_key_line)}
    opened = open_record(value, type(REGISTRATION), {"a": CLASSIC_A.public_key_line}, other)
    assert opened.record == REGISTRATION


def _halves(value: bytes) -> tuple[bytes, bytes]:
    end = b"-----END SSH SIGNATURE-----\n"
    classic, _, quantum_safe = value.partition(end)
    return classic + end, quantum_safe


def test_a_hybrid_node_needs_both_halves(hybrid_a: NodeKey, tmp_path: Path) -> None:
    keys, mldsa_keys = _keys(hybrid_a)
    value = sign_record(hybrid_a, "a", REGISTRATION)
    classic, quantum_safe = _halves(value)
    registration = type(REGISTRATION)

    with pytest.raises(BadSignature, match="signs hybrid, and the value has no ML-DSA signature"):
        open_record(classic, registration, keys, mldsa_keys)

    intruder = NodeKey.generate(tmp_path / "intruder", hybrid=True)
    assert intruder._mldsa is not None
    payload = value.partition(b"\n")[0]
    forged = mldsa.sign(payload, intruder._mldsa, RecordKind.REGISTRATION.namespace)
    with pytest.raises(BadSignature, match="the ML-DSA signature is by another key"):
        open_record(classic + forged.encode(), registration, keys, mldsa_keys)

    assert hybrid_a._mldsa is not None
    other_kind = classic + mldsa.sign(payload, hybrid_a._mldsa, "circle-assignment-v1").encode()
    with pytest.raises(BadSignature, match="made for namespace 'circle-assignment-v1'"):
        open_record(other_kind, registration, keys, mldsa_keys)

    lines = quantum_safe.split(b"\n")
    lines[3] = lines[3][:10] + (b"A" if lines[3][10:11] != b"A" else b"B") + lines[3][11:]
    changed = classic + b"\n".join(lines)
    with pytest.raises((BadSignature, MalformedRecord)):
        open_record(changed, registration, keys, mldsa_keys)


def test_a_reader_without_the_nodes_mldsa_key_refuses_a_hybrid_value(hybrid_a: NodeKey) -> None:
    keys, _ = _keys(hybrid_a)
    value = sign_record(hybrid_a, "a", REGISTRATION)

    with pytest.raises(MalformedRecord, match="carries an ML-DSA signature, and node 'a' has no"):
        open_record(value, type(REGISTRATION), keys)


def test_an_mldsa_half_not_armored_as_circle_writes_it_is_malformed(hybrid_a: NodeKey) -> None:
    keys, mldsa_keys = _keys(hybrid_a)
    value = sign_record(hybrid_a, "a", REGISTRATION)

    for mangled in (
        value[:-1],
        value + b"x",
        value.replace(b"\n-----END CIRCLE", b"\n\n-----END CIRCLE"),
    ):
        with pytest.raises(MalformedRecord, match="not armored as circle writes it"):
            open_record(mangled, type(REGISTRATION), keys, mldsa_keys)
