"""The object store over real backends (directories, and prefixes of a real redis-server):
objects survive the loss of any n - k backends, refuse corrupt shares before decoding, tampered
manifests and wrong keys, repair without the data key, and the `circle qss` CLI end to end.
Every refusal is checked to have written and changed nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import itertools
import json
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qss.codec
import qss.store
from qss.backends import DirectoryBackend, RedisBackend
from qss.backends.base import Backend
from qss.codec import key_id, wrap_key
from qss.errors import (
    BackendError,
    DecryptionError,
    NotEnoughShares,
    ObjectNotFound,
    PlacementError,
    StorageError,
)
from qss.keys import generate_key_file, read_key_file
from qss.manifest import Manifest
from qss.placement import Site
from qss.recipients import key_commitment
from qss.reports import GetResult, Inventory, Listing, RepairResult, ShareStatus
from qss.store import Store, manifest_key
from tests.conftest import ROOT, Result, copy_example, run_circle_process
from tests.qss.conftest import RedisServer
from tests.qss.helpers import (
    SEGMENT,
    STORE_KEY,
    Cluster,
    get_bytes,
    listing,
    payload,
    put_bytes,
    tree,
)

MISSING, CORRUPT, UNREACHABLE = ShareStatus.MISSING, ShareStatus.CORRUPT, ShareStatus.UNREACHABLE
TWO_SEGMENTS = SEGMENT + 1000


def names(count: int) -> list[str]:
    """Backends b0, b1, ..., each its own failure domain, so share i lands on b<i>."""
    return [f"b{i}" for i in range(count)]


@pytest.fixture
def storage_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def six(tmp_path: Path) -> Cluster:
    """Six directory backends b0..b5, one failure domain each."""
    return Cluster.of_directories(tmp_path / "backends", names(6))


def put_six(cluster: Cluster, tmp_path: Path, storage_key: bytes, size: int) -> Manifest:
    """A 4-of-6 object of `size` bytes on b0..b5, share i on b<i>."""
    manifest = put_bytes(
        cluster.store(), tmp_path / "staging", payload(size), storage_key, k=4, n=6
    )
    assert [manifest.backend_of(share) for share in range(6)] == names(6)
    return manifest


def problems_of(result: GetResult) -> set[tuple[int, str, ShareStatus]]:
    return {(p.share, p.backend, p.status) for p in result.problems}


# ---------------------------------------------------------------------------------------------
# 1-2. Losing backends


SURVIVAL = [
    pytest.param(k, n, lost, how, id=f"{k}of{n}-lose-{'+'.join(map(str, lost))}-{how}")
    for k, n in [(2, 4), (3, 5)]
    for lost in itertools.combinations(range(n), n - k)
    for how in ("wiped", "unmounted")
]


@pytest.mark.parametrize(("k", "n", "lost", "how"), SURVIVAL)
def test_any_n_minus_k_backends_may_be_lost(
    tmp_path: Path, storage_key: bytes, k: int, n: int, lost: tuple[int, ...], how: str
) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends", names(n))
    data = payload(TWO_SEGMENTS)
    manifest = put_bytes(cluster.store(), tmp_path / "staging", data, storage_key, k=k, n=n)
    for share in lost:
        cluster.lose(f"b{share}", how)

    got, result = get_bytes(cluster.store(), manifest.object_id, storage_key, tmp_path / "out")

    assert got == data
    status = MISSING if how == "wiped" else UNREACHABLE
    assert problems_of(result) <= {(share, f"b{share}", status) for share in lost}
    # Primary shares are always asked first, so every lost one is reported.
    assert {p.share for p in result.problems} >= {share for share in lost if share < k}
    assert listing(tmp_path / "out") == []


TOO_MANY = [
    pytest.param(
        4,
        6,
        {"b0": "wiped", "b1": "wiped", "b2": "unmounted"},
        "3 of the 4 shares needed could be read; lost: share 0 on b0 (missing), "
        "share 1 on b1 (missing), share 2 on b2 (unreachable)",
        id="4of6-lose-3",
    ),
    pytest.param(
        2,
        4,
        {"b1": "unmounted", "b2": "wiped", "b3": "wiped"},
        "1 of the 2 shares needed could be read; lost: share 1 on b1 (unreachable), "
        "share 2 on b2 (missing), share 3 on b3 (missing)",
        id="2of4-lose-3",
    ),
    pytest.param(
        3,
        3,
        {"b2": "wiped"},
        "2 of the 3 shares needed could be read; lost: share 2 on b2 (missing)",
        id="3of3-lose-1",
    ),
]


@pytest.mark.parametrize(("k", "n", "lost", "message"), TOO_MANY)
def test_losing_one_backend_too_many_names_the_lost_shares_and_writes_nothing(
    tmp_path: Path,
    out_dir: Path,
    storage_key: bytes,
    k: int,
    n: int,
    lost: dict[str, str],
    message: str,
) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends", names(n))
    manifest = put_bytes(
        cluster.store(), tmp_path / "staging", payload(TWO_SEGMENTS), storage_key, k=k, n=n
    )
    for name, how in lost.items():
        cluster.lose(name, how)
    previous = out_dir / "previous.out"
    previous.write_bytes(b"an older file the failed read must leave alone")
    store = cluster.store()
    expected = re.escape(f"object {manifest.object_id[:16]} segment 0: {message}")

    for out in (out_dir / "new.out", previous):
        with pytest.raises(NotEnoughShares, match=f"^{expected}$"):
            store.get(manifest.object_id, out, storage_key=storage_key)

    assert listing(out_dir) == ["previous.out"]  # no output, no `.part` file
    assert previous.read_bytes() == b"an older file the failed read must leave alone"


# ---------------------------------------------------------------------------------------------
# 3. Corrupt shares: refused by their hash before decoding, then repaired in place


def flip_bit(block: bytes) -> bytes:
    middle = len(block) // 2
    return block[:middle] + bytes([block[middle] ^ 0x10]) + block[middle + 1 :]


def corrupt_flip_bit(cluster: Cluster, manifest: Manifest) -> None:
    cluster.edit_share(manifest, 0, flip_bit, segments=[1])


def corrupt_truncate(cluster: Cluster, manifest: Manifest) -> None:
    cluster.edit_share(manifest, 1, lambda block: block[:-1])


def corrupt_other_index(cluster: Cluster, manifest: Manifest) -> None:
    """Share 3's block of segment 0, stored where share 2's belongs."""
    block = cluster.holder(manifest, 3).get(cluster.share_keys(manifest, 3)[0])
    cluster.holder(manifest, 2).put(cluster.share_keys(manifest, 2)[0], block)


def corrupt_swap(cluster: Cluster, manifest: Manifest) -> None:
    """Shares 0 and 1 trade places on their backends (every segment)."""
    zero, one = cluster.holder(manifest, 0), cluster.holder(manifest, 1)
    for key0, key1 in zip(
        cluster.share_keys(manifest, 0), cluster.share_keys(manifest, 1), strict=True
    ):
        block0, block1 = zero.get(key0), one.get(key1)
        zero.put(key0, block1)
        one.put(key1, block0)


def corrupt_append(cluster: Cluster, manifest: Manifest) -> None:
    cluster.edit_share(manifest, 3, lambda block: block + b"garbage")


def corrupt_empty(cluster: Cluster, manifest: Manifest) -> None:
    cluster.edit_share(manifest, 2, lambda block: b"")


CORRUPTIONS = [
    pytest.param(corrupt_flip_bit, {0: (1,)}, id="flipped-bit"),
    pytest.param(corrupt_truncate, {1: (0, 1)}, id="truncated"),
    pytest.param(corrupt_other_index, {2: (0,)}, id="block-of-another-share"),
    pytest.param(corrupt_swap, {0: (0, 1), 1: (0, 1)}, id="two-shares-swapped"),
    pytest.param(corrupt_append, {3: (0, 1)}, id="garbage-appended"),
    pytest.param(corrupt_empty, {2: (0, 1)}, id="emptied"),
]


@pytest.mark.parametrize(("corrupt", "bad"), CORRUPTIONS)
def test_corrupt_shares_are_caught_by_their_hash_and_repaired(
    six: Cluster,
    tmp_path: Path,
    storage_key: bytes,
    corrupt: Callable[[Cluster, Manifest], None],
    bad: dict[int, tuple[int, ...]],
) -> None:
    data = payload(TWO_SEGMENTS)
    v1 = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    corrupt(six, v1)
    store = six.store()

    got, result = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert got == data
    # Every corrupt share is a primary one, so it was read, and refused before decoding.
    assert {(p.share, p.status) for p in result.problems} == {(share, CORRUPT) for share in bad}
    assert {(p.share, p.segment) for p in result.problems} == {
        (share, segment) for share, segments in bad.items() for segment in segments
    }

    health = store.scrub(v1.object_id)
    assert {s.share: (s.status, s.bad_segments) for s in health.shares} == {
        share: (CORRUPT, bad[share]) if share in bad else (ShareStatus.HEALTHY, ())
        for share in range(6)
    }
    assert (health.healthy, health.margin, health.lost) == (6 - len(bad), 2 - len(bad), sorted(bad))

    repair = store.repair(v1.object_id)
    # No backend is free, so every share is rewritten where it was.
    assert repair.repaired == {share: Site(f"b{share}", f"b{share}") for share in bad}
    v2 = repair.manifest
    assert (v2.version, v2.supersedes, v2.content) == (2, v1.digest(), v1.content)
    assert v2.placement == v1.placement
    assert store.find_manifest(v1.object_id) == v2
    for backend in six.backends:
        assert backend.get(manifest_key(v1.object_id, 2)) == v2.encode()

    after = store.scrub(v1.object_id)
    assert (after.healthy, after.margin, after.lost) == (6, 2, [])
    got, result = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert (got, result.problems) == (data, ())


def scatter_corruption(cluster: Cluster, manifest: Manifest) -> None:
    """Share i corrupt in segment i only (i = 0, 1, 2): every segment keeps 5 good blocks."""
    for share in range(3):
        cluster.edit_share(manifest, share, flip_bit, segments=[share])


def test_corruption_scattered_over_segments_is_still_readable(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    manifest = put_six(six, tmp_path, storage_key, 2 * SEGMENT + 100)
    scatter_corruption(six, manifest)
    store = six.store()
    got, result = get_bytes(store, manifest.object_id, storage_key, tmp_path / "out")
    assert got == payload(2 * SEGMENT + 100)
    assert {(p.share, p.segment, p.status) for p in result.problems} == {
        (0, 0, CORRUPT),
        (1, 1, CORRUPT),
        (2, 2, CORRUPT),
    }
    health = store.scrub(manifest.object_id)
    assert [(s.status, s.bad_segments) for s in health.shares[:3]] == [
        (CORRUPT, (0,)),
        (CORRUPT, (1,)),
        (CORRUPT, (2,)),
    ]


def test_corruption_scattered_over_segments_is_repairable(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    manifest = put_six(six, tmp_path, storage_key, 2 * SEGMENT + 100)
    scatter_corruption(six, manifest)
    store = six.store()
    store.repair(manifest.object_id)
    assert store.scrub(manifest.object_id).healthy == 6


# ---------------------------------------------------------------------------------------------
# 4. Keys


def test_wrong_storage_key_is_refused_and_nothing_is_written(
    six: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    other = secrets.token_bytes(32)
    out = out_dir / "object.out"
    out.write_bytes(b"before")
    stored = six.snapshot()
    expected = (
        f"object {manifest.object_id[:16]} is encrypted for storage key "
        f"{key_id(storage_key)}; the key given is {key_id(other)}"
    )
    with pytest.raises(DecryptionError, match=f"^{re.escape(expected)}$"):
        six.store().get(manifest.object_id, out, storage_key=other)
    assert listing(out_dir) == ["object.out"]
    assert out.read_bytes() == b"before"
    assert six.snapshot() == stored


def forge_key_id(content: dict[str, Any], other: bytes) -> None:
    """The manifest claims `other` as its key, but its data key stays wrapped by the real
    one."""
    content["keyId"] = key_id(other)


def forge_key_id_and_wrapped_key(content: dict[str, Any], other: bytes) -> None:
    """The forger also wraps a data key of their own under `other`: it unwraps, and the
    content's key commitment refuses it before any share is read."""
    content["keyId"] = key_id(other)
    content["wrappedKey"] = base64.b64encode(wrap_key(other, secrets.token_bytes(32))).decode()


