"""Provenance statements are deterministic in-toto/SLSA documents, and an artifact is accepted
only when enough distinct trusted builders signed a statement naming its exact digest."""

from __future__ import annotations

import json

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import BuildError
from builders.provenance import (
    NAMESPACE,
    Attestation,
    ProvenanceError,
    attest,
    statement,
    verify_agreement,
)
from builders.sshsig import public_key_line, sign

ARTIFACT = "sha256:" + "ab" * 32
OTHER_ARTIFACT = "sha256:" + "cd" * 32
INPUTS = {"src/app.py": "11" * 32, "wheels/click-8.1.7.whl": "22" * 32}
INVOCATION = {"command": "circle build", "config": "builds/web.yaml"}
KEYS = {name: Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n, name in enumerate("abc")}
BUILDERS = {name: f"https://builders.example/{name}" for name in KEYS}
TRUSTED = {BUILDERS[name]: public_key_line(key, f"{name}@ci") for name, key in KEYS.items()}


def provenance(name: str, artifact_id: str = ARTIFACT, builder_id: str | None = None) -> bytes:
    return statement(
        artifact_id, "web", "python-app", INPUTS, builder_id or BUILDERS[name], INVOCATION
    )


def signed(name: str, artifact_id: str = ARTIFACT) -> Attestation:
    return attest(provenance(name, artifact_id), KEYS[name])


def test_statement_shape() -> None:
    document = json.loads(provenance("a"))
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["subject"] == [{"name": "web", "digest": {"sha256": "ab" * 32}}]
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    definition = document["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["invocation"] == INVOCATION
    assert definition["resolvedDependencies"] == [
        {"uri": path, "digest": {"sha256": digest}} for path, digest in sorted(INPUTS.items())
    ]
    assert document["predicate"]["runDetails"] == {"builder": {"id": BUILDERS["a"]}}


def test_statement_is_deterministic() -> None:
    reordered = dict(reversed(list(INPUTS.items())))
    again = statement(ARTIFACT, "web", "python-app", reordered, BUILDERS["a"], INVOCATION)
    assert again == provenance("a")
    assert again == rfc8785.dumps(json.loads(again))  # already canonical (RFC 8785)
    assert b"time" not in again.lower()


@pytest.mark.parametrize(
    ("artifact_id", "inputs", "message"),
    [
        ("sha1:abc", INPUTS, "is not an artifact id"),
        (ARTIFACT, {"src/app.py": "not-hex"}, "is not 64 hex sha256"),
    ],
    ids=["bad-artifact-id", "bad-input-digest"],
)
def test_statement_refuses_bad_digests(
    artifact_id: str, inputs: dict[str, str], message: str
) -> None:
    with pytest.raises(ProvenanceError, match=message):
        statement(artifact_id, "web", "python-app", inputs, BUILDERS["a"], INVOCATION)


def test_two_of_three_builders_agree() -> None:
    agreeing = verify_agreement(ARTIFACT, [signed("a"), signed("c")], TRUSTED, required=2)
    assert agreeing == [BUILDERS["a"], BUILDERS["c"]]


def test_plain_tuples_are_accepted() -> None:
    pairs = [(a.statement, a.signature) for a in (signed("a"), signed("b"))]
    assert len(verify_agreement(ARTIFACT, pairs, TRUSTED, required=2)) == 2


def refused(attestations: list[tuple[bytes, str]], required: int = 2) -> str:
    with pytest.raises(ProvenanceError) as error:
        verify_agreement(ARTIFACT, attestations, TRUSTED, required=required)
    assert isinstance(error.value, BuildError)
    return str(error.value)


def test_one_builder_signing_twice_counts_once() -> None:
    message = refused([signed("a"), signed("a")])
    assert "1 of 2 required trusted builders agree (https://builders.example/a)" in message
    assert "#2: builder 'https://builders.example/a' already counted" in message


def test_statement_for_another_digest_is_excluded() -> None:
    message = refused([signed("a"), signed("b", OTHER_ARTIFACT)])
    assert f"#2: builder 'https://builders.example/b': statement is for {OTHER_ARTIFACT}" in (
        message
    )


def test_untrusted_key_is_excluded() -> None:
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    message = refused([signed("a"), attest(provenance("b"), stranger)])
    assert "#2: untrusted key SHA256:" in message


def test_tampered_statement_is_excluded() -> None:
    good = signed("b")
    tampered = Attestation(good.statement.replace(b"click-8.1.7", b"click-6.6.6"), good.signature)
    message = refused([signed("a"), tampered])
    assert "#2: builder 'https://builders.example/b': bad signature" in message


def test_signature_for_another_namespace_is_excluded() -> None:
    body = provenance("b")
    approval = Attestation(body, sign(body, KEYS["b"], "circle-approval-v1"))
    message = refused([signed("a"), approval])
    assert f"signed for namespace 'circle-approval-v1', expected '{NAMESPACE}'" in message


def test_statement_claiming_another_builder_is_excluded() -> None:
    impostor = attest(provenance("c", builder_id=BUILDERS["a"]), KEYS["c"])
    message = refused([signed("b"), impostor])
    assert "#2: statement names builder 'https://builders.example/a'" in message
    assert "signed by 'https://builders.example/c'" in message


def test_no_attestations_and_bad_threshold() -> None:
    assert "0 of 1 required trusted builders agree (none); excluded: no attestations" in (
        refused([], required=1)
    )
    with pytest.raises(ProvenanceError, match="at least 1, got 0"):
        verify_agreement(ARTIFACT, [], TRUSTED, required=0)


def test_trusted_keys_must_be_distinct() -> None:
    shared = {"one": TRUSTED[BUILDERS["a"]], "two": TRUSTED[BUILDERS["a"]]}
    with pytest.raises(ProvenanceError, match="'one' and 'two' share key"):
        verify_agreement(ARTIFACT, [signed("a")], shared, required=1)
