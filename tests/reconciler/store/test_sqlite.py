"""What only the SQLite backend has: one file shared by many connections and processes, the
store's own clock for leases, busy files, and files that are not stores."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.store import (
    EventKind,
    InvalidReply,
    SqliteStore,
    StoreError,
    StoreUnavailable,
    open_store,
)
from tests.reconciler.store.conftest import ROOT, FakeClock


def test_any_connection_expires_the_leases_of_another(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, clock=clock) as granting, SqliteStore(path, clock=clock) as other:
        lease = granting.grant(10)
        written = granting.put("node/a", b"alive", lease=lease).revision
        clock.advance(9.9)
        assert other.get("node/a") is not None
        clock.advance(0.2)
        # `other` never saw the lease being granted; its first read reaps it all the same.
        assert other.get("node/a") is None
        assert other.revision() == written + 1
        with granting.watch("node/", written + 1) as watch:
            (event,) = watch.poll(1)
        assert (event.kind, event.key, event.revision) == (EventKind.DELETE, "node/a", written + 1)


def test_leases_expire_in_expiry_order_one_revision_each(tmp_path: Path, clock: FakeClock) -> None:
    with SqliteStore(tmp_path / "s.db", clock=clock) as store:
        late, early = store.grant(20), store.grant(10)
        store.grant(5)  # a lease without keys
        store.put("k/late", b"", lease=late)
        store.put("k/early1", b"", lease=early)
        store.put("k/early2", b"", lease=early)
        before = store.revision()
        clock.advance(30)
        with store.watch("k/", before + 1) as watch:
            events = watch.poll(1)
    # The lease without keys ends without a revision; the others one revision each, in order.
    assert [(e.key, e.revision) for e in events] == [
        ("k/early1", before + 1),
        ("k/early2", before + 1),
        ("k/late", before + 2),
    ]


def test_the_store_survives_reopening(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, clock=clock) as store:
        lease = store.grant(60)
        store.put("a", b"1", lease=lease)
        revision = store.put("b", b"2").revision
    with open_store(f"sqlite:{path}", clock=clock) as store:
        assert store.revision() == revision
        assert store.keep_alive(lease) == 60
        kv = store.get("a")
        assert kv is not None
        assert kv.lease == lease


def test_a_locked_file_is_waited_for_then_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path, timeout=0.3) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # as another process holding the write lock
            assert store.get("x") is None  # WAL: reads go on under a writer
            with pytest.raises(StoreUnavailable, match=r"^sqlite:.*: txn: busy: .*0\.3 s"):
                store.put("x", b"1")
            holder.execute("ROLLBACK")
            assert store.put("x", b"1").revision == 2
        finally:
            holder.close()


def test_writers_in_other_processes_are_waited_for(tmp_path: Path) -> None:
    """A process holding the write lock for a while delays the store, which then succeeds."""
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    hold = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(0.5)\n"
        "c.execute('COMMIT')\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, cwd=ROOT
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with SqliteStore(path, timeout=30) as store:
            assert store.put("x", b"1").revision == 2
    assert holder.returncode == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not a database" * 100, "not a store"),
        (None, "schema version 7, expected 1"),
    ],
    ids=["not-sqlite", "other-schema"],
)
def test_a_file_that_is_not_a_store_is_refused(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "s.db"
    if content is None:
        SqliteStore(path).close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = 7 WHERE name = 'schema'")
        conn.close()
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidReply, match=problem):
        SqliteStore(path)


def test_a_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=r"^sqlite:.*missing/s\.db: "):
        open_store(f"sqlite:{tmp_path}/missing/s.db")


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("a")
