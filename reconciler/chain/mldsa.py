"""ML-DSA-65 (FIPS 204) approvals: the post-quantum signature beside SSHSIG. Pure: bytes and
strings in, strings, keys or a refusal out; no files, no clock. The primitive is
`cryptography`'s (OpenSSL's); only the envelope around it is ours.

An approval signature is the ML-DSA-65 signature (pure ML-DSA, FIPS 204 algorithm 2) of the
exact statement bytes, with the approval namespace `circle-approval-v1` as its context string,
so no signature made for another purpose (another context) verifies as an approval. Armored:

    -----BEGIN CIRCLE ML-DSA SIGNATURE-----
    base64 of the blob below, 70 columns
    -----END CIRCLE ML-DSA SIGNATURE-----

    byte[8]  "CIRCLEPQ"
    uint32   1                                   version
    string   string "ml-dsa-65" || string KEY    the signer's key blob (KEY: 1952 bytes)
    string   CONTEXT                             the namespace it was made for (1-255 bytes)
    string   SIGNATURE                           3309 bytes

(`string` is SSH's: a uint32 big-endian length, then the bytes.) The envelope's context only
names what the signer meant; verification always uses the approval namespace.

A private key is the 32-byte FIPS 204 seed: PKCS#8 PEM (`BEGIN PRIVATE KEY`, as OpenSSL 3.5
writes it) unencrypted, or, with a passphrase, scrypt (N 2^17, r 8, p 1) + AES-256-GCM:

    -----BEGIN CIRCLE ENCRYPTED ML-DSA-65 PRIVATE KEY-----
    base64 of: byte[8] "CIRCLEPK", uint32 1, string "ml-dsa-65", string "scrypt",
               uint32 log2 N, uint32 r, uint32 p, string SALT (16), string "aes-256-gcm",
               string NONCE (12), string AES-256-GCM(seed, aad = every byte before it)
    -----END CIRCLE ENCRYPTED ML-DSA-65 PRIVATE KEY-----

Errors: `MlDsaError(CheckFailed)`, saying what was found and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from reconciler.desired.model.types import (
    MLDSA65,
    MLDSA65_PUBLIC_KEY_BYTES,
    mldsa65_key_blob,
)
from reconciler.errors import CheckFailed

SIGNATURE_BYTES = 3309  # FIPS 204, table 2: ML-DSA-65
BEGIN = "-----BEGIN CIRCLE ML-DSA SIGNATURE-----"
END = "-----END CIRCLE ML-DSA SIGNATURE-----"
MAX_ARMORED_BYTES = 16 << 10  # an envelope is about 7.2 KiB armored
_MAGIC = b"CIRCLEPQ"
_VERSION = 1
_COLUMNS = 70
_KEY_BEGIN = "-----BEGIN CIRCLE ENCRYPTED ML-DSA-65 PRIVATE KEY-----"
_KEY_END = "-----END CIRCLE ENCRYPTED ML-DSA-65 PRIVATE KEY-----"
_KEY_MAGIC = b"CIRCLEPK"
_SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P = 17, 8, 1  # 128 MiB and about half a second
_SCRYPT_LOG_N_RANGE = range(14, 21)  # what a key file may ask for: no more than 1 GiB
_SEED_BYTES = 32


class MlDsaError(CheckFailed):
    """An ML-DSA signature, envelope or key that was refused."""


@dataclass(frozen=True, slots=True)
class MlDsaSignature:
    """The fields of a decoded envelope (its structure checked, not its validity)."""

    public_key: bytes  # the signer's key blob (`mldsa65_key_blob`): what names the signer
    context: str
    signature: bytes

    @property
    def raw_key(self) -> bytes:
        return self.public_key[-MLDSA65_PUBLIC_KEY_BYTES:]

    @property
    def public_key_line(self) -> str:
        return f"{MLDSA65} {base64.b64encode(self.raw_key).decode('ascii')}"


def is_envelope(text: str) -> bool:
    """Whether `text` claims to be an ML-DSA envelope (it may still be refused by `parse`)."""
    return text.lstrip().startswith(BEGIN)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sign(message: bytes, private_key: MLDSA65PrivateKey, context: str) -> str:
    """The armored envelope of `private_key`'s ML-DSA-65 signature of `message` for `context`."""
    context_bytes = context.encode()
    if not 1 <= len(context_bytes) <= 255:
        raise MlDsaError("an ML-DSA context must be 1 to 255 bytes")
    raw_key = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    blob = b"".join(
        [
            _MAGIC,
            struct.pack(">I", _VERSION),
            _string(mldsa65_key_blob(f"{MLDSA65} {base64.b64encode(raw_key).decode()}")),
            _string(context_bytes),
            _string(private_key.sign(message, context_bytes)),
        ]
    )
    return _armor(blob, BEGIN, END)


