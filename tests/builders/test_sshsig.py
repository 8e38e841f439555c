"""SSHSIG signatures agree with OpenSSH's own `ssh-keygen -Y` both ways, and every malformed,
misdirected or altered signature is refused with a message that says why."""

from __future__ import annotations

import base64
import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import BuildError, sshsig
from builders.sshsig import (
    SignatureError,
    load_private_key,
    parse,
    public_key_line,
    sign,
    verify,
)

NAMESPACE = "circle-test-v1"
MESSAGE = b"transition 7: 3f2a1c -> 9b0e44\n"
TIMEOUT = 30

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen"
)


def ssh_keygen(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh-keygen", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def make_key(tmp_path: Path, passphrase: str = "") -> Path:
    key = tmp_path / "id_ed25519"
    done = ssh_keygen("-q", "-t", "ed25519", "-N", passphrase, "-C", "signer", "-f", key)
    assert done.returncode == 0, done.stderr
    return key


def keygen_verifies(tmp_path: Path, armored: str, key_line: str, namespace: str) -> bool:
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"signer {key_line}\n")
    signature = tmp_path / "message.sig"
    signature.write_text(armored)
    done = ssh_keygen(
        "-Y", "verify", "-f", allowed, "-I", "signer", "-n", namespace, "-s", signature,
        stdin=MESSAGE,
    )  # fmt: skip
    return done.returncode == 0


def keygen_sign(tmp_path: Path, key: Path, namespace: str, *options: str) -> str:
    message = tmp_path / "message"
    message.write_bytes(MESSAGE)
    Path(f"{message}.sig").unlink(missing_ok=True)
    done = ssh_keygen("-Y", "sign", "-f", key, "-n", namespace, *options, message)
    assert done.returncode == 0, done.stderr
    return Path(f"{message}.sig").read_text()


# --- interoperability with ssh-keygen -------------------------------------------------------


@needs_ssh_keygen
@pytest.mark.parametrize("hash_alg", ["sha512", "sha256"])
def test_our_signature_verifies_with_ssh_keygen(tmp_path: Path, hash_alg: str) -> None:
    key = load_private_key(make_key(tmp_path).read_bytes(), None)
    armored = sign(MESSAGE, key, NAMESPACE, hash_alg)
    assert keygen_verifies(tmp_path, armored, public_key_line(key), NAMESPACE)
    assert not keygen_verifies(tmp_path, armored, public_key_line(key), "other-namespace")


@needs_ssh_keygen
@pytest.mark.parametrize("hash_alg", ["sha512", "sha256"])
def test_ssh_keygen_signature_verifies_with_ours(tmp_path: Path, hash_alg: str) -> None:
    key_path = make_key(tmp_path)
    armored = keygen_sign(tmp_path, key_path, NAMESPACE, "-O", f"hashalg={hash_alg}")
    key_line = key_path.with_suffix(".pub").read_text().strip()
    verify(MESSAGE, armored, key_line, NAMESPACE)
    assert parse(armored).hash_algorithm == hash_alg
    # Ed25519 is deterministic, so our armored text is byte-for-byte ssh-keygen's.
    assert sign(MESSAGE, load_private_key(key_path.read_bytes(), None), NAMESPACE, hash_alg) == (
        armored
    )


@needs_ssh_keygen
def test_encrypted_key_loads_with_its_passphrase(tmp_path: Path) -> None:
    # cryptography needs bcrypt to decrypt OpenSSH keys; until pyproject lists it, say so.
    pytest.importorskip("bcrypt", reason="encrypted OpenSSH keys need the bcrypt package")
    key_path = make_key(tmp_path, passphrase="correct horse")
    key = load_private_key(key_path.read_bytes(), b"correct horse")
    assert public_key_line(key, "signer") == key_path.with_suffix(".pub").read_text().strip()
    armored = sign(MESSAGE, key, NAMESPACE)
    assert keygen_verifies(tmp_path, armored, public_key_line(key), NAMESPACE)
    with pytest.raises(SignatureError, match="wrong passphrase"):
        load_private_key(key_path.read_bytes(), b"wrong horse")
    with pytest.raises(SignatureError, match="cannot load SSH private key"):
        load_private_key(key_path.read_bytes(), None)


def test_non_ed25519_key_is_refused() -> None:
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    data = ecdsa.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    with pytest.raises(SignatureError, match="expected an Ed25519 key"):
        load_private_key(data, None)
    with pytest.raises(SignatureError, match="not an OpenSSH key"):
        load_private_key(b"not a key", None)


# --- refusals -------------------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def key_blob(key: Ed25519PrivateKey) -> bytes:
    return base64.b64decode(public_key_line(key).split()[1])


def armor(blob: bytes) -> str:
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return "\n".join(["-----BEGIN SSH SIGNATURE-----", *lines, "-----END SSH SIGNATURE-----"])


def crafted(
    *,
    magic: bytes = b"SSHSIG",
    version: int = 1,
    namespace: str = NAMESPACE,
    hash_alg: str = "sha512",
    trailing: bytes = b"",
) -> str:
    """A signature that is valid in every respect but the one given (hash included)."""
    digest = hashlib.new(hash_alg, MESSAGE).digest()
    signed = b"SSHSIG" + string(namespace.encode()) + string(b"") + string(hash_alg.encode())
    raw = KEY.sign(signed + string(digest))
    blob = (
        magic
        + struct.pack(">I", version)
        + string(key_blob(KEY))
        + string(namespace.encode())
        + string(b"")
        + string(hash_alg.encode())
        + string(string(b"ssh-ed25519") + string(raw))
    )
    return armor(blob + trailing)


