"""The value types of circle documents: what each accepts, what it refuses and in which words,
how quantities are written back, and how SSH keys agree with OpenSSH's own `ssh-keygen`.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_public_key,
)
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError, create_model

from reconciler.desired.documents import parse_document
from reconciler.desired.model import KINDS
from reconciler.desired.model.base import Strict
from reconciler.desired.model.types import (
    Bytes,
    Cpu,
    Digest,
    Duration,
    Name,
    PathPattern,
    RelPath,
    SshPublicKey,
    ed25519_key_blob,
    format_bytes,
    format_cpu,
    format_duration,
    ssh_fingerprint,
)
from reconciler.desired.problems import DocumentError
from tests.strategies import ssh_public_key_line, ssh_public_keys

BYTE_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def field_of(value_type: Any) -> type[BaseModel]:
    """A one-field model with the documents' own strict configuration."""
    model: type[BaseModel] = create_model("Field", __base__=Strict, value=(value_type, ...))
    return model


def accepted(value_type: Any, value: Any) -> Any:
    return field_of(value_type).model_validate({"value": value}).value  # type: ignore[attr-defined]


def refusal(value_type: Any, value: Any) -> str:
    """The message a document author reads when `value` is refused."""
    with pytest.raises(ValidationError) as caught:
        field_of(value_type).model_validate({"value": value})
    [error] = caught.value.errors()
    assert error["type"] == "value_error", error
    return str(error["ctx"]["error"])