def _armor(blob: bytes, begin: str, end: str) -> str:
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    return "\n".join([begin, *lines, end]) + "\n"


def _dearmor(armored: str, begin: str, end: str, what: str) -> bytes:
    if len(armored) > MAX_ARMORED_BYTES:
        raise MlDsaError(f"{what} of {len(armored)} characters, over {MAX_ARMORED_BYTES}")
    body = _plain_body(armored, begin, end)
    if body is not None:
        try:  # strict: exactly what b64decode(validate=True) accepts, without its regex pass
            return binascii.a2b_base64(body.replace("\n", ""), strict_mode=True)
        except ValueError:  # another character than base64's and newlines: read line by line
            pass
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != begin or lines[-1] != end:
        raise MlDsaError(f"bad armor: expected {begin} ... {end}")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise MlDsaError(f"bad armor: the {what} is not valid base64") from None


def _plain_body(armored: str, begin: str, end: str) -> str | None:
    """The text between the armor lines when `armored` is laid out as `_armor` writes it
    (BEGIN, newline, ..., newline, END, maybe a newline), else None. If that text holds only
    base64 and newlines, its lines need no stripping: it is decoded in one pass (a chain walk
    reads every envelope; copying its hundred lines one by one was most of the cost)."""
    tail = len(end) + (2 if armored.endswith("\n") else 1)
    if (
        len(armored) < len(begin) + 1 + tail
        or not armored.startswith(begin + "\n")
        or armored[-tail:].rstrip("\n") != "\n" + end
    ):
        return None
    return armored[len(begin) + 1 : len(armored) - tail]


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.offset, self.what = data, 0, what

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise MlDsaError(f"truncated {self.what}")
        found = self.data[self.offset : self.offset + count]
        self.offset += count
        return found

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def end(self) -> None:
        if self.offset != len(self.data):
            raise MlDsaError(f"{len(self.data) - self.offset} trailing bytes after the {self.what}")


_KEY_BLOB_BYTES = 4 + len(MLDSA65) + 4 + MLDSA65_PUBLIC_KEY_BYTES
_FIXED_HEAD = _MAGIC + struct.pack(">II", _VERSION, _KEY_BLOB_BYTES)
_KEY_BLOB_HEAD = (
    struct.pack(">I", len(MLDSA65)) + MLDSA65.encode() + struct.pack(">I", MLDSA65_PUBLIC_KEY_BYTES)
)
_SIGNATURE_HEAD = struct.pack(">I", SIGNATURE_BYTES)


def parse(armored: str) -> MlDsaSignature:
    """Decode an envelope; check its structure and sizes, not its validity."""
    blob = _dearmor(armored, BEGIN, END, "ML-DSA signature")
    return _parse_fixed(blob) or _parse_blob(blob)


