"""Recipients: an object's data key wrapped for named holders of an X-Wing key, beside the
storage key. Pure: bytes in, bytes or a refusal out.

An entry (`recipients` in the versioned part of the manifest, sorted by name):

    {"name": N, "kem": "x-wing", "kemKey": "sha256:HEX" of N's 1216-byte X-Wing key,
     "encapsulation": base64 (1120 bytes), "wrappedKey": base64 (48 bytes)}

    (ss, encapsulation) = X-Wing.Encapsulate(N's key)
    wrappedKey          = AES-256-GCM(ss, nonce = 12 zero bytes, data key,
                                      aad = RFC 8785 JSON {"format": "qss-recipient/1",
                                      "kemKey": ..., "objectId": ..., "recipient": N})

Every shared secret wraps exactly one key, so the fixed nonce is never reused. A changed byte
of the encapsulation or wrapped key, or an entry moved to another object or renamed to
another recipient, fails the tag (`EntryBroken`). Entries are not covered by the object id, so
that they can be added and removed later (a new manifest version): whoever can write a
manifest can also write a well-formed entry of a key of their own choosing for a recipient's
public key. The content's `keyCommitment` (HMAC-SHA256 of the object nonce under the data
key, covered by the object id) refuses that key before any share is fetched (`KeyMismatch`),
so an entry yields the object's data key or nothing, and every reader, by storage key or by
entry, reads the same plaintext (AES-GCM alone does not commit to its key).

The KEM itself is the caller's: qss is the bottom layer and imports nothing of `reconciler`,
which holds the one X-Wing (`reconciler.secrets.xwing`); its `encapsulate` and a
decapsulation bound to a private key are handed in. Any refusal it raises over hostile bytes
is an `EntryBroken` here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qss.errors import (
    EntryBroken,
    InvalidParameters,
    KeyMismatch,
    ManifestError,
    NotARecipient,
    WrongRecipientKey,
)

FORMAT = "qss-recipient/1"
KEM = "x-wing"
PUBLIC_KEY_BYTES = 1216
ENCAPSULATION_BYTES = 1120
SHARED_SECRET_BYTES = 32
DATA_KEY_BYTES = 32
WRAPPED_BYTES = DATA_KEY_BYTES + 16
COMMITMENT_BYTES = 32
MAX_RECIPIENTS = 1024
_WRAP_NONCE = bytes(12)
_COMMITMENT = b"qss-key-commitment/1\0"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_KEM_KEY = re.compile(r"sha256:[0-9a-f]{64}")

Encapsulate = Callable[[bytes], tuple[bytes, bytes]]  # public key -> (shared secret, ciphertext)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom to share with: a name (a node or a member) and their X-Wing public key."""

    name: str
    public_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_recipient_name(self.name)
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise InvalidParameters(
                f"recipient {self.name}: an X-Wing public key is {PUBLIC_KEY_BYTES} bytes, "
                f"found {len(self.public_key)}"
            )

    @property
    def kem_key(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True, slots=True)
class RecipientKey:
    """Who opens: a recipient's name, public key and decapsulation (bound to the private key,
    which never enters this module)."""

    name: str
    public_key: bytes = field(repr=False)
    decapsulate: Callable[[bytes], bytes] = field(repr=False, compare=False)

    @property
    def kem_key(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True, slots=True)
class Entry:
    """The data key of one object wrapped for one recipient."""

    name: str
    kem_key: str
    encapsulation: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kem": KEM,
            "kemKey": self.kem_key,
            "encapsulation": base64.b64encode(self.encapsulation).decode("ascii"),
            "wrappedKey": base64.b64encode(self.wrapped_key).decode("ascii"),
        }


def check_recipient_name(name: object) -> str:
    """A recipient's name: a node name or a member id (1-128 of letters, digits, `._@+-`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParameters(
            f"a recipient name is 1-128 letters, digits or ._@+- (starting with a letter or "
            f"digit), got {repr(name)[:40]}"
        )
    return name


def fingerprint(public_key: bytes) -> str:
    """`sha256:HEX` of a raw X-Wing key, as `kemKey` names it (as sealed secrets do)."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def key_commitment(data_key: bytes, object_nonce: bytes) -> bytes:
    """HMAC-SHA256(data key, "qss-key-commitment/1\\0" || object nonce): names the data key
    without revealing it, and no other key gives the same value."""
    if len(data_key) != DATA_KEY_BYTES:
        raise InvalidParameters(f"a data key is {DATA_KEY_BYTES} bytes")
    return hmac.new(data_key, _COMMITMENT + object_nonce, hashlib.sha256).digest()


def check_commitment(commitment: bytes, data_key: bytes, object_nonce: bytes, how: str) -> None:
    """KeyMismatch unless `data_key` is the key the content commits to; `how` says where the
    key came from ("the entry for gpu-1")."""
    if not hmac.compare_digest(key_commitment(data_key, object_nonce), commitment):
        raise KeyMismatch(
            f"{how} opens to a key that is not this object's data key (its keyCommitment): "
            "forged; nothing was read"
        )