def cases(table: list[tuple[Any, Any]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("value", "expected"), table, ids=[repr(v) for v, _ in table])


# -- quantities ----------------------------------------------------------------------------------

CPU_ACCEPTED = [
    (2, 2000),
    (0.5, 500),
    (0.001, 1),
    (0, 0),
    (1_000_000, 1_000_000_000),
    ("1.5", 1500),
    ("2", 2000),
    ("0.001", 1),
    ("500m", 500),
    ("0m", 0),
]
CPU_FORMS = "expected cores (2, 0.5) or millicores ('500m')"
CPU_REFUSED = [
    ("-1", f"invalid CPU quantity '-1': {CPU_FORMS}"),
    ("1.2345", f"invalid CPU quantity '1.2345': {CPU_FORMS}"),
    ("abc", f"invalid CPU quantity 'abc': {CPU_FORMS}"),
    ("1.5m", f"invalid CPU quantity '1.5m': {CPU_FORMS}"),
    ("1e3", f"invalid CPU quantity '1e3': {CPU_FORMS}"),
    (" 2", f"invalid CPU quantity ' 2': {CPU_FORMS}"),
    ("", f"invalid CPU quantity '': {CPU_FORMS}"),
    (1.2345, "invalid CPU quantity 1.2345: expected at most millicore precision"),
    (-1, "invalid CPU quantity -1: expected 0 to 1000000 cores"),
    (1_000_001, "invalid CPU quantity 1000001: expected 0 to 1000000 cores"),
    (True, "expected a CPU quantity such as 2, 0.5 or '500m', found the boolean true"),
    ([2], "expected a CPU quantity such as 2, 0.5 or '500m', found a list"),
    ({"cores": 2}, "expected a CPU quantity such as 2, 0.5 or '500m', found a mapping"),
    (None, "expected a CPU quantity such as 2, 0.5 or '500m', found null"),
]


@cases(CPU_ACCEPTED)
def test_cpu_accepts(value: Any, expected: int) -> None:
    assert accepted(Cpu, value) == expected


@cases(CPU_REFUSED)
def test_cpu_refuses(value: Any, expected: str) -> None:
    assert refusal(Cpu, value) == expected


@pytest.mark.parametrize("value", ["1000001", "1000000001m"])
def test_cpu_string_above_the_limit_is_refused_like_the_number(value: str) -> None:
    assert refusal(Cpu, value) == f"invalid CPU quantity {value!r}: expected 0 to 1000000 cores"


BYTES_ACCEPTED = [
    ("512Mi", 512 * 2**20),
    ("2Gi", 2 * 2**30),
    ("500M", 500 * 10**6),
    ("1k", 1000),
    ("1Ki", 1024),
    ("7T", 7 * 10**12),
    ("3Pi", 3 * 2**50),
    ("1024", 1024),
    ("0", 0),
    (1024, 1024),
    (0, 0),
]
BYTE_FORMS = (
    "expected a number with an optional unit (Ki, Mi, Gi, Ti, Pi, k, M, G, T, P), such as 512Mi"
)
BYTES_REFUSED = [
    (1.5, "invalid byte quantity 1.5: expected a whole number of bytes, 0 or more"),
    (1.0, "invalid byte quantity 1.0: expected a whole number of bytes, 0 or more"),
    ("1Zi", f"invalid byte quantity '1Zi': {BYTE_FORMS}"),
    ("1K", f"invalid byte quantity '1K': {BYTE_FORMS}"),
    ("1.5Gi", f"invalid byte quantity '1.5Gi': {BYTE_FORMS}"),
    ("1 Gi", f"invalid byte quantity '1 Gi': {BYTE_FORMS}"),
    ("-1", f"invalid byte quantity '-1': {BYTE_FORMS}"),
    (True, "expected a byte quantity such as 512Mi or 2Gi, found the boolean true"),
    (None, "expected a byte quantity such as 512Mi or 2Gi, found null"),
    ([], "expected a byte quantity such as 512Mi or 2Gi, found a list"),
]


@cases(BYTES_ACCEPTED)
def test_bytes_accepts(value: Any, expected: int) -> None:
    assert accepted(Bytes, value) == expected


@cases(BYTES_REFUSED)
def test_bytes_refuses(value: Any, expected: str) -> None:
    assert refusal(Bytes, value) == expected


DURATION_ACCEPTED = [
    ("30s", 30),
    ("5m", 300),
    ("2h", 7200),
    ("7d", 604800),
    ("0s", 0),
    (30, 30),
    (0, 0),
]
DURATION_FORMS = "expected a number and a unit: 30s, 5m, 2h, 7d"
DURATION_REFUSED = [
    ("30", f"invalid duration '30': {DURATION_FORMS}"),
    ("1w", f"invalid duration '1w': {DURATION_FORMS}"),
    ("1.5h", f"invalid duration '1.5h': {DURATION_FORMS}"),
    ("30S", f"invalid duration '30S': {DURATION_FORMS}"),
    ("-5s", f"invalid duration '-5s': {DURATION_FORMS}"),
    (1.5, "invalid duration 1.5: expected whole seconds, 0 or more"),
    (False, "expected a duration such as 30s, 5m, 2h or 7d, found the boolean false"),
    ({}, "expected a duration such as 30s, 5m, 2h or 7d, found a mapping"),
]


@cases(DURATION_ACCEPTED)
def test_duration_accepts(value: Any, expected: int) -> None:
    assert accepted(Duration, value) == expected


@cases(DURATION_REFUSED)
def test_duration_refuses(value: Any, expected: str) -> None:
    assert refusal(Duration, value) == expected


@pytest.mark.parametrize(
    ("value_type", "value"),
    [(Bytes, -1), (Bytes, -1024), (Duration, -30)],
    ids=["bytes -1", "bytes -1024", "duration -30"],
)
def test_negative_integer_quantity_is_refused(value_type: Any, value: int) -> None:
    assert refusal(value_type, value).endswith(", 0 or more")


FORMATTED = [
    (format_cpu, 2000, "2"),
    (format_cpu, 0, "0"),
    (format_cpu, 500, "500m"),
    (format_cpu, 1500, "1500m"),
    (format_bytes, 0, "0"),
    (format_bytes, 1000, "1k"),
    (format_bytes, 1024, "1Ki"),
    (format_bytes, 1536, "1536"),
    (format_bytes, 512 * 2**20, "512Mi"),
    (format_bytes, 3 * 10**9, "3G"),
    (format_bytes, 2**40, "1Ti"),
    (format_bytes, 2**60, "1024Pi"),
    (format_duration, 0, "0s"),
    (format_duration, 59, "59s"),
    (format_duration, 90, "90s"),
    (format_duration, 120, "2m"),
    (format_duration, 7200, "2h"),
    (format_duration, 5400, "90m"),
    (format_duration, 86400 * 7, "7d"),
]


@pytest.mark.parametrize(
    ("formatter", "value", "expected"),
    FORMATTED,
    ids=[f"{formatter.__name__}({value})" for formatter, value, _ in FORMATTED],
)
def test_format(formatter: Any, value: int, expected: str) -> None:
    assert formatter(value) == expected


@given(st.integers(min_value=0, max_value=1_000_000_000))
def test_format_cpu_parses_back(millis: int) -> None:
    assert accepted(Cpu, format_cpu(millis)) == millis


@given(st.integers(min_value=0, max_value=2**70))
def test_format_bytes_parses_back(size: int) -> None:
    assert accepted(Bytes, format_bytes(size)) == size


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_parses_back(seconds: int) -> None:
    assert accepted(Duration, format_duration(seconds)) == seconds


def byte_spellings(size: int) -> list[str]:
    return [f"{size // scale}{unit}" for unit, scale in BYTE_UNITS.items() if size % scale == 0]


def duration_spellings(seconds: int) -> list[str]:
    return [
        f"{seconds // scale}{unit}" for unit, scale in DURATION_UNITS.items() if not seconds % scale
    ]


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_is_the_shortest_spelling(seconds: int) -> None:
    assert len(format_duration(seconds)) == min(map(len, duration_spellings(seconds)))


@given(st.integers(min_value=0, max_value=2**70))
@example(1_024_000)
def test_format_bytes_is_the_shortest_spelling(size: int) -> None:
    assert len(format_bytes(size)) == min(map(len, byte_spellings(size)))


def cpu_spellings(millis: int) -> list[str]:
    cores = f"{millis // 1000}.{millis % 1000:03d}".rstrip("0").rstrip(".")
    return [f"{millis}m", cores]


@given(st.integers(min_value=0, max_value=1_000_000_000))
@example(1500)
def test_format_cpu_is_whole_cores_or_millicores(millis: int) -> None:
    assert all(accepted(Cpu, spelling) == millis for spelling in cpu_spellings(millis))
    expected = str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    assert format_cpu(millis) == expected


# -- names, digests, paths -----------------------------------------------------------------------

NAME_ACCEPTED = ["a", "web-1", "x0", "a" * 63, "a--b"]
NAME_REFUSED = ["", "A", "Web", "1a", "-a", "a-", "a_b", "a.b", "a b", "é", "a" * 64]


@pytest.mark.parametrize("value", NAME_ACCEPTED)
def test_name_accepts(value: str) -> None:
    assert accepted(Name, value) == value


@pytest.mark.parametrize("value", NAME_REFUSED, ids=repr)
def test_name_refuses(value: str) -> None:
    assert refusal(Name, value) == (
        f"invalid name {value!r}: expected 1-63 lowercase letters, digits and '-', "
        "starting with a letter and not ending with '-'"
    )


DIGEST = "sha256:" + hashlib.sha256(b"artifact").hexdigest()
DIGEST_REFUSED = {
    "uppercase hex": DIGEST.upper().replace("SHA256", "sha256"),
    "other algorithm": DIGEST.replace("sha256", "sha512"),
    "no algorithm": DIGEST.removeprefix("sha256:"),
    "63 digits": DIGEST[:-1],
    "65 digits": DIGEST + "0",
    "trailing newline": DIGEST + "\n",
}


def test_digest_accepts() -> None:
    assert accepted(Digest, DIGEST) == DIGEST


@pytest.mark.parametrize("value", DIGEST_REFUSED.values(), ids=DIGEST_REFUSED.keys())
def test_digest_refuses(value: str) -> None:
    assert refusal(Digest, value) == (
        f"invalid digest {value!r}: expected 'sha256:' and 64 lowercase hexadecimal digits"
    )


RELPATH_ACCEPTED = ["a", "src/app.py", "a/b/c", ".hidden/x", "models/v1.2/w+x@y=z-_.bin"]
NOT_NORMALIZED = "has an empty, '.' or '..' component; expected a normalized relative path"
RELPATH_REFUSED = {
    "empty": ("", "empty path"),
    "absolute": (
        "/etc/passwd",
        "path '/etc/passwd' is absolute; expected a path relative to the repository",
    ),
    "dot-dot": ("a/../b", f"path 'a/../b' {NOT_NORMALIZED}"),
    "leading dot-dot": ("../b", f"path '../b' {NOT_NORMALIZED}"),
    "dot": ("./a", f"path './a' {NOT_NORMALIZED}"),
    "trailing dot": ("a/.", f"path 'a/.' {NOT_NORMALIZED}"),
    "empty component": ("a//b", f"path 'a//b' {NOT_NORMALIZED}"),
    "trailing slash": ("a/", f"path 'a/' {NOT_NORMALIZED}"),
    "backslash": ("a\\b", "path 'a\\\\b' contains '\\'; expected '/' as the separator"),
    "space": (
        "a b",
        "path 'a b' has a component 'a b' with characters outside letters, digits and ._+@=-",
    ),
    "star": (
        "src/*",
        "path 'src/*' has a component '*' with characters outside letters, digits and ._+@=-",
    ),
    "too long": ("a" * 1025, "path is 1025 characters long; the limit is 1024"),
}


@pytest.mark.parametrize("value", RELPATH_ACCEPTED)
def test_relpath_accepts(value: str) -> None:
    assert accepted(RelPath, value) == value


@pytest.mark.parametrize(
    ("value", "expected"), RELPATH_REFUSED.values(), ids=RELPATH_REFUSED.keys()
)
def test_relpath_refuses(value: str, expected: str) -> None:
    assert refusal(RelPath, value) == expected


PATTERN_ACCEPTED = ["**", "src/**", "**/x.py", "a/**/b", "*.yaml", "a/?/b", "*", "c?rcle.*"]
WHOLE = "'**' must be a whole path component (as in 'src/**')"
PATTERN_REFUSED = {
    "** inside a component": ("src/**.py", f"path pattern 'src/**.py': {WHOLE}"),
    "***": ("***", f"path pattern '***': {WHOLE}"),
    "** after text": ("a**", f"path pattern 'a**': {WHOLE}"),
    "absolute": (
        "/src/**",
        "path pattern '/src/**' is absolute; expected a path relative to the repository",
    ),
    "dot-dot": ("src/../**", f"path pattern 'src/../**' {NOT_NORMALIZED}"),
    "dot": ("./*", f"path pattern './*' {NOT_NORMALIZED}"),
    "empty component": ("src//*", f"path pattern 'src//*' {NOT_NORMALIZED}"),
    "empty": ("", "empty path pattern"),
    "backslash": ("src\\*", "path pattern 'src\\\\*' contains '\\'; expected '/' as the separator"),
    "character class": (
        "[ab].py",
        "path pattern '[ab].py' has a component '[ab].py' with characters outside letters, "
        "digits and ._+@=-",
    ),
}


@pytest.mark.parametrize("value", PATTERN_ACCEPTED)
def test_path_pattern_accepts(value: str) -> None:
    assert accepted(PathPattern, value) == value


@pytest.mark.parametrize(
    ("value", "expected"), PATTERN_REFUSED.values(), ids=PATTERN_REFUSED.keys()
)
def test_path_pattern_refuses(value: str, expected: str) -> None:
    assert refusal(PathPattern, value) == expected


# -- the words reach the document's author, at the value -----------------------------------------

NODE = """\
apiVersion: circle/v1
kind: Node
name: gpu-1
publicKey: {key}
failureDomain: {domain}
capacity:
  cpu: {cpu}
  memory: {memory}
"""
GOOD_NODE = {
    "key": ssh_public_key_line(bytes(32)),
    "domain": "rack-a",
    "cpu": "'500m'",
    "memory": "2Gi",
}
IN_DOCUMENT = {
    "cpu": ("cpu", "'1.2345'", Cpu, "1.2345", (7, 8)),
    "memory": ("memory", "1Zi", Bytes, "1Zi", (8, 11)),
    "failure domain": ("domain", "Rack-A", Name, "Rack-A", (5, 16)),
    "public key": ("key", "ssh-rsa AAAA", SshPublicKey, "ssh-rsa AAAA", (4, 12)),
}


@pytest.mark.parametrize(
    ("slot", "yaml", "value_type", "value", "place"), IN_DOCUMENT.values(), ids=IN_DOCUMENT.keys()
)
def test_document_reports_the_type_message_at_the_value(
    slot: str, yaml: str, value_type: Any, value: str, place: tuple[int, int]
) -> None:
    text = NODE.format(**{**GOOD_NODE, slot: yaml})
    with pytest.raises(DocumentError) as caught:
        parse_document(text.encode(), "nodes/gpu-1.yaml", [KINDS["Node"]])
    [problem] = caught.value.problems
    assert problem.message == refusal(value_type, value)
    assert (problem.mark.line, problem.mark.column) == place


def test_good_node_parses() -> None:
    # The documents above differ from this one in one value only.
    text = NODE.format(**GOOD_NODE)
    node = parse_document(text.encode(), "nodes/gpu-1.yaml", [KINDS["Node"]]).document
    assert node.capacity.cpu == 500  # type: ignore[attr-defined]


# -- SSH keys ------------------------------------------------------------------------------------

needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen"
)


