"""X-Wing from `cryptography`'s primitives, held to draft-connolly-cfrg-xwing-kem-08's published
test vectors (appendix C, vectors 1 and 2, in xwing-draft-08.json).

What the vectors fix and we reproduce: the key pair from the 32-byte seed (SHAKE256 expansion,
ML-KEM-768 from its 64-byte seed, X25519 from the rest), the decapsulation of the published
ciphertext to the published shared secret (so the combiner and its input order), and the X25519
half of the ciphertext from the eseed. Not reproducible: the ML-KEM half of encapsulation,
since `cryptography` encapsulates with its own randomness only (no derandomized Encaps); that
half is covered by round trips instead."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from reconciler.secrets import xwing
from reconciler.secrets.errors import KemError

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "xwing-draft-08.json").read_text()
)["vectors"]
IDS = [f"vector-{index + 1}" for index in range(len(VECTORS))]


def _bytes(vector: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(vector[name])


def test_the_label_is_the_drafts() -> None:
    assert xwing.LABEL.hex() == "5c2e2f2f5e5c"


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_key_generation_from_the_seed_gives_the_published_public_key(
    vector: dict[str, Any],
) -> None:
    key = xwing.from_seed(_bytes(vector, "seed"))
    assert key.public_bytes == _bytes(vector, "pk")
    assert len(key.public_bytes) == xwing.PUBLIC_KEY_BYTES


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_the_published_ciphertext_decapsulates_to_the_published_secret(
    vector: dict[str, Any],
) -> None:
    key = xwing.from_seed(_bytes(vector, "seed"))
    assert xwing.decapsulate(key, _bytes(vector, "ct")) == _bytes(vector, "ss")


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_the_x25519_half_of_the_ciphertext_comes_from_the_eseed(vector: dict[str, Any]) -> None:
    ephemeral = X25519PrivateKey.from_private_bytes(_bytes(vector, "eseed")[32:])
    assert ephemeral.public_key().public_bytes_raw() == _bytes(vector, "ct")[1088:]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_the_combiner_hashes_in_the_drafts_order(vector: dict[str, Any]) -> None:
    """SHA3-256(ss_M || ss_X || ct_X || pk_X || label), and no other order or placement of
    the label (the older drafts' label-first) gives the published secret."""
    key = xwing.from_seed(_bytes(vector, "seed"))
    ct, ss = _bytes(vector, "ct"), _bytes(vector, "ss")
    ss_m = key._mlkem.decapsulate(ct[:1088])
    ss_x = key._x25519.exchange(X25519PublicKey.from_public_bytes(ct[1088:]))
    parts = [ss_m, ss_x, ct[1088:], key.public_x25519]
    assert hashlib.sha3_256(b"".join(parts) + xwing.LABEL).digest() == ss
    assert xwing.combine(*parts) == ss
    assert hashlib.sha3_256(xwing.LABEL + b"".join(parts)).digest() != ss
    assert xwing.combine(ss_x, ss_m, ct[1088:], key.public_x25519) != ss


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_a_changed_ciphertext_byte_gives_another_secret(vector: dict[str, Any]) -> None:
    key = xwing.from_seed(_bytes(vector, "seed"))
    ct = bytearray(_bytes(vector, "ct"))
    for index in (0, 500, 1087, 1088, 1119):  # both halves, their edges
        changed = bytearray(ct)
        changed[index] ^= 0x01
        assert xwing.decapsulate(key, bytes(changed)) != _bytes(vector, "ss"), index


def test_encapsulation_round_trips_and_is_fresh_each_time() -> None:
    key = xwing.generate()
    first, ct1 = xwing.encapsulate(key.public_bytes)
    second, ct2 = xwing.encapsulate(key.public_bytes)
    assert xwing.decapsulate(key, ct1) == first
    assert xwing.decapsulate(key, ct2) == second
    assert first != second
    assert ct1 != ct2
    assert len(ct1) == xwing.CIPHERTEXT_BYTES
    assert len(first) == xwing.SHARED_SECRET_BYTES
    assert xwing.decapsulate(xwing.generate(), ct1) != first  # another key: another secret


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: xwing.from_seed(b"\0" * 31), "an X-Wing seed is 32 bytes, found 31"),
        (lambda: xwing.encapsulate(b"\0" * 1215), "an X-Wing public key is 1216 bytes, found 1215"),
        (
            lambda: xwing.encapsulate(b"\xff" * 1216),
            "the ML-KEM-768 half of the X-Wing public key is not a valid key",
        ),
        (
            lambda: xwing.encapsulate(xwing.generate().public_bytes[:1184] + b"\0" * 32),
            "the X25519 half of the X-Wing public key is of low order",
        ),
        (
            lambda: xwing.decapsulate(xwing.generate(), b"\0" * 1119),
            "an X-Wing ciphertext is 1120 bytes, found 1119",
        ),
        (
            lambda: xwing.decapsulate(xwing.generate(), b"\0" * 1120),
            "the X25519 half of the ciphertext is of low order",
        ),
    ],
    ids=["short-seed", "short-key", "bad-mlkem-key", "low-order-x25519-key", "short-ct",
         "low-order-ct"],
)  # fmt: skip
def test_what_is_not_x_wing_is_refused(call: Any, message: str) -> None:
    with pytest.raises(KemError) as refused:
        call()
    assert str(refused.value) == message


def test_key_lines_and_private_key_armor_round_trip() -> None:
    key = xwing.generate()
    line = key.public_key_line("node-a")
    assert line.startswith("x-wing ")
    assert line.endswith(" node-a")
    assert xwing.parse_public_key(line) == key.public_bytes
    assert xwing.decode_private_key(xwing.encode_private_key(key)).public_bytes == key.public_bytes
    assert repr(key) == "XWingPrivateKey()"  # never a byte of the seed


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ssh-ed25519 AAAA", "expected an X-Wing public key line 'x-wing BASE64 [comment]'"),
        ("x-wing AAAA", "an X-Wing public key is 1216 bytes in canonical base64, found 3 bytes"),
        ("x-wing AAA", "the X-Wing public key is not valid base64"),
    ],
    ids=["other-type", "short", "bad-base64"],
)
def test_key_lines_that_are_not_x_wing_are_refused(line: str, message: str) -> None:
    with pytest.raises(KemError) as refused:
        xwing.parse_public_key(line)
    assert str(refused.value) == message
