"""`secrets/<name>.yaml`: a value sealed to the circle's nodes, and what it may be released to.

The value is AES-256-GCM encrypted under a fresh data key, with the binding (format, circle,
secret name, workloads, digests) as its associated data; the data key is sealed once per node
with the X-Wing hybrid KEM (X25519 + ML-KEM-768). The model checks the shape and the sizes of
the base64 fields; `reconciler.secrets.seal` does the cryptography.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.types import Digest, Name

ALGORITHM = "x-wing+aes-256-gcm"
XWING = "x-wing"
XWING_PUBLIC_KEY_BYTES = 1216
XWING_CIPHERTEXT_BYTES = 1120
NONCE_BYTES = 12
WRAPPED_KEY_BYTES = 48  # the 32-byte data key and GCM's 16-byte tag
MAX_VALUE_BYTES = 64 * 1024  # what one secret may hold (an API key, a certificate, a token)
MAX_RECIPIENTS = 512  # keeps a secret under the 1 MiB a document may have


def _b64(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid {what}: not canonical base64") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise ValueError(f"invalid {what}: not canonical base64")
    return raw


def _sized(size: int, what: str) -> AfterValidator:
    def check(value: str) -> str:
        raw = _b64(value, what)
        if len(raw) != size:
            raise ValueError(f"invalid {what}: {len(raw)} bytes, expected {size}")
        return value

    return AfterValidator(check)


def _b64_schema(size: int, what: str) -> WithJsonSchema:
    chars = -(-size // 3) * 4
    padding = (3 - size % 3) % 3
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^[A-Za-z0-9+/]{{{chars - padding}}}{'=' * padding}$",
            "description": f"{what}: {size} bytes, base64",
        }
    )


def _check_ciphertext(value: str) -> str:
    raw = _b64(value, "ciphertext")
    if not 16 <= len(raw) <= MAX_VALUE_BYTES + 16:
        raise ValueError(
            f"invalid ciphertext: {len(raw)} bytes, expected 16 to {MAX_VALUE_BYTES + 16} "
            "(a value of at most 64 KiB and its 16-byte tag)"
        )
    return value


def xwing_public_key_bytes(value: str) -> bytes:
    """The 1216 raw bytes of an `x-wing BASE64 [comment]` key line; ValueError otherwise."""
    fields = value.split(" ", 2)
    if len(fields) < 2 or fields[0] != XWING:
        raise ValueError(
            f"invalid KEM public key: expected a line '{XWING} BASE64 [comment]' (circle node "
            "keygen writes it to PATH.x-wing.pub)"
        )
    raw = _b64(fields[1], "KEM public key")
    if len(raw) != XWING_PUBLIC_KEY_BYTES:
        raise ValueError(
            f"invalid KEM public key: {len(raw)} bytes, expected the {XWING_PUBLIC_KEY_BYTES}-"
            "byte X-Wing encapsulation key"
        )
    return raw


def _check_xwing_key(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("invalid KEM public key: a key line is one line")
    xwing_public_key_bytes(value)
    return value


XWingPublicKey = Annotated[
    str,
    AfterValidator(_check_xwing_key),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^x-wing [A-Za-z0-9+/]{1622}==( .*)?$",
            "description": "an X-Wing (X25519 + ML-KEM-768) public key line, as circle node "
            "keygen writes it to PATH.x-wing.pub",
        }
    ),
]

Nonce = Annotated[str, _sized(NONCE_BYTES, "nonce"), _b64_schema(NONCE_BYTES, "AES-GCM nonce")]
Encapsulation = Annotated[
    str,
    _sized(XWING_CIPHERTEXT_BYTES, "encapsulation"),
    _b64_schema(XWING_CIPHERTEXT_BYTES, "X-Wing ciphertext"),
]
WrappedKey = Annotated[
    str,
    _sized(WRAPPED_KEY_BYTES, "wrapped key"),
    _b64_schema(WRAPPED_KEY_BYTES, "the data key, AES-256-GCM under the X-Wing shared secret"),
]
Ciphertext = Annotated[
    str,
    AfterValidator(_check_ciphertext),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[A-Za-z0-9+/]*={0,2}$",
            "description": "the value, AES-256-GCM under the data key (tag appended), base64",
        }
    ),
]


class Recipient(Strict):
    node: Name = Field(description="The node this copy of the data key is sealed to.")
    kem_key: Digest = Field(description="sha256 of the node's X-Wing key it is sealed to.")
    encapsulation: Encapsulation
    wrapped_key: WrappedKey


class Secret(NamedDocument):
    kind: Literal["Secret"]
    circle: Name = Field(description="The circle id it is bound to (circle.yaml's id).")
    workloads: list[Name] = Field(
        min_length=1, description="The workloads whose replicas may receive it."
    )
    digests: list[Digest] = Field(
        default_factory=list,
        description="When given, only replicas running one of these artifacts receive it.",
    )
    algorithm: Literal["x-wing+aes-256-gcm"] = Field(
        description="X-Wing KEM (X25519 + ML-KEM-768) for the data key, AES-256-GCM for the value."
    )
    nonce: Nonce
    ciphertext: Ciphertext
    recipients: list[Recipient] = Field(
        min_length=1, max_length=MAX_RECIPIENTS, description="One sealed data key per node."
    )
