"""A node's identity key, and the signed records nodes and the leader keep in the state store.

The state store is untrusted (DESIGN.md section 7): anyone who can write it can write anything.
So every value a node or the leader puts there is signed by its Ed25519 node key (an OpenSSH
key, the public line of which is `publicKey` in `nodes/NAME.yaml`), and every value read back
is opened by `open_signed` against the keys of the admitted nodes before anything trusts it.

A stored value is the exact signed bytes, a line feed, then the armored SSH signature:

    {"body":{...},"format":"circle-signed/1","kind":"registration","signer":"a"}
    -----BEGIN SSH SIGNATURE-----
    ... base64, 70 columns, as `ssh-keygen -Y sign` writes it ...
    -----END SSH SIGNATURE-----

The first line is RFC 8785 canonical JSON, which never holds a raw line feed, so the value
splits at its first one; the two parts verify with `ssh-keygen -Y verify` as they are.

A node whose key has an ML-DSA-65 half (`PATH.ml-dsa-65`, beside the Ed25519 key) signs hybrid:
right after the SSH signature's last line feed comes the ML-DSA envelope of the same payload
(`reconciler.chain.mldsa`, the kind's namespace as its context, armored in 70 columns with a
final line feed). A reader given the node's ML-DSA public key (`mldsa_keys`) needs both halves
to verify; a reader given none refuses a value with an ML-DSA half (one spelling per value). The
signature's namespace is the kind's (`circle-registration-v1`, `circle-status-v1`,
`circle-assignment-v1`, `circle-leader-v1`, `circle-event-v1`), never `git`, `file` or
`circle-approval-v1`: a signature made for one kind, or for any other purpose, never opens as
another. A value has one spelling only: canonical JSON, canonical armor and base64.

Refusals, each a `ForgedRecord(CheckFailed)` with a `reason` and a one-line message:

    ForgedRecord
    ├── RecordTooLarge      TooLarge       over 64 KiB, refused before parsing
    ├── MalformedRecord     Malformed      not exactly the layout, fields and JSON types
    ├── WrongKind           WrongKind      a record of another kind than the one asked for
    ├── UnknownSigner       UnknownSigner  signed in the name of a node not admitted
    ├── WrongSigner         WrongSigner    a node speaking for another (records.open_record)
    └── BadSignature        BadSignature   not signed by that node's key for that kind

`NodeKeyError(InputError)`: a key file that cannot be made or used.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from builders import sshsig
from qss.durable import write_atomically
from reconciler.chain import mldsa
from reconciler.errors import CheckFailed, InputError
from reconciler.files import read_private
from reconciler.plan.inputs import NodeName

__all__ = [
    "FORMAT",
    "MAX_RECORD_BYTES",
    "NAME",
    "BadSignature",
    "ForgeReason",
    "ForgedRecord",
    "Json",
    "MalformedRecord",
    "NodeKey",
    "NodeKeyError",
    "RecordKind",
    "RecordTooLarge",
    "Signed",
    "UnknownSigner",
    "WrongKind",
    "WrongSigner",
    "open_signed",
]

Json: TypeAlias = "bool | int | float | str | list[Json] | dict[str, Json] | None"

FORMAT = "circle-signed/1"
MAX_RECORD_BYTES = 64 * 1024
MAX_KEY_BYTES = 16 * 1024  # an OpenSSH Ed25519 key is about 400 bytes, encrypted or not
NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_FIELDS = frozenset({"format", "kind", "signer", "body"})
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
_COLUMNS = 70  # ssh-keygen's armor width
MLDSA_SUFFIX = ".ml-dsa-65"  # the ML-DSA half of the key at PATH: PATH.ml-dsa-65 (and .pub)


class RecordKind(enum.Enum):
    """What a signed record is; each kind signs under its own SSHSIG namespace."""

    REGISTRATION = "registration"
    STATUS = "status"
    ASSIGNMENT = "assignment"
    LEADER = "leader"
    EVENT = "event"
    VOLUME = "volume"

    @property
    def namespace(self) -> str:
        return f"circle-{self.value}-v1"


class NodeKeyError(InputError):
    """A node key file that cannot be written, read or used."""


class ForgeReason(enum.Enum):
    TOO_LARGE = "TooLarge"
    MALFORMED = "Malformed"
    WRONG_KIND = "WrongKind"
    UNKNOWN_SIGNER = "UnknownSigner"
    WRONG_SIGNER = "WrongSigner"
    BAD_SIGNATURE = "BadSignature"


class ForgedRecord(CheckFailed):
    """A value from the state store that is not a record an admitted node signed."""

    reason: ClassVar[ForgeReason]


class RecordTooLarge(ForgedRecord):
    reason = ForgeReason.TOO_LARGE


class MalformedRecord(ForgedRecord):
    reason = ForgeReason.MALFORMED


class WrongKind(ForgedRecord):
    reason = ForgeReason.WRONG_KIND


class UnknownSigner(ForgedRecord):
    reason = ForgeReason.UNKNOWN_SIGNER


class WrongSigner(ForgedRecord):
    reason = ForgeReason.WRONG_SIGNER


class BadSignature(ForgedRecord):
    reason = ForgeReason.BAD_SIGNATURE


@dataclass(frozen=True, slots=True)
class Signed:
    """An opened record: who signed it, its body (exact JSON), and the bytes that were signed."""

    signer: NodeName
    body: dict[str, Json]
    payload: bytes


class NodeKey:
    """A node's Ed25519 private key, as `ssh-keygen -t ed25519` or `circle keygen` makes it,
    and optionally an ML-DSA-65 half: then every record it signs is hybrid."""

    __slots__ = ("_comment", "_mldsa", "_private")

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        comment: str = "",
        mldsa_key: MLDSA65PrivateKey | None = None,
    ) -> None:
        if "\n" in comment or "\r" in comment:
            raise NodeKeyError("a node key's comment must be a single line")
        self._private = private_key
        self._comment = comment
        self._mldsa = mldsa_key

    def __repr__(self) -> str:
        return f"NodeKey({self.fingerprint})"

    @classmethod
    def generate(cls, path: Path, comment: str = "", *, hybrid: bool = False) -> NodeKey:
        """A new key: the private key at `path` (0600) and its public line at `path`.pub;
        with `hybrid`, its ML-DSA-65 half too, at `path`.ml-dsa-65 (0600) and
        `path`.ml-dsa-65.pub. None of them may exist yet."""
        key = cls(
            Ed25519PrivateKey.generate(),
            comment,
            MLDSA65PrivateKey.generate() if hybrid else None,
        )
        public_path = path.with_name(path.name + ".pub")
        mldsa_path = path.with_name(path.name + MLDSA_SUFFIX)
        mldsa_public = path.with_name(mldsa_path.name + ".pub")
        targets = [path, public_path, *([mldsa_path, mldsa_public] if hybrid else [])]
        for target in targets:
            if os.path.lexists(target):
                raise NodeKeyError(f"{target}: exists; refusing to overwrite a key")
        private = key._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),  # an agent starts unattended; the file is 0600
        )
        _write_new(path, private, 0o600)
        _write_new(public_path, (key.public_key_line + "\n").encode(), 0o644)
        if key._mldsa is not None:
            _write_new(mldsa_path, mldsa.encode_private_key(key._mldsa, None), 0o600)
            _write_new(mldsa_public, f"{key.mldsa_public_key_line}\n".encode(), 0o644)
        return key

    @classmethod
    def load(cls, path: Path, passphrase: bytes | None = None) -> NodeKey:
        """The key at `path`: a regular file of this user's that nobody else may read, as ssh
        insists for a private key; and its ML-DSA-65 half at `path`.ml-dsa-65 when there is
        one (held to the same checks; with `passphrase` if it is encrypted). The comment is
        not kept (it lives in `path`.pub)."""
        data = _read_private(path)
        try:
            private = sshsig.load_private_key(data, passphrase)
        except sshsig.SignatureError as error:
            raise NodeKeyError(f"{path}: {error}") from None
        mldsa_path = path.with_name(path.name + MLDSA_SUFFIX)
        if not os.path.lexists(mldsa_path):
            return cls(private)
        half = _read_private(mldsa_path)
        try:
            pq = mldsa.load_private_key(half, passphrase if mldsa.is_encrypted(half) else None)
        except mldsa.MlDsaError as error:
            raise NodeKeyError(f"{mldsa_path}: {error}") from None
        return cls(private, mldsa_key=pq)

    @property
    def public_key_line(self) -> str:
        """`ssh-ed25519 AAAA... comment`: what `nodes/NAME.yaml` holds as `publicKey`."""
        return sshsig.public_key_line(self._private, self._comment)

    @property
    def fingerprint(self) -> str:
        return sshsig.fingerprint(self.public_key_line)

    @property
    def mldsa_public_key_line(self) -> str | None:
        """`ml-dsa-65 BASE64 comment` of the ML-DSA half, None for an Ed25519-only key."""
        if self._mldsa is None:
            return None
        return mldsa.public_key_line(self._mldsa, self._comment)

    def sign(self, kind: RecordKind, signer: str, body: Mapping[str, Json]) -> bytes:
        """The value to store: `body` as a record of `kind` by node `signer`, signed.

        ValueError when `signer` is not a node name, `body` is not exact JSON (a NaN, an
        integer past 2**53) or the value would exceed what `open_signed` reads: a caller's bug.
        """
        if not isinstance(signer, str) or NAME.fullmatch(signer) is None:
            raise ValueError(f"signer must be a node name, found {_show(signer)}")
        try:
            payload = rfc8785.dumps(
                {"format": FORMAT, "kind": kind.value, "signer": signer, "body": dict(body)}
            )
        except (ValueError, TypeError, RecursionError) as error:
            raise ValueError(
                f"the body of a {kind.value} record is not exact JSON: {error}"
            ) from None
        armored = sshsig.sign(payload, self._private, kind.namespace)
        value = payload + b"\n" + armored.encode("ascii")
        if self._mldsa is not None:
            value += mldsa.sign(payload, self._mldsa, kind.namespace).encode("ascii")
        if len(value) > MAX_RECORD_BYTES:
            raise ValueError(
                f"a {kind.value} record of {len(value)} bytes is over {MAX_RECORD_BYTES}"
            )
        return value


def open_signed(
    value: bytes,
    kind: RecordKind,
    keys: Mapping[str, str],
    mldsa_keys: Mapping[str, str] | None = None,
) -> Signed:
    """Open a stored value as a record of `kind`, signed by one of `keys` (admitted node name
    -> its public key line, from the applied commit) and, for a node of `mldsa_keys` (name ->
    its ML-DSA-65 public key line), also by that key: both halves must verify. ForgedRecord,
    and nothing else, otherwise.
    """
    what = f"{kind.value} record"
    if len(value) > MAX_RECORD_BYTES:
        raise RecordTooLarge(f"{what} refused: {len(value)} bytes, over {MAX_RECORD_BYTES}")
    payload, newline, signature = value.partition(b"\n")
    if not newline:
        raise MalformedRecord(f"{what} refused: no line feed between the record and its signature")
    envelope = _parse_envelope(payload, what)
    if envelope["kind"] != kind.value:
        raise WrongKind(
            f"{what} refused: the value holds a {_show(envelope['kind'])} record, expected "
            f"{kind.value!r}"
        )
    signer = NodeName(envelope["signer"])
    key_line = keys.get(signer)
    if key_line is None:
        raise UnknownSigner(
            f"{what} refused: signed in the name of {signer!r}, which is not one of the "
            f"{len(keys)} admitted nodes"
        )
    classic, ended, quantum_safe = signature.partition(_END.encode() + b"\n")
    if not quantum_safe.startswith(mldsa.BEGIN.encode()):
        classic, ended, quantum_safe = signature, b"", b""  # anything else after: not armor
    armored = _canonical_armor(classic + ended, what)
    mldsa_line = (mldsa_keys or {}).get(signer)
    envelope_text = (
        _canonical_armor(quantum_safe, what, mldsa.BEGIN, mldsa.END, "ML-DSA signature", "circle")
        if quantum_safe
        else None
    )
    try:
        sshsig.parse(armored)
        parsed = mldsa.parse(envelope_text) if envelope_text is not None else None
    except (sshsig.SignatureError, mldsa.MlDsaError) as error:
        raise MalformedRecord(f"{what} refused: {error}") from None
    if parsed is not None and mldsa_line is None:
        raise MalformedRecord(
            f"{what} refused: it carries an ML-DSA signature, and node {signer!r} has no ML-DSA "
            "key here"
        )
    try:
        sshsig.verify(payload, armored, key_line, kind.namespace)
    except sshsig.SignatureError as error:
        raise BadSignature(f"{what} refused: node {signer!r}: {error}") from None
    if mldsa_line is not None:
        if envelope_text is None:
            raise BadSignature(
                f"{what} refused: node {signer!r} signs hybrid, and the value has no ML-DSA "
                "signature"
            )
        try:
            mldsa.verify(payload, envelope_text, mldsa_line, kind.namespace)
        except mldsa.MlDsaError as error:
            raise BadSignature(f"{what} refused: node {signer!r}: {error}") from None
    return Signed(signer, envelope["body"], payload)


def _parse_envelope(payload: bytes, what: str) -> dict[str, Any]:
    """The envelope's fields, exact: canonical UTF-8 JSON with exactly the four fields."""
    try:
        # Decoding first: json.loads would also accept UTF-16 and UTF-32 bytes.
        document = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_refuse_duplicates,
            parse_constant=_refuse_constant,
        )
        canonical = rfc8785.dumps(document)
    except (ValueError, RecursionError) as error:  # UnicodeError and rfc8785's are ValueErrors
        raise MalformedRecord(f"{what} refused: not exact JSON ({_first_line(error)})") from None
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise MalformedRecord(
            f"{what} refused: expected an object of exactly the fields body, format, kind, signer"
        )
    if canonical != payload:
        raise MalformedRecord(f"{what} refused: not in canonical form (RFC 8785)")
    if document["format"] != FORMAT:
        raise MalformedRecord(
            f"{what} refused: format is {_show(document['format'])}, expected {FORMAT!r}"
        )
    if not isinstance(document["kind"], str):
        raise MalformedRecord(f"{what} refused: kind must be a string")
    signer = document["signer"]
    if not isinstance(signer, str) or NAME.fullmatch(signer) is None:
        raise MalformedRecord(f"{what} refused: signer {_show(signer)} is not a node name")
    if not isinstance(document["body"], dict):
        raise MalformedRecord(f"{what} refused: body must be a JSON object")
    return document