def _parse_fixed(blob: bytes) -> MlDsaSignature | None:
    """The envelope's fixed layout, read without a field-by-field walk (a chain walk parses
    every approval); None for anything else, which `_parse_blob` explains."""
    start = len(_FIXED_HEAD)
    key_end = start + _KEY_BLOB_BYTES
    if (
        not blob.startswith(_FIXED_HEAD)
        or blob[start : start + len(_KEY_BLOB_HEAD)] != _KEY_BLOB_HEAD
    ):
        return None
    length = int.from_bytes(blob[key_end : key_end + 4], "big")
    context_end = key_end + 4 + length
    if (
        not 1 <= length <= 255
        or blob[context_end : context_end + 4] != _SIGNATURE_HEAD
        or len(blob) != context_end + 4 + SIGNATURE_BYTES
    ):
        return None
    context = blob[key_end + 4 : context_end].decode("utf-8", "replace")
    return MlDsaSignature(blob[start:key_end], context, blob[context_end + 4 :])


def _parse_blob(blob: bytes) -> MlDsaSignature:
    reader = _Reader(blob, "ML-DSA signature")
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise MlDsaError("not an ML-DSA approval envelope (bad magic)")
    version = reader.uint32()
    if version != _VERSION:
        raise MlDsaError(f"ML-DSA envelope version {version}, expected {_VERSION}")
    public_key = reader.string()
    key = _Reader(public_key, "ML-DSA key blob")
    if key.string() != MLDSA65.encode():
        raise MlDsaError(f"the envelope's key is not an {MLDSA65} key")
    if len(key.string()) != MLDSA65_PUBLIC_KEY_BYTES:
        raise MlDsaError(f"the envelope's key is not {MLDSA65_PUBLIC_KEY_BYTES} bytes")
    key.end()
    context = reader.string()
    if not 1 <= len(context) <= 255:
        raise MlDsaError("the envelope's context must be 1 to 255 bytes")
    signature = reader.string()
    if len(signature) != SIGNATURE_BYTES:
        raise MlDsaError(
            f"the envelope holds a {len(signature)}-byte signature, expected {SIGNATURE_BYTES}"
        )
    reader.end()
    return MlDsaSignature(public_key, context.decode("utf-8", "replace"), signature)


@functools.lru_cache(maxsize=1024)
def _public_key(raw: bytes) -> MLDSA65PublicKey:
    """The key object of a raw public key; a chain reuses a few keys."""
    try:
        return MLDSA65PublicKey.from_public_bytes(raw)
    except ValueError as error:
        raise MlDsaError(f"not an {MLDSA65} public key: {error}") from None


def verify_parsed(message: bytes, signature: MlDsaSignature, context: str) -> None:
    """Refuse (MlDsaError) unless `signature` is its key's signature of `message` for
    `context`: an envelope that names another context is refused before the maths."""
    if signature.context != context:
        raise MlDsaError(
            f"ML-DSA signature made for namespace {signature.context[:64]!r}, not {context!r}"
        )
    try:
        _public_key(signature.raw_key).verify(signature.signature, message, context.encode())
    except InvalidSignature:
        raise MlDsaError(
            f"ML-DSA signature does not verify for {context!r} with the key it names"
        ) from None


def verify(message: bytes, armored: str, public_key_line: str, context: str) -> None:
    """`verify_parsed` for the key of `public_key_line` only."""
    signature = parse(armored)
    try:
        blob = mldsa65_key_blob(public_key_line)
    except ValueError as error:
        raise MlDsaError(str(error)) from None
    if signature.public_key != blob:
        raise MlDsaError("the ML-DSA signature is by another key")
    verify_parsed(message, signature, context)


# -- keys ----------------------------------------------------------------------------------------


def public_key_line(private_key: MLDSA65PrivateKey, comment: str = "") -> str:
    """The public key line `ml-dsa-65 BASE64 [comment]` of `private_key`."""
    if "\n" in comment or "\r" in comment:
        raise MlDsaError("public key comment must be a single line")
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    line = f"{MLDSA65} {base64.b64encode(raw).decode('ascii')}"
    return f"{line} {comment}" if comment else line


def is_private_key(data: bytes) -> bool:
    """Whether `data` looks like an ML-DSA private key file (not an SSH key): PKCS#8 or ours."""
    head = data.lstrip()[:64]
    return head.startswith(
        (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
         _KEY_BEGIN.encode())
    )  # fmt: skip


