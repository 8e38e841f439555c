"""SSH signatures (OpenSSH PROTOCOL.sshsig) for Ed25519 keys: byte-compatible with
`ssh-keygen -Y sign` / `-Y verify`, so owners and builders sign with the SSH keys they have.

Pure functions: bytes and strings in, strings or exceptions out; no files, no clock. Every
signature is bound to a namespace (`circle-provenance-v1`, `circle-approval-v1`, ...) so that a
signature made for one purpose can never be replayed as another.

Errors: `SignatureError(BuildError)`, with a message that says what was found and expected.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
)

from builders import BuildError

__all__ = [
    "HASH_ALGORITHMS",
    "SignatureError",
    "SshSignature",
    "fingerprint",
    "load_private_key",
    "parse",
    "public_key_line",
    "sign",
    "verify",
    "verify_parsed",
]

_MAGIC = b"SSHSIG"
_VERSION = 1
_KEY_TYPE = "ssh-ed25519"
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"
# ssh-keygen wraps the armored base64 at 70 columns (sshbuf_dtob64 in sshsig.c).
_COLUMNS = 70
HASH_ALGORITHMS = frozenset({"sha256", "sha512"})


class SignatureError(BuildError):
    """An SSH signature, key or namespace was refused."""


@dataclass(frozen=True)
class SshSignature:
    """The fields of a decoded SSHSIG blob (nothing verified yet but its structure)."""

    public_key: bytes  # the SSH wire blob of the signer's key
    namespace: str
    hash_algorithm: str
    signature: bytes  # the raw 64-byte Ed25519 signature

    @property
    def public_key_line(self) -> str:
        """The signer's key as an OpenSSH public key line (no comment)."""
        return f"{_KEY_TYPE} {base64.b64encode(self.public_key).decode('ascii')}"


def sign(
    message: bytes, private_key: Ed25519PrivateKey, namespace: str, hash_alg: str = "sha512"
) -> str:
    """Sign `message` for `namespace`; return the armored text `ssh-keygen -Y sign` writes."""
    _check_namespace(namespace)
    if hash_alg not in HASH_ALGORITHMS:
        raise SignatureError(f"unsupported hash algorithm {hash_alg!r}, expected sha256 or sha512")
    key_blob = _public_blob(private_key.public_key())
    raw = private_key.sign(_signed_data(message, namespace, hash_alg))
    blob = b"".join(
        [
            _MAGIC,
            struct.pack(">I", _VERSION),
            _string(key_blob),
            _string(namespace.encode()),
            _string(b""),
            _string(hash_alg.encode()),
            _string(_string(_KEY_TYPE.encode()) + _string(raw)),
        ]
    )
    encoded = base64.b64encode(blob).decode("ascii")
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def parse(armored: str) -> SshSignature:
    """Decode an armored SSH signature; check its structure, not its validity."""
    blob = _dearmor(armored)
    return _parse_ed25519(blob) or _parse_blob(blob)


_TYPE_FIELD = struct.pack(">I", len(_KEY_TYPE)) + _KEY_TYPE.encode()
_KEY_HEAD = _MAGIC + struct.pack(">II", _VERSION, 51) + _TYPE_FIELD + struct.pack(">I", 32)
_SIG_HEAD = struct.pack(">I", 83) + _TYPE_FIELD + struct.pack(">I", 64)


def _parse_ed25519(blob: bytes) -> SshSignature | None:
    """The fixed layout of an Ed25519 SSHSIG, read without a field-by-field walk (a chain walk
    parses every approval); None for anything else, which `_parse_blob` explains."""
    if not blob.startswith(_KEY_HEAD) or len(blob) < 65:
        return None
    fields: list[bytes] = []
    offset = 65  # magic, version, the 51-byte key blob
    for _ in range(3):  # namespace, reserved, hash algorithm
        length = int.from_bytes(blob[offset : offset + 4], "big")
        fields.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if len(blob) != offset + 87 or blob[offset : offset + 23] != _SIG_HEAD:
        return None
    try:
        namespace, hash_algorithm = fields[0].decode(), fields[2].decode()
    except UnicodeDecodeError:
        return None
    return SshSignature(blob[14:65], namespace, hash_algorithm, blob[offset + 23 :])


def _parse_blob(blob: bytes) -> SshSignature:
    if blob[:6] != _MAGIC:
        raise SignatureError(f"not an SSH signature: magic is {blob[:6]!r}, expected b'SSHSIG'")
    reader = _Reader(blob, 6)
    version = reader.uint32()
    if version != _VERSION:
        raise SignatureError(f"SSH signature version {version}, expected {_VERSION}")
    key_blob = reader.string()
    namespace = reader.text("namespace")
    reader.string()  # reserved: ignored, as ssh-keygen does
    hash_algorithm = reader.text("hash algorithm")
    sig_blob = reader.string()
    reader.end("SSH signature")

    key_reader = _Reader(key_blob, 0)
    key_type = key_reader.text("key type")
    if key_type != _KEY_TYPE:
        raise SignatureError(f"signature key type is {key_type!r}, expected {_KEY_TYPE!r}")
    if len(key_reader.string()) != 32:
        raise SignatureError("signature carries a malformed ssh-ed25519 key")
    key_reader.end("signature public key")

    sig_reader = _Reader(sig_blob, 0)
    sig_type = sig_reader.text("signature type")
    if sig_type != _KEY_TYPE:
        raise SignatureError(f"signature type is {sig_type!r}, expected {_KEY_TYPE!r}")
    raw = sig_reader.string()
    sig_reader.end("signature")
    if len(raw) != 64:
        raise SignatureError(f"ssh-ed25519 signature is {len(raw)} bytes, expected 64")
    return SshSignature(key_blob, namespace, hash_algorithm, raw)


