"""The artifact manifest (`circle-artifact/1`): what an artifact holds, canonically. Pure.

    {"format": "circle-artifact/1",
     "chunking": {"algorithm": "fastcdc", "min": 262144, "avg": 1048576, "max": 4194304},
     "entries": [{"path": "app", "type": "dir", "mode": "0755"},
                 {"path": "app/main.py", "type": "file", "mode": "0644", "size": 120,
                  "sha256": "...", "chunks": [["<sha256>", 120]]},
                 {"path": "app/current", "type": "symlink", "target": "main.py"}],
     "prefetch": ["app/main.py"], "labels": {"builder": "archive"}}

Canonical bytes are RFC 8785 (JCS) with entries sorted by path; no timestamps, owners or host
data. The artifact id is `sha256:` + the sha256 of those bytes. `decode` is the gate a node
passes an untrusted manifest through *after* checking its bytes against the id it was told to
run: it rejects, never sanitizes, anything a hostile manifest could use to escape or confuse
materialization: absolute paths, `.` / `..` / empty components, backslashes, control
characters, over-long paths, duplicates including case-fold and Unicode-normalization clashes,
undeclared parents, entries under a symlink, symlinks that escape the root (or any symlink
unless allowed), modes other than 0644/0755 (so no setuid, setgid or device), size lies and
counts beyond the limits.
"""

from __future__ import annotations

import enum
import hashlib
import json
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from builders import BuildError

FORMAT = "circle-artifact/1"
FILE_MODES = ("0644", "0755")
DIR_MODE = "0755"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"sha256:[0-9a-f]{64}")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


class ManifestRefused(BuildError):
    """An artifact manifest that is malformed, unsafe, or not the one its id names."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a node puts on manifests it did not build itself."""

    max_manifest_bytes: int = 64 * 1024 * 1024
    max_entries: int = 200_000
    max_chunks_per_file: int = 1_000_000
    max_total_chunks: int = 4_000_000
    max_path_bytes: int = 1024
    max_component_bytes: int = 255
    max_file_size: int = 2**44  # 16 TiB


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Chunking:
    algorithm: str = "fastcdc"  # or "fixed"
    min: int = 256 * 1024
    avg: int = 1024 * 1024
    max: int = 4 * 1024 * 1024

    def as_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "min": self.min, "avg": self.avg, "max": self.max}


@dataclass(frozen=True, slots=True)
class Chunk:
    sha256: str
    size: int