def _canonical_armor(
    signature: bytes,
    what: str,
    begin: str = _BEGIN,
    end: str = _END,
    kind: str = "signature",
    writer: str = "ssh-keygen",
) -> str:
    """The armored signature, refused unless spelled exactly as its writer spells it (ssh-keygen
    for the SSHSIG, `mldsa.sign` for the ML-DSA half): BEGIN, base64 in columns, END, a line
    feed."""
    try:
        armored = signature.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedRecord(f"{what} refused: the {kind} is not ASCII armor") from None
    lines = armored.split("\n")
    encoded = "".join(lines[1:-2])
    try:
        canonical = base64.b64encode(base64.b64decode(encoded, validate=True)).decode("ascii")
    except ValueError:
        canonical = None
    if canonical != encoded or lines != [begin, *_wrap(canonical or ""), end, ""]:
        raise MalformedRecord(
            f"{what} refused: the {kind} is not armored as {writer} writes it "
            f"({begin}, base64 in {_COLUMNS} columns, {end}, a final line feed)"
        )
    return armored


def _wrap(encoded: str) -> list[str]:
    return [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, item in pairs:
        if key in document:
            raise ValueError(f"duplicate key {_show(key)}")
        document[key] = item
    return document


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _show(value: object) -> str:
    """An attacker's value, shortened and escaped to fit a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()
    return text[0][:120] if text else type(error).__name__


# --- key files -----------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        write_atomically(path, data, mode=mode, exclusive=True)
    except FileExistsError:
        raise NodeKeyError(f"{path}: exists; refusing to overwrite a key") from None
    except OSError as error:
        raise NodeKeyError(f"{path}: cannot write the node key: {error.strerror}") from None


def _read_private(path: Path) -> bytes:
    data = read_private(path, MAX_KEY_BYTES, "node key", NodeKeyError)
    if len(data) > MAX_KEY_BYTES:
        raise NodeKeyError(f"{path}: over {MAX_KEY_BYTES} bytes; not an OpenSSH Ed25519 key")
    return data
