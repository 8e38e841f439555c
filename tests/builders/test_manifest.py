"""The artifact manifest gate: a hostile manifest is rejected, never sanitized, before a node
materializes anything from it; a valid one round-trips to the same bytes and the same id."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from builders.manifest import (
    ArtifactManifest,
    Chunk,
    Entry,
    Limits,
    ManifestRefused,
    decode,
)

HASH_A = "a" * 64
HASH_B = "b" * 64


def base() -> dict[str, Any]:
    return {
        "format": "circle-artifact/1",
        "chunking": {"algorithm": "fastcdc", "min": 262144, "avg": 1048576, "max": 4194304},
        "entries": [
            {"path": "app", "type": "dir", "mode": "0755"},
            {"path": "app/current", "type": "symlink", "target": "main.py"},
            {
                "path": "app/main.py",
                "type": "file",
                "mode": "0644",
                "size": 7,
                "sha256": HASH_A,
                "chunks": [[HASH_B, 3], [HASH_A, 4]],
            },
            {
                "path": "run.sh",
                "type": "file",
                "mode": "0755",
                "size": 0,
                "sha256": HASH_B,
                "chunks": [],
            },
        ],
        "prefetch": ["app/main.py"],
        "labels": {"builder": "archive"},
    }


def encoded(document: dict[str, Any]) -> bytes:
    return rfc8785.dumps(document)


def test_a_valid_manifest_round_trips_to_the_same_bytes_and_id() -> None:
    data = encoded(base())
    identity = "sha256:" + hashlib.sha256(data).hexdigest()

    manifest = decode(data, identity, allow_symlinks=True)

    assert manifest.encode() == data
    assert manifest.artifact_id == identity
    assert manifest.chunk_digests() == {HASH_A, HASH_B}


def test_bytes_that_do_not_hash_to_the_pinned_id_are_refused_unread() -> None:
    data = encoded(base())
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 1
    pinned = "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(ManifestRefused, match="refused unread"):
        decode(bytes(flipped), pinned, allow_symlinks=True)


def entry(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def find(document: dict[str, Any]) -> dict[str, Any]:
        return next(e for e in document["entries"] if e["path"] == path)

    return find


def setting(path: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        entry(path)(document)[key] = value

    return change


def adding(*entries: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["entries"] = sorted(
            [*document["entries"], *entries], key=lambda e: e["path"].encode()
        )

    return change


def file(path: str, size: int = 0) -> dict[str, Any]:
    chunks = [[HASH_A, size]] if size else []
    return {
        "path": path,
        "type": "file",
        "mode": "0644",
        "size": size,
        "sha256": HASH_A,
        "chunks": chunks,
    }


# (id, change, expected message)
REFUSALS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("absolute-path", adding(file("/etc/passwd")), "path '/etc/passwd' is absolute"),
    (
        "dot-dot",
        adding(file("app/../../x")),
        "path 'app/../../x' has an empty, '.' or '..' component",
    ),
    ("dot", adding(file("app/./x")), "has an empty, '.' or '..' component"),
    ("empty-component", adding(file("app//x")), "has an empty, '.' or '..' component"),
    ("backslash", adding(file("app\\x")), "contains a backslash"),
    ("nul", adding(file("app/x\0y")), "contains a control character"),
    ("newline", adding(file("app/x\ny")), "contains a control character"),
    ("c1-control", adding(file("app/x\x85y")), "contains a control character"),
    ("long-component", adding(file("app/" + "x" * 256)), "has a component longer than 255 bytes"),
    ("case-clash", adding(file("App")), "'App' and 'app' clash on a case-insensitive"),
    (
        "unicode-clash",
        adding(file("caf\u00e9"), file("cafe\u0301")),
        "clash on a case-insensitive or normalizing filesystem",
    ),
    ("duplicate", adding(file("run.sh")), "duplicate entry 'run.sh'"),
    ("undeclared-folder", adding(file("lib/x.py")), "needs its folder 'lib' declared as a dir"),
    ("under-a-symlink", adding(file("app/current/x")), "lies under the symlink 'app/current'"),
    (
        "symlink-escapes",
        setting("app/current", "target", "../../etc/passwd"),
        "escapes the artifact",
    ),
    (
        "symlink-absolute",
        setting("app/current", "target", "/etc/passwd"),
        "points to an absolute path",
    ),
    (
        "symlink-dotdot-after-name",
        setting("app/current", "target", "main.py/../../.."),
        "expected leading '..' then names only",
    ),
    ("setuid", setting("run.sh", "mode", "4755"), "has mode '4755'; expected 0644 or 0755"),
    ("world-writable", setting("run.sh", "mode", "0777"), "has mode '0777'"),
    (
        "device",
        adding({"path": "dev", "type": "char-device", "mode": "0644"}),
        "has type 'char-device'",
    ),
    ("dir-mode", setting("app", "mode", "0700"), "directory 'app' must have mode 0755"),
    ("size-lie", setting("app/main.py", "size", 8), "says 8 bytes, its chunks hold 7"),
    ("negative-size", setting("run.sh", "size", -1), "size of 'run.sh' must be an integer"),
    ("bad-chunk", setting("app/main.py", "chunks", [["zz", 7]]), "bad chunk sha256"),
    ("zero-chunk", setting("app/main.py", "chunks", [[HASH_A, 0], [HASH_B, 7]]), "chunk size"),
    ("unknown-field", setting("run.sh", "owner", "root"), "must have exactly the fields"),
    ("prefetch-unknown", lambda d: d.update(prefetch=["nope"]), "prefetch must list files"),
    ("format", lambda d: d.update(format="circle-artifact/2"), "not a circle-artifact/1 manifest"),
    ("extra-top-field", lambda d: d.update(mtime=1), "manifest must have exactly the fields"),
]


@pytest.mark.parametrize(
    ("change", "message"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS]
)
def test_hostile_manifests_are_refused(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    document = copy.deepcopy(base())
    change(document)
    with pytest.raises(ManifestRefused, match=message.replace("(", r"\(").replace(".", r"\.")):
        decode(encoded(document), allow_symlinks=True)


def test_symlinks_are_refused_unless_the_artifact_allows_them() -> None:
    with pytest.raises(
        ManifestRefused, match="'app/current' is a symlink, and this artifact allows none"
    ):
        decode(encoded(base()))


def test_a_symlink_may_climb_within_the_artifact() -> None:
    document = base()
    document["entries"][1]["target"] = "../run.sh"
    assert decode(encoded(document), allow_symlinks=True).entries[1].target == "../run.sh"


def test_non_canonical_bytes_are_refused() -> None:
    document = base()
    spaced = rfc8785.dumps(document).replace(b'"format":', b'"format": ')
    with pytest.raises(ManifestRefused, match="not in canonical form"):
        decode(spaced, allow_symlinks=True)
    unsorted = copy.deepcopy(document)
    unsorted["entries"].reverse()
    with pytest.raises(ManifestRefused, match="not in canonical form"):
        decode(encoded(unsorted), allow_symlinks=True)


def test_duplicate_json_keys_are_refused() -> None:
    data = encoded(base()).replace(b'{"chunking"', b'{"labels":{},"chunking"', 1)
    with pytest.raises(ManifestRefused, match="duplicate JSON key 'labels'"):
        decode(data, allow_symlinks=True)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(max_manifest_bytes=100), "exceeds the limit of 100"),
        (Limits(max_entries=3), "4 entries; the limit is 3"),
        (Limits(max_chunks_per_file=1), "has 2 chunks; the limit is 1"),
        (Limits(max_total_chunks=1), "2 chunks in all; the limit is 1"),
        (Limits(max_path_bytes=5), "longer than 5 bytes"),
    ],
    ids=["manifest-bytes", "entries", "chunks-per-file", "total-chunks", "path-bytes"],
)
def test_limits(limits: Limits, message: str) -> None:
    with pytest.raises(ManifestRefused, match=message):
        decode(encoded(base()), allow_symlinks=True, limits=limits)


def test_garbage_is_refused_as_such() -> None:
    for garbage in (b"", b"null", b"[]", b"{", b"[" * 100_000, b"\xff"):
        with pytest.raises(ManifestRefused):
            decode(garbage)


# -- properties ----------------------------------------------------------------------------------

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12).filter(
    lambda name: name not in (".", "..")
)


@st.composite
def manifests(draw: st.DrawFn) -> ArtifactManifest:
    folders = draw(st.lists(NAMES, max_size=4, unique_by=str.casefold))
    entries = [Entry(folder, "dir", "0755") for folder in folders]
    taken = {folder.casefold() for folder in folders}
    for _ in range(draw(st.integers(0, 8))):
        parent = draw(st.sampled_from(["", *folders]))
        name = draw(NAMES)
        path = f"{parent}/{name}" if parent else name
        if path.casefold() in taken:
            continue
        taken.add(path.casefold())
        sizes = draw(st.lists(st.integers(1, 5000), max_size=4))
        chunks = tuple(Chunk(hashlib.sha256(str(s).encode()).hexdigest(), s) for s in sizes)
        digest = hashlib.sha256(path.encode()).hexdigest()
        mode = draw(st.sampled_from(["0644", "0755"]))
        entries.append(Entry(path, "file", mode, sum(sizes), digest, chunks))
    return ArtifactManifest(tuple(draw(st.permutations(entries))))


@settings(max_examples=60, deadline=None)
@given(manifest=manifests())
def test_property_valid_manifests_round_trip_and_order_does_not_matter(
    manifest: ArtifactManifest,
) -> None:
    data = manifest.encode()
    decoded = decode(data, manifest.artifact_id)
    assert decoded == manifest
    assert ArtifactManifest(tuple(reversed(manifest.entries))).artifact_id == manifest.artifact_id
