"""Benchmark: the state store's heartbeats and compare-and-swap, beside what the same file or
the same etcd does when asked directly.

For each backend, in one run, one client, each figure the median of rounds that take turns
(`--seconds` per figure in all):

- sqlite baseline: raw sqlite3 inserts, one transaction each (`BEGIN IMMEDIATE`, INSERT OR
  REPLACE, COMMIT) in a file with the store's settings (WAL, synchronous=FULL);
- etcd baseline: raw HTTP puts to the gateway (http.client on one keep-alive connection, the
  JSON body prepared once, the reply read and not parsed);
- heartbeats: `keep_alive` of one lease, what every node does to stay registered;
- CAS: `txn` comparing the key's mod_revision and putting it, each on the last one's result;
- put: plain `put`, for scale.

    .venv/bin/python tests/benchmarks/bench_store.py [--seconds 3] [--dir /tmp/...]

etcd comes from where the tests find it (tests/reconciler/store/etcd_process.py); without one
the etcd rows are left out, saying why. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reconciler.store import Compare, EtcdStore, Put, SqliteStore, StateStore
from tests.reconciler.store.etcd_process import ETCD_MISSING, find_etcd, running_etcd

ROUNDS = 5


def rate(seconds: float, step: Callable[[], object]) -> float:
    """Calls of `step` per second, over about `seconds`."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(10):
            step()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def interleaved(steps: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """The median rate of each step over `ROUNDS` rounds that take turns: the disk and the
    machine drift (fsync throughput on a shared virtual disk varies a lot from one second to
    the next), and taking turns gives every figure the same share of good and bad moments."""
    for step in steps.values():
        rate(0.05, step)  # warm up
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(ROUNDS):
        for name, step in steps.items():
            rates[name].append(rate(seconds / ROUNDS, step))
    return {name: statistics.median(values) for name, values in rates.items()}


def raw_sqlite_insert(path: Path) -> Callable[[], None]:
    """One raw sqlite3 insert per transaction, in a file with the store's settings."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    counter = iter(range(10**9))

    def insert() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (b"k%d" % next(counter), b"v"))
        conn.execute("COMMIT")

    return insert


def raw_etcd_put(connection: http.client.HTTPConnection) -> Callable[[], None]:
    """One raw HTTP put to the gateway, on one keep-alive connection."""
    body = json.dumps(
        {"key": base64.b64encode(b"raw").decode(), "value": base64.b64encode(b"v").decode()}
    ).encode()
    headers = {"Content-Type": "application/json"}

    def put() -> None:
        connection.request("POST", "/v3/kv/put", body=body, headers=headers)
        reply = connection.getresponse()
        reply.read()
        if reply.status != 200:
            raise SystemExit(f"raw etcd put: HTTP {reply.status}")

    return put


def store_steps(store: StateStore) -> dict[str, Callable[[], object]]:
    lease = store.grant(600)
    last = [store.put("bench/cas", b"0").revision]

    def swap() -> None:
        result = store.txn(
            [Compare.mod_revision("bench/cas", "=", last[0])], [Put("bench/cas", b"1")]
        )
        if not result.succeeded:
            raise SystemExit("a CAS with one client lost: the store is not alone")
        last[0] = result.revision

    return {
        "heartbeats": lambda: store.keep_alive(lease),
        "cas": swap,
        "put": lambda: store.put("bench/put", b"v"),
    }


def show(backend: str, baseline_name: str, figures: dict[str, float]) -> None:
    baseline = figures["baseline"]
    print(f"\n{backend}: median of {ROUNDS} interleaved rounds")
    print(f"  {'':<34}{'ops/s':>10}  {'vs baseline':>11}")
    print(f"  {baseline_name:<34}{baseline:>10.0f}  {1.0:>10.2f}x")
    for name, label in [
        ("heartbeats", "heartbeats (keep_alive)"),
        ("cas", "CAS transactions (txn)"),
        ("put", "store put"),
    ]:
        value = figures[name]
        print(f"  {label:<34}{value:>10.0f}  {value / baseline:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per figure, all rounds")
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temp folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        work = Path(folder)
        with SqliteStore(work / "store.db") as sqlite_store:
            figures = interleaved(
                {"baseline": raw_sqlite_insert(work / "raw.db"), **store_steps(sqlite_store)},
                args.seconds,
            )
        show(f"sqlite ({work})", "raw sqlite3 insert, 1 per txn", figures)

        executable = find_etcd()
        if executable is None:
            print(f"\netcd: left out: {ETCD_MISSING}")
            return
        (work / "etcd").mkdir()
        with running_etcd(executable, work / "etcd") as server:
            raw = http.client.HTTPConnection(server.host, server.port, timeout=10)
            with EtcdStore([(server.host, server.port)]) as etcd_store:
                figures = interleaved(
                    {"baseline": raw_etcd_put(raw), **store_steps(etcd_store)}, args.seconds
                )
            raw.close()
        show(f"etcd ({executable}, data in {work})", "raw HTTP put to the gateway", figures)


if __name__ == "__main__":
    main()
