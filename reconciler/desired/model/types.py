"""Value types shared by the circle documents: names, digests, paths, quantities, durations, keys.

Each is an `Annotated` type: validation turns the YAML spelling into one canonical value (CPU
in millicores, memory in bytes, durations in seconds), serialization writes it back in the
canonical spelling (the shortest exact one for bytes and durations; whole cores or millicores
for CPU, as Kubernetes writes them), and the JSON Schema says what an editor should accept.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(
    r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_PATTERN_PART = re.compile(r"(\*\*|[A-Za-z0-9._*?+@=-]+)")
_PATH_PART = re.compile(r"[A-Za-z0-9._+@=-]+")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: expected 1-63 lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return value


Name = Annotated[
    str,
    AfterValidator(_check_name),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
            "x-circle-type": "name",
        }
    ),
]
"""A DNS-label-like name: documents, members, rules, ports, backends."""


def _check_label_key(value: str) -> str:
    if not _LABEL_KEY.fullmatch(value):
        raise ValueError(
            f"invalid label key {value!r}: expected an optional 'domain/' prefix and a name of "
            "letters, digits, '.', '_' and '-' (at most 63 characters)"
        )
    return value


def _check_label_value(value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"invalid label value {value!r}: expected at most 63 letters, digits, '.', '_' "
            "and '-', starting and ending with a letter or digit"
        )
    return value


LabelKey = Annotated[str, AfterValidator(_check_label_key)]
LabelValue = Annotated[str, AfterValidator(_check_label_value)]


def _check_digest(value: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise ValueError(
            f"invalid digest {value!r}: expected 'sha256:' and 64 lowercase hexadecimal digits"
        )
    return value


Digest = Annotated[
    str,
    AfterValidator(_check_digest),
    WithJsonSchema(
        {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$", "x-circle-type": "digest"}
    ),
]


def _check_hex64(value: str) -> str:
    if not _HEX64.fullmatch(value):
        raise ValueError(f"invalid sha256 {value!r}: expected 64 lowercase hexadecimal digits")
    return value


Sha256Hex = Annotated[
    str,
    AfterValidator(_check_hex64),
    WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
]


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            f"invalid environment variable name {value!r}: expected letters, digits and '_', "
            "not starting with a digit"
        )
    return value


EnvName = Annotated[
    str,
    AfterValidator(_check_env_name),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"}),
]


def _split_relative(value: str, what: str, part: re.Pattern[str]) -> list[str]:
    if not value:
        raise ValueError(f"empty {what}")
    if len(value) > 1024:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is 1024")
    if value.startswith("/"):
        raise ValueError(
            f"{what} {value!r} is absolute; expected a path relative to the repository"
        )
    if "\\" in value:
        raise ValueError(f"{what} {value!r} contains '\\'; expected '/' as the separator")
    parts = value.split("/")
    for piece in parts:
        if piece in ("", ".", ".."):
            raise ValueError(
                f"{what} {value!r} has an empty, '.' or '..' component; expected a normalized "
                "relative path"
            )
        if not part.fullmatch(piece):
            raise ValueError(
                f"{what} {value!r} has a component {piece!r} with characters outside "
                "letters, digits and ._+@=-"
            )
    return parts


def _check_relpath(value: str) -> str:
    _split_relative(value, "path", _PATH_PART)
    return value


RelPath = Annotated[str, AfterValidator(_check_relpath)]
"""A normalized relative path: no leading '/', no '.', '..' or empty components."""


def _check_pattern(value: str) -> str:
    for piece in _split_relative(value, "path pattern", _PATTERN_PART):
        if "**" in piece and piece != "**":
            raise ValueError(
                f"path pattern {value!r}: '**' must be a whole path component (as in 'src/**')"
            )
    return value


PathPattern = Annotated[str, AfterValidator(_check_pattern)]
"""A repository path pattern: `*` and `?` stay inside one component, `**` spans any number."""


# -- quantities ----------------------------------------------------------------------------------

_CPU = re.compile(r"([0-9]+)m|([0-9]+(?:\.[0-9]{1,3})?)")
_MEMORY = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?")
_MEMORY_UNITS: dict[str | None, int] = {
    None: 1,
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
MAX_CPU_CORES = 1_000_000
_DURATION = re.compile(r"([0-9]+)(s|m|h|d)")
_DURATION_UNITS: dict[str | None, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def describe(value: Any) -> str:
    """How an error message names a value the user wrote."""
    match value:
        case None:
            return "null"
        case bool():
            return f"the boolean {str(value).lower()}"
        case int():
            return f"the integer {value}"
        case float():
            return f"the number {value}"
        case str():
            return f"the string {_shorten(value)!r}"
        case dict():
            return "a mapping"
        case list():
            return "a list"
    return type(value).__name__


def quote(value: Any) -> str:
    """A value as an error message quotes it: strings in quotes, anything else described."""
    return repr(_shorten(value)) if isinstance(value, str) else describe(value)


def _number(value: Any, what: str) -> int | float | None:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, found {describe(value)}")
    if isinstance(value, int | float):
        return value
    return None


@dataclass(frozen=True, eq=False)  # metadata is hashed: by identity
class Quantity(GroupedMetadata):
    """What makes an `int` a quantity: its parser from the YAML spelling (a number or a string
    with a unit), its canonical spelling when written back, and what an editor should accept
    (a number of JSON type `number`, 0 or more, or a string matching `pattern`). CPU, bytes and
    durations are each made of one."""

    parse: Callable[[Any], int]
    render: Callable[[int], str]
    number: str  # "number" or "integer"
    pattern: str
    description: str
    kind: str

    def __iter__(self) -> Iterator[object]:
        yield BeforeValidator(self.parse)
        yield PlainSerializer(self.render, return_type=str)
        yield WithJsonSchema(
            {
                "anyOf": [
                    {"type": self.number, "minimum": 0},
                    {"type": "string", "pattern": self.pattern},
                ],
                "description": self.description,
                "x-circle-type": self.kind,
            }
        )


def _parse_cpu(value: Any) -> int:
    """CPU in millicores: `2`, `0.5`, `"1.5"`, `"500m"`."""
    number = _number(value, "a CPU quantity such as 2, 0.5 or '500m'")
    if number is not None:
        if not 0 <= number <= MAX_CPU_CORES:  # also refuses NaN and infinities
            raise ValueError(f"invalid CPU quantity {value!r}: expected 0 to {MAX_CPU_CORES} cores")
        millis = round(number * 1000)
        if abs(millis - number * 1000) > 1e-6:
            raise ValueError(
                f"invalid CPU quantity {value!r}: expected at most millicore precision"
            )
        return millis
    if not isinstance(value, str):
        raise ValueError(
            f"expected a CPU quantity such as 2, 0.5 or '500m', found {describe(value)}"
        )
    match = _CPU.fullmatch(value)
    if not match:
        raise ValueError(
            f"invalid CPU quantity {value!r}: expected cores (2, 0.5) or millicores ('500m')"
        )
    if match.group(1) is not None:
        millis = int(match.group(1))
    else:
        whole, _, fraction = match.group(2).partition(".")
        millis = int(whole) * 1000 + int((fraction + "000")[:3])
    if millis > MAX_CPU_CORES * 1000:
        raise ValueError(f"invalid CPU quantity {value!r}: expected 0 to {MAX_CPU_CORES} cores")
    return millis


def format_cpu(millis: int) -> str:
    """Whole cores where exact (`2`), millicores otherwise (`1500m`): Kubernetes' spelling."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


