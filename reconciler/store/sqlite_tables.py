"""The tables of the SQLite store and every statement on them; `reconciler.store.sqlite`
decides when they run (transactions, retries, the clock).

    meta     (name, value)   'schema' = 1, 'revision' (starts at 1), 'compact_revision' (0: none)
    kv       the keys as they are now: key, value, create_revision, mod_revision, version, lease
    history  one row per change: (revision, sub) orders the changes, sub counting the keys
             changed by one revision; a put row holds the key as written, a delete row only
             the key. It is the watch's change log and what reads at past revisions use
    leases   id, ttl (seconds), expires_at (the store clock's time)

Keys are BLOBs of their UTF-8 bytes, so SQLite orders them as etcd does (bytewise). After
`compact(C)` the history keeps every row after C and, for each key, its last row at or
before C when that row is a put: enough to read any revision from C on and to find the
previous value of any later change.

Statements are put together from the constant pieces below (column lists, key clauses);
every value goes in as a bound parameter, hence the `noqa: S608` where ruff sees f-strings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from reconciler.store.base import Event, EventKind, KeyValue, LeaseId, RangeResult, prefix_end
from reconciler.store.errors import InvalidReply

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    revision INTEGER NOT NULL,
    sub INTEGER NOT NULL,
    key BLOB NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER,
    PRIMARY KEY (revision, sub)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_by_key ON history (key, revision);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
"""

_KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"


def initialize(conn: sqlite3.Connection, where: str) -> None:
    """Create the tables of an empty file, or check those of an existing store."""
    # One statement at a time: executescript would COMMIT the caller's transaction first.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('revision', 1)")
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('compact_revision', 0)")
    schema = meta(conn, "schema", where)
    if schema != SCHEMA_VERSION:
        raise InvalidReply(f"{where}: schema version {schema}, expected {SCHEMA_VERSION}")


def meta(conn: sqlite3.Connection, name: str, where: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    if row is None or not isinstance(row[0], int):
        raise InvalidReply(f"{where}: the meta table has no valid {name!r}")
    return row[0]


def set_meta(conn: sqlite3.Connection, name: str, value: int) -> None:
    conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))


def key_bounds(prefix: str, *, exact: bool) -> tuple[str, tuple[bytes | int, ...]]:
    """A WHERE clause on `key` and its parameters: one key, or every key under a prefix."""
    low = prefix.encode()
    if exact:
        return "key = ?", (low,)
    high = prefix_end(low)
    if not high:
        return "key >= ?", (low,)
    return "key >= ? AND key < ?", (low, high)


def current(conn: sqlite3.Connection, key: str, where: str) -> KeyValue | None:
    query = f"SELECT {_KV_COLUMNS} FROM kv WHERE key = ?"  # noqa: S608
    row = conn.execute(query, (key.encode(),)).fetchone()
    return None if row is None else _kv(row, where)


def read(
    conn: sqlite3.Connection,
    prefix: str,
    *,
    exact: bool,
    limit: int,
    at: int | None,
    revision: int,
    where: str,
) -> RangeResult:
    """The keys as they are (`at` None) or were right after revision `at`."""
    clause, params = key_bounds(prefix, exact=exact)
    if at is None:
        source = f"SELECT {_KV_COLUMNS} FROM kv WHERE {clause}"  # noqa: S608
    else:
        # SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum:
        # each key's last change at or before `at`, kept when it is a put.
        source = (
            "SELECT key, value, create_revision, revision, version, lease FROM ("  # noqa: S608
            "SELECT key, value, create_revision, MAX(revision) AS revision, version, lease, "
            f"deleted FROM history WHERE {clause} AND revision <= ? GROUP BY key"
            ") WHERE deleted = 0"
        )
        params = (*params, at)
    count = conn.execute(f"SELECT COUNT(*) FROM ({source})", params).fetchone()[0]  # noqa: S608
    rows = conn.execute(f"{source} ORDER BY key LIMIT ?", (*params, limit or -1)).fetchall()
    kvs = tuple(_kv(row, where) for row in rows)
    return RangeResult(kvs, count, len(kvs) < count, revision)