def ssh_keygen(directory: Path, key_type: str, *options: str) -> str:
    """Make a key pair with the real ssh-keygen; return its public key line."""
    private = directory / f"id_{key_type}"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            key_type,
            *options,
            "-N",
            "",
            "-C",
            "alice@laptop",
            "-f",
            private,
        ],
        check=True,
        capture_output=True,
    )
    return private.with_suffix(".pub").read_text().strip()


def shortened(line: str) -> str:
    return repr(line if len(line) <= 40 else line[:37] + "...")


@needs_ssh_keygen
def test_fingerprint_agrees_with_ssh_keygen(tmp_path: Path) -> None:
    line = ssh_keygen(tmp_path, "ed25519")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", tmp_path / "id_ed25519.pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    # "256 SHA256:... alice@laptop (ED25519)"
    assert listed[0] == "256"
    assert listed[-1] == "(ED25519)"
    assert ssh_fingerprint(line) == listed[1]
    assert ed25519_key_blob(line) == base64.b64decode(line.split()[1])
    assert accepted(SshPublicKey, line) == line


@needs_ssh_keygen
@pytest.mark.parametrize(
    ("key_type", "options"), [("rsa", ("-b", "1024")), ("ecdsa", ())], ids=["rsa", "ecdsa"]
)
def test_other_key_types_are_refused(
    tmp_path: Path, key_type: str, options: tuple[str, ...]
) -> None:
    line = ssh_keygen(tmp_path, key_type, *options)
    with pytest.raises(ValueError, match="invalid public key") as caught:
        ed25519_key_blob(line)
    assert str(caught.value) == (
        f"invalid public key {shortened(line)}: "
        "expected an OpenSSH line 'ssh-ed25519 AAAA... [comment]'"
    )
    # Relabelling the blob does not help: the blob says what algorithm it is.
    relabelled = "ssh-ed25519 " + line.split()[1]
    with pytest.raises(ValueError, match="invalid public key") as caught:
        ed25519_key_blob(relabelled)
    assert str(caught.value) == (
        f"invalid public key {shortened(relabelled)}: not a 32-byte Ed25519 key blob"
    )