class EntryType(enum.StrEnum):
    """What an entry of an artifact is (its `type` in the manifest)."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(frozen=True, slots=True)
class Entry:
    path: str
    type: EntryType
    mode: str | None = None  # files and dirs
    size: int = 0  # files
    sha256: str | None = None  # files
    chunks: tuple[Chunk, ...] = ()  # files
    target: str | None = None  # symlinks

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", EntryType(self.type))  # "file" reads as FILE

    def as_json(self) -> dict[str, Any]:
        if self.type is EntryType.DIR:
            return {"path": self.path, "type": "dir", "mode": self.mode}
        if self.type is EntryType.SYMLINK:
            return {"path": self.path, "type": "symlink", "target": self.target}
        return {
            "path": self.path,
            "type": "file",
            "mode": self.mode,
            "size": self.size,
            "sha256": self.sha256,
            "chunks": [[chunk.sha256, chunk.size] for chunk in self.chunks],
        }


@dataclass(frozen=True, slots=True)
class ArtifactManifest:
    entries: tuple[Entry, ...]
    chunking: Chunking = Chunking()
    prefetch: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One order in memory as on disk, so equal artifacts compare equal.
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=_order)))
        object.__setattr__(self, "prefetch", tuple(sorted(self.prefetch)))

    def encode(self) -> bytes:
        """The canonical bytes (entries sorted by path)."""
        return rfc8785.dumps(
            {
                "format": FORMAT,
                "chunking": self.chunking.as_json(),
                "entries": [entry.as_json() for entry in self.entries],
                "prefetch": list(self.prefetch),
                "labels": dict(self.labels),
            }
        )

    @property
    def artifact_id(self) -> str:
        return artifact_id(self.encode())

    def files(self) -> Iterable[Entry]:
        return (entry for entry in self.entries if entry.type is EntryType.FILE)

    def chunk_digests(self) -> set[str]:
        """Every distinct chunk the artifact needs: what a node fetches if it has none."""
        return {chunk.sha256 for entry in self.files() for chunk in entry.chunks}


def artifact_id(canonical: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _order(entry: Entry) -> bytes:
    return entry.path.encode("utf-8")


# -- the gate ------------------------------------------------------------------------------------


def decode(
    data: bytes,
    expected_id: str | None = None,
    *,
    allow_symlinks: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> ArtifactManifest:
    """Check `data` against `expected_id` before anything else, then parse and validate it.

    Raises ManifestRefused naming the first thing wrong (and the path it concerns).
    """
    if len(data) > limits.max_manifest_bytes:
        raise ManifestRefused(
            f"manifest of {len(data)} bytes exceeds the limit of {limits.max_manifest_bytes}"
        )
    if expected_id is not None:
        if not _ID.fullmatch(expected_id):
            raise ManifestRefused(f"{expected_id!r} is not an artifact id (sha256:<64 hex>)")
        found = artifact_id(data)
        if found != expected_id:
            raise ManifestRefused(
                f"manifest bytes hash to {found}, not the pinned {expected_id}: refused unread"
            )
    try:
        document = json.loads(data, object_pairs_hook=_no_duplicate_keys)
    except ManifestRefused:
        raise
    except (ValueError, RecursionError) as error:
        raise ManifestRefused(f"manifest is not JSON: {error}"[:200]) from None
    manifest = _from_json(document, allow_symlinks=allow_symlinks, limits=limits)
    if manifest.encode() != data:
        raise ManifestRefused(
            "manifest is not in canonical form (RFC 8785, entries sorted by path)"
        )
    return manifest


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestRefused(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestRefused(message)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{what} must be an integer in [{low}, {high}], got {str(value)[:40]}",
    )
    return int(value)


def _keys(value: Any, required: set[str], what: str) -> dict[str, Any]:
    _need(isinstance(value, dict), f"{what} must be an object")
    _need(set(value) == required, f"{what} must have exactly the fields {sorted(required)}")
    return dict(value)


def check_path(path: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """A safe relative path, or ManifestRefused saying why not. Rejects, never normalizes."""
    _need(isinstance(path, str) and path != "", "an entry path must be a non-empty string")
    shown = repr(path[:80])
    encoded = path.encode("utf-8", "surrogatepass")
    _need(
        len(encoded) <= limits.max_path_bytes,
        f"path {shown} is longer than {limits.max_path_bytes} bytes",
    )
    _need(not path.startswith("/"), f"path {shown} is absolute")
    _need("\\" not in path, f"path {shown} contains a backslash")
    _need(
        not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in path),
        f"path {shown} contains a control character",
    )
    _need(
        not any(0xD800 <= ord(char) < 0xE000 for char in path),
        f"path {shown} contains a lone surrogate",
    )
    for component in path.split("/"):
        _need(component not in ("", ".", ".."), f"path {shown} has an empty, '.' or '..' component")
        _need(
            len(component.encode("utf-8")) <= limits.max_component_bytes,
            f"path {shown} has a component longer than {limits.max_component_bytes} bytes",
        )
    return str(path)


def _check_link_target(path: str, target: str) -> None:
    """A target may climb with leading `..` (no higher than the link's own folder allows) and
    then only descend by names. A `..` after a name is refused: the name may be a symlink,
    and `..` after it climbs from wherever that points, which no lexical check can bound."""
    parts = target.split("/")
    climb = 0
    while climb < len(parts) and parts[climb] == "..":
        climb += 1
    rest = parts[climb:]
    _need(
        all(part not in ("", ".", "..") for part in rest),
        f"symlink {path!r} -> {target!r}: expected leading '..' then names only",
    )
    depth = path.count("/")  # folders between the root and the link
    _need(climb <= depth, f"symlink {path!r} -> {target!r} escapes the artifact")


def _fold(path: str) -> str:
    """The name a case-insensitive or normalizing filesystem would give `path`."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", path).casefold())