Cpu = Annotated[
    int,
    Quantity(
        _parse_cpu,
        format_cpu,
        number="number",
        pattern=r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$",
        description="CPU cores (2, 0.5) or millicores ('500m')",
        kind="cpu",
    ),
]


@dataclass(frozen=True, eq=False)
class _WholeUnits:
    """A quantity written as a whole number of base units, or as a number and a unit."""

    noun: str  # "byte quantity"
    examples: str  # "512Mi or 2Gi"
    whole: str  # "a whole number of bytes"
    spelling: re.Pattern[str]  # (number)(unit)
    units: dict[str | None, int]
    expected: str  # what the message says a string must be

    def __call__(self, value: Any) -> int:
        number = _number(value, f"a {self.noun} such as {self.examples}")
        if number is not None:
            if isinstance(number, float) or number < 0:
                raise ValueError(f"invalid {self.noun} {value!r}: expected {self.whole}, 0 or more")
            return number
        if not isinstance(value, str):
            raise ValueError(
                f"expected a {self.noun} such as {self.examples}, found {describe(value)}"
            )
        match = self.spelling.fullmatch(value)
        if not match:
            raise ValueError(f"invalid {self.noun} {value!r}: expected {self.expected}")
        return int(match.group(1)) * self.units[match.group(2)]


_parse_memory = _WholeUnits(
    "byte quantity",
    "512Mi or 2Gi",
    "a whole number of bytes",
    _MEMORY,
    _MEMORY_UNITS,
    "a number with an optional unit (Ki, Mi, Gi, Ti, Pi, k, M, G, T, P), such as 512Mi",
)
"""Bytes: `1073741824`, `"512Mi"`, `"2Gi"`, `"500M"`."""


def format_bytes(size: int) -> str:
    """The shortest exact spelling of a byte count (`512Mi`, `3G`, `1024k`, `1000`).

    Ties go to binary units, the usual ones for memory.
    """
    spellings = [str(size)] + [
        f"{size // scale}{unit}"
        for unit, scale in _MEMORY_UNITS.items()
        if unit is not None and size and size % scale == 0
    ]
    return min(spellings, key=lambda spelling: (len(spelling), not spelling.endswith("i")))


Bytes = Annotated[
    int,
    Quantity(
        _parse_memory,
        format_bytes,
        number="integer",
        pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$",
        description="bytes, with an optional unit: 512Mi, 2Gi, 500M",
        kind="bytes",
    ),
]

