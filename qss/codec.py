"""The object codec: segments, AES-256-GCM, erasure coding and share hashes. Pure.

    plaintext ──split──> segments of `segment_size` (the last shorter; an empty object is one
    empty segment, so even emptiness is authenticated)
    segment i ──AES-256-GCM(data key, nonce = prefix ‖ i, AAD = object nonce, i, count, size)──>
    ciphertext ──zfec k-of-n──> n blocks ──sha256──> the share hashes in the manifest

The AAD binds every segment to its object, its place and the object's length, so reordered,
truncated or spliced segments fail authentication even if every share hash were forged.
Randomness (data key, nonces) comes from the caller: this module has no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from qss.errors import DecryptionError, IntegrityError, InvalidParameters
from qss.fec import Fec, block_size, check_parameters

KEY_BYTES = 32
TAG_BYTES = 16
OBJECT_NONCE_BYTES = 16
NONCE_PREFIX_BYTES = 4
DEFAULT_SEGMENT = 4 * 1024 * 1024
MIN_SEGMENT = 4 * 1024
MAX_SEGMENT = 64 * 1024 * 1024
_AAD = b"qss-segment/1\0"


@dataclass(frozen=True, slots=True)
class ObjectLayout:
    """Everything about an object's shape that encoding and decoding need (no secrets)."""

    size: int
    segment_size: int
    k: int
    n: int
    object_nonce: bytes
    nonce_prefix: bytes

    def __post_init__(self) -> None:
        check_parameters(self.k, self.n)
        if self.size < 0:
            raise InvalidParameters(f"object size must be 0 or more, got {self.size}")
        if not MIN_SEGMENT <= self.segment_size <= MAX_SEGMENT:
            raise InvalidParameters(
                f"segment size must lie in [{MIN_SEGMENT}, {MAX_SEGMENT}], got {self.segment_size}"
            )
        if len(self.object_nonce) != OBJECT_NONCE_BYTES:
            raise InvalidParameters(f"object nonce must be {OBJECT_NONCE_BYTES} bytes")
        if len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise InvalidParameters(f"nonce prefix must be {NONCE_PREFIX_BYTES} bytes")

    @property
    def segment_count(self) -> int:
        return max(1, -(-self.size // self.segment_size))

    def plain_length(self, index: int) -> int:
        self._check_index(index)
        if index < self.segment_count - 1:
            return self.segment_size
        return self.size - self.segment_size * (self.segment_count - 1)

    def cipher_length(self, index: int) -> int:
        return self.plain_length(index) + TAG_BYTES

    def block_length(self, index: int) -> int:
        return block_size(self.cipher_length(index), self.k)

    def aad(self, index: int) -> bytes:
        self._check_index(index)
        return (
            _AAD
            + self.object_nonce
            + struct.pack(">QQQQ", index, self.segment_count, self.size, self.segment_size)
        )

    def nonce(self, index: int) -> bytes:
        self._check_index(index)
        return self.nonce_prefix + struct.pack(">Q", index)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.segment_count:
            raise InvalidParameters(f"segment {index} is outside 0..{self.segment_count - 1}")


def share_hash(block: bytes) -> str:
    return hashlib.sha256(block).hexdigest()


@dataclass(frozen=True, slots=True)
class EncodedSegment:
    index: int
    blocks: tuple[bytes, ...]  # all n, by share number
    hashes: tuple[str, ...]


class SegmentCodec:
    """Encrypt + encode and decode + decrypt the segments of one object."""

    def __init__(self, layout: ObjectLayout, data_key: bytes | None) -> None:
        self.layout = layout
        self.fec = Fec(layout.k, layout.n)
        if data_key is not None and len(data_key) != KEY_BYTES:
            raise InvalidParameters(f"data key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(data_key) if data_key is not None else None

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise DecryptionError("this operation needs the object's data key")
        return self._aead

    def encode(self, index: int, plaintext: bytes) -> EncodedSegment:
        layout = self.layout
        if len(plaintext) != layout.plain_length(index):
            raise InvalidParameters(
                f"segment {index} must hold {layout.plain_length(index)} bytes, "
                f"got {len(plaintext)}"
            )
        ciphertext = self._cipher().encrypt(layout.nonce(index), plaintext, layout.aad(index))
        blocks = tuple(self.fec.encode(ciphertext))
        return EncodedSegment(index, blocks, tuple(share_hash(block) for block in blocks))

    def decode(self, index: int, blocks: Mapping[int, bytes]) -> bytes:
        """The plaintext of segment `index` from k or more blocks whose hashes were checked."""
        layout = self.layout
        lengths = {len(block) for block in blocks.values()}
        if lengths != {layout.block_length(index)}:
            raise IntegrityError(
                f"segment {index}: blocks of {sorted(lengths)} bytes, expected "
                f"{layout.block_length(index)}"
            )
        ciphertext = self.fec.decode(blocks, layout.cipher_length(index))
        try:
            return self._cipher().decrypt(layout.nonce(index), ciphertext, layout.aad(index))
        except InvalidTag:
            raise DecryptionError(
                f"segment {index} fails authentication: wrong data key, or the segment was "
                "tampered with, reordered or taken from another object"
            ) from None

    def rebuild(self, index: int, blocks: Mapping[int, bytes], wanted: list[int]) -> list[bytes]:
        """Re-create blocks `wanted` from k or more verified blocks, without the data key.

        zfec is deterministic, so a rebuilt block equals the lost one byte for byte and its
        hash is the one the manifest already holds.
        """
        lengths = {len(block) for block in blocks.values()}
        if lengths != {self.layout.block_length(index)}:
            raise IntegrityError(f"segment {index}: blocks of unexpected size {sorted(lengths)}")
        primary = self.fec.decode_primary(blocks)
        return self.fec.encode_primary(primary, wanted)


def wrap_key(storage_key: bytes, data_key: bytes) -> bytes:
    """AES-256-KW (RFC 3394) of the data key under the circle's storage key."""
    if len(storage_key) != KEY_BYTES or len(data_key) != KEY_BYTES:
        raise InvalidParameters(f"keys must be {KEY_BYTES} bytes")
    return aes_key_wrap(storage_key, data_key)


def unwrap_key(storage_key: bytes, wrapped: bytes) -> bytes:
    if len(storage_key) != KEY_BYTES:
        raise InvalidParameters(f"the storage key must be {KEY_BYTES} bytes")
    try:
        data_key = aes_key_unwrap(storage_key, wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionError(
            "the storage key does not unwrap this object's data key (wrong key?)"
        ) from None
    if len(data_key) != KEY_BYTES:
        raise DecryptionError("the unwrapped data key has the wrong length")
    return data_key


def key_id(storage_key: bytes) -> str:
    """A public name for a storage key: it says which key, and reveals nothing of it."""
    return hashlib.sha256(b"qss-key-id/1\0" + storage_key).hexdigest()[:16]