BLOB = ed25519_key_blob(ssh_public_key_line(bytes(range(32))))
BAD_KEYS = {
    "empty": ("", "expected an OpenSSH line 'ssh-ed25519 AAAA... [comment]'"),
    "type only": ("ssh-ed25519", "expected an OpenSSH line 'ssh-ed25519 AAAA... [comment]'"),
    "bad base64": ("ssh-ed25519 AAAA$$$$", "the key is not base64"),
    "bad padding": ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI", "the key is not base64"),
    "truncated blob": (
        "ssh-ed25519 " + base64.b64encode(BLOB[:-1]).decode(),
        "not a 32-byte Ed25519 key blob",
    ),
    "blob too long": (
        "ssh-ed25519 " + base64.b64encode(BLOB + b"\0").decode(),
        "not a 32-byte Ed25519 key blob",
    ),
    "bad length field": (
        "ssh-ed25519 " + base64.b64encode(BLOB[:18] + b"\x21" + BLOB[19:]).decode(),
        "bad key length field",
    ),
}


@pytest.mark.parametrize(("line", "problem"), BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_bad_key_lines_are_refused(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match="invalid public key") as caught:
        ed25519_key_blob(line)
    assert str(caught.value) == f"invalid public key {shortened(line)}: {problem}"
    assert refusal(SshPublicKey, line) == str(caught.value)


@given(ssh_public_keys, st.sampled_from(["", " other-comment", "  spaced  out "]))
def test_key_identity_ignores_the_comment(line: str, comment: str) -> None:
    bare = " ".join(line.split()[:2])
    public_key = load_ssh_public_key(line.encode())
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = ed25519_key_blob(line)
    assert blob.endswith(raw)
    assert ed25519_key_blob(bare + comment) == blob
    assert ssh_fingerprint(bare + comment) == ssh_fingerprint(line)
    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert ssh_fingerprint(line) == f"SHA256:{expected}"