_parse_duration = _WholeUnits(
    "duration",
    "30s, 5m, 2h or 7d",
    "whole seconds",
    _DURATION,
    _DURATION_UNITS,
    "a number and a unit: 30s, 5m, 2h, 7d",
)
"""Seconds: `30`, `"30s"`, `"5m"`, `"2h"`, `"7d"`."""


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        scale = _DURATION_UNITS[unit]
        if seconds and seconds % scale == 0:
            return f"{seconds // scale}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    int,
    Quantity(
        _parse_duration,
        format_duration,
        number="integer",
        pattern="^[0-9]+(s|m|h|d)$",
        description="seconds, or a number with a unit: 30s, 5m, 2h, 7d",
        kind="duration",
    ),
]


# -- keys ----------------------------------------------------------------------------------------


def ed25519_key_blob(value: str) -> bytes:
    """The SSH wire blob of an `ssh-ed25519 AAAA... [comment]` public key line, checked.

    Raises ValueError saying what is wrong. The blob is what identifies a key: two lines with
    different comments are the same key.
    """
    fields = value.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise ValueError(
            f"invalid public key {_shorten(value)!r}: expected an OpenSSH line "
            "'ssh-ed25519 AAAA... [comment]'"
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError(f"invalid public key {_shorten(value)!r}: the key is not base64") from None
    algorithm = b"\x00\x00\x00\x0bssh-ed25519"
    if len(blob) != len(algorithm) + 4 + 32 or not blob.startswith(algorithm):
        raise ValueError(f"invalid public key {_shorten(value)!r}: not a 32-byte Ed25519 key blob")
    if blob[len(algorithm) : len(algorithm) + 4] != b"\x00\x00\x00\x20":
        raise ValueError(f"invalid public key {_shorten(value)!r}: bad key length field")
    return blob


def ssh_fingerprint(value: str) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a public key line (as `ssh-keygen -l` prints)."""
    digest = hashlib.sha256(ed25519_key_blob(value)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _shorten(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def _check_ssh_key(value: str) -> str:
    ed25519_key_blob(value)
    return value


SshPublicKey = Annotated[
    str,
    AfterValidator(_check_ssh_key),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^ssh-ed25519 [A-Za-z0-9+/]+={0,2}( .*)?$",
            "description": "an OpenSSH Ed25519 public key line, as in id_ed25519.pub",
            "x-circle-type": "ssh-public-key",
        }
    ),
]


# -- post-quantum keys (ML-DSA-65, FIPS 204) -------------------------------------------------------

MLDSA65 = "ml-dsa-65"
MLDSA65_PUBLIC_KEY_BYTES = 1952  # FIPS 204, table 2: the encoded public key of ML-DSA-65
_MLDSA65_TYPE_FIELD = len(MLDSA65).to_bytes(4, "big") + MLDSA65.encode()
_MLDSA65_KEY_FIELD = MLDSA65_PUBLIC_KEY_BYTES.to_bytes(4, "big")


def mldsa65_key_blob(value: str) -> bytes:
    """The key blob of an `ml-dsa-65 BASE64 [comment]` public key line, checked: the SSH wire
    encoding `string "ml-dsa-65", string PUBLIC KEY` (so it can never equal an Ed25519 blob).

    The line carries the 1952-byte FIPS 204 public key itself, base64; ValueError says what
    is wrong. As for SSH keys, the comment is no part of the key's identity."""
    fields = value.split()
    if len(fields) < 2 or fields[0] != MLDSA65:
        raise ValueError(
            f"invalid public key {_shorten(value)!r}: expected a line "
            f"'{MLDSA65} BASE64 [comment]' (circle keygen --type {MLDSA65})"
        )
    try:
        raw = base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise ValueError(f"invalid public key {_shorten(value)!r}: the key is not base64") from None
    if len(raw) != MLDSA65_PUBLIC_KEY_BYTES:
        raise ValueError(
            f"invalid public key {_shorten(value)!r}: {len(raw)} bytes, expected the "
            f"{MLDSA65_PUBLIC_KEY_BYTES}-byte {MLDSA65} public key"
        )
    return _MLDSA65_TYPE_FIELD + _MLDSA65_KEY_FIELD + raw


def member_key_blob(value: str) -> bytes:
    """The key blob of a public key line of either kind a member may hold: `ssh-ed25519 ...`
    (the SSH wire blob) or `ml-dsa-65 ...` (`mldsa65_key_blob`)."""
    if value.lstrip().startswith(MLDSA65 + " "):
        return mldsa65_key_blob(value)
    return ed25519_key_blob(value)


def key_fingerprint(value: str) -> str:
    """`SHA256:...` of a public key line's blob: OpenSSH's fingerprint for an SSH key, the same
    digest of `mldsa65_key_blob` for an ML-DSA key."""
    digest = hashlib.sha256(member_key_blob(value)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _check_mldsa65_key(value: str) -> str:
    mldsa65_key_blob(value)
    return value


MlDsa65PublicKey = Annotated[
    str,
    AfterValidator(_check_mldsa65_key),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^ml-dsa-65 [A-Za-z0-9+/]{2603}=( .*)?$",
            "description": "an ML-DSA-65 public key line, as circle keygen --type ml-dsa-65 "
            "writes it to PATH.pub",
        }
    ),
]