def is_encrypted(data: bytes) -> bool:
    """Whether the private key file `data` needs a passphrase."""
    head = data.lstrip()[:64]
    return head.startswith((_KEY_BEGIN.encode(), b"-----BEGIN ENCRYPTED PRIVATE KEY-----"))


def _scrypt(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=p).derive(passphrase)


def encode_private_key(private_key: MLDSA65PrivateKey, passphrase: bytes | None) -> bytes:
    """The private key file: PKCS#8 PEM, or with `passphrase` our scrypt + AES-256-GCM armor."""
    if not passphrase:
        return private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = b"".join(
        [
            _KEY_MAGIC,
            struct.pack(">I", _VERSION),
            _string(MLDSA65.encode()),
            _string(b"scrypt"),
            struct.pack(">III", _SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P),
            _string(salt),
            _string(b"aes-256-gcm"),
            _string(nonce),
        ]
    )
    key = _scrypt(passphrase, salt, _SCRYPT_LOG_N, _SCRYPT_R, _SCRYPT_P)
    sealed = AESGCM(key).encrypt(nonce, private_key.private_bytes_raw(), header)
    return _armor(header + _string(sealed), _KEY_BEGIN, _KEY_END).encode()


def load_private_key(data: bytes, passphrase: bytes | None) -> MLDSA65PrivateKey:
    """An ML-DSA-65 private key file (either form `encode_private_key` writes; an encrypted
    PKCS#8 file of OpenSSL's is read too)."""
    text = data.decode("ascii", "replace")
    if text.lstrip().startswith(_KEY_BEGIN):
        return _decrypt(text, passphrase)
    try:
        key = serialization.load_pem_private_key(data, passphrase or None)
    except TypeError as error:  # a passphrase missing, or given for a plain key
        raise MlDsaError(f"cannot load the ML-DSA private key: {error}") from None
    except ValueError as error:
        raise MlDsaError(
            f"cannot load the ML-DSA private key (wrong passphrase or not a key): {error}"
        ) from None
    if not isinstance(key, MLDSA65PrivateKey):
        raise MlDsaError(f"the private key is {type(key).__name__}, expected an {MLDSA65} key")
    return key


def _decrypt(armored: str, passphrase: bytes | None) -> MLDSA65PrivateKey:
    if not passphrase:
        raise MlDsaError("the ML-DSA private key is encrypted: give its passphrase")
    blob = _dearmor(armored, _KEY_BEGIN, _KEY_END, "private key")
    reader = _Reader(blob, "encrypted private key")
    if reader.take(len(_KEY_MAGIC)) != _KEY_MAGIC or reader.uint32() != _VERSION:
        raise MlDsaError("not a version 1 encrypted ML-DSA key")
    if reader.string() != MLDSA65.encode() or reader.string() != b"scrypt":
        raise MlDsaError(f"expected an {MLDSA65} key sealed with scrypt")
    log_n, r, p = reader.uint32(), reader.uint32(), reader.uint32()
    if log_n not in _SCRYPT_LOG_N_RANGE or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise MlDsaError(f"scrypt parameters out of range (log2 N {log_n}, r {r}, p {p})")
    salt = reader.string()
    if reader.string() != b"aes-256-gcm":
        raise MlDsaError("expected a key sealed with aes-256-gcm")
    nonce = reader.string()
    if len(salt) != 16 or len(nonce) != 12:
        raise MlDsaError("bad salt or nonce length")
    header = blob[: reader.offset]
    sealed = reader.string()
    reader.end()
    try:
        seed = AESGCM(_scrypt(passphrase, salt, log_n, r, p)).decrypt(nonce, sealed, header)
    except InvalidTag:
        raise MlDsaError(
            "cannot decrypt the ML-DSA private key: wrong passphrase, or a damaged file"
        ) from None
    if len(seed) != _SEED_BYTES:
        raise MlDsaError("the decrypted ML-DSA key is not a 32-byte seed")
    return MLDSA65PrivateKey.from_seed_bytes(seed)
