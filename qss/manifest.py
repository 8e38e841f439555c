"""The object manifest (`qss-manifest/1`): what an object is and where its shares are. Pure.

    {"format": "qss-manifest/1",
     "objectId": sha256 of the canonical content,
     "content":  {name, size, segmentSize, segmentCount, k, n, cipher, objectNonce, noncePrefix,
                  keyWrap, keyId, wrappedKey, [keyCommitment,] shares: [[sha256 of each share]
                  per segment]},
     "version": 1, 2, ... (placement versions), "supersedes": sha256 of the previous version,
     "placement": [{share, backend, failureDomain}],
     ["recipients": [{name, kem, kemKey, encapsulation, wrappedKey}]]}

Canonical bytes are RFC 8785 (JCS). The object id is the sha256 of the canonical *content*, so
the content is self-certifying: given an object id, any copy of the manifest from any backend is
checked without a key, and a tampered hash, size, k or n changes the id. Placement is not part
of the id: repair moves shares and writes a new version, and the same content (so the same
share hashes) still applies, because zfec rebuilds a lost block byte for byte. A forged
placement can only send a reader to the wrong backend, where the share hashes refuse what it
finds. The manifest holds no secret: the data key is wrapped under the storage key, and for
each recipient under an X-Wing encapsulation to their key (`qss.recipients`).

Recipients are versioned like placement, so an object is shared or unshared without changing
its id; the content's `keyCommitment` (objects stored since recipients exist) pins the data key
that any entry must open to. Both optional keys are written only when present, so manifests
written before them keep their bytes and ids.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import rfc8785

from qss.codec import NONCE_PREFIX_BYTES, OBJECT_NONCE_BYTES, ObjectLayout
from qss.errors import InvalidParameters, ManifestError, StorageError
from qss.recipients import COMMITMENT_BYTES, Entry, parse_entries

FORMAT = "qss-manifest/1"
CIPHER = "AES-256-GCM"
KEY_WRAP = "AES-256-KW"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_BACKEND = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True, slots=True)
class Content:
    """The immutable part of a manifest; its sha256 is the object id."""

    name: str
    size: int
    segment_size: int
    k: int
    n: int
    object_nonce: bytes
    nonce_prefix: bytes
    key_id: str
    wrapped_key: bytes
    shares: tuple[tuple[str, ...], ...]  # [segment][share number] -> sha256 hex
    key_commitment: bytes | None = None  # `qss.recipients.key_commitment` of the data key

    @property
    def layout(self) -> ObjectLayout:
        return ObjectLayout(
            self.size, self.segment_size, self.k, self.n, self.object_nonce, self.nonce_prefix
        )

    def as_json(self) -> dict[str, Any]:
        commitment = (
            {} if self.key_commitment is None else {"keyCommitment": self.key_commitment.hex()}
        )
        return {
            **commitment,
            "name": self.name,
            "size": self.size,
            "segmentSize": self.segment_size,
            "segmentCount": len(self.shares),
            "k": self.k,
            "n": self.n,
            "cipher": CIPHER,
            "objectNonce": self.object_nonce.hex(),
            "noncePrefix": self.nonce_prefix.hex(),
            "keyWrap": KEY_WRAP,
            "keyId": self.key_id,
            "wrappedKey": base64.b64encode(self.wrapped_key).decode(),
            "shares": [list(hashes) for hashes in self.shares],
        }

    @property
    def object_id(self) -> str:
        return hashlib.sha256(rfc8785.dumps(self.as_json())).hexdigest()


@dataclass(frozen=True, slots=True)
class Placement:
    share: int
    backend: str
    failure_domain: str


@dataclass(frozen=True, slots=True)
class Manifest:
    content: Content
    placement: tuple[Placement, ...]
    version: int = 1
    supersedes: str | None = None
    recipients: tuple[Entry, ...] = ()

    @property
    def object_id(self) -> str:
        return self.content.object_id

    def backend_of(self, share: int) -> str | None:
        return next((p.backend for p in self.placement if p.share == share), None)

    def encode(self) -> bytes:
        recipients = (
            {"recipients": [entry.as_json() for entry in self.recipients]}
            if self.recipients
            else {}
        )
        return rfc8785.dumps(
            {
                **recipients,
                "format": FORMAT,
                "objectId": self.object_id,
                "content": self.content.as_json(),
                "version": self.version,
                "supersedes": self.supersedes,
                "placement": [
                    {"share": p.share, "backend": p.backend, "failureDomain": p.failure_domain}
                    for p in sorted(self.placement, key=lambda p: p.share)
                ],
            }
        )

    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    def moved(self, placement: tuple[Placement, ...]) -> Manifest:
        """The next version: the same content with shares placed anew."""
        check_placement(placement, self.content.n)
        return replace(
            self, placement=placement, version=self.version + 1, supersedes=self.digest()
        )

    def shared(self, recipients: tuple[Entry, ...]) -> Manifest:
        """The next version: the same content and placement, shared with `recipients` (sorted
        by name, each once) instead."""
        names = [entry.name for entry in recipients]
        if names != sorted(set(names)):
            raise ManifestError("recipients must be sorted by name, each name once")
        return replace(
            self, recipients=recipients, version=self.version + 1, supersedes=self.digest()
        )


def check_name(name: object) -> str:
    """An object name: 1-255 printable characters. It is a label, never a path or a key."""
    if not isinstance(name, str) or not 0 < len(name) <= 255 or not name.isprintable():
        shown = repr(name)[:40]
        raise InvalidParameters(f"object name must be 1-255 printable characters, got {shown}")
    return name


def check_placement(placement: tuple[Placement, ...], n: int) -> None:
    shares = [p.share for p in placement]
    if sorted(shares) != list(range(n)):
        raise ManifestError(
            f"placement must name shares 0..{n - 1} once each, got {sorted(shares)}"
        )
    backends = [p.backend for p in placement]
    if len(set(backends)) != len(backends):
        raise ManifestError("placement must put every share on a backend of its own")
    for item in placement:
        if not _BACKEND.fullmatch(item.backend) or not _BACKEND.fullmatch(item.failure_domain):
            raise ManifestError(f"placement of share {item.share}: invalid backend or domain name")


def decode(data: bytes, expected_id: str | None = None) -> Manifest:
    """Parse and check a manifest; with `expected_id`, refuse one for another object.

    Raises ManifestError saying what is wrong.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(data)} bytes exceeds {MAX_MANIFEST_BYTES}")
    try:
        document = json.loads(data)
        manifest = _from_json(document)
    except ManifestError:
        raise
    except StorageError as error:
        raise ManifestError(f"invalid manifest: {error}") from None
    except Exception as error:  # noqa: BLE001 - hostile bytes: any failure to parse is a refusal
        raise ManifestError(f"malformed manifest: {type(error).__name__}: {error}"[:300]) from None
    if document.get("objectId") != manifest.object_id:
        raise ManifestError(
            "manifest content does not match its object id: it was altered "
            f"(claims {str(document.get('objectId'))[:16]}..., content hashes to "
            f"{manifest.object_id[:16]}...)"
        )
    if expected_id is not None and manifest.object_id != expected_id:
        raise ManifestError(
            f"manifest is for object {manifest.object_id[:16]}..., not {expected_id[:16]}..."
        )
    if manifest.encode() != data:
        raise ManifestError("manifest is not in canonical form (RFC 8785)")
    return manifest


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ManifestError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _hex(value: Any, what: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or value != value.lower():
        raise ManifestError(f"{what} must be {size} bytes of lowercase hex")
    return bytes.fromhex(value)


def _from_json(document: Any) -> Manifest:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f"not a {FORMAT} manifest")
    content = document["content"]
    if not isinstance(content, dict) or not isinstance(document.get("placement"), list):
        raise ManifestError("content must be an object and placement a list")
    if content.get("cipher") != CIPHER or content.get("keyWrap") != KEY_WRAP:
        raise ManifestError(f"unsupported cipher or key wrap (expected {CIPHER}, {KEY_WRAP})")
    try:
        name = check_name(content["name"])
    except InvalidParameters as error:
        raise ManifestError(str(error)) from None
    k = _integer(content["k"], "k", 1, 256)
    n = _integer(content["n"], "n", k, 256)
    size = _integer(content["size"], "size", 0, 2**53)
    segment_size = _integer(content["segmentSize"], "segmentSize", 1, 2**31)
    key_id = content["keyId"]
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ManifestError("keyId must be 16 lowercase hex digits")
    wrapped = base64.b64decode(content["wrappedKey"], validate=True)
    if len(wrapped) != 40:
        raise ManifestError("wrappedKey must be a wrapped 256-bit key (40 bytes)")
    commitment = (
        _hex(content["keyCommitment"], "keyCommitment", COMMITMENT_BYTES)
        if "keyCommitment" in content
        else None
    )
    shares = content["shares"]
    if not isinstance(shares, list) or not all(
        isinstance(row, list)
        and len(row) == n
        and all(isinstance(h, str) and _HEX64.fullmatch(h) for h in row)
        for row in shares
    ):
        raise ManifestError(f"shares must list, per segment, {n} sha256 hashes")
    parsed = Content(
        name=name,
        size=size,
        segment_size=segment_size,
        k=k,
        n=n,
        object_nonce=_hex(content["objectNonce"], "objectNonce", OBJECT_NONCE_BYTES),
        nonce_prefix=_hex(content["noncePrefix"], "noncePrefix", NONCE_PREFIX_BYTES),
        key_id=key_id,
        wrapped_key=wrapped,
        shares=tuple(tuple(row) for row in shares),
        key_commitment=commitment,
    )
    layout = parsed.layout  # checks segment size, k, n
    for claimed, what in ((content.get("segmentCount"), "segmentCount"), (len(shares), "shares")):
        if claimed != layout.segment_count:
            raise ManifestError(
                f"an object of {size} bytes in segments of {segment_size} has "
                f"{layout.segment_count} segments; the manifest's {what} says {claimed}"
            )
    placement = tuple(
        Placement(
            share=_integer(item["share"], "placement share", 0, n - 1),
            backend=str(item["backend"]),
            failure_domain=str(item["failureDomain"]),
        )
        for item in document["placement"]
    )
    check_placement(placement, n)
    supersedes = document.get("supersedes")
    if supersedes is not None and (
        not isinstance(supersedes, str) or not _HEX64.fullmatch(supersedes)
    ):
        raise ManifestError("supersedes must be a sha256 hex digest or null")
    return Manifest(
        content=parsed,
        placement=placement,
        version=_integer(document["version"], "version", 1, 2**31),
        supersedes=supersedes,
        recipients=parse_entries(document["recipients"]) if "recipients" in document else (),
    )
