"""The state store contract, run against every backend (`harness`: sqlite and a real etcd).

What one backend does, the other must do the same way: these tests never ask which backend
they are on, except to let time pass (a fake clock for sqlite, real seconds for etcd).
"""

from __future__ import annotations

import pytest

from reconciler.store import (
    BadRequest,
    Compacted,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventKind,
    FutureRevision,
    LeaseNotFound,
    Put,
    PutResult,
    Range,
    RangeResult,
    StateStore,
    Watch,
)
from tests.reconciler.store.conftest import Harness


def collect(watch: Watch, until_revision: int, *, seconds: float = 30.0) -> list[Event]:
    """Every event the watch hands on until it has passed `until_revision` (bounded)."""
    events: list[Event] = []
    rounds = int(seconds / 0.5)
    for _ in range(rounds):
        if watch.next_revision > until_revision:
            break
        events.extend(watch.poll(0.5))
    return events


def state(store: StateStore, prefix: str = "") -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.range(prefix).kvs}


# -- revisions, versions --------------------------------------------------------------------


def test_every_write_bumps_the_revision_by_one(harness: Harness) -> None:
    store = harness.store
    start = store.revision()
    assert store.put("a", b"1").revision == start + 1
    assert store.put("a", b"2").revision == start + 2
    assert store.delete("a").revision == start + 3
    assert store.delete("a").revision == start + 3  # nothing deleted: nothing written
    assert store.put("b", b"1").revision == start + 4
    assert store.revision() == start + 4


def test_keys_carry_create_and_mod_revisions_and_a_version(harness: Harness) -> None:
    store = harness.store
    first = store.put("k", b"one").revision
    second = store.put("k", b"two")
    assert second.prev is not None
    assert second.prev.value == b"one"
    kv = store.get("k")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"two",
        first,
        second.revision,
        2,
    )
    store.delete("k")
    again = store.put("k", b"three").revision
    kv = store.get("k")
    assert kv is not None
    assert (kv.create_revision, kv.version) == (again, 1)


def test_range_by_prefix_in_key_order_with_limit_and_count(harness: Harness) -> None:
    store = harness.store
    for key in ["b/2", "a/1", "b/1", "b/3", "bb", "c"]:
        store.put(key, key.encode())
    found = store.range("b/")
    assert [kv.key for kv in found.kvs] == ["b/1", "b/2", "b/3"]
    assert (found.count, found.more) == (3, False)
    limited = store.range("b/", limit=2)
    assert [kv.key for kv in limited.kvs] == ["b/1", "b/2"]
    assert (limited.count, limited.more) == (3, True)
    assert [kv.key for kv in store.range("").kvs] == ["a/1", "b/1", "b/2", "b/3", "bb", "c"]
    assert store.get("nothing") is None


def test_keys_order_as_their_utf8_bytes(harness: Harness) -> None:
    keys = ["z", "é", "Z", "日本", "a\u00ff"]
    for key in keys:
        harness.store.put(f"u/{key}", b"")
    found = [kv.key for kv in harness.store.range("u/").kvs]
    assert found == sorted((f"u/{k}" for k in keys), key=lambda k: k.encode())


def test_range_at_a_past_revision_sees_the_store_as_it_was(harness: Harness) -> None:
    store = harness.store
    store.put("p/a", b"1")
    store.put("p/b", b"1")
    middle = store.put("p/a", b"2").revision
    store.delete("p/b")
    store.put("p/c", b"1")
    store.put("p/a", b"3")
    then = store.range("p/", revision=middle)
    assert {kv.key: kv.value for kv in then.kvs} == {"p/a": b"2", "p/b": b"1"}
    assert then.revision == store.revision()  # the store's revision when it answered
    old = store.get("p/a", revision=middle)
    assert old is not None
    assert (old.mod_revision, old.version) == (middle, 2)
    assert state(store, "p/") == {"p/a": b"3", "p/c": b"1"}
    with pytest.raises(FutureRevision):
        store.range("p/", revision=store.revision() + 10)


# -- transactions ---------------------------------------------------------------------------


def test_a_transaction_applies_its_success_branch_in_one_revision(harness: Harness) -> None:
    store = harness.store
    before = store.put("t/a", b"1").revision
    result = store.txn(
        [Compare.value("t/a", "=", b"1"), Compare.absent("t/b")],
        [Put("t/b", b"2"), Put("t/c", b"3"), Delete("t/a"), Range("t/", prefix=True)],
        [Put("t/failed", b"x")],
    )
    assert result.succeeded
    assert result.revision == before + 1
    put_b, _, deleted, listed = result.responses
    assert isinstance(put_b, PutResult)
    assert put_b.revision == before + 1
    assert isinstance(deleted, DeleteResult)
    assert deleted.deleted == 1
    assert isinstance(listed, RangeResult)
    assert [kv.key for kv in listed.kvs] == ["t/b", "t/c"]  # sees the branch's own writes
    assert state(store, "t/") == {"t/b": b"2", "t/c": b"3"}
    b, c = store.get("t/b"), store.get("t/c")
    assert b is not None
    assert c is not None
    assert b.mod_revision == c.mod_revision == before + 1


