"""Keyless sigstore approvals: a real public bundle verifies offline, every alteration is refused.

The bundle (sigstore staging, April 2024, `william@yossarian.net` via GitHub) lives outside the
project, in the shared test data; these tests skip when it is absent. Every test runs with all
sockets blocked, so a pass proves verification never touches the network.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import socket
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.sigstore import (
    MAX_BUNDLE_BYTES,
    SigstoreError,
    SigstoreVerifier,
    bundle_name,
)
from reconciler.chain.values import Evidence
from reconciler.chain.verify import Verifier
from tests.conftest import ROOT
from tests.reconciler.chain.test_chain import CHANGE, INTRO, NOW, STATE_1, approve

# The project's shared test data sits beside the repository (../shared); CIRCLE_SIGSTORE_DATA
# points elsewhere. Never copied into the project.
DATA = Path(
    os.environ.get(
        "CIRCLE_SIGSTORE_DATA",
        ROOT.parent / "shared" / "testdata" / "sigstore",
    )
)
IDENTITY = "william@yossarian.net"
ISSUER = "https://github.com/login/oauth"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("sigstore verification tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def message() -> bytes:
    if not DATA.is_dir():
        pytest.skip(f"sigstore test data not found at {DATA}")
    return (DATA / "bundle_v3.txt").read_bytes()


@pytest.fixture
def bundle(message: bytes) -> str:
    return (DATA / "bundle_v3.txt.sigstore.json").read_text()


@pytest.fixture
def staging(no_network: None) -> SigstoreVerifier:
    return SigstoreVerifier.instance("staging")


def edited(bundle: str, edit: Callable[[dict[str, Any]], None]) -> str:
    document = json.loads(bundle)
    edit(document)
    return json.dumps(document)


def flip_signature_bit(document: dict[str, Any]) -> None:
    signature = document["messageSignature"]
    raw = bytearray(base64.b64decode(signature["signature"]))
    raw[-1] ^= 0x01
    signature["signature"] = base64.b64encode(bytes(raw)).decode()


def test_identify_returns_the_signer(
    staging: SigstoreVerifier, message: bytes, bundle: str
) -> None:
    assert staging.identify(message, bundle) == (IDENTITY, ISSUER)


def test_verify_passes_for_the_right_identity(
    staging: SigstoreVerifier, message: bytes, bundle: str
) -> None:
    staging.verify(message, bundle, IDENTITY, ISSUER)


def test_from_file_with_the_shipped_root_verifies(message: bytes, bundle: str) -> None:
    shipped = resources.files("sigstore._store").joinpath(
        "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev", "trusted_root.json"
    )
    with resources.as_file(shipped) as path:
        verifier = SigstoreVerifier.from_file(path)
    assert verifier.identify(message, bundle) == (IDENTITY, ISSUER)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m + b"\n",
        lambda m: m[:-1],
        lambda m: bytes([m[0] ^ 0x01]) + m[1:],
        lambda m: b"",
    ],
    ids=["byte-appended", "byte-removed", "first-bit-flipped", "empty"],
)
def test_changed_message_is_refused(
    staging: SigstoreVerifier, message: bytes, bundle: str, change: Callable[[bytes], bytes]
) -> None:
    with pytest.raises(SigstoreError, match="does not verify: Bundle message digest mismatch"):
        staging.identify(change(message), bundle)
    with pytest.raises(SigstoreError, match="does not verify: Bundle message digest mismatch"):
        staging.verify(change(message), bundle, IDENTITY, ISSUER)


def test_changed_signature_is_refused(
    staging: SigstoreVerifier, message: bytes, bundle: str
) -> None:
    with pytest.raises(SigstoreError, match="does not verify: Signature is invalid for input"):
        staging.identify(message, edited(bundle, flip_signature_bit))


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [
        ("mallory@example.com", ISSUER),
        ("william@yossarian.ne", ISSUER),
        (IDENTITY, "https://accounts.google.com"),
        (IDENTITY, "https://github.com/login/oauth/"),
    ],
    ids=["other-identity", "identity-prefix", "other-issuer", "issuer-trailing-slash"],
)
def test_other_identity_or_issuer_is_refused(
    staging: SigstoreVerifier, message: bytes, bundle: str, identity: str, issuer: str
) -> None:
    expected = f"signed by {IDENTITY} (issuer {ISSUER}), expected {identity} (issuer {issuer})"
    with pytest.raises(SigstoreError, match=re.escape(expected)):
        staging.verify(message, bundle, identity, issuer)


def drop_certificate(document: dict[str, Any]) -> None:
    del document["verificationMaterial"]["certificate"]


def use_public_key(document: dict[str, Any]) -> None:
    material = document["verificationMaterial"]
    del material["certificate"]
    material["publicKey"] = {"hint": "a-key"}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda b: "not json at all", "Invalid JSON"),
        (lambda b: b[: len(b) // 2], "Invalid JSON: EOF while parsing"),
        (lambda b: "[]", "Input should be an object"),
        (lambda b: "{}", "mediaType Field required"),
        (lambda b: edited(b, drop_certificate), "Exactly one of publicKey, x509CertificateChain"),
        (lambda b: edited(b, use_public_key), "expected certificate in bundle"),
        (lambda b: " " * MAX_BUNDLE_BYTES + b, f"bytes, at most {MAX_BUNDLE_BYTES} allowed"),
    ],
    ids=[
        "not-json",
        "truncated",
        "json-list",
        "empty-object",
        "no-certificate",
        "public-key",
        "too-large",
    ],
)
def test_malformed_bundle_is_refused(
    staging: SigstoreVerifier,
    message: bytes,
    bundle: str,
    make: Callable[[str], str],
    reason: str,
) -> None:
    broken = make(bundle)
    for attempt in (
        lambda: staging.identify(message, broken),
        lambda: staging.verify(message, broken, IDENTITY, ISSUER),
        lambda: bundle_name(broken),
    ):
        with pytest.raises(SigstoreError, match=r"^not a sigstore bundle: ") as refused:
            attempt()
        assert re.search(reason, str(refused.value)), str(refused.value)
        assert "\n" not in str(refused.value)


def test_production_refuses_a_staging_bundle(message: bytes, bundle: str) -> None:
    production = SigstoreVerifier.instance("production")
    with pytest.raises(
        SigstoreError,
        match=re.escape(
            "does not verify: failed to build timestamp certificate chain: validation failed"
        ),
    ):
        production.identify(message, bundle)


def test_unknown_instance_is_refused() -> None:
    with pytest.raises(SigstoreError, match="unknown sigstore instance 'prod'; expected one of"):
        SigstoreVerifier.instance("prod")


def test_bundle_name_is_the_leaf_certificate_sha256(bundle: str) -> None:
    name = bundle_name(bundle)
    assert re.fullmatch(r"[0-9a-f]{64}", name)
    assert name == "e1f949a8bfd84165bf8091a3f15a56f2de88a9dff827289125dedfcc296038a7"
    assert bundle_name(json.dumps(json.loads(bundle), indent=None)) == name  # layout-independent


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        (b"not json", "Invalid JSON"),
        (b'{"mediaType": "nope"}', "Field required"),
        (b"", "EOF while parsing"),
    ],
    ids=["missing", "not-json", "incomplete", "empty"],
)
def test_from_file_refuses_an_unusable_root(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "trusted_root.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SigstoreError, match=f"^{re.escape(str(path))}: .*{reason}"):
        SigstoreVerifier.from_file(path)


def test_from_file_refuses_a_root_without_transparency_log(tmp_path: Path) -> None:
    shipped = resources.files("sigstore._store").joinpath(
        "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev", "trusted_root.json"
    )
    root = json.loads(shipped.read_text())
    root["tlogs"] = []
    path = tmp_path / "trusted_root.json"
    path.write_text(json.dumps(root))
    with pytest.raises(
        SigstoreError, match=f"^{re.escape(str(path))}: .*no transparency log instances"
    ):
        SigstoreVerifier.from_file(path)


# --- sigstore approvals in the chain ---------------------------------------------------------


class FakeSigstoreVerifier:
    """A stand-in for sigstore signing, which needs the network (Fulcio, Rekor) and cannot run
    here: it vouches for one fixed identity. Only the chain's use of an identity is tested with
    it; the real verification is tested above against a real bundle."""

    def __init__(self, identity: str, issuer: str) -> None:
        self.identity = (identity, issuer)

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]:
        return self.identity


def _carol_by_sigstore(
    verifier: Any, bundle: str = '{"mediaType": "application/vnd.dev.sigstore.bundle"}'
) -> None:
    """A workloads change signed by alice (SSH) and carol (a sigstore bundle): counted only
    when carol's identity verifies (the example policy gives carol both kinds of key)."""
    evidence = approve(CHANGE, "alice")
    evidence.append(Evidence(evidence[0].statement, bundle))
    Verifier(INTRO, identities=verifier).verify(STATE_1, CHANGE, evidence, NOW)


