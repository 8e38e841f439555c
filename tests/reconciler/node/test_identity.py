"""Node keys are OpenSSH Ed25519 keys kept as ssh keeps private keys, and a signed record opens
only as the kind it was signed for, by the admitted node whose name it carries, exactly as
signed: any other bytes are one `ForgedRecord` with its reason, never another exception."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import sshsig
from reconciler.node.identity import (
    MAX_RECORD_BYTES,
    BadSignature,
    ForgedRecord,
    ForgeReason,
    Json,
    MalformedRecord,
    NodeKey,
    NodeKeyError,
    RecordKind,
    RecordTooLarge,
    Signed,
    UnknownSigner,
    WrongKind,
    open_signed,
)

NOBODY = 65534
BODY: dict[str, Json] = {"cpu": 4000, "gpus": ["GPU-1"], "note": "héllo\n"}
KEY_A = NodeKey(Ed25519PrivateKey.generate())
KEY_B = NodeKey(Ed25519PrivateKey.generate())
KEY_C = NodeKey(Ed25519PrivateKey.generate())
KEYS = {"a": KEY_A.public_key_line, "b": KEY_B.public_key_line + " node-b"}

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen"
)


def ssh_keygen(*args: str | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ssh-keygen", *map(str, args)], input=stdin, capture_output=True, timeout=30, check=False
    )


def split(value: bytes) -> tuple[bytes, bytes]:
    payload, _, signature = value.partition(b"\n")
    return payload, signature


def envelope(value: bytes) -> dict[str, Json]:
    document = json.loads(split(value)[0])
    assert isinstance(document, dict)
    return document


def with_payload(value: bytes, payload: bytes) -> bytes:
    return payload + b"\n" + split(value)[1]


# --- node keys ------------------------------------------------------------------------------


def test_a_generated_key_is_private_and_its_public_line_is_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = NodeKey.generate(path, "node a")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.with_name("node.key.pub").read_text() == key.public_key_line + "\n"
    assert key.public_key_line.startswith("ssh-ed25519 AAAA")
    assert key.public_key_line.endswith(" node a")
    assert key.fingerprint == sshsig.fingerprint(key.public_key_line)
    loaded = NodeKey.load(path)
    assert loaded.fingerprint == key.fingerprint
    assert loaded.public_key_line == key.public_key_line.removesuffix(" node a")  # no comment
    assert repr(loaded) == f"NodeKey({key.fingerprint})"


@needs_ssh_keygen
def test_ssh_keygen_reads_a_generated_key(tmp_path: Path) -> None:
    key = NodeKey.generate(tmp_path / "node.key", "a")
    done = ssh_keygen("-y", "-f", tmp_path / "node.key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split()[:2] == key.public_key_line.split()[:2]


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase", ["", "correct horse"], ids=["plain", "encrypted"])
def test_a_key_made_by_ssh_keygen_loads(tmp_path: Path, passphrase: str) -> None:
    path = tmp_path / "id_ed25519"
    done = ssh_keygen("-q", "-t", "ed25519", "-a", "2", "-N", passphrase, "-C", "a", "-f", path)
    assert done.returncode == 0, done.stderr
    key = NodeKey.load(path, passphrase.encode() or None)
    assert key.public_key_line + " a" == path.with_suffix(".pub").read_text().strip()


REFUSED_TO_WRITE = {
    "private-key-exists": ("node.key", "{path}: exists; refusing to overwrite a key"),
    "public-key-exists": ("node.key.pub", "{path}.pub: exists; refusing to overwrite a key"),
    "dangling-link": ("link", "{path}: exists; refusing to overwrite a key"),
}


@pytest.mark.parametrize(("present", "message"), REFUSED_TO_WRITE.values(), ids=REFUSED_TO_WRITE)
def test_generate_never_overwrites(tmp_path: Path, present: str, message: str) -> None:
    path = tmp_path / "node.key"
    if present == "link":
        path.symlink_to(tmp_path / "elsewhere")
    else:
        (tmp_path / present).write_bytes(b"kept")
    before = {entry.name: entry.read_bytes() for entry in tmp_path.iterdir() if entry.is_file()}
    with pytest.raises(NodeKeyError) as raised:
        NodeKey.generate(path, "a")
    assert str(raised.value) == message.format(path=path)
    assert {e.name: e.read_bytes() for e in tmp_path.iterdir() if e.is_file()} == before
    assert not (tmp_path / "elsewhere").exists()


def test_a_comment_of_two_lines_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NodeKeyError, match=r"^a node key's comment must be a single line$"):
        NodeKey.generate(tmp_path / "node.key", "a\nb")
    assert list(tmp_path.iterdir()) == []


def _link(path: Path) -> None:
    NodeKey.generate(path.with_name("real.key"))
    path.symlink_to(path.with_name("real.key"))


def _fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


def _mode(mode: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        NodeKey.generate(path)
        path.chmod(mode)

    return make


def _chown(path: Path) -> None:
    NodeKey.generate(path)
    os.chown(path, NOBODY, NOBODY)


def _content(data: bytes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_bytes(data)
        path.chmod(0o600)

    return make


def _ecdsa(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    _content(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))(path)


REFUSED_TO_LOAD: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (lambda path: None, "{path}: cannot read the node key: No such file or directory"),
    "symbolic-link": (_link, "{path}: the node key is a symbolic link; give the key file itself"),
    "fifo": (_fifo, "{path}: the node key is not a regular file"),
    "folder": (lambda path: path.mkdir(0o700), "{path}: the node key is not a regular file"),
    "group-readable": (
        _mode(0o640),
        "{path}: permissions 0640 are too open; a node key must be readable by its agent alone "
        "(chmod 600 {path})",
    ),
    "world-readable": (
        _mode(0o604),
        "{path}: permissions 0604 are too open; a node key must be readable by its agent alone "
        "(chmod 600 {path})",
    ),
    "too-large": (
        _content(b"x" * (16 * 1024 + 1)),
        "{path}: over 16384 bytes; not an OpenSSH Ed25519 key",
    ),
    "not-a-key": (
        _content(b"not a key\n"),
        "{path}: cannot load SSH private key (wrong passphrase or not an OpenSSH key): "
        "Not OpenSSH private key format",
    ),
    "ecdsa-key": (
        _ecdsa,
        "{path}: SSH private key is {ecdsa}, expected an Ed25519 key (ssh-keygen -t ed25519)",
    ),
}


@pytest.mark.parametrize(("make", "message"), REFUSED_TO_LOAD.values(), ids=REFUSED_TO_LOAD)
def test_an_unsafe_or_unusable_key_file_is_refused(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "node.key"
    make(path)
    with pytest.raises(NodeKeyError) as raised:
        NodeKey.load(path)
    ecdsa = type(ec.generate_private_key(ec.SECP256R1())).__name__  # cryptography's own name
    assert str(raised.value) == message.format(path=path, ecdsa=ecdsa)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    _chown(path)
    with pytest.raises(NodeKeyError) as raised:
        NodeKey.load(path)
    assert str(raised.value) == (
        f"{path}: the node key belongs to uid {NOBODY}, not to this agent's uid {os.geteuid()}"
    )


def test_a_device_is_refused_unread() -> None:
    with pytest.raises(NodeKeyError, match=r"^/dev/zero: the node key is not a regular file$"):
        NodeKey.load(Path("/dev/zero"))


@needs_ssh_keygen
def test_an_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    done = ssh_keygen("-q", "-t", "ed25519", "-a", "2", "-N", "right", "-f", path)
    assert done.returncode == 0, done.stderr
    with pytest.raises(NodeKeyError, match=f"^{path}: cannot load SSH private key: "):
        NodeKey.load(path)
    with pytest.raises(NodeKeyError, match=f"^{path}: cannot load SSH private key .wrong pass"):
        NodeKey.load(path, b"wrong")


# --- signed records -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RecordKind), ids=[kind.value for kind in RecordKind])
def test_a_record_opens_as_signed(kind: RecordKind) -> None:
    value = KEY_B.sign(kind, "b", BODY)
    payload, signature = split(value)
    assert payload == rfc8785.dumps(
        {"format": "circle-signed/1", "kind": kind.value, "signer": "b", "body": BODY}
    )
    assert sshsig.parse(signature.decode()).namespace == f"circle-{kind.value}-v1"
    assert open_signed(value, kind, KEYS) == Signed("b", BODY, payload)  # type: ignore[arg-type]


def test_the_namespaces_are_distinct_and_never_another_purposes() -> None:
    namespaces = {kind.namespace for kind in RecordKind}
    assert namespaces == {
        "circle-registration-v1", "circle-status-v1", "circle-assignment-v1",
        "circle-leader-v1", "circle-event-v1", "circle-volume-v1",
    }  # fmt: skip
    assert not namespaces & {"git", "file", "circle-approval-v1", "circle-provenance-v1"}


@needs_ssh_keygen
def test_a_stored_value_is_ssh_keygen_compatible_both_ways(tmp_path: Path) -> None:
    key_path = tmp_path / "node.key"
    key = NodeKey.generate(key_path, "a")
    value = key.sign(RecordKind.STATUS, "a", BODY)
    payload, signature = split(value)
    (tmp_path / "allowed").write_text(f"a {key.public_key_line}\n")
    (tmp_path / "value.sig").write_bytes(signature)
    verified = ssh_keygen(
        "-Y", "verify", "-f", tmp_path / "allowed", "-I", "a", "-n", "circle-status-v1",
        "-s", tmp_path / "value.sig", stdin=payload,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    (tmp_path / "payload").write_bytes(payload)
    payload_path = tmp_path / "payload"
    signed = ssh_keygen("-Y", "sign", "-f", key_path, "-n", "circle-status-v1", payload_path)
    assert signed.returncode == 0, signed.stderr
    by_keygen = payload + b"\n" + (tmp_path / "payload.sig").read_bytes()
    assert by_keygen == value  # Ed25519 is deterministic: one value per record
    assert open_signed(by_keygen, RecordKind.STATUS, {"a": key.public_key_line}).body == BODY


VALUE = KEY_A.sign(RecordKind.REGISTRATION, "a", BODY)
PAYLOAD, SIGNATURE = split(VALUE)
DOC = envelope(VALUE)
WHAT = "registration record refused: "


def _reencoded(**changes: Json) -> bytes:
    """VALUE with envelope fields changed, canonical again, the original signature kept."""
    return with_payload(VALUE, rfc8785.dumps({**DOC, **changes}))


def _resigned(namespace: str) -> bytes:
    private = KEY_A._private  # the test signs as node a would, for another purpose
    return PAYLOAD + b"\n" + sshsig.sign(PAYLOAD, private, namespace).encode()


def _rewrapped(columns: int) -> bytes:
    lines = SIGNATURE.decode().splitlines()
    encoded = "".join(lines[1:-1])
    body = [encoded[i : i + columns] for i in range(0, len(encoded), columns)]
    return PAYLOAD + b"\n" + "\n".join([lines[0], *body, lines[-1], ""]).encode()


def _armored(blob: bytes | str) -> bytes:
    encoded = blob if isinstance(blob, str) else base64.b64encode(blob).decode()
    armor = f"-----BEGIN SSH SIGNATURE-----\n{encoded}\n-----END SSH SIGNATURE-----\n"
    return PAYLOAD + b"\n" + armor.encode()


BAD_JSON = "not exact JSON"
FIELDS = "expected an object of exactly the fields body, format, kind, signer"
ARMOR = re.escape(
    "the signature is not armored as ssh-keygen writes it (-----BEGIN SSH SIGNATURE-----, "
    "base64 in 70 columns, -----END SSH SIGNATURE-----, a final line feed)"
)
FP_A, FP_B = re.escape(KEY_A.fingerprint), re.escape(KEY_B.fingerprint)

# id -> (stored value, error class, message after WHAT: a regular expression)
REFUSED: dict[str, tuple[bytes, type[ForgedRecord], str]] = {
    "over-64-KiB": (VALUE + b" " * MAX_RECORD_BYTES, RecordTooLarge,
                    rf"{len(VALUE) + MAX_RECORD_BYTES} bytes, over 65536"),
    "empty": (b"", MalformedRecord, "no line feed between the record and its signature"),
    "no-signature": (PAYLOAD, MalformedRecord,
                     "no line feed between the record and its signature"),
    "not-utf-8": (with_payload(VALUE, b"\xff" + PAYLOAD), MalformedRecord,
                  rf"{BAD_JSON} \('utf-8' codec can't decode byte 0xff in position 0: .*\)"),
    "utf-16": (with_payload(VALUE, PAYLOAD.decode().encode("utf-16")), MalformedRecord,
               rf"{BAD_JSON} \('utf-8' codec can't decode byte 0xff .*\)"),
    "not-json": (with_payload(VALUE, b"{"), MalformedRecord, rf"{BAD_JSON} \(Expecting .*\)"),
    "nan": (with_payload(VALUE, PAYLOAD.replace(b'"cpu":4000', b'"cpu":NaN')), MalformedRecord,
            rf"{BAD_JSON} \(NaN is not JSON\)"),
    "integer-past-2**53": (
        with_payload(VALUE, PAYLOAD.replace(b'"cpu":4000', b'"cpu":9007199254740993')),
        MalformedRecord, rf"{BAD_JSON} \(.*9007199254740993.*\)"),
    "duplicate-key": (with_payload(VALUE, PAYLOAD[:-1] + b',"signer":"b"}'), MalformedRecord,
                      rf"{BAD_JSON} \(duplicate key 'signer'\)"),
    "deep-nesting": (with_payload(VALUE, b"[" * 30_000 + b"]" * 30_000), MalformedRecord,
                     rf"{BAD_JSON} \(.*recursion.*\)"),
    "spaced": (with_payload(VALUE, json.dumps(DOC, sort_keys=True).encode()), MalformedRecord,
               r"not in canonical form \(RFC 8785\)"),
    "keys-reordered": (with_payload(VALUE, json.dumps(DOC, separators=(",", ":")).encode()),
                       MalformedRecord, r"not in canonical form \(RFC 8785\)"),
    "escaped-differently": (with_payload(VALUE, PAYLOAD.replace(b"\\n", b"\\u000a")),
                            MalformedRecord, r"not in canonical form \(RFC 8785\)"),
    "an-array": (with_payload(VALUE, b"[]"), MalformedRecord, FIELDS),
    "extra-field": (_reencoded(seq=1), MalformedRecord, FIELDS),
    "missing-body": (with_payload(VALUE, rfc8785.dumps({**DOC, "body": None} | {})
                                  .replace(b'"body":null,', b"")), MalformedRecord, FIELDS),
    "other-format": (_reencoded(format="circle-signed/2"), MalformedRecord,
                     "format is 'circle-signed/2', expected 'circle-signed/1'"),
    "kind-not-a-string": (_reencoded(kind=1), MalformedRecord, "kind must be a string"),
    "signer-not-a-name": (_reencoded(signer="../a"), MalformedRecord,
                          r"signer '../a' is not a node name"),
    "signer-a-number": (_reencoded(signer=7), MalformedRecord, "signer 7 is not a node name"),
    "body-not-an-object": (_reencoded(body=[1]), MalformedRecord, "body must be a JSON object"),
    "another-kind": (KEY_A.sign(RecordKind.STATUS, "a", BODY), WrongKind,
                     "the value holds a 'status' record, expected 'registration'"),
    "unknown-kind": (_reencoded(kind="x" * 100), WrongKind,
                     r"the value holds a 'x{36}\.\.\. record, expected 'registration'"),
    "kind-rewritten": (_reencoded(kind="status"), WrongKind,
                       "the value holds a 'status' record, expected 'registration'"),
    "unknown-signer": (KEY_C.sign(RecordKind.REGISTRATION, "c", BODY), UnknownSigner,
                       "signed in the name of 'c', which is not one of the 2 admitted nodes"),
    "other-nodes-key": (KEY_B.sign(RecordKind.REGISTRATION, "a", BODY), BadSignature,
                        rf"node 'a': signature was made by key {FP_B}, expected {FP_A}"),
    "body-changed": (with_payload(VALUE, PAYLOAD.replace(b"4000", b"8000")), BadSignature,
                     rf"node 'a': bad signature by key {FP_A} for namespace "
                     r"'circle-registration-v1': the message or signature was altered"),
    "signer-rewritten": (_reencoded(signer="b"), BadSignature,
                         rf"node 'b': signature was made by key {FP_A}, expected {FP_B}"),
    "approval-namespace": (_resigned("circle-approval-v1"), BadSignature,
                           "node 'a': signature was signed for namespace 'circle-approval-v1', "
                           "expected 'circle-registration-v1'"),
    "git-namespace": (_resigned("git"), BadSignature, "node 'a': signature was signed for "
                      "namespace 'git', expected 'circle-registration-v1'"),
    "status-namespace": (_resigned("circle-status-v1"), BadSignature, "node 'a': signature was "
                         "signed for namespace 'circle-status-v1', expected "
                         "'circle-registration-v1'"),
    "armor-64-columns": (_rewrapped(64), MalformedRecord, ARMOR),
    "armor-crlf": (PAYLOAD + b"\n" + SIGNATURE.replace(b"\n", b"\r\n"), MalformedRecord,
                   ARMOR),
    "armor-without-last-line-feed": (VALUE[:-1], MalformedRecord, ARMOR),
    "bytes-after-armor": (VALUE + b"x", MalformedRecord, ARMOR),
    "two-signatures": (VALUE + SIGNATURE, MalformedRecord, ARMOR),
    "armor-not-ascii": (VALUE.replace(b"-----END", b"\xe2\x80\x94----END"), MalformedRecord,
                        "the signature is not ASCII armor"),
    "base64-not-canonical": (_armored("QR=="), MalformedRecord, ARMOR),
    "not-an-sshsig": (_armored(b"hello"), MalformedRecord,
                      r"not an SSH signature: magic is b'hello', expected b'SSHSIG'"),
    "truncated-sshsig": (_armored(b"SSHSIG\x00\x00\x00\x01\x00"), MalformedRecord,
                         "SSH signature is truncated"),
}  # fmt: skip


@pytest.mark.parametrize(("value", "error", "message"), REFUSED.values(), ids=REFUSED)
def test_a_forged_record_is_refused_with_its_reason(
    value: bytes, error: type[ForgedRecord], message: str
) -> None:
    with pytest.raises(ForgedRecord) as raised:
        open_signed(value, RecordKind.REGISTRATION, KEYS)
    assert type(raised.value) is error
    assert raised.value.reason is error.reason
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(WHAT), text
    assert re.fullmatch(message, text.removeprefix(WHAT)), text


def test_the_reasons_are_short_camel_case_names() -> None:
    assert [reason.value for reason in ForgeReason] == [
        "TooLarge", "Malformed", "WrongKind", "UnknownSigner", "WrongSigner", "BadSignature",
    ]  # fmt: skip
    assert MalformedRecord.exit_code == 1  # a CheckFailed


@pytest.mark.parametrize("signed_as", list(RecordKind), ids=[k.value for k in RecordKind])
@pytest.mark.parametrize("opened_as", list(RecordKind), ids=[k.value for k in RecordKind])
def test_a_signature_for_one_kind_never_opens_as_another(
    signed_as: RecordKind, opened_as: RecordKind
) -> None:
    value = KEY_A.sign(signed_as, "a", BODY)
    relabelled = rfc8785.dumps({**envelope(value), "kind": opened_as.value})
    if signed_as is opened_as:
        assert open_signed(value, opened_as, KEYS).body == BODY
        return
    with pytest.raises(WrongKind):
        open_signed(value, opened_as, KEYS)
    with pytest.raises(BadSignature, match=f"signed for namespace '{signed_as.namespace}'"):
        open_signed(with_payload(value, relabelled), opened_as, KEYS)


SIGN_REFUSED = {
    "signer-not-a-name": ("A", BODY, "signer must be a node name, found 'A'"),
    "nan": ("a", {"x": float("nan")}, "the body of a event record is not exact JSON: .*"),
    "integer-past-2**53": ("a", {"x": 2**60}, "the body of a event record is not exact JSON: .*"),
    "not-json": ("a", {"x": object()}, "the body of a event record is not exact JSON: .*"),
    "too-large": ("a", {"x": "y" * MAX_RECORD_BYTES},
                  rf"a event record of \d+ bytes is over {MAX_RECORD_BYTES}"),
}  # fmt: skip


@pytest.mark.parametrize(("signer", "body", "message"), SIGN_REFUSED.values(), ids=SIGN_REFUSED)
def test_a_record_no_reader_would_open_is_never_signed(
    signer: str, body: dict[str, Json], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        KEY_A.sign(RecordKind.EVENT, signer, body)


# --- properties -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(st.dictionaries(st.text(max_size=8), JSON, max_size=6), st.sampled_from(RecordKind))
def test_any_json_body_opens_as_signed(body: dict[str, Json], kind: RecordKind) -> None:
    value = KEY_B.sign(kind, "b", body)
    assert open_signed(value, kind, KEYS).body == body


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_refused_as_forged(value: bytes) -> None:
    with pytest.raises(ForgedRecord):
        open_signed(value, RecordKind.REGISTRATION, KEYS)


def _mutations() -> st.SearchStrategy[bytes]:
    index = st.integers(0, len(VALUE) - 1)
    flipped = st.tuples(index, st.integers(1, 255)).map(
        lambda change: VALUE[: change[0]] + bytes([VALUE[change[0]] ^ change[1]])
        + VALUE[change[0] + 1 :]
    )  # fmt: skip
    deleted = st.tuples(index, st.integers(1, 40)).map(
        lambda cut: VALUE[: cut[0]] + VALUE[cut[0] + cut[1] :]
    )
    inserted = st.tuples(index, st.binary(min_size=1, max_size=8)).map(
        lambda put: VALUE[: put[0]] + put[1] + VALUE[put[0] :]
    )
    truncated = index.map(lambda end: VALUE[:end])
    return flipped | deleted | inserted | truncated


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_every_change_to_a_stored_value_is_refused(value: bytes) -> None:
    # One spelling per record: canonical JSON, canonical armor, so no change keeps it valid.
    with pytest.raises(ForgedRecord):
        open_signed(value, RecordKind.REGISTRATION, KEYS)