def _aad(object_id: str, name: str, kem_key: str) -> bytes:
    return rfc8785.dumps(
        {"format": FORMAT, "objectId": object_id, "recipient": name, "kemKey": kem_key}
    )


def seal(object_id: str, data_key: bytes, recipient: Recipient, encapsulate: Encapsulate) -> Entry:
    """An entry of `data_key` of `object_id` for `recipient`. InvalidParameters for a key the
    KEM refuses (naming the recipient)."""
    if len(data_key) != DATA_KEY_BYTES:
        raise InvalidParameters(f"a data key is {DATA_KEY_BYTES} bytes")
    try:
        shared, encapsulation = encapsulate(recipient.public_key)
    except Exception as error:  # noqa: BLE001 - the caller's KEM: its refusal of the key
        raise InvalidParameters(f"recipient {recipient.name}: {error}") from None
    if len(shared) != SHARED_SECRET_BYTES or len(encapsulation) != ENCAPSULATION_BYTES:
        raise InvalidParameters(f"recipient {recipient.name}: the KEM is not X-Wing")
    wrapped = AESGCM(shared).encrypt(
        _WRAP_NONCE, data_key, _aad(object_id, recipient.name, recipient.kem_key)
    )
    return Entry(recipient.name, recipient.kem_key, encapsulation, wrapped)


def open_entry(object_id: str, entries: Sequence[Entry], key: RecipientKey) -> bytes:
    """The data key that `key`'s entry among `entries` of `object_id` wraps. NotARecipient,
    WrongRecipientKey, EntryBroken. The caller checks it against the content's commitment."""
    entry = next((e for e in entries if e.name == key.name), None)
    if entry is None:
        shared_with = ", ".join(e.name for e in entries) or "no one"
        raise NotARecipient(
            f"object {object_id[:16]} is not shared with {key.name} (shared with "
            f"{shared_with}): `circle qss share` it with the storage key"
        )
    if entry.kem_key != key.kem_key:
        raise WrongRecipientKey(
            f"object {object_id[:16]}: the entry for {key.name} is wrapped for KEM key "
            f"{entry.kem_key}, and the key given is {key.kem_key} (share it again)"
        )
    broken = EntryBroken(
        f"object {object_id[:16]}: the entry for {key.name} does not authenticate: its "
        "encapsulation or wrapped key changed, or it was moved from another object or "
        "recipient; nothing was read"
    )
    try:
        shared = key.decapsulate(entry.encapsulation)
    except Exception:  # noqa: BLE001 - the caller's KEM refusing hostile bytes
        raise broken from None
    try:
        return AESGCM(shared).decrypt(
            _WRAP_NONCE, entry.wrapped_key, _aad(object_id, entry.name, entry.kem_key)
        )
    except (InvalidTag, ValueError):
        raise broken from None


def merged(entries: Iterable[Entry], added: Iterable[Entry]) -> tuple[Entry, ...]:
    """`entries` with `added` (an added name replaces the entry of that name), by name."""
    by_name = {entry.name: entry for entry in entries}
    by_name.update((entry.name, entry) for entry in added)
    if len(by_name) > MAX_RECIPIENTS:
        raise InvalidParameters(f"an object is shared with at most {MAX_RECIPIENTS} recipients")
    return tuple(by_name[name] for name in sorted(by_name))


def parse_entries(value: Any) -> tuple[Entry, ...]:
    """The `recipients` of a manifest document; ManifestError for anything else."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_RECIPIENTS:
        raise ManifestError(f"recipients must list 1-{MAX_RECIPIENTS} entries")
    entries = []
    for index, item in enumerate(value):
        where = f"recipients[{index}]"
        if not isinstance(item, dict) or set(item) != {
            "name",
            "kem",
            "kemKey",
            "encapsulation",
            "wrappedKey",
        }:
            raise ManifestError(
                f"{where}: expected name, kem, kemKey, encapsulation and wrappedKey"
            )
        try:
            name = check_recipient_name(item["name"])
        except InvalidParameters as error:
            raise ManifestError(f"{where}: {error}") from None
        if item["kem"] != KEM:
            raise ManifestError(f"{where}: unsupported KEM {str(item['kem'])[:20]!r} ({KEM})")
        if not isinstance(item["kemKey"], str) or not _KEM_KEY.fullmatch(item["kemKey"]):
            raise ManifestError(f"{where}: kemKey must be sha256: and 64 lowercase hex digits")
        encapsulation = _base64(
            item["encapsulation"], ENCAPSULATION_BYTES, f"{where}.encapsulation"
        )
        wrapped = _base64(item["wrappedKey"], WRAPPED_BYTES, f"{where}.wrappedKey")
        entries.append(Entry(name, item["kemKey"], encapsulation, wrapped))
    names = [entry.name for entry in entries]
    if names != sorted(set(names)):
        raise ManifestError("recipients must be sorted by name, each name once")
    return tuple(entries)


def _base64(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * size:
        raise ManifestError(f"{what} must be {size} bytes of base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ManifestError(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise ManifestError(f"{what} must be {size} bytes of base64, found {len(raw)}")
    return raw