def test_crafted_baseline_verifies() -> None:
    verify(MESSAGE, crafted(), public_key_line(KEY), NAMESPACE)
    assert crafted() + "\n" == sign(MESSAGE, KEY, NAMESPACE)


REFUSALS = [
    ("bad-armor", "not a signature", "bad armor: expected"),
    (
        "bad-base64",
        "-----BEGIN SSH SIGNATURE-----\n@@@@\n-----END SSH SIGNATURE-----",
        "not valid base64",
    ),
    ("wrong-magic", crafted(magic=b"SSHSIX"), "magic is b'SSHSIX', expected b'SSHSIG'"),
    ("wrong-version", crafted(version=2), "version 2, expected 1"),
    (
        "wrong-namespace",
        crafted(namespace="git"),
        f"signed for namespace 'git', expected '{NAMESPACE}'",
    ),
    ("unsupported-hash", crafted(hash_alg="sha1"), "unsupported hash algorithm 'sha1'"),
    ("trailing-bytes", crafted(trailing=b"\0"), "SSH signature has 1 trailing bytes"),
    ("truncated", armor(b"SSHSIG\0\0\0\1\0\0\0\xff"), "truncated"),
    ("other-signer", sign(MESSAGE, OTHER_KEY, NAMESPACE), "signature was made by key SHA256:"),
]


@pytest.mark.parametrize(
    ("armored", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refused(armored: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message.replace("(", r"\(")) as refused:
        verify(MESSAGE, armored, public_key_line(KEY), NAMESPACE)
    assert isinstance(refused.value, BuildError)


def test_one_bit_flip_in_message_is_refused() -> None:
    armored = sign(MESSAGE, KEY, NAMESPACE)
    for bit in range(len(MESSAGE) * 8):
        altered = bytearray(MESSAGE)
        altered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError, match="bad signature"):
            verify(bytes(altered), armored, public_key_line(KEY), NAMESPACE)


def test_every_one_bit_flip_in_signature_blob_is_refused() -> None:
    blob = bytearray(base64.b64decode("".join(sign(MESSAGE, KEY, NAMESPACE).splitlines()[1:-1])))
    for bit in range(len(blob) * 8):
        blob[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SignatureError):
            verify(MESSAGE, armor(bytes(blob)), public_key_line(KEY), NAMESPACE)
        blob[bit // 8] ^= 1 << (bit % 8)
    # A flip in the raw signature (its last 64 bytes) is the Ed25519 check failing.
    blob[-1] ^= 1
    with pytest.raises(SignatureError, match="bad signature"):
        verify(MESSAGE, armor(bytes(blob)), public_key_line(KEY), NAMESPACE)


def test_replay_across_namespaces_is_refused() -> None:
    approval = sign(MESSAGE, KEY, "circle-approval-v1")
    with pytest.raises(SignatureError, match="signed for namespace 'circle-approval-v1'"):
        verify(MESSAGE, approval, public_key_line(KEY), "circle-provenance-v1")


def test_empty_namespace_is_refused() -> None:
    with pytest.raises(SignatureError, match="namespace must not be empty"):
        sign(MESSAGE, KEY, "")
    with pytest.raises(SignatureError, match="namespace must not be empty"):
        verify(MESSAGE, sign(MESSAGE, KEY, NAMESPACE), public_key_line(KEY), "")


def test_unsupported_hash_is_refused_when_signing() -> None:
    with pytest.raises(SignatureError, match="unsupported hash algorithm 'md5'"):
        sign(MESSAGE, KEY, NAMESPACE, "md5")


def test_public_key_line_with_comment_is_accepted_and_bad_lines_refused() -> None:
    armored = sign(MESSAGE, KEY, NAMESPACE)
    verify(MESSAGE, armored, public_key_line(KEY, "alice@laptop"), NAMESPACE)
    assert parse(armored).public_key_line == public_key_line(KEY)
    with pytest.raises(SignatureError, match="expected 'ssh-ed25519'"):
        verify(MESSAGE, armored, "ssh-rsa AAAAB3NzaC1yc2E", NAMESPACE)
    with pytest.raises(SignatureError, match="invalid base64"):
        verify(MESSAGE, armored, "ssh-ed25519 !!!", NAMESPACE)


@settings(max_examples=300)
@given(st.integers(0, 400), st.binary(max_size=4), st.sampled_from(["sha512", "sha256"]))
def test_the_fixed_layout_reader_agrees_with_the_field_walk(
    where: int, splice: bytes, hash_algorithm: str
) -> None:
    """`parse` reads Ed25519 signatures at fixed offsets; on a real signature and on every
    byte-level mutation of one it must give exactly what the field-by-field reader gives."""
    key = Ed25519PrivateKey.generate()
    blob = sshsig._dearmor(sshsig.sign(b"message", key, "circle-approval-v1", hash_algorithm))
    spot = where % len(blob)
    for candidate in (blob, blob[:spot] + splice + blob[spot + 1 :]):
        try:
            expected: object = sshsig._parse_blob(candidate)
        except sshsig.SignatureError as error:
            expected = str(error)
        fast = sshsig._parse_ed25519(candidate)
        assert fast is None or fast == expected
