"""X-Wing, the hybrid KEM of X25519 and ML-KEM-768 (draft-connolly-cfrg-xwing-kem-08), built
from `cryptography`'s primitives (OpenSSL's X25519 and ML-KEM-768) and hashlib's SHA-3; only
the draft's glue is ours. Pure: bytes in, bytes or a refusal out.

    decapsulation key  32-byte seed; expanded = SHAKE256(seed, 96 bytes):
                       ML-KEM-768 from its 64-byte seed d || z = expanded[0:64],
                       X25519 private key = expanded[64:96]
    encapsulation key  pk_M (1184) || pk_X (32)                     1216 bytes
    ciphertext         ct_M (1088) || ct_X (32)                     1120 bytes
    shared secret      SHA3-256(ss_M || ss_X || ct_X || pk_X || "\\.//^\\")   32 bytes

X-Wing is secure if either X25519 or ML-KEM-768 is (and SHA-3 is): a quantum computer that
breaks X25519 still faces ML-KEM-768, and a flaw in the young ML-KEM still faces X25519.

`cryptography` encapsulates with its own randomness only, so the draft's encapsulation vectors
are reproducible in their X25519 half (ct_X from the eseed) and wholly in decapsulation (the
published ciphertext decapsulates to the published shared secret); key generation from the
seed is reproducible exactly.

Key line (in `nodes/NAME.yaml` as `kemPublicKey`, and in `KEY.x-wing.pub`):
`x-wing BASE64(1216 bytes) [comment]`. Private key file (`KEY.x-wing`, 0600):

    -----BEGIN CIRCLE X-WING PRIVATE KEY-----
    base64 of the 32-byte seed
    -----END CIRCLE X-WING PRIVATE KEY-----
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from reconciler.secrets.errors import KemError

KEY_TYPE = "x-wing"
LABEL = b"\\.//^\\"  # 5c2e2f2f5e5c: the draft's XWingLabel
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 1216
CIPHERTEXT_BYTES = 1120
SHARED_SECRET_BYTES = 32
_MLKEM_PUBLIC = 1184
_MLKEM_CIPHERTEXT = 1088
_BEGIN = "-----BEGIN CIRCLE X-WING PRIVATE KEY-----"
_END = "-----END CIRCLE X-WING PRIVATE KEY-----"
_LINE = re.compile(r"x-wing ([A-Za-z0-9+/]+={0,2})(?: [^\r\n]*)?")


@dataclass(frozen=True, slots=True)
class XWingPrivateKey:
    """A decapsulation key: the seed, and what it expands to (never printed)."""

    seed: bytes = field(repr=False)
    _mlkem: MLKEM768PrivateKey = field(repr=False, compare=False)
    _x25519: X25519PrivateKey = field(repr=False, compare=False)
    public_bytes: bytes = field(repr=False)

    @property
    def public_x25519(self) -> bytes:
        return self.public_bytes[_MLKEM_PUBLIC:]

    def public_key_line(self, comment: str = "") -> str:
        return format_public_key(self.public_bytes, comment)


def from_seed(seed: bytes) -> XWingPrivateKey:
    """The key pair of a 32-byte seed (the draft's GenerateKeyPairDerand)."""
    if len(seed) != SEED_BYTES:
        raise KemError(f"an X-Wing seed is {SEED_BYTES} bytes, found {len(seed)}")
    expanded = hashlib.shake_256(seed).digest(96)
    mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
    x25519 = X25519PrivateKey.from_private_bytes(expanded[64:])
    public = mlkem.public_key().public_bytes_raw() + x25519.public_key().public_bytes_raw()
    return XWingPrivateKey(seed, mlkem, x25519, public)


def generate() -> XWingPrivateKey:
    return from_seed(secrets.token_bytes(SEED_BYTES))


def combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """The draft's combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


def encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the encapsulation key `public_key`; KemError for a key
    that is not one (a wrong length, an ML-KEM key failing FIPS 203's modulus check, an X25519
    key of low order)."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise KemError(f"an X-Wing public key is {PUBLIC_KEY_BYTES} bytes, found {len(public_key)}")
    pk_m, pk_x = public_key[:_MLKEM_PUBLIC], public_key[_MLKEM_PUBLIC:]
    try:
        ss_m, ct_m = MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    except ValueError:
        raise KemError("the ML-KEM-768 half of the X-Wing public key is not a valid key") from None
    ephemeral = X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    try:
        ss_x = ephemeral.exchange(X25519PublicKey.from_public_bytes(pk_x))
    except ValueError:
        raise KemError("the X25519 half of the X-Wing public key is of low order") from None
    return combine(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def decapsulate(private_key: XWingPrivateKey, ciphertext: bytes) -> bytes:
    """The shared secret of `ciphertext`. ML-KEM rejects implicitly: a changed ciphertext gives
    another (random-looking) secret, which the AEAD using it then refuses."""
    if len(ciphertext) != CIPHERTEXT_BYTES:
        raise KemError(f"an X-Wing ciphertext is {CIPHERTEXT_BYTES} bytes, found {len(ciphertext)}")
    ct_m, ct_x = ciphertext[:_MLKEM_CIPHERTEXT], ciphertext[_MLKEM_CIPHERTEXT:]
    ss_m = private_key._mlkem.decapsulate(ct_m)
    try:
        ss_x = private_key._x25519.exchange(X25519PublicKey.from_public_bytes(ct_x))
    except ValueError:
        raise KemError("the X25519 half of the ciphertext is of low order") from None
    return combine(ss_m, ss_x, ct_x, private_key.public_x25519)


# -- key lines and key files -----------------------------------------------------------------


def format_public_key(public_key: bytes, comment: str = "") -> str:
    if "\n" in comment or "\r" in comment:
        raise KemError("a key's comment must be a single line")
    line = f"{KEY_TYPE} {base64.b64encode(public_key).decode('ascii')}"
    return f"{line} {comment}" if comment else line


def parse_public_key(line: str) -> bytes:
    """The 1216 bytes of `x-wing BASE64 [comment]`; KemError otherwise."""
    match = _LINE.fullmatch(line.strip())
    if match is None:
        raise KemError("expected an X-Wing public key line 'x-wing BASE64 [comment]'")
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except binascii.Error:
        raise KemError("the X-Wing public key is not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES or base64.b64encode(raw).decode() != match.group(1):
        raise KemError(
            f"an X-Wing public key is {PUBLIC_KEY_BYTES} bytes in canonical base64, found "
            f"{len(raw)} bytes"
        )
    return raw


def fingerprint(public_key: bytes) -> str:
    """`sha256:HEX` of the raw encapsulation key: what a sealed copy names its key by."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def encode_private_key(key: XWingPrivateKey) -> bytes:
    encoded = base64.b64encode(key.seed).decode("ascii")
    return f"{_BEGIN}\n{encoded}\n{_END}\n".encode("ascii")


def decode_private_key(data: bytes) -> XWingPrivateKey:
    try:
        lines = data.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise KemError("an X-Wing private key file is ASCII armor") from None
    if len(lines) != 3 or lines[0] != _BEGIN or lines[2] != _END:
        raise KemError(f"expected {_BEGIN}, one line of base64, {_END}")
    try:
        seed = base64.b64decode(lines[1], validate=True)
    except binascii.Error:
        raise KemError("the X-Wing private key is not valid base64") from None
    return from_seed(seed)
