"""Real processes racing on one store: compare-and-swap must let exactly one win each round.

Each contender is a separate Python process (`cas_worker`) with its own connection: to the
same SQLite file, or to the same etcd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.reconciler.store.conftest import ROOT, Harness

CONTENDERS = 6
ROUNDS = 200


@pytest.mark.slow
def test_compare_and_swap_between_processes_has_one_winner_per_round(harness: Harness) -> None:
    store = harness.store
    store.put("race", b"0")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reconciler.store.cas_worker",
                harness.url,
                "race",
                str(ROUNDS),
                f"worker-{n}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(CONTENDERS)
    ]
    deadline = time.monotonic() + 60
    while store.range("race/ready/").count < CONTENDERS:  # all started: go together
        assert all(w.poll() is None for w in workers), "a contender died before the start"
        assert time.monotonic() < deadline, "the contenders did not start within 60 s"
        time.sleep(0.02)
    store.put("race/go", b"")
    wins: dict[str, list[int]] = {}
    for n, worker in enumerate(workers):
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
        wins[f"worker-{n}"] = json.loads(out)["won"]
    every_win = sorted(r for rounds in wins.values() for r in rounds)
    assert every_win == list(range(1, ROUNDS + 1))  # each round won once, none lost
    counter = store.get("race")
    assert counter is not None
    assert counter.value == str(ROUNDS).encode()
    assert counter.version == ROUNDS + 1
    recorded = {kv.key: kv for kv in store.range("race/won/").kvs}
    assert len(recorded) == ROUNDS
    for name, rounds in wins.items():
        for won in rounds:
            kv = recorded[f"race/won/{won}"]
            assert (kv.value, kv.version) == (name.encode(), 1)