def test_a_sigstore_approval_counts_for_the_member_with_that_identity() -> None:
    _carol_by_sigstore(FakeSigstoreVerifier("carol@example.org", "https://github.com/login/oauth"))
    for identity, issuer in [
        ("carol@example.org", "https://accounts.google.com"),
        ("mallory@example.org", "https://github.com/login/oauth"),
    ]:
        with pytest.raises(QuorumNotMet, match="#2: signed by a key of no member"):
            _carol_by_sigstore(FakeSigstoreVerifier(identity, issuer))


def test_a_sigstore_approval_needs_a_trust_root() -> None:
    with pytest.raises(QuorumNotMet, match="#2: a sigstore approval, and no sigstore trust root"):
        _carol_by_sigstore(None)


def test_a_real_bundle_over_other_bytes_is_not_counted(
    staging: SigstoreVerifier, bundle: str
) -> None:
    """The real staging bundle signs its own test input, not this statement: excluded with
    sigstore's own reason, offline."""
    with pytest.raises(QuorumNotMet, match=r"#2: sigstore bundle does not verify: .*digest"):
        _carol_by_sigstore(staging, bundle)


def _certificate(extensions: list[x509.ExtensionType]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not fulcio")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _with_certificate(bundle: str, der: bytes) -> str:
    def put(document: dict[str, Any]) -> None:
        document["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(der).decode()

    return edited(bundle, put)


def _choking_certificates() -> dict[str, bytes]:
    san = x509.SubjectAlternativeName([x509.RFC822Name("alice@example.org")])
    alt = x509.IssuerAlternativeName([x509.RFC822Name("alice@example.org")])
    both = _certificate([san, alt])
    issuer = x509.UnrecognizedExtension(
        x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8"), b"\x0c\x05https"
    )
    plain = _certificate([san, issuer])
    return {
        # the issuer alternative name's OID made a second subject alternative name
        "duplicate-extension": both.replace(b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11"),
        "malformed-san": _certificate(
            [x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.17"), b"\x30\x05\x81\x03")]
        ),
        "version-5": plain.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x05", 1),
    }


@pytest.mark.parametrize("case", sorted(_choking_certificates()))
def test_a_bundle_the_libraries_choke_on_is_an_exclusion(
    staging: SigstoreVerifier, message: bytes, bundle: str, case: str
) -> None:
    """Anyone with push rights can file such a bundle: it must be a SigstoreError (that
    approval excluded), never an exception from the X.509 code that halts a node."""
    hostile = _with_certificate(bundle, _choking_certificates()[case])
    with pytest.raises(SigstoreError):
        staging.identify(message, hostile)
    evidence = approve(CHANGE, "alice", "bob")
    evidence.append(Evidence(evidence[0].statement, hostile))
    verdict = Verifier(INTRO, identities=staging).verify(STATE_1, CHANGE, evidence, NOW)
    assert verdict.signers == ("alice", "bob")
    assert [type(item.error) for item in verdict.excluded] == [SigstoreError]
