"""Keyless sigstore approvals, verified fully offline against a pinned trusted root.

A member may be identified by a sigstore identity (`identity` + `issuer` in `circle.yaml`). Its
approval is the exact statement bytes plus a sigstore bundle whose message signature covers them.
Trust rests on the trusted root this module is given, and on nothing fetched:

- the root is pinned: the one shipped inside sigstore-python (`instance("production")` or
  `instance("staging")`, read from the package itself, never refreshed over TUF) or an
  operator's `trusted_root.json` (`from_file`);
- the leaf certificate must chain to that root's Fulcio CA and carry a valid SCT; the
  transparency log entry's inclusion proof, signed checkpoint and promise are checked from the
  bundle alone, so no socket is ever opened;
- the certificate's identity (SAN) AND its OIDC issuer must both equal the expected ones: the
  same e-mail vouched for by another issuer is another member.

Signing needs the network and is done by the `sigstore` tool; this module only verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives.serialization import Encoding
from sigstore.errors import Error as _SigstoreLibError
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier, policy

from reconciler.errors import CheckFailed

MAX_BUNDLE_BYTES = 64 << 10  # a bundle is about 6 KiB; the approvals store keeps no larger

# The trusted roots embedded in sigstore-python, by instance name (keyed by their TUF URL).
_SHIPPED_ROOTS = {
    "production": "https://tuf-repo-cdn.sigstore.dev",
    "staging": "https://tuf-repo-cdn.sigstage.dev",
}
_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
_LEGACY_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw bytes


class SigstoreError(CheckFailed):
    """A sigstore bundle or trusted root is unreadable, or a bundle does not verify."""


class SigstoreVerifier:
    """Verifies sigstore bundles over exact message bytes, offline, against one trusted root."""

    def __init__(self, trusted_root: TrustedRoot) -> None:
        try:
            self._verifier = Verifier(trusted_root=trusted_root)
        except (_SigstoreLibError, ValueError) as exc:
            raise SigstoreError(f"unusable sigstore trusted root: {_reason(exc)}") from exc

    @classmethod
    def instance(cls, name: str) -> SigstoreVerifier:
        """The verifier for a public instance, using the root shipped inside sigstore-python."""
        if name not in _SHIPPED_ROOTS:
            known = ", ".join(sorted(_SHIPPED_ROOTS))
            raise SigstoreError(f"unknown sigstore instance {name!r}; expected one of: {known}")
        shipped = resources.files("sigstore._store").joinpath(
            quote(_SHIPPED_ROOTS[name], safe=""), "trusted_root.json"
        )
        with resources.as_file(shipped) as path:
            return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> SigstoreVerifier:
        """The verifier for a `trusted_root.json` pinned by the operator."""
        try:
            root = TrustedRoot.from_file(str(path))
        except (OSError, ValueError, _SigstoreLibError) as exc:
            raise SigstoreError(
                f"{path}: not a usable sigstore trusted root: {_reason(exc)}"
            ) from exc
        try:
            return cls(root)
        except SigstoreError as exc:
            raise SigstoreError(f"{path}: {exc}") from exc

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]:
        """Verify `bundle` over `message` and return the signer's (identity, issuer)."""
        with _untrusted():
            parsed = _load(bundle)
            identity, issuer = _signer(parsed.signing_certificate)
            self._verify(message, parsed, identity, issuer)
        return identity, issuer

    def verify(self, message: bytes, bundle: str, identity: str, issuer: str) -> None:
        """Verify `bundle` over `message`, made by exactly `identity` as vouched for by `issuer`."""
        with _untrusted():
            parsed = _load(bundle)
            signer = _signer(parsed.signing_certificate)
            if signer != (identity, issuer):
                raise SigstoreError(
                    f"sigstore bundle is signed by {signer[0]} (issuer {signer[1]}), "
                    f"expected {identity} (issuer {issuer})"
                )
            self._verify(message, parsed, identity, issuer)

    def _verify(self, message: bytes, bundle: Bundle, identity: str, issuer: str) -> None:
        # policy.Identity(issuer=...) only reads the legacy issuer extension; require every
        # issuer extension the certificate carries to match instead.
        cert = bundle.signing_certificate
        checks: list[policy.VerificationPolicy] = [policy.Identity(identity=identity)]
        if _extension(cert, _ISSUER_OID) is not None:
            checks.append(policy.OIDCIssuerV2(issuer))
        if _extension(cert, _LEGACY_ISSUER_OID) is not None:
            checks.append(policy.OIDCIssuer(issuer))
        try:
            self._verifier.verify_artifact(message, bundle, policy.AllOf(checks))
        except (_SigstoreLibError, ValueError) as exc:
            raise SigstoreError(f"sigstore bundle does not verify: {_reason(exc)}") from exc


def bundle_name(bundle: str) -> str:
    """Hex sha256 of the bundle's leaf certificate (DER): a stable file name for storing it."""
    with _untrusted():
        der = _load(bundle).signing_certificate.public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


@contextlib.contextmanager
def _untrusted() -> Iterator[None]:
    """The one choke point for bundles, which anyone with push rights can write: whatever the
    libraries that read them raise (a certificate with a duplicate extension, a malformed SAN,
    an unknown version...) is a SigstoreError, a refusal of that approval, never a crash."""
    try:
        yield
    except SigstoreError:
        raise
    except Exception as error:
        raise SigstoreError(
            f"sigstore bundle cannot be read: {type(error).__name__}: {_reason(error)}"
        ) from error


def _load(bundle: str) -> Bundle:
    size = len(bundle.encode("utf-8", "surrogatepass"))
    if size > MAX_BUNDLE_BYTES:
        raise SigstoreError(
            f"not a sigstore bundle: {size} bytes, at most {MAX_BUNDLE_BYTES} allowed"
        )
    try:
        return Bundle.from_json(bundle)
    except (_SigstoreLibError, ValueError) as exc:
        raise SigstoreError(f"not a sigstore bundle: {_reason(exc)}") from exc


def _signer(cert: x509.Certificate) -> tuple[str, str]:
    """The (identity, issuer) a Fulcio certificate claims; verified only by `_verify`."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identities = names.get_values_for_type(x509.RFC822Name) + names.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        identities = []
    if len(identities) != 1:
        raise SigstoreError(
            f"sigstore certificate names {len(identities)} identities (e-mail or URI), expected 1"
        )
    issuer_der = _extension(cert, _ISSUER_OID)
    legacy_issuer = _extension(cert, _LEGACY_ISSUER_OID)
    try:
        if issuer_der is not None:
            return identities[0], asn1.decode_der(str, issuer_der)
        if legacy_issuer is not None:
            return identities[0], legacy_issuer.decode("utf-8")
    except (ValueError, TypeError) as exc:
        raise SigstoreError(f"sigstore certificate has an unreadable OIDC issuer: {exc}") from exc
    raise SigstoreError("sigstore certificate names no OIDC issuer")


def _extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _reason(exc: BaseException) -> str:
    """One line from a library error: pydantic's multi-line reports and help links trimmed."""
    lines = [line.strip() for line in str(exc).splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith("For further"))
    text = re.sub(r"\s+", " ", text) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