def _entry(value: Any, allow_symlinks: bool, limits: Limits) -> Entry:
    _need(isinstance(value, dict) and "type" in value, "an entry must be an object with a type")
    kind = value["type"]
    path = check_path(value.get("path"), limits)
    if kind == "dir":
        _keys(value, {"path", "type", "mode"}, f"directory {path!r}")
        _need(value["mode"] == DIR_MODE, f"directory {path!r} must have mode {DIR_MODE}")
        return Entry(path, EntryType.DIR, DIR_MODE)
    if kind == "symlink":
        _keys(value, {"path", "type", "target"}, f"symlink {path!r}")
        _need(allow_symlinks, f"{path!r} is a symlink, and this artifact allows none")
        target = value["target"]
        _need(isinstance(target, str) and target != "", f"symlink {path!r} needs a target")
        _need(not target.startswith("/"), f"symlink {path!r} points to an absolute path")
        _need(
            "\\" not in target and "\0" not in target,
            f"symlink {path!r} has a backslash or NUL in its target",
        )
        _check_link_target(path, target)
        return Entry(path, EntryType.SYMLINK, target=target)
    _need(
        kind == "file", f"entry {path!r} has type {str(kind)[:20]!r}; expected file, dir or symlink"
    )
    _keys(value, {"path", "type", "mode", "size", "sha256", "chunks"}, f"file {path!r}")
    _need(
        value["mode"] in FILE_MODES,
        f"file {path!r} has mode {str(value['mode'])[:12]!r}; expected 0644 or 0755 "
        "(no setuid, setgid or special bits)",
    )
    size = _integer(value["size"], f"size of {path!r}", 0, limits.max_file_size)
    digest = value["sha256"]
    _need(isinstance(digest, str) and bool(_HEX64.fullmatch(digest)), f"file {path!r}: bad sha256")
    chunks_json = value["chunks"]
    _need(isinstance(chunks_json, list), f"file {path!r}: chunks must be a list")
    _need(
        len(chunks_json) <= limits.max_chunks_per_file,
        f"file {path!r} has {len(chunks_json)} chunks; the limit is {limits.max_chunks_per_file}",
    )
    chunks = []
    for item in chunks_json:
        _need(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], str),
            f"file {path!r}: a chunk must be [sha256, size]",
        )
        _need(bool(_HEX64.fullmatch(item[0])), f"file {path!r}: bad chunk sha256")
        chunks.append(Chunk(item[0], _integer(item[1], f"chunk size in {path!r}", 1, 2**31)))
    total = sum(chunk.size for chunk in chunks)
    _need(total == size, f"file {path!r} says {size} bytes, its chunks hold {total}")
    return Entry(path, EntryType.FILE, value["mode"], size, digest, tuple(chunks))


def _from_json(document: Any, *, allow_symlinks: bool, limits: Limits) -> ArtifactManifest:
    top = _keys(document, {"format", "chunking", "entries", "prefetch", "labels"}, "manifest")
    _need(top["format"] == FORMAT, f"not a {FORMAT} manifest")
    chunking_json = _keys(top["chunking"], {"algorithm", "min", "avg", "max"}, "chunking")
    _need(
        chunking_json["algorithm"] in ("fastcdc", "fixed"),
        "chunking algorithm must be fastcdc or fixed",
    )
    chunking = Chunking(
        chunking_json["algorithm"],
        _integer(chunking_json["min"], "chunking min", 64, 2**31),
        _integer(chunking_json["avg"], "chunking avg", 64, 2**31),
        _integer(chunking_json["max"], "chunking max", 64, 2**31),
    )
    _need(chunking.min <= chunking.avg <= chunking.max, "chunking needs min <= avg <= max")
    entries_json = top["entries"]
    _need(isinstance(entries_json, list), "entries must be a list")
    _need(
        len(entries_json) <= limits.max_entries,
        f"{len(entries_json)} entries; the limit is {limits.max_entries}",
    )
    entries = tuple(_entry(value, allow_symlinks, limits) for value in entries_json)
    _check_tree(entries, limits)
    prefetch = top["prefetch"]
    files = {entry.path for entry in entries if entry.type is EntryType.FILE}
    _need(
        isinstance(prefetch, list) and all(isinstance(p, str) and p in files for p in prefetch),
        "prefetch must list files of the artifact",
    )
    _need(len(set(prefetch)) == len(prefetch), "prefetch lists a file twice")
    labels = top["labels"]
    _need(
        isinstance(labels, dict)
        and len(labels) <= 64
        and all(
            _LABEL.fullmatch(k) and isinstance(v, str) and len(v) <= 1024 for k, v in labels.items()
        ),
        "labels must map up to 64 names to strings",
    )
    return ArtifactManifest(entries, chunking, tuple(prefetch), dict(labels))


def _check_tree(entries: Sequence[Entry], limits: Limits) -> None:
    kinds: dict[str, EntryType] = {}
    folded: dict[str, str] = {}
    for entry in entries:
        _need(entry.path not in kinds, f"duplicate entry {entry.path!r}")
        fold = _fold(entry.path)
        _need(
            fold not in folded,
            f"entries {folded.get(fold)!r} and {entry.path!r} clash on a case-insensitive or "
            "normalizing filesystem",
        )
        kinds[entry.path] = entry.type
        folded[fold] = entry.path
    for entry in entries:
        parent = posixpath.dirname(entry.path)
        while parent:
            kind = kinds.get(parent)
            _need(
                kind is not EntryType.SYMLINK,
                f"entry {entry.path!r} lies under the symlink {parent!r}",
            )
            _need(
                kind is EntryType.DIR,
                f"entry {entry.path!r} needs its folder {parent!r} declared as a dir",
            )
            parent = posixpath.dirname(parent)
    total = sum(len(entry.chunks) for entry in entries)
    _need(
        total <= limits.max_total_chunks,
        f"{total} chunks in all; the limit is {limits.max_total_chunks}",
    )
