"""Objects shared with named recipients (`qss.recipients`): each recipient's X-Wing key opens the
data key without the storage key; a non-recipient, a rotated key, a tampered, moved, renamed
or forged entry are refused with their own error and nothing written; share and unshare
write new manifest versions under the same object id; objects stored before key commitments
still read with the storage key and cannot be shared. Real directory backends and the real
X-Wing (`reconciler.secrets.xwing`, which the callers of qss hand in).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from qss.errors import (
    DecryptionError,
    EntryBroken,
    InvalidParameters,
    KeyMismatch,
    ManifestError,
    NotARecipient,
    RecipientError,
    WrongRecipientKey,
)
from qss.manifest import Manifest, decode
from qss.recipients import Recipient, RecipientKey, seal
from qss.store import Store, manifest_key, open_data_key
from reconciler.secrets import xwing
from tests.qss.helpers import SEGMENT, Cluster, listing, payload

DATA = payload(3 * SEGMENT + 100, "recipients")


@dataclasses.dataclass(frozen=True)
class Holder:
    name: str
    key: xwing.XWingPrivateKey

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.name, self.key.public_bytes)

    def opener(self, name: str | None = None) -> RecipientKey:
        """What reads as `name` (default: its own) with this holder's key."""
        return RecipientKey(
            name or self.name, self.key.public_bytes, partial(xwing.decapsulate, self.key)
        )


@pytest.fixture
def storage_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def three(tmp_path: Path) -> Cluster:
    return Cluster.of_directories(tmp_path / "backends", ["b0", "b1", "b2"])


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def gpu1() -> Holder:
    return Holder("gpu-1", xwing.generate())


@pytest.fixture(scope="module")
def gpu2() -> Holder:
    return Holder("gpu-2", xwing.generate())


def put(
    store: Store,
    tmp_path: Path,
    storage_key: bytes,
    recipients: tuple[Recipient, ...] = (),
    data: bytes = DATA,
) -> Manifest:
    source = tmp_path / "staging" / "model.bin"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(data)
    result = store.put(
        source,
        storage_key=storage_key,
        k=2,
        n=3,
        segment_size=SEGMENT,
        recipients=recipients,
        encapsulate=xwing.encapsulate,
    )
    source.unlink()
    return result.manifest


def read(store: Store, object_id: str, out_dir: Path, **key: Any) -> bytes:
    out = out_dir / "object.out"
    store.get(object_id, out, **key)
    data = out.read_bytes()
    out.unlink()
    return data


# -- reading as a recipient ------------------------------------------------------------------


def test_each_recipient_reads_the_object_with_its_own_key_and_the_storage_key_still_does(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder, gpu2: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu2.recipient, gpu1.recipient))
    assert [e.name for e in manifest.recipients] == ["gpu-1", "gpu-2"]
    assert manifest.content.key_commitment is not None
    store = three.store()
    for holder in (gpu1, gpu2):
        assert read(store, manifest.object_id, out_dir, recipient=holder.opener()) == DATA
    assert read(store, manifest.object_id, out_dir, storage_key=storage_key) == DATA
    stored = store.find_manifest(manifest.object_id)
    assert stored == manifest
    assert [e["kemKey"] for e in json.loads(stored.encode())["recipients"]] == [
        xwing.fingerprint(gpu1.key.public_bytes),
        xwing.fingerprint(gpu2.key.public_bytes),
    ]


def test_an_object_shared_with_no_one_keeps_the_manifest_shape_of_before(
    three: Cluster, tmp_path: Path, storage_key: bytes
) -> None:
    manifest = put(three.store(), tmp_path, storage_key)
    document = json.loads(manifest.encode())
    assert "recipients" not in document
    assert len(bytes.fromhex(document["content"]["keyCommitment"])) == 32
    # The same content without a commitment (as stored before it existed) keeps its old id.
    legacy = dataclasses.replace(manifest.content, key_commitment=None)
    assert "keyCommitment" not in legacy.as_json()
    assert legacy.object_id != manifest.object_id