def test_a_failed_compare_takes_the_failure_branch_and_changes_nothing_else(
    harness: Harness,
) -> None:
    store = harness.store
    written = store.put("f/a", b"1").revision
    before = state(store)
    result = store.txn(
        [Compare.mod_revision("f/a", "=", written), Compare.version("f/a", ">", 1)],
        [Put("f/a", b"changed"), Delete("f/b", prefix=True)],
        [Range("f/a")],
    )
    assert not result.succeeded
    assert result.revision == written
    (listed,) = result.responses
    assert isinstance(listed, RangeResult)
    assert listed.kvs[0].value == b"1"
    assert state(store) == before
    assert store.revision() == written


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare.value("c/k", "=", b"v"), True),
        (Compare.value("c/k", "!=", b"v"), False),
        (Compare.value("c/k", "<", b"w"), True),
        (Compare.value("c/k", ">", b"w"), False),
        (Compare.version("c/k", "=", 1), True),
        (Compare.version("c/k", "<", 1), False),
        (Compare.create_revision("c/k", ">", 0), True),
        (Compare.mod_revision("c/k", "!=", 0), True),
        (Compare.exists("c/k"), True),
        (Compare.absent("c/k"), False),
        (Compare.exists("c/missing"), False),
        (Compare.absent("c/missing"), True),
        (Compare.version("c/missing", "=", 0), True),
        (Compare.mod_revision("c/missing", "<", 1), True),
        # a value compare on a missing key is false whatever the operator (etcd's rule)
        (Compare.value("c/missing", "=", b""), False),
        (Compare.value("c/missing", "!=", b"v"), False),
    ],
    ids=lambda value: (
        f"{value.target.value}{value.op.value}{value.key}"
        if isinstance(value, Compare)
        else str(value)
    ),
)
def test_compares(harness: Harness, compare: Compare, holds: bool) -> None:
    harness.store.put("c/k", b"v")
    assert harness.store.txn([compare], [Range("c/k")], []).succeeded is holds


@pytest.mark.parametrize(
    ("success", "problem"),
    [
        ([Put("d/a", b"1"), Put("d/a", b"2")], "puts 'd/a' twice"),
        ([Put("d/a", b"1"), Delete("d/a")], "both puts and deletes 'd/a'"),
        ([Delete("d/", prefix=True), Put("d/x", b"1")], "both puts and deletes 'd/x'"),
        ([Put(f"d/{i}", b"") for i in range(129)], "129 success, over the limit of 128"),
    ],
    ids=["put-twice", "put-and-delete", "put-under-deleted-prefix", "too-many-ops"],
)
def test_transactions_etcd_refuses_are_refused_everywhere(
    harness: Harness, success: list[Put | Delete], problem: str
) -> None:
    before = harness.store.revision()
    with pytest.raises(BadRequest, match=problem):
        harness.store.txn([], success, [])
    assert harness.store.revision() == before


def test_a_put_on_a_lease_that_is_gone_fails_the_whole_transaction(harness: Harness) -> None:
    store = harness.store
    lease = store.grant(5)
    store.revoke(lease)
    before = store.revision()
    with pytest.raises(LeaseNotFound):
        store.txn([], [Put("g/a", b"1"), Put("g/b", b"2", lease=lease)], [])
    with pytest.raises(LeaseNotFound):
        store.put("g/c", b"1", lease=lease)
    assert store.revision() == before
    assert state(store, "g/") == {}


def test_values_over_the_limit_are_refused(harness: Harness) -> None:
    with pytest.raises(BadRequest, match="over the limit"):
        harness.store.put("big", bytes(1024 * 1024 + 1))
    harness.store.put("big", bytes(1024 * 1024))  # exactly the limit goes through
    kv = harness.store.get("big")
    assert kv is not None
    assert len(kv.value) == 1024 * 1024


# -- leases ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_keys_vanish_when_their_lease_expires(harness: Harness) -> None:
    store = harness.store
    lease = store.grant(2)
    start = store.put("l/held", b"1", lease=lease).revision
    store.put("l/other", b"1", lease=lease)
    store.put("l/free", b"1")
    held = store.get("l/held")
    assert held is not None
    assert held.lease == lease
    harness.advance(2.5)
    assert harness.wait_for(lambda: store.get("l/held") is None)
    assert state(store, "l/") == {"l/free": b"1"}
    with pytest.raises(LeaseNotFound):
        store.keep_alive(lease)
    # The expiry is one write: both keys deleted at one revision, each with its event.
    with store.watch("l/", start + 1) as watch:
        events = collect(watch, store.revision())
    deletes = [e for e in events if e.kind is EventKind.DELETE]
    assert sorted(e.key for e in deletes) == ["l/held", "l/other"]
    assert len({e.revision for e in deletes}) == 1
    assert all(e.prev is not None and e.prev.value == b"1" for e in deletes)