def forge_key_commitment_too(content: dict[str, Any], other: bytes) -> None:
    """The forger also commits to their own data key: it opens, and then AES-GCM refuses
    every segment."""
    data_key = secrets.token_bytes(32)
    content["keyId"] = key_id(other)
    content["wrappedKey"] = base64.b64encode(wrap_key(other, data_key)).decode()
    content["keyCommitment"] = key_commitment(data_key, bytes.fromhex(content["objectNonce"])).hex()


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        pytest.param(
            forge_key_id,
            "the storage key does not unwrap this object's data key (wrong key?)",
            id="key-id-forged",
        ),
        pytest.param(
            forge_key_id_and_wrapped_key,
            "the storage key opens to a key that is not this object's data key (its "
            "keyCommitment): forged; nothing was read",
            id="key-id-and-wrapped-key-forged",
        ),
        pytest.param(
            forge_key_commitment_too,
            "segment 0 fails authentication: wrong data key, or the segment was tampered with, "
            "reordered or taken from another object",
            id="key-id-wrapped-key-and-commitment-forged",
        ),
    ],
)
def test_forged_key_claims_are_refused_and_nothing_is_written(
    six: Cluster,
    tmp_path: Path,
    out_dir: Path,
    storage_key: bytes,
    forge: Callable[[dict[str, Any], bytes], None],
    message: str,
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    other = secrets.token_bytes(32)
    document = json.loads(manifest.encode())
    forge(document["content"], other)
    # A forged manifest is a new object (its id is its content's hash) over the same shares.
    forged_id = hashlib.sha256(json_canonical(document["content"])).hexdigest()
    document["objectId"] = forged_id
    six.plant_manifest(forged_id, json_canonical(document))
    stored = six.snapshot()
    store = six.store()
    assert store.find_manifest(forged_id).content.key_id == key_id(other)

    with pytest.raises(DecryptionError, match=f"^{re.escape(message)}$"):
        store.get(forged_id, out_dir / "object.out", storage_key=other)
    assert listing(out_dir) == []
    assert six.snapshot() == stored


def json_canonical(value: Any) -> bytes:
    return rfc8785.dumps(value)


# ---------------------------------------------------------------------------------------------
# 5. Tampered manifests


def set_in(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return edit


def other_hex(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def fewer_shares(document: dict[str, Any]) -> None:
    """n 6 -> 5 done consistently: one hash fewer per segment, share 5 not placed."""
    content = document["content"]
    content["n"] = 5
    content["shares"] = [row[:5] for row in content["shares"]]
    document["placement"] = document["placement"][:5]


NOT_THE_ID = "manifest content does not match its object id: it was altered"

TAMPERING = [
    pytest.param(set_in(("content", "shares", 0, 1), other_hex), NOT_THE_ID, id="share-hash"),
    pytest.param(set_in(("content", "k"), 3), NOT_THE_ID, id="k"),
    pytest.param(
        set_in(("content", "n"), 5), "shares must list, per segment, 5 sha256 hashes", id="n"
    ),
    pytest.param(fewer_shares, NOT_THE_ID, id="n-with-rows-and-placement"),
    pytest.param(set_in(("content", "size"), TWO_SEGMENTS - 1), NOT_THE_ID, id="size"),
    pytest.param(
        set_in(("content", "segmentSize"), 2 * SEGMENT),
        f"an object of {TWO_SEGMENTS} bytes in segments of {2 * SEGMENT} has 1 segments; "
        "the manifest's segmentCount says 2",
        id="segment-size",
    ),
    pytest.param(
        set_in(("content", "segmentCount"), 3),
        "has 2 segments; the manifest's segmentCount says 3",
        id="count",
    ),
    pytest.param(set_in(("content", "objectNonce"), other_hex), NOT_THE_ID, id="object-nonce"),
    pytest.param(set_in(("content", "noncePrefix"), other_hex), NOT_THE_ID, id="nonce-prefix"),
    pytest.param(set_in(("content", "keyId"), other_hex), NOT_THE_ID, id="key-id"),
    pytest.param(set_in(("content", "name"), "renamed"), NOT_THE_ID, id="name"),
    pytest.param(
        set_in(("content", "cipher"), "AES-128-GCM"), "unsupported cipher or key wrap", id="cipher"
    ),
    pytest.param(set_in(("format",), "qss-manifest/2"), "not a qss-manifest/1 manifest", id="fmt"),
    pytest.param(
        set_in(("placement", 1, "share"), 0),
        "placement must name shares 0..5 once each, got [0, 0, 2, 3, 4, 5]",
        id="placement-duplicate-share",
    ),
    pytest.param(
        set_in(("placement", 0, "backend"), "../b0"),
        "placement of share 0: invalid backend or domain name",
        id="placement-path-as-backend",
    ),
    pytest.param(
        set_in(("version",), 0),
        "version must be an integer in [1, 2147483648], got 0",
        id="version-zero",
    ),
    pytest.param(
        set_in(("supersedes",), "not a digest"),
        "supersedes must be a sha256 hex digest or null",
        id="supersedes",
    ),
]


@pytest.mark.parametrize(("tamper", "reason"), TAMPERING)
def test_tampered_manifests_are_refused_and_nothing_changes(
    six: Cluster,
    tmp_path: Path,
    out_dir: Path,
    storage_key: bytes,
    tamper: Callable[[dict[str, Any]], None],
    reason: str,
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    object_id = manifest.object_id
    six.rewrite_manifests(object_id, tamper)
    stored = six.snapshot()
    store = six.store()
    refused = (
        f"no backend holds a valid manifest of object {object_id} "
        rf"\(b0 v1: [^;]*{re.escape(reason)}"
    )

    with pytest.raises(ObjectNotFound, match=refused):
        store.find_manifest(object_id)
    with pytest.raises(ObjectNotFound, match=refused):
        store.get(object_id, out_dir / "object.out", storage_key=storage_key)
    with pytest.raises(ObjectNotFound, match=refused):
        store.repair(object_id)
    with pytest.raises(ObjectNotFound, match=refused):
        store.remove(object_id)
    listed = store.list_objects()
    assert listed.manifests == ()
    assert listed.failed == ()
    assert [(oid, re.match(refused, why) is not None) for oid, why in listed.unreadable] == [
        (object_id, True)
    ]
    assert listing(out_dir) == []
    assert six.snapshot() == stored


def test_a_forger_who_recomputes_the_id_claim_makes_another_object(
    six: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    object_id = manifest.object_id
    claimed = six.rewrite_manifests(object_id, set_in(("content", "k"), 3), new_id=True)
    stored = six.snapshot()
    expected = rf"b0 v1: manifest is for object {claimed[:16]}\.\.\., not {object_id[:16]}\.\.\."
    with pytest.raises(ObjectNotFound, match=expected):
        six.store().get(object_id, out_dir / "object.out", storage_key=storage_key)
    assert listing(out_dir) == []
    assert six.snapshot() == stored


def test_the_manifest_of_another_object_under_this_id_is_refused(
    six: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes
) -> None:
    mine = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    theirs = put_bytes(six.store(), tmp_path / "staging", b"theirs", storage_key, k=4, n=6)
    six.plant_manifest(mine.object_id, theirs.encode())
    stored = six.snapshot()
    store = six.store()
    expected = (
        rf"manifest is for object {theirs.object_id[:16]}\.\.\., not {mine.object_id[:16]}\.\.\."
    )
    with pytest.raises(ObjectNotFound, match=expected):
        store.get(mine.object_id, out_dir / "object.out", storage_key=storage_key)
    assert listing(out_dir) == []
    assert six.snapshot() == stored
    assert [m.object_id for m in store.list_objects().manifests] == [theirs.object_id]
    got, _ = get_bytes(store, theirs.object_id, storage_key, tmp_path / "read")
    assert got == b"theirs"


def place_share(share: int, backend: str) -> Callable[[dict[str, Any]], None]:
    return set_in(("placement", share, "backend"), backend)


def place_all(backend: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        for item in document["placement"]:
            item["backend"] = backend

    return edit


def rename_domains(document: dict[str, Any]) -> None:
    for item in document["placement"]:
        item["failureDomain"] = "elsewhere"


def several(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        for one in edits:
            one(document)

    return edit


# Placement is not part of the object id: editing it only sends a reader to the wrong place,
# where the share is missing or refused by its hash. Either the right bytes, or an error.
MISDIRECTIONS = [
    pytest.param(
        place_share(0, "nowhere"), {(0, "nowhere", UNREACHABLE)}, None, id="share-to-unknown"
    ),
    pytest.param(
        several(place_share(0, "b1"), place_share(1, "b0")),
        {(0, "b1", MISSING), (1, "b0", MISSING)},
        None,
        id="two-shares-swapped",
    ),
    pytest.param(rename_domains, set(), None, id="domains-renamed"),
]

# A placement that puts two shares on one backend is refused outright: shares have backends of
# their own, so such a manifest can only be forged.
CROWDED = [
    pytest.param(place_share(0, "b1"), id="share-to-another-holder"),
    pytest.param(
        several(place_share(0, "b5"), place_share(1, "b5"), place_share(2, "b5")),
        id="three-shares-to-one-backend",
    ),
    pytest.param(place_all("b0"), id="every-share-to-b0"),
]


@pytest.mark.parametrize("tamper", CROWDED)
def test_a_placement_crowding_shares_onto_one_backend_is_refused(
    six: Cluster, tmp_path: Path, storage_key: bytes, tamper: Callable[[dict[str, Any]], None]
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    six.rewrite_manifests(manifest.object_id, tamper)
    stored = six.snapshot()
    with pytest.raises(
        ObjectNotFound, match="placement must put every share on a backend of its own"
    ):
        six.store().find_manifest(manifest.object_id)
    assert six.snapshot() == stored


@pytest.mark.parametrize(("tamper", "problems", "error"), MISDIRECTIONS)
def test_edited_placement_only_misdirects_and_never_yields_wrong_data(
    six: Cluster,
    tmp_path: Path,
    out_dir: Path,
    storage_key: bytes,
    tamper: Callable[[dict[str, Any]], None],
    problems: set[tuple[int, str, ShareStatus]] | None,
    error: str | None,
) -> None:
    manifest = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    six.rewrite_manifests(manifest.object_id, tamper)
    stored = six.snapshot()
    store = six.store()
    assert store.find_manifest(manifest.object_id).content == manifest.content  # accepted

    if error is None:
        got, result = get_bytes(store, manifest.object_id, storage_key, tmp_path / "read")
        assert got == payload(TWO_SEGMENTS)
        assert problems_of(result) == problems
    else:
        with pytest.raises(NotEnoughShares, match=re.escape(error)):
            store.get(manifest.object_id, out_dir / "object.out", storage_key=storage_key)
        assert listing(out_dir) == []
    assert six.snapshot() == stored


# ---------------------------------------------------------------------------------------------
# 6. Edge sizes and shapes


EDGES = [
    pytest.param(0, 4, 6, id="empty"),
    pytest.param(1, 4, 6, id="one-byte"),
    pytest.param(SEGMENT - 1, 4, 6, id="segment-minus-one"),
    pytest.param(SEGMENT, 4, 6, id="exactly-one-segment"),
    pytest.param(SEGMENT + 1, 4, 6, id="segment-plus-one"),
    pytest.param(3 * SEGMENT, 4, 6, id="exact-multiple-of-segment"),
    pytest.param(3000, 3, 5, id="plain-multiple-of-k"),
    pytest.param(2999, 3, 5, id="ciphertext-multiple-of-k"),
    pytest.param(3001, 3, 5, id="no-multiple-of-k"),
    pytest.param(5000, 3, 3, id="k-equals-n"),
    pytest.param(5000, 1, 4, id="k-is-1"),
    pytest.param(100, 1, 1, id="1-of-1"),
    pytest.param(TWO_SEGMENTS, 7, 8, id="7-of-8"),
]


@pytest.mark.parametrize(("size", "k", "n"), EDGES)
def test_edge_sizes_and_shapes_round_trip_without_their_primary_shares(
    tmp_path: Path, storage_key: bytes, size: int, k: int, n: int
) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends", names(n))
    data = payload(size)
    manifest = put_bytes(cluster.store(), tmp_path / "staging", data, storage_key, k=k, n=n)
    assert (manifest.content.size, len(manifest.content.shares)) == (
        size,
        max(1, -(-size // SEGMENT)),
    )
    lost = list(range(min(n - k, k)))  # primary shares: the rest must be decoded
    for share in lost:
        cluster.wipe(f"b{share}")
    store = cluster.store()

    got, result = get_bytes(store, manifest.object_id, storage_key, tmp_path / "out")
    assert got == data
    assert {p.share for p in result.problems} == set(lost)

    assert store.repair(manifest.object_id).repaired.keys() == set(lost)
    assert store.scrub(manifest.object_id).healthy == n
    got, result = get_bytes(store, manifest.object_id, storage_key, tmp_path / "out")
    assert (got, result.problems) == (data, ())


def test_256_shares_on_256_backends(tmp_path: Path, storage_key: bytes) -> None:
    """The widest object zfec allows, each share on a directory of its own; half the
    backends (every primary share) gone."""
    backend_names = [f"b{i:03d}" for i in range(256)]
    cluster = Cluster.of_directories(tmp_path / "backends", backend_names)
    data = payload(1000)
    manifest = put_bytes(cluster.store(), tmp_path / "staging", data, storage_key, k=128, n=256)
    assert [p.backend for p in sorted(manifest.placement, key=lambda p: p.share)] == backend_names
    for name in backend_names[:128]:
        cluster.unmount(name)
    got, result = get_bytes(cluster.store(), manifest.object_id, storage_key, tmp_path / "out")
    assert got == data
    assert {p.share for p in result.problems} == set(range(128))
    assert {p.status for p in result.problems} == {UNREACHABLE}


# ---------------------------------------------------------------------------------------------
# 7. Repair


def repair_without_any_key(
    directories: list[tuple[Path, str, str]], object_id: str
) -> RepairResult:
    """Repair as a node that holds no storage key would: backends opened afresh from their
    directories, and nothing else."""
    store = Store(
        [
            DirectoryBackend(root, name=name, failure_domain=domain)
            for root, name, domain in directories
        ]
    )
    return store.repair(object_id)


def test_repair_needs_no_key(
    six: Cluster, tmp_path: Path, storage_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "key" not in " ".join(inspect.signature(Store.repair).parameters)
    manifest = put_six(six, tmp_path, storage_key, 2 * SEGMENT + 10)
    six.wipe("b1")
    six.wipe("b4")
    directories = [(six.root(b.name), b.name, b.failure_domain) for b in six.backends]

    def no_key(*args: object, **kwargs: object) -> None:
        raise AssertionError("repair used a key")

    with monkeypatch.context() as patch:
        patch.setattr(qss.store, "unwrap_key", no_key)
        patch.setattr(qss.codec, "AESGCM", no_key)
        result = repair_without_any_key(directories, manifest.object_id)

    assert sorted(result.repaired) == [1, 4]
    assert result.manifest.version == 2
    assert six.store().scrub(manifest.object_id).healthy == 6
    got, _ = get_bytes(six.store(names(6)[2:]), manifest.object_id, storage_key, tmp_path / "o")
    assert got == payload(2 * SEGMENT + 10)


@pytest.mark.parametrize("how", ["wiped", "unmounted", "corrupted"])
def test_repair_moves_a_lost_share_to_a_new_failure_domain(
    tmp_path: Path, storage_key: bytes, how: str
) -> None:
    cluster = Cluster.of_directories(
        tmp_path / "backends",
        ["a1", "a2", "b1", "b2", "c1", "c2", "spare-a", "spare-d"],
        ["a", "a", "b", "b", "c", "c", "a", "d"],
    )
    data = payload(TWO_SEGMENTS)
    first_six = cluster.names[:6]
    v1 = put_bytes(cluster.store(first_six), tmp_path / "staging", data, storage_key, k=4, n=6)
    assert v1.backend_of(0) == "a1"
    if how == "corrupted":
        cluster.edit_share(v1, 0, flip_bit)
    else:
        cluster.lose("a1", how)
    store = cluster.store()

    result = store.repair(v1.object_id)

    # Domain d holds no share yet; domain a (spare-a) still holds one.
    assert result.repaired == {0: Site("spare-d", "d")}
    assert result.manifest.backend_of(0) == "spare-d"
    assert (result.manifest.version, result.manifest.supersedes) == (2, v1.digest())
    health = store.scrub(v1.object_id)
    assert (health.healthy, health.margin) == (6, 2)
    assert sorted(cluster.backend("spare-d").list("s/")) == cluster.share_keys(v1, 0)
    assert list(cluster.backend("spare-a").list()) == []
    if how != "unmounted":  # the stale copy is gone from a backend that still answers
        assert list(cluster.backend("a1").list("s/")) == []
    got, result_get = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert (got, result_get.problems) == (data, ())


def test_repair_rewrites_in_place_when_no_backend_is_free(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    v1 = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    six.wipe("b2")
    result = six.store().repair(v1.object_id)
    assert result.repaired == {2: Site("b2", "b2")}
    assert result.manifest.placement == v1.placement
    assert sorted(six.backend("b2").list("s/")) == six.share_keys(v1, 2)


def test_repair_refuses_when_no_backend_can_take_a_share(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    v1 = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    six.unmount("b2")
    stored = six.snapshot()
    with pytest.raises(PlacementError, match="no backend left for share 2"):
        six.store().repair(v1.object_id)
    assert six.snapshot() == stored


def test_repair_refuses_below_k_and_writes_nothing(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    v1 = put_six(six, tmp_path, storage_key, TWO_SEGMENTS)
    for name in ("b0", "b3", "b5"):
        six.wipe(name)
    stored = six.snapshot()
    with pytest.raises(
        NotEnoughShares,
        match=f"object {v1.object_id[:16]} segment 0: 3 of the 4 shares needed could be read",
    ):
        six.store().repair(v1.object_id)
    assert six.snapshot() == stored


INTERRUPTIONS = [
    pytest.param("wiped", "b1", Site("b1", "b1"), id="in-place"),
    pytest.param("unmounted", "spare2", Site("spare2", "spare2"), id="to-spare"),
]


@pytest.mark.parametrize(("how", "failing", "site_of_share_1"), INTERRUPTIONS)
def test_interrupted_repair_then_repair_again_ends_healthy(
    tmp_path: Path,
    storage_key: bytes,
    how: str,
    failing: str,
    site_of_share_1: Site,
) -> None:
    """Shares 0 and 1 are lost; the put of share 1's second block fails."""
    cluster = Cluster.of_directories(tmp_path / "backends", [*names(6), "spare1", "spare2"])
    data = payload(3 * SEGMENT + 5)
    v1 = put_bytes(cluster.store(names(6)), tmp_path / "staging", data, storage_key, k=4, n=6)
    cluster.wipe("b0")
    cluster.lose("b1", how)
    chosen = names(6) if how == "wiped" else None

    with cluster.failing(failing, after=1):
        failing_store = cluster.store(chosen)
        with pytest.raises(BackendError, match=f"^{failing}: injected failure$"):
            failing_store.repair(v1.object_id)
    store = cluster.store(chosen)
    assert store.find_manifest(v1.object_id) == v1  # no new version was committed
    assert 1 in store.scrub(v1.object_id).lost  # share 1 is not complete yet

    result = store.repair(v1.object_id)
    assert result.manifest.version == 2
    assert result.repaired[1] == site_of_share_1
    health = store.scrub(v1.object_id)
    assert (health.healthy, health.margin) == (6, 2)
    again = store.repair(v1.object_id)  # nothing left to do: no new version
    assert (again.repaired, again.manifest) == ({}, result.manifest)
    got, got_result = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert (got, got_result.problems) == (data, ())


# ---------------------------------------------------------------------------------------------
# 8. A failed put leaves nothing behind


@pytest.mark.parametrize("calls", [0, 1, 2], ids=lambda calls: f"fails-after-{calls}-puts")
def test_a_failed_put_leaves_no_manifest_and_no_share(
    six: Cluster, tmp_path: Path, storage_key: bytes, calls: int
) -> None:
    with six.failing("b3", after=calls):
        failing = six.store()
        with pytest.raises(BackendError, match=r"^b3: injected failure$"):
            put_bytes(failing, tmp_path / "staging", payload(3 * SEGMENT), storage_key, k=4, n=6)
    store = six.store()
    assert six.stored_keys() == set()
    assert store.list_objects() == Listing(())
    assert store.object_ids() == Inventory(frozenset(), ())
    assert six.snapshot() == {name: {} for name in names(6)}  # no temporary file either


def test_a_put_whose_manifest_cannot_be_written_leaves_no_share(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    with contextlib.ExitStack() as faults:
        for name in six.names:
            faults.enter_context(six.failing(name, after=0, prefix="m/"))
        with pytest.raises(BackendError, match="could not be stored durably anywhere"):
            put_bytes(six.store(), tmp_path / "staging", payload(100), storage_key, k=4, n=6)
    assert six.stored_keys() == set()


# ---------------------------------------------------------------------------------------------
# 9. Object names never become keys or paths


ALLOWED_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a/b c",
    "C:\\Windows\\system32",
    "$(touch pwned) `id` *",
    "名前 ✓",
    "x" * 255,
]


@pytest.mark.parametrize("name", ALLOWED_NAMES, ids=lambda name: repr(name[:20]))
def test_object_names_never_become_paths_or_keys(
    tmp_path: Path, storage_key: bytes, name: str
) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends" / "deep", names(4))
    (tmp_path / "staging").mkdir()
    before = {path for path in tree(tmp_path) if not path.startswith("backends/")}
    store = cluster.store()
    manifest = put_bytes(store, tmp_path / "staging", b"data", storage_key, k=2, n=4, name=name)
    assert manifest.content.name == name
    assert [m.content.name for m in store.list_objects().manifests] == [name]
    got, _ = get_bytes(store, manifest.object_id, storage_key, tmp_path / "staging")
    assert got == b"data"

    assert {path for path in tree(tmp_path) if not path.startswith("backends/")} == before
    assert not (tmp_path / "backends" / "etc").exists()
    assert not (tmp_path / "etc").exists()
    for key in cluster.stored_keys():
        assert STORE_KEY.fullmatch(key), key


REFUSED_NAMES = ["a/b\x00c", "line\nbreak", "tab\there", "\x1b[31mred", "x" * 256]


@pytest.mark.parametrize("name", REFUSED_NAMES, ids=lambda name: repr(name[:20]))
def test_names_a_manifest_cannot_hold_are_refused_by_put(
    tmp_path: Path, storage_key: bytes, name: str
) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends", names(4))
    with pytest.raises(StorageError, match="1-255 printable characters"):
        put_bytes(cluster.store(), tmp_path / "staging", b"data", storage_key, k=2, n=4, name=name)
    assert cluster.stored_keys() == set()


# ---------------------------------------------------------------------------------------------
# 10. Any k of the n shares, over directories and Redis alike


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=2 * SEGMENT + 64),
    choices=st.data(),
    how=st.sampled_from(["wiped", "unmounted", "unconfigured"]),
)
def test_any_k_shares_give_the_object_back(
    redis_server: RedisServer, data: bytes, choices: st.DataObject, how: str
) -> None:
    n = choices.draw(st.integers(1, 8), label="n")
    k = choices.draw(st.integers(1, n), label="k")
    kinds = choices.draw(st.lists(st.sampled_from(["dir", "redis"]), min_size=n, max_size=n))
    survivors = choices.draw(st.sets(st.integers(0, n - 1), min_size=k, max_size=k))
    storage_key = secrets.token_bytes(32)
    run = secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        backends: list[Backend] = []
        for i, kind in enumerate(kinds):
            if kind == "dir":
                (base / f"b{i}").mkdir()
                backends.append(DirectoryBackend(base / f"b{i}", name=f"b{i}"))
            else:
                backends.append(
                    RedisBackend(
                        redis_server.host, redis_server.port, prefix=f"h{run}-{i}:", name=f"b{i}"
                    )
                )
        cluster = Cluster(base, backends, redis_server)
        try:
            manifest = put_bytes(cluster.store(), base / "staging", data, storage_key, k=k, n=n)
            lost = [f"b{i}" for i in range(n) if i not in survivors]
            if how == "unconfigured":
                store = cluster.store(f"b{i}" for i in sorted(survivors))
            else:
                for name in lost:
                    cluster.lose(name, how)
                store = cluster.store()
            got, result = get_bytes(store, manifest.object_id, storage_key, base / "out")
            assert got == data
            assert {p.backend for p in result.problems} <= set(lost)
        finally:
            cluster.close()
            client = redis_server.client()
            try:
                for key in list(client.scan_iter(match=f"h{run}-*", count=1000)):
                    client.delete(key)
            finally:
                client.close()


# ---------------------------------------------------------------------------------------------
# 11. Listing, resolving and removing


def test_list_objects_and_resolve(six: Cluster, tmp_path: Path, storage_key: bytes) -> None:
    store = six.store()
    ids = {
        name: put_bytes(
            store, tmp_path / "staging", name.encode(), storage_key, k=4, n=6, name=name
        ).object_id
        for name in ("alpha", "beta", "gamma")
    }
    assert [(m.object_id, m.content.name) for m in store.list_objects().manifests] == sorted(
        (object_id, name) for name, object_id in ids.items()
    )
    for object_id in ids.values():
        assert store.resolve(object_id) == object_id
        assert store.resolve(object_id[:8]) == object_id
        assert store.resolve(object_id[:40]) == object_id


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("abcdef1", "'abcdef1' is not an object id (64 hex digits, or 8+ to abbreviate)"),
        ("", "'' is not an object id"),
        ("ABCDEF12", "'ABCDEF12' is not an object id"),
        ("abcdefgh", "'abcdefgh' is not an object id"),
        ("../../etc/passwd", "'../../etc/passwd' is not an object id"),
        ("00000000", "no object with an id starting 00000000"),
        ("0" * 63, f"no object with an id starting {'0' * 63}"),
    ],
    ids=repr,
)
def test_resolve_refuses(
    six: Cluster, tmp_path: Path, storage_key: bytes, prefix: str, message: str
) -> None:
    put_six(six, tmp_path, storage_key, 10)
    with pytest.raises(ObjectNotFound, match=f"^{re.escape(message)}"):
        six.store().resolve(prefix)


def test_resolve_refuses_an_ambiguous_prefix(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    manifest = put_six(six, tmp_path, storage_key, 10)
    object_id = manifest.object_id
    # Ids that share 8 digits are rare: plant a second manifest key to make one.
    lookalike = object_id[:8] + ("0" if object_id[8] != "0" else "1") + object_id[9:]
    six.backend("b0").put(manifest_key(lookalike, 1), manifest.encode())
    store = six.store()
    with pytest.raises(ObjectNotFound, match=f"^2 objects with an id starting {object_id[:8]}$"):
        store.resolve(object_id[:8])
    assert store.resolve(object_id[:9]) == object_id
    # The lookalike is invalid: reported, not listed.
    listed = store.list_objects()
    assert [m.object_id for m in listed.manifests] == [object_id]
    assert [unreadable for unreadable, _ in listed.unreadable] == [lookalike]


@pytest.mark.parametrize("text", ["Z" * 64, "../" * 21 + "x"], ids=["letters", "path"])
def test_resolve_refuses_64_characters_that_are_not_hex(six: Cluster, text: str) -> None:
    with pytest.raises(ObjectNotFound, match="is not an object id"):
        six.store().resolve(text)


def test_remove_deletes_everything_from_every_backend(tmp_path: Path, storage_key: bytes) -> None:
    cluster = Cluster.of_directories(tmp_path / "backends", [*names(6), "spare"])
    first_six = cluster.store(names(6))
    removed = put_bytes(
        first_six, tmp_path / "staging", payload(TWO_SEGMENTS), storage_key, k=4, n=6
    )
    kept = put_bytes(first_six, tmp_path / "staging", b"kept", storage_key, k=4, n=6)
    # A repair that moves share 0 leaves the first manifest version on b0 and a share on spare.
    cluster.edit_share(removed, 0, flip_bit)
    store = cluster.store()
    assert store.repair(removed.object_id).repaired == {0: Site("spare", "spare")}
    assert cluster.backend("b0").list(f"m/{removed.object_id}/")
    kept_blobs = {
        name: {
            key: value
            for key, value in blobs.items()
            if kept.object_id in key or kept.content.object_nonce.hex() in key
        }
        for name, blobs in cluster.snapshot().items()
    }

    result = store.remove(removed.object_id)
    assert (result.manifest.object_id, result.failed) == (removed.object_id, ())

    assert cluster.snapshot() == kept_blobs
    assert [m.object_id for m in store.list_objects().manifests] == [kept.object_id]
    with pytest.raises(
        ObjectNotFound, match=f"no backend holds a valid manifest of object {removed.object_id}$"
    ):
        store.remove(removed.object_id)


# ---------------------------------------------------------------------------------------------
# Redis: the same flow with a real redis-server acting as several backends


@pytest.fixture
def redis_cluster(tmp_path: Path, redis_db: RedisServer) -> Iterator[Cluster]:
    """r0..r5 in a redis-server, one failure domain each, and spares r6 and r7."""
    cluster = Cluster.of_redis(tmp_path, redis_db, [f"r{i}" for i in range(8)])
    try:
        yield cluster
    finally:
        cluster.close()


def test_redis_put_lose_get_repair_remove(
    redis_cluster: Cluster, redis_db: RedisServer, tmp_path: Path, storage_key: bytes
) -> None:
    cluster = redis_cluster
    first_six = [f"r{i}" for i in range(6)]
    data = payload(2 * SEGMENT + 77)
    v1 = put_bytes(cluster.store(first_six), tmp_path / "staging", data, storage_key, k=4, n=6)
    assert [v1.backend_of(share) for share in range(6)] == first_six
    cluster.wipe("r0")
    cluster.unmount("r1")
    store = cluster.store()

    got, result = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert got == data
    assert problems_of(result) == {(0, "r0", MISSING), (1, "r1", UNREACHABLE)}

    health = store.scrub(v1.object_id)
    assert [s.status for s in health.shares] == [MISSING, UNREACHABLE] + [ShareStatus.HEALTHY] * 4
    repair = store.repair(v1.object_id, health)
    assert repair.repaired == {0: Site("r6", "r6"), 1: Site("r7", "r7")}
    assert (repair.manifest.version, repair.manifest.supersedes) == (2, v1.digest())
    after = store.scrub(v1.object_id)
    assert (after.healthy, after.margin) == (6, 2)
    got, result = get_bytes(store, v1.object_id, storage_key, tmp_path / "out")
    assert (got, result.problems) == (data, ())

    def stored() -> set[str]:
        client = redis_db.client()
        try:
            return {key.decode() for key in client.scan_iter(count=1000)}
        finally:
            client.close()

    assert stored()
    for key in stored():
        prefix, _, blob_key = key.partition(":")
        assert prefix in cluster.names
        assert STORE_KEY.fullmatch(blob_key), key

    store.remove(v1.object_id)
    # All that is left: what r1 held when it could not be reached (its old share and manifest).
    assert stored() == {
        *(f"r1:{key}" for key in cluster.share_keys(v1, 1)),
        f"r1:{manifest_key(v1.object_id, 1)}",
    }


def test_directories_and_redis_mixed(
    tmp_path: Path, redis_db: RedisServer, storage_key: bytes
) -> None:
    directories = Cluster.of_directories(tmp_path / "dirs", ["d0", "d1", "d2"])
    servers = Cluster.of_redis(tmp_path, redis_db, ["r0", "r1", "r2"])
    cluster = Cluster(tmp_path, [*directories.backends, *servers.backends], redis_db)
    try:
        data = payload(TWO_SEGMENTS)
        manifest = put_bytes(cluster.store(), tmp_path / "staging", data, storage_key, k=3, n=6)
        cluster.unmount("d1")
        cluster.unmount("r2")
        cluster.wipe("r0")
        store = cluster.store()
        got, _ = get_bytes(store, manifest.object_id, storage_key, tmp_path / "out")
        assert got == data
        with pytest.raises(NotEnoughShares, match="2 of the 3 shares needed could be read"):
            cluster.store(["d0", "d1", "d2", "r0"]).get(
                manifest.object_id, tmp_path / "out" / "x", storage_key=storage_key
            )
        assert listing(tmp_path / "out") == []
    finally:
        cluster.close()


# ---------------------------------------------------------------------------------------------
# 12. `circle qss` end to end, in a real process


def circle(*args: str) -> Result:
    return run_circle_process(*args, cwd=ROOT)


def one_line_error(result: Result) -> str:
    assert result.code == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("circle: error: ")
    return lines[0]


def test_cli_put_lose_get_repair_scrub(tmp_path: Path) -> None:
    key = tmp_path / "storage.key"
    keygen = circle("qss", "keygen", str(key), "--output", "json")
    assert keygen.code == 0, keygen
    assert keygen.json() == {"keyFile": str(key), "keyId": keygen.json()["keyId"]}
    roots = {}
    options = []
    for name, domain in [
        ("a1", "a"),
        ("a2", "a"),
        ("b1", "b"),
        ("b2", "b"),
        ("c1", "c"),
        ("c2", "c"),
    ]:
        roots[name] = tmp_path / "disks" / name
        roots[name].mkdir(parents=True)
        options += ["-b", f"{name}@{domain}=dir:{roots[name]}"]
    source = tmp_path / "model.bin"
    source.write_bytes(payload(50_000))

    put = circle("qss", "put", str(source), "--key", str(key), *options, "-o", "json")
    assert put.code == 0, put
    document = put.json()
    object_id = document["objectId"]
    assert re.fullmatch("[0-9a-f]{64}", object_id)
    assert {name: document[name] for name in document if name not in ("objectId", "placement")} == {
        "name": "model.bin",
        "size": 50_000,
        "k": 4,
        "n": 6,
        "segmentSize": 4 * 1024 * 1024,
        "version": 1,
        "keyId": keygen.json()["keyId"],
        "recipients": [],
        "warnings": [
            "shares share failure domains ('c' holds 2 of 6); the object still survives the "
            "loss of any one domain"
        ],
    }
    holder = {item["share"]: item["backend"] for item in document["placement"]}
    assert sorted(document["placement"], key=lambda item: item["share"]) == [
        {"share": share, "backend": name, "failureDomain": name[0]}
        for share, name in enumerate(["a1", "b1", "c1", "a2", "b2", "c2"])
    ]

    def wipe(name: str) -> None:
        shutil.rmtree(roots[name])
        roots[name].mkdir()

    wipe("a1")
    wipe("b1")
    out = tmp_path / "back.bin"
    got = circle("qss", "get", object_id[:12], str(out), "--key", str(key), *options)
    assert got.code == 0, got
    assert out.read_bytes() == source.read_bytes()
    assert got.stdout == f"{out}: 50000 bytes written\n"
    assert "warning: share 0 on a1 is missing" in got.stderr
    assert "warning: share 1 on b1 is missing" in got.stderr

    repaired = circle("qss", "scrub", "--repair", object_id[:16], *options)
    assert repaired.code == 0, repaired
    assert repaired.stdout.splitlines() == [
        f"{object_id[:16]} model.bin: 4-of-6, 4 healthy, 2 missing; margin 0",
        "  share 0 on a1 (a): missing",
        "  share 1 on b1 (b): missing",
        "  repaired: share 0 -> a1, share 1 -> b1; now 6 of 6 healthy, manifest version 2",
        "1 object scrubbed, 0 not fully healthy",
    ]

    scrub = circle("qss", "scrub", object_id, *options, "--output", "json")
    assert scrub.code == 0, scrub
    assert scrub.json()["failedBackends"] == []
    [report] = scrub.json()["objects"]
    assert {name: report[name] for name in report if name != "shares"} == {
        "objectId": object_id,
        "name": "model.bin",
        "k": 4,
        "n": 6,
        "healthy": 6,
        "margin": 2,
        "repaired": {},
        "after": None,
    }
    assert report["shares"] == [
        {
            "share": share,
            "backend": holder[share],
            "failureDomain": holder[share][0],
            "status": "healthy",
            "badSegments": [],
        }
        for share in range(6)
    ]

    for name in ("a1", "a2", "b1"):
        wipe(name)
    failed_dir = tmp_path / "failed"
    failed_dir.mkdir()
    failed = circle(
        "qss", "get", object_id, str(failed_dir / "back.bin"), "--key", str(key), *options
    )
    assert one_line_error(failed) == (
        f"circle: error: object {object_id[:16]} segment 0: 3 of the 4 shares needed could be "
        "read; lost: share 0 on a1 (missing), share 1 on b1 (missing), share 3 on a2 (missing)"
    )
    assert listing(failed_dir) == []


def test_cli_put_to_a_volume_whose_disks_are_absent_fails_cleanly(tmp_path: Path) -> None:
    assert not Path("/var/lib/circle/qss").exists()  # what the example's volume points at
    repo = copy_example(tmp_path / "circle")
    key = tmp_path / "storage.key"
    generate_key_file(key)
    source = tmp_path / "model.json"
    source.write_text("{}")
    result = circle(
        "qss", "put", str(source), "--key", str(key), "--volume", "model-data", "--repo", str(repo)
    )
    line = one_line_error(result)
    assert re.fullmatch(
        r"circle: error: dir backend '[a-z]+-[12]' \(/var/lib/circle/qss/[a-z]+-[12]\) is "
        r"unavailable: root /var/lib/circle/qss/[a-z]+-[12] cannot be opened: No such file or "
        "directory",
        line,
    ), line


def test_cli_get_into_a_missing_directory_is_an_input_error(
    six: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    key = tmp_path / "storage.key"
    generate_key_file(key)
    manifest = put_six(six, tmp_path, read_key_file(key), 100)
    options = [arg for name in names(6) for arg in ("-b", f"{name}=dir:{six.root(name)}")]
    missing = tmp_path / "no-such-dir" / "out.bin"
    result = circle("qss", "get", manifest.object_id, str(missing), "--key", str(key), *options)
    assert result.code == 2, result
    assert "internal error" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not missing.parent.exists()
