"""Build provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate naming an
artifact and the pinned inputs it was built from, signed with SSHSIG (namespace
`circle-provenance-v1`), and the check that N independent trusted builders agree on a digest:
`check_agreement` reports who agrees and why each other attestation does not count (what
`circle artifact verify-provenance` shows); `verify_agreement` enforces it (raises).

Statements are canonical JSON (RFC 8785) without timestamps or host data, so two builders that
build the same inputs sign byte-identical statements. Pure: bytes in, values or errors out.

Errors: `ProvenanceError(BuildError)`; signature problems surface as exclusion reasons.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import BuildError
from builders.sshsig import SignatureError, fingerprint, parse, sign, verify

__all__ = [
    "NAMESPACE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Agreement",
    "Attestation",
    "ProvenanceError",
    "attest",
    "build_type",
    "check_agreement",
    "digest_of",
    "statement",
    "verify_agreement",
]

NAMESPACE = "circle-provenance-v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
_ARTIFACT_ID = re.compile(r"sha256:([0-9a-f]{64})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProvenanceError(BuildError):
    """Provenance could not be produced, or too few trusted builders agree on an artifact."""


class Attestation(NamedTuple):
    """A signed statement. A tuple so it passes wherever `(statement, signature)` pairs do."""

    statement: bytes
    signature: str


def build_type(builder: str) -> str:
    """The SLSA `buildType` URI for one of our builders (`archive`, `python-app`, `model`)."""
    return f"urn:autonomous-circles:build-type:{builder}:v1"


def statement(
    artifact_id: str,
    build_name: str,
    builder: str,
    inputs: Mapping[str, str],
    builder_id: str,
    invocation: Mapping[str, str],
) -> bytes:
    """The canonical provenance statement for `artifact_id` built by `builder_id`.

    `inputs` maps each pinned input or source path to its sha256 (hex); `invocation` holds the
    build's parameters. No clock, host or order dependence: same arguments, same bytes.
    """
    digest = digest_of(artifact_id)
    for path, sha256 in inputs.items():
        if not _SHA256.fullmatch(sha256):
            raise ProvenanceError(f"input {path!r}: digest {sha256[:80]!r} is not 64 hex sha256")
    for name, text in [
        ("build name", build_name),
        ("builder", builder),
        ("builder id", builder_id),
    ]:
        if not text:
            raise ProvenanceError(f"provenance {name} must not be empty")
    document: dict[str, Any] = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": build_name, "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type(builder),
                "externalParameters": {
                    "build": build_name,
                    "builder": builder,
                    "invocation": dict(invocation),
                },
                "resolvedDependencies": [
                    {"uri": path, "digest": {"sha256": inputs[path]}} for path in sorted(inputs)
                ],
            },
            "runDetails": {"builder": {"id": builder_id}},
        },
    }
    return rfc8785.dumps(document)


def attest(statement_bytes: bytes, private_key: Ed25519PrivateKey) -> Attestation:
    """Sign a statement, as is, for the provenance namespace."""
    return Attestation(statement_bytes, sign(statement_bytes, private_key, NAMESPACE))


@dataclass(frozen=True)
class Agreement:
    """Which trusted builders signed statements naming an artifact, and why the other
    attestations did not count: `excluded` holds (position from 1, reason)."""

    artifact_id: str
    required: int
    agreeing: tuple[str, ...]
    excluded: tuple[tuple[int, str], ...]

    @property
    def met(self) -> bool:
        return len(self.agreeing) >= self.required

    def summary(self) -> str:
        """`artifact sha256:...: 1 of 2 required trusted builders agree (a); excluded: ...`"""
        found = ", ".join(self.agreeing) or "none"
        why = "; ".join(f"#{index}: {reason}" for index, reason in self.excluded)
        return (
            f"artifact {self.artifact_id}: {len(self.agreeing)} of {self.required} required "
            f"trusted builders agree ({found}); excluded: {why or 'no attestations'}"
        )


def check_agreement(
    artifact_id: str,
    attestations: Sequence[tuple[bytes, str]],
    trusted: Mapping[str, str],
    required: int,
) -> Agreement:
    """Report the trusted builder ids whose valid statements name `artifact_id`'s digest.

    Each trusted builder counts once. Every other attestation is excluded with its reason
    (untrusted key, bad signature, other digest, statement for another builder id, builder
    already counted). Raises `ProvenanceError` only for bad arguments: an artifact id that is
    not one, `required` under 1, a malformed trusted key or two builders sharing one.
    """
    digest = digest_of(artifact_id)
    if required < 1:
        raise ProvenanceError(f"required builders must be at least 1, got {required}")
    builder_of_key = _builders_by_key(trusted)
    agreeing: list[str] = []
    excluded: list[tuple[int, str]] = []
    for index, (statement_bytes, armored) in enumerate(attestations, start=1):
        reason, builder_id = _check_one(statement_bytes, armored, digest, builder_of_key, trusted)
        if reason is None and builder_id in agreeing:
            reason = f"builder {builder_id!r} already counted"
        if reason is not None:
            excluded.append((index, reason))
        else:
            agreeing.append(builder_id)
    return Agreement(artifact_id, required, tuple(agreeing), tuple(excluded))


def verify_agreement(
    artifact_id: str,
    attestations: Sequence[tuple[bytes, str]],
    trusted: Mapping[str, str],
    required: int,
) -> list[str]:
    """Return the trusted builder ids whose valid statements name `artifact_id`'s digest.

    Raise `ProvenanceError` unless at least `required` distinct builders agree; the message
    lists who counted and why each other attestation was excluded (`check_agreement`).
    """
    agreement = check_agreement(artifact_id, attestations, trusted, required)
    if not agreement.met:
        raise ProvenanceError(agreement.summary())
    return list(agreement.agreeing)


def _check_one(
    statement_bytes: bytes,
    armored: str,
    digest: str,
    builder_of_key: Mapping[str, str],
    trusted: Mapping[str, str],
) -> tuple[str | None, str]:
    """(None, builder id) for an attestation that counts, else (reason, builder id or "")."""
    try:
        signer_key = parse(armored).public_key_line
    except SignatureError as exc:
        return f"unreadable signature: {exc}", ""
    builder_id = builder_of_key.get(signer_key)
    if builder_id is None:
        return f"untrusted key {fingerprint(signer_key)}", ""
    try:
        verify(statement_bytes, armored, trusted[builder_id], NAMESPACE)
    except SignatureError as exc:
        return f"builder {builder_id!r}: {exc}", builder_id
    try:
        document = json.loads(statement_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"builder {builder_id!r}: statement is not JSON", builder_id
    claimed = _field(document, "predicate", "runDetails", "builder", "id")
    if claimed != builder_id:
        return f"statement names builder {claimed!r} but is signed by {builder_id!r}", builder_id
    if _field(document, "_type") != STATEMENT_TYPE:
        return f"builder {builder_id!r}: not an in-toto Statement v1", builder_id
    if _field(document, "predicateType") != PREDICATE_TYPE:
        return f"builder {builder_id!r}: predicate is not SLSA provenance v1", builder_id
    subjects = _field(document, "subject")
    named = (
        [_field(subject, "digest", "sha256") for subject in subjects]
        if isinstance(subjects, list)
        else []
    )
    if digest not in named:
        other = ", ".join(f"sha256:{d}" for d in named if isinstance(d, str)) or "no digest"
        return f"builder {builder_id!r}: statement is for {other}", builder_id
    return None, builder_id


def _builders_by_key(trusted: Mapping[str, str]) -> dict[str, str]:
    """Map each trusted key (as `ssh-ed25519 <base64>`) to its builder id; one key, one id."""
    by_key: dict[str, str] = {}
    for builder_id, line in trusted.items():
        try:
            fingerprint(line)  # refuses a malformed or non-Ed25519 key line
        except SignatureError as exc:
            raise ProvenanceError(f"trusted builder {builder_id!r}: {exc}") from None
        key = " ".join(line.split()[:2])
        if key in by_key:
            raise ProvenanceError(
                f"trusted builders {by_key[key]!r} and {builder_id!r} share key {fingerprint(key)}"
            )
        by_key[key] = builder_id
    return by_key


def digest_of(artifact_id: str) -> str:
    """The sha256 hex of `artifact_id`; `ProvenanceError` unless it is `sha256:<64 hex>`."""
    match = _ARTIFACT_ID.fullmatch(artifact_id)
    if match is None:
        raise ProvenanceError(f"{artifact_id[:80]!r} is not an artifact id (sha256:<64 hex>)")
    return match.group(1)


def _field(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document