def write_put(
    conn: sqlite3.Connection,
    kv: KeyValue,
    sub: int,
) -> None:
    encoded = kv.key.encode()
    conn.execute(
        f"INSERT OR REPLACE INTO kv ({_KV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
        (encoded, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease),
    )
    conn.execute(
        "INSERT INTO history VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
        (kv.mod_revision, sub, encoded, kv.value, kv.create_revision, kv.version, kv.lease),
    )


def write_deletes(
    conn: sqlite3.Connection, doomed: Iterable[KeyValue], revision: int, first_sub: int
) -> int:
    """Delete `doomed` at `revision`, logging each; returns the next free sub."""
    sub = first_sub
    for kv in doomed:
        encoded = kv.key.encode()
        conn.execute("DELETE FROM kv WHERE key = ?", (encoded,))
        conn.execute(
            "INSERT INTO history VALUES (?, ?, ?, 1, x'', 0, 0, NULL)", (revision, sub, encoded)
        )
        sub += 1
    return sub


def keys_of_lease(conn: sqlite3.Connection, lease: int, where: str) -> list[KeyValue]:
    query = f"SELECT {_KV_COLUMNS} FROM kv WHERE lease = ? ORDER BY key"  # noqa: S608
    rows = conn.execute(query, (lease,)).fetchall()
    return [_kv(row, where) for row in rows]


def events(
    conn: sqlite3.Connection, prefix: str, start: int, batch: int, where: str
) -> list[Event]:
    """Changes under `prefix` from revision `start` on, in order, whole revisions only:
    about `batch` rows, more when one revision alone has more."""
    clause, params = key_bounds(prefix, exact=False)
    clause = clause.replace("key", "h.key")
    query = (
        "SELECT h.revision, h.key, h.deleted, h.value, h.create_revision, h.version, h.lease, "  # noqa: S608
        "p.deleted, p.value, p.create_revision, p.revision, p.version, p.lease "
        "FROM history h LEFT JOIN history p ON p.key = h.key AND p.revision = ("
        "SELECT MAX(q.revision) FROM history q WHERE q.key = h.key AND q.revision < h.revision) "
        f"WHERE h.revision >= ? AND {clause} ORDER BY h.revision, h.sub"
    )
    rows = conn.execute(f"{query} LIMIT ?", (start, *params, batch + 1)).fetchall()
    if len(rows) > batch:
        cut = rows[batch][0]
        rows = [row for row in rows if row[0] < cut]
        if not rows:  # one revision alone is larger than a batch: take all of it
            rows = conn.execute(
                query.replace("h.revision >= ?", "h.revision = ?"), (cut, *params)
            ).fetchall()
    return [_event(row, where) for row in rows]


def compact(conn: sqlite3.Connection, revision: int) -> None:
    """Drop the history that reads from `revision` on and later prev values never need."""
    conn.execute(
        "DELETE FROM history WHERE revision <= :at AND (deleted = 1 OR EXISTS ("
        "SELECT 1 FROM history later WHERE later.key = history.key "
        "AND later.revision > history.revision AND later.revision <= :at))",
        {"at": revision},
    )


def _key(raw: Any, where: str) -> str:
    if not isinstance(raw, bytes):
        raise InvalidReply(f"{where}: a key that is not a BLOB: {raw!r}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidReply(f"{where}: a key that is not UTF-8: {raw[:40]!r}") from None


def _lease(raw: Any) -> LeaseId | None:
    return None if raw is None else LeaseId(raw)


def _kv(row: tuple[Any, ...], where: str) -> KeyValue:
    key, value, create_revision, mod_revision, version, lease = row
    if not isinstance(value, bytes):
        raise InvalidReply(f"{where}: the value of {_key(key, where)!r} is not a BLOB")
    return KeyValue(_key(key, where), value, create_revision, mod_revision, version, _lease(lease))


def _event(row: tuple[Any, ...], where: str) -> Event:
    revision, raw_key, deleted, value, create_revision, version, lease = row[:7]
    p_deleted, p_value, p_create, p_mod, p_version, p_lease = row[7:]
    key = _key(raw_key, where)
    prev = None
    if p_deleted == 0:
        prev = KeyValue(key, p_value, p_create, p_mod, p_version, _lease(p_lease))
    if deleted:
        return Event(EventKind.DELETE, key, revision, None, prev)
    kv = KeyValue(key, value, create_revision, revision, version, _lease(lease))
    return Event(EventKind.PUT, key, revision, kv, prev)