@pytest.mark.slow
def test_keep_alive_extends_a_lease(harness: Harness) -> None:
    store = harness.store
    lease = store.grant(2)
    store.put("ka/k", b"1", lease=lease)
    for _ in range(8):  # 4 s in all, twice the TTL: alive only thanks to the keep-alives
        harness.advance(0.5)
        assert store.keep_alive(lease) == 2
    assert store.get("ka/k") is not None
    harness.advance(2.5)
    assert harness.wait_for(lambda: store.get("ka/k") is None)


def test_revoke_deletes_the_attached_keys_with_events(harness: Harness) -> None:
    store = harness.store
    lease = store.grant(30)
    for name in "abc":
        store.put(f"r/{name}", name.encode(), lease=lease)
    store.put("r/kept", b"k")
    before = store.revision()
    with store.watch("r/", before + 1) as watch:
        store.revoke(lease)
        events = collect(watch, before + 1)
    assert [(e.kind, e.key, e.revision) for e in events] == [
        (EventKind.DELETE, f"r/{name}", before + 1) for name in "abc"
    ]
    assert [e.prev.value if e.prev else None for e in events] == [b"a", b"b", b"c"]
    assert state(store, "r/") == {"r/kept": b"k"}
    with pytest.raises(LeaseNotFound):
        store.revoke(lease)
    with pytest.raises(LeaseNotFound):
        store.keep_alive(lease)


def test_a_put_without_the_lease_detaches_the_key(harness: Harness) -> None:
    store = harness.store
    lease = store.grant(30)
    store.put("d/k", b"1", lease=lease)
    store.put("d/k", b"2")
    store.revoke(lease)
    assert state(store, "d/") == {"d/k": b"2"}


# -- watch ----------------------------------------------------------------------------------


def test_a_watch_sees_every_event_in_order(harness: Harness) -> None:
    store = harness.store
    start = store.revision() + 1
    expected: list[tuple[EventKind, str, int, bytes | None]] = []
    with store.watch("w/", start) as live:
        for i in range(150):
            key = f"w/{i % 17}"
            revision = store.put(key, str(i).encode()).revision
            expected.append((EventKind.PUT, key, revision, str(i).encode()))
            if i % 10 == 9:
                deleted = store.delete(key)
                expected.append((EventKind.DELETE, key, deleted.revision, None))
            store.put(f"elsewhere/{i}", b"not watched")
        result = store.txn([], [Put("w/t1", b"x"), Put("w/t2", b"y"), Put("x/t3", b"z")], [])
        expected += [
            (EventKind.PUT, "w/t1", result.revision, b"x"),
            (EventKind.PUT, "w/t2", result.revision, b"y"),
        ]
        last = store.revision()
        seen_live = collect(live, last)
    with store.watch("w/", start) as after:  # the same history, read after the fact
        seen_after = collect(after, last)
    for seen in (seen_live, seen_after):
        assert [(e.kind, e.key, e.revision, e.kv.value if e.kv else None) for e in seen] == (
            expected
        )
    # prev is the key before the change
    for event in seen_after:
        if event.kv is not None and event.kv.version > 1:
            assert event.prev is not None
            assert event.prev.mod_revision < event.revision


def test_a_watch_from_the_future_waits_for_it(harness: Harness) -> None:
    store = harness.store
    future = store.revision() + 2
    with store.watch("fut/", future) as watch:
        assert watch.poll(0.2) == ()
        store.put("fut/a", b"1")  # revision future - 1: before the watch's start
        store.put("fut/b", b"2")
        (event,) = collect(watch, future)
    assert (event.key, event.revision) == ("fut/b", future)


def test_after_compaction_a_watch_reports_compacted_and_relisting_recovers(
    harness: Harness,
) -> None:
    store = harness.store
    start = store.revision() + 1
    for i in range(30):
        store.put(f"cw/{i % 5}", str(i).encode())
    store.delete("cw/0")
    compacted_at = store.revision()
    store.compact(compacted_at)
    for from_revision in (start, compacted_at):  # at the compaction itself too
        with store.watch("cw/", from_revision) as stale, pytest.raises(Compacted) as raised:
            collect(stale, compacted_at)
        assert raised.value.compact_revision == compacted_at
    with pytest.raises(Compacted):
        store.range("cw/", revision=compacted_at - 1)
    with pytest.raises(Compacted):
        store.compact(compacted_at)
    # The way back: list at a revision, watch from the next one.
    listing = store.range("cw/")
    mirror = {kv.key: kv.value for kv in listing.kvs}
    with store.watch("cw/", listing.revision + 1) as watch:
        store.put("cw/new", b"n")
        store.delete("cw/1")
        store.put("cw/2", b"changed")
        for event in collect(watch, store.revision()):
            if event.kv is None:
                mirror.pop(event.key, None)
            else:
                mirror[event.key] = event.kv.value
    assert mirror == state(store, "cw/")
    # reads at and after the compaction still work
    assert store.range("cw/", revision=compacted_at).count == 4


def test_compacting_the_future_is_refused(harness: Harness) -> None:
    with pytest.raises(FutureRevision):
        harness.store.compact(harness.store.revision() + 5)