def refused(
    three: Cluster, out_dir: Path, object_id: str, error: type[Exception], match: str, **key: Any
) -> None:
    """The read is refused with `error` saying `match`, and nothing is written anywhere."""
    before = three.snapshot()
    with pytest.raises(error, match=match):
        three.store().get(object_id, out_dir / "object.out", **key)
    assert listing(out_dir) == []
    assert three.snapshot() == before


def test_a_key_the_object_is_not_shared_with_is_refused_and_nothing_is_written(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder, gpu2: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    oid = manifest.object_id
    refused(
        three, out_dir, oid, NotARecipient,
        rf"^object {oid[:16]} is not shared with gpu-2 \(shared with gpu-1\): `circle qss "
        r"share` it with the storage key$",
        recipient=gpu2.opener(),
    )  # fmt: skip
    # gpu-2's key under gpu-1's name: the entry is for another KEM key (a rotated one).
    refused(
        three, out_dir, oid, WrongRecipientKey,
        rf"^object {oid[:16]}: the entry for gpu-1 is wrapped for KEM key "
        rf"{xwing.fingerprint(gpu1.key.public_bytes)}, and the key given is "
        rf"{xwing.fingerprint(gpu2.key.public_bytes)} \(share it again\)$",
        recipient=gpu2.opener("gpu-1"),
    )  # fmt: skip
    with pytest.raises(InvalidParameters, match="one of the two"):
        three.store().get(oid, out_dir / "x", storage_key=storage_key, recipient=gpu1.opener())
    with pytest.raises(InvalidParameters, match="one of the two"):
        three.store().get(oid, out_dir / "x")


def plant_version(
    three: Cluster, manifest: Manifest, edit: Callable[[dict[str, Any]], None]
) -> None:
    """A next manifest version of the same object (so the same id) whose JSON `edit` changed,
    as anyone who can write to the backends could plant it."""
    document = json.loads(manifest.encode())
    edit(document)
    document["version"] = manifest.version + 1
    three.plant_manifest(manifest.object_id, canonical(document), manifest.version + 1)


def canonical(document: dict[str, Any]) -> bytes:
    return rfc8785.dumps(document)


def flip(field: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        entry = document["recipients"][0]
        raw = bytearray(base64.b64decode(entry[field]))
        raw[len(raw) // 2] ^= 0x01
        entry[field] = base64.b64encode(bytes(raw)).decode()

    return edit


BROKEN = (
    "the entry for {name} does not authenticate: its encapsulation or wrapped key changed, "
    "or it was moved from another object or recipient; nothing was read$"
)


@pytest.mark.parametrize("field", ["wrappedKey", "encapsulation"])
def test_a_tampered_entry_is_refused_and_nothing_is_written(
    three: Cluster,
    tmp_path: Path,
    out_dir: Path,
    storage_key: bytes,
    gpu1: Holder,
    field: str,
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    plant_version(three, manifest, flip(field))
    assert three.store().find_manifest(manifest.object_id).version == 2
    oid = manifest.object_id
    refused(
        three, out_dir, oid, EntryBroken, rf"^object {oid[:16]}: " + BROKEN.format(name="gpu-1"),
        recipient=gpu1.opener(),
    )  # fmt: skip


def test_an_entry_moved_to_another_object_or_renamed_is_refused_and_nothing_is_written(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder
) -> None:
    first = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    second = put(three.store(), tmp_path, storage_key, (), payload(SEGMENT, "other"))
    moved = first.recipients[0].as_json()
    plant_version(three, second, lambda document: document.update(recipients=[moved]))
    oid = second.object_id
    refused(
        three, out_dir, oid, EntryBroken, rf"^object {oid[:16]}: " + BROKEN.format(name="gpu-1"),
        recipient=gpu1.opener(),
    )  # fmt: skip

    # Renamed: the entry of gpu-1 said to be gpu-3's, read with gpu-1's key as gpu-3.
    def rename(document: dict[str, Any]) -> None:
        document["recipients"][0]["name"] = "gpu-3"

    plant_version(three, first, rename)
    oid = first.object_id
    refused(
        three, out_dir, oid, EntryBroken, rf"^object {oid[:16]}: " + BROKEN.format(name="gpu-3"),
        recipient=gpu1.opener("gpu-3"),
    )  # fmt: skip


def test_a_forged_entry_of_another_data_key_is_refused_by_the_key_commitment(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder
) -> None:
    """Whoever can write a manifest version can wrap a key of their own for gpu-1's public
    key; the content's commitment (covered by the id) refuses it before a share is read."""
    manifest = put(three.store(), tmp_path, storage_key)
    forged = seal(manifest.object_id, secrets.token_bytes(32), gpu1.recipient, xwing.encapsulate)
    plant_version(three, manifest, lambda document: document.update(recipients=[forged.as_json()]))
    refused(
        three, out_dir, manifest.object_id, KeyMismatch,
        r"^the entry for gpu-1 opens to a key that is not this object's data key \(its "
        r"keyCommitment\): forged; nothing was read$",
        recipient=gpu1.opener(),
    )  # fmt: skip


# -- share and unshare -----------------------------------------------------------------------


def versions(three: Cluster, object_id: str) -> dict[str, list[str]]:
    return {b.name: sorted(b.list(f"m/{object_id}/")) for b in three.backends}


def test_share_adds_a_recipient_and_unshare_removes_its_access_under_the_same_id(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder, gpu2: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    oid = manifest.object_id
    store = three.store()
    shared = store.share(
        oid, storage_key=storage_key, recipients=[gpu2.recipient], encapsulate=xwing.encapsulate
    ).manifest
    assert (shared.object_id, shared.version) == (oid, 2)
    assert [e.name for e in shared.recipients] == ["gpu-1", "gpu-2"]
    assert shared.recipients[0] == manifest.recipients[0]  # gpu-1's entry kept as it was
    assert read(store, oid, out_dir, recipient=gpu2.opener()) == DATA

    result = store.unshare(oid, ["gpu-1"])
    assert result.failed == ()
    assert (result.manifest.version, [e.name for e in result.manifest.recipients]) == (
        3,
        ["gpu-2"],
    )
    # The older versions, which still hold gpu-1's entry, are gone from every backend.
    assert versions(three, oid) == {b: [manifest_key(oid, 3)] for b in three.names}
    refused(three, out_dir, oid, NotARecipient, "is not shared with gpu-1", recipient=gpu1.opener())
    assert read(store, oid, out_dir, recipient=gpu2.opener()) == DATA
    assert read(store, oid, out_dir, storage_key=storage_key) == DATA

    last = store.unshare(oid, ["gpu-2"]).manifest
    assert "recipients" not in json.loads(last.encode())
    assert decode(last.encode(), oid) == last


def test_share_and_unshare_refusals_change_nothing(
    three: Cluster, tmp_path: Path, storage_key: bytes, gpu1: Holder, gpu2: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    oid = manifest.object_id
    store = three.store()
    before = three.snapshot()
    with pytest.raises(DecryptionError, match="is encrypted for storage key"):
        store.share(
            oid,
            storage_key=secrets.token_bytes(32),
            recipients=[gpu2.recipient],
            encapsulate=xwing.encapsulate,
        )
    with pytest.raises(RecipientError, match=r"is not shared with gpu-2 \(shared with gpu-1\)"):
        store.unshare(oid, ["gpu-1", "gpu-2"])
    with pytest.raises(InvalidParameters, match="a recipient is named twice"):
        store.share(
            oid,
            storage_key=storage_key,
            recipients=[gpu2.recipient, Recipient("gpu-2", gpu1.key.public_bytes)],
            encapsulate=xwing.encapsulate,
        )
    with pytest.raises(InvalidParameters, match=r"^recipient gpu-2: .*low order"):
        store.share(
            oid,
            storage_key=storage_key,
            recipients=[Recipient("gpu-2", gpu2.key.public_bytes[:-32] + bytes(32))],
            encapsulate=xwing.encapsulate,
        )
    assert three.snapshot() == before


def test_an_object_stored_before_key_commitments_reads_with_the_storage_key_but_is_not_shared(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key)
    legacy = Manifest(
        dataclasses.replace(manifest.content, key_commitment=None), manifest.placement
    )
    three.plant_manifest(legacy.object_id, legacy.encode())
    store = three.store()
    assert read(store, legacy.object_id, out_dir, storage_key=storage_key) == DATA
    before = three.snapshot()
    with pytest.raises(RecipientError, match="was stored before key commitments"):
        store.share(
            legacy.object_id,
            storage_key=storage_key,
            recipients=[gpu1.recipient],
            encapsulate=xwing.encapsulate,
        )
    assert three.snapshot() == before
    # An entry planted on it anyway is never trusted.
    entry = seal(legacy.object_id, secrets.token_bytes(32), gpu1.recipient, xwing.encapsulate)
    with pytest.raises(RecipientError, match="no entry of it can be trusted"):
        open_data_key(dataclasses.replace(legacy, recipients=(entry,)), recipient=gpu1.opener())


def test_repair_keeps_the_recipients(
    three: Cluster, tmp_path: Path, out_dir: Path, storage_key: bytes, gpu1: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key, (gpu1.recipient,))
    three.wipe("b1")
    repaired = three.store().repair(manifest.object_id).manifest
    assert repaired.version == 2
    assert repaired.recipients == manifest.recipients
    assert read(three.store(), manifest.object_id, out_dir, recipient=gpu1.opener()) == DATA


# -- the entries in a manifest ---------------------------------------------------------------


def entry_json(gpu1: Holder) -> dict[str, Any]:
    return seal("0" * 64, bytes(32), gpu1.recipient, xwing.encapsulate).as_json()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.update(kem="ml-kem-768"), r"recipients\[0\]: unsupported KEM 'ml-kem-768'"),
        (lambda e: e.update(kemKey="sha256:00"), r"recipients\[0\]: kemKey must be sha256:"),
        (lambda e: e.update(name="../x"), r"recipients\[0\]: a recipient name is 1-128"),
        (lambda e: e.update(wrappedKey="AAAA"), r"wrappedKey must be 48 bytes of base64, found 3"),
        (lambda e: e.update(encapsulation="!!"), r"recipients\[0\].encapsulation is not valid"),
        (lambda e: e.update(extra=1), r"recipients\[0\]: expected name, kem, kemKey"),
    ],
)
def test_a_malformed_entry_makes_the_manifest_invalid(
    three: Cluster,
    tmp_path: Path,
    storage_key: bytes,
    gpu1: Holder,
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    manifest = put(three.store(), tmp_path, storage_key)
    entry = entry_json(gpu1)
    edit(entry)
    document = json.loads(manifest.encode())
    document["recipients"] = [entry]
    with pytest.raises(ManifestError, match=message):
        decode(canonical(document), manifest.object_id)


def test_entries_must_be_sorted_and_named_once(
    three: Cluster, tmp_path: Path, storage_key: bytes, gpu1: Holder
) -> None:
    manifest = put(three.store(), tmp_path, storage_key)
    entry = entry_json(gpu1)
    for entries in ([entry, entry], [{**entry, "name": "z"}, entry]):
        document = {**json.loads(manifest.encode()), "recipients": entries}
        with pytest.raises(ManifestError, match="sorted by name, each name once"):
            decode(canonical(document), manifest.object_id)
    with pytest.raises(ManifestError, match="recipients must list 1-1024 entries"):
        decode(
            canonical({**json.loads(manifest.encode()), "recipients": []}),
            manifest.object_id,
        )


def test_a_put_for_a_key_the_kem_refuses_leaves_nothing_behind(
    three: Cluster, tmp_path: Path, storage_key: bytes, gpu1: Holder
) -> None:
    low_order = Recipient("gpu-9", gpu1.key.public_bytes[:-32] + bytes(32))
    with pytest.raises(InvalidParameters, match=r"^recipient gpu-9: .*low order"):
        put(three.store(), tmp_path, storage_key, (gpu1.recipient, low_order))
    assert three.snapshot() == {name: {} for name in three.names}
    with pytest.raises(InvalidParameters, match="recipients need the X-Wing KEM"):
        three.store().put(
            tmp_path / "staging",
            storage_key=storage_key,
            k=2,
            n=3,
            recipients=[gpu1.recipient],
        )