def verify(message: bytes, armored: str, public_key_line: str, namespace: str) -> None:
    """Return if `armored` is a valid signature of `message` by the key of `public_key_line`
    made for `namespace`; raise `SignatureError` otherwise."""
    _check_namespace(namespace)
    expected_blob = _parse_public_key_line(public_key_line)
    signature = parse(armored)
    if signature.public_key != expected_blob:
        raise SignatureError(
            f"signature was made by key {fingerprint(signature.public_key_line)}, "
            f"expected {fingerprint(public_key_line)}"
        )
    verify_parsed(message, signature, namespace)


def verify_parsed(message: bytes, signature: SshSignature, namespace: str) -> None:
    """Return if the parsed `signature` is valid for `message` by the key it carries, made for
    `namespace`: the caller decides whether that key is one it trusts."""
    _check_namespace(namespace)
    if signature.namespace != namespace:
        raise SignatureError(
            f"signature was signed for namespace {signature.namespace!r}, expected {namespace!r}"
        )
    if signature.hash_algorithm not in HASH_ALGORITHMS:
        raise SignatureError(
            f"unsupported hash algorithm {signature.hash_algorithm!r}, expected sha256 or sha512"
        )
    try:
        _ed25519_key(signature.public_key).verify(
            signature.signature, _signed_data(message, namespace, signature.hash_algorithm)
        )
    except InvalidSignature:
        raise SignatureError(
            f"bad signature by key {fingerprint(signature.public_key_line)} for namespace "
            f"{namespace!r}: the message or signature was altered"
        ) from None


@functools.lru_cache(maxsize=1024)
def _ed25519_key(blob: bytes) -> Ed25519PublicKey:
    """The key object of a (parsed, well-formed) ssh-ed25519 blob; a chain reuses a few keys."""
    return Ed25519PublicKey.from_public_bytes(_Reader(blob, 0).skip().string())


def load_private_key(data: bytes, passphrase: bytes | None) -> Ed25519PrivateKey:
    """Load an OpenSSH-format private key (`ssh-keygen -t ed25519`); only Ed25519 is accepted."""
    try:
        key = load_ssh_private_key(data, passphrase)
    except TypeError as exc:  # cryptography: passphrase missing or given for a plain key
        raise SignatureError(f"cannot load SSH private key: {exc}") from None
    except UnsupportedAlgorithm as exc:
        # cryptography decrypts OpenSSH keys (bcrypt-pbkdf) only with the bcrypt package.
        raise SignatureError(
            f"cannot load SSH private key: {exc} (encrypted keys need the bcrypt package)"
        ) from None
    except ValueError as exc:
        raise SignatureError(
            f"cannot load SSH private key (wrong passphrase or not an OpenSSH key): {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            f"SSH private key is {type(key).__name__}, expected an Ed25519 key "
            "(ssh-keygen -t ed25519)"
        )
    return key


def public_key_line(private_key: Ed25519PrivateKey, comment: str = "") -> str:
    """The OpenSSH public key line (`ssh-ed25519 AAAA... comment`) of `private_key`."""
    if "\n" in comment or "\r" in comment:
        raise SignatureError("public key comment must be a single line")
    line = private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line


def fingerprint(public_key_line: str) -> str:
    """`SHA256:...` fingerprint of a public key line, as `ssh-keygen -l` prints it."""
    blob = _parse_public_key_line(public_key_line)
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


# --- wire format ---------------------------------------------------------------------------


def _check_namespace(namespace: str) -> None:
    if not namespace:
        raise SignatureError("signature namespace must not be empty")


def _signed_data(message: bytes, namespace: str, hash_alg: str) -> bytes:
    return b"".join(
        [
            _MAGIC,
            _string(namespace.encode()),
            _string(b""),
            _string(hash_alg.encode()),
            _string(hashlib.new(hash_alg, message).digest()),
        ]
    )


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _public_blob(key: Ed25519PublicKey) -> bytes:
    return _string(_KEY_TYPE.encode()) + _string(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _parse_public_key_line(line: str) -> bytes:
    fields = line.split()
    if len(fields) < 2:
        raise SignatureError(f"public key line {line[:60]!r} is not '<type> <base64> [comment]'")
    if fields[0] != _KEY_TYPE:
        raise SignatureError(f"public key type is {fields[0][:40]!r}, expected {_KEY_TYPE!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise SignatureError("public key line has invalid base64") from None
    reader = _Reader(blob, 0)
    if reader.text("key type") != _KEY_TYPE or len(reader.string()) != 32:
        raise SignatureError("public key line does not hold an ssh-ed25519 key")
    reader.end("public key")
    return blob


def _dearmor(armored: str) -> bytes:
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _BEGIN or lines[-1] != _END:
        raise SignatureError(f"bad armor: expected {_BEGIN} ... {_END}")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise SignatureError("bad armor: signature body is not valid base64") from None


class _Reader:
    """Reads SSH wire-format fields, raising `SignatureError` on truncation."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def uint32(self) -> int:
        if self._offset + 4 > len(self._data):
            raise SignatureError("SSH signature is truncated")
        (value,) = struct.unpack_from(">I", self._data, self._offset)
        self._offset += 4
        return int(value)

    def string(self) -> bytes:
        length = self.uint32()
        if self._offset + length > len(self._data):
            raise SignatureError("SSH signature is truncated")
        value = self._data[self._offset : self._offset + length]
        self._offset += length
        return value

    def text(self, what: str) -> str:
        try:
            return self.string().decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureError(f"SSH signature {what} is not UTF-8") from None

    def skip(self) -> _Reader:
        self.string()
        return self

    def end(self, what: str) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise SignatureError(f"{what} has {extra} trailing bytes")
