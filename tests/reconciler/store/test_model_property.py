"""Property: any sequence of operations gives the SQLite store the same visible state as the
in-memory model (`model.py`): the same answers and errors op by op, the same keys and
revision after each, the same events to a watch, the same keys at every past revision."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.store import (
    Compare,
    Delete,
    Event,
    LeaseId,
    Op,
    Put,
    Range,
    SqliteStore,
    StoreError,
    Target,
)
from tests.reconciler.store.conftest import FakeClock
from tests.reconciler.store.model import ModelStore

KEYS = ["a", "a/b", "a/c", "b", "ba", "é", "a\u00ff"]
PREFIXES = ["", "a", "a/", "b", "é"]

keys = st.sampled_from(KEYS)
values = st.binary(max_size=3)
lease_refs = st.none() | st.integers(0, 4)  # an index into the leases granted so far


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    target = draw(st.sampled_from(Target))
    operand: int | bytes = draw(values) if target is Target.VALUE else draw(st.integers(0, 12))
    return Compare(draw(keys), target, draw(st.sampled_from(Op)), operand)


txn_ops = st.one_of(
    st.tuples(st.just("put"), keys, values, lease_refs),
    st.tuples(st.just("delete"), st.sampled_from(KEYS + PREFIXES), st.booleans()),
    st.tuples(st.just("range"), st.sampled_from(KEYS + PREFIXES), st.booleans(), st.integers(0, 2)),
)

STRATEGIES: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "put": st.tuples(st.just("put"), keys, values, lease_refs),
    "txn": st.tuples(
        st.just("txn"),
        st.lists(compares(), max_size=3),
        st.lists(txn_ops, max_size=3),
        st.lists(txn_ops, max_size=3),
    ),
    "advance": st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 5.0, 10.0, 20.0])),
    "delete": st.tuples(st.just("delete"), st.sampled_from(KEYS + PREFIXES), st.booleans()),
    "grant": st.tuples(st.just("grant"), st.integers(1, 20)),
    "keep_alive": st.tuples(st.just("keep_alive"), st.integers(0, 4)),
    "revoke": st.tuples(st.just("revoke"), st.integers(0, 4)),
    "compact": st.tuples(st.just("compact"), st.integers(0, 6)),
    "range_at": st.tuples(
        st.just("range_at"), st.sampled_from(PREFIXES), st.integers(0, 8), st.integers(0, 3)
    ),
}
# Writes and the passing of time come up more often than the rest.
WEIGHTED = ["put"] * 4 + ["txn"] * 3 + ["advance", "grant"] * 2 + list(STRATEGIES)[3:]
operations = st.sampled_from(WEIGHTED).flatmap(STRATEGIES.__getitem__)


def outcome(call: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """What a call returned, or the type of StoreError it raised."""
    try:
        return call(*args, **options)
    except StoreError as error:
        return type(error)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(operations, min_size=10, max_size=40))
def test_sqlite_matches_the_model(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    model = ModelStore(clock)
    leases: list[LeaseId] = []

    def lease_of(ref: int | None) -> LeaseId | None:
        return None if ref is None or not leases else leases[ref % len(leases)]

    def txn_op(spec: tuple[Any, ...]) -> Put | Delete | Range:
        if spec[0] == "put":
            return Put(spec[1], spec[2], lease_of(spec[3]))
        if spec[0] == "delete":
            return Delete(spec[1], prefix=spec[2] or not spec[1])
        return Range(spec[1], prefix=spec[2] or not spec[1], limit=spec[3])

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "s.db", clock=clock)
        try:
            for op in ops:
                kind = op[0]
                if kind in ("put", "delete"):
                    request = txn_op(op)
                    got = outcome(store.txn, (), (request,))
                    want = outcome(model.txn, (), (request,), ())
                elif kind == "txn":
                    success = [txn_op(spec) for spec in op[2]]
                    failure = [txn_op(spec) for spec in op[3]]
                    got = outcome(store.txn, op[1], success, failure)
                    want = outcome(model.txn, op[1], success, failure)
                elif kind == "grant":
                    lease = store.grant(op[1])
                    model.grant(op[1], lease)
                    leases.append(lease)
                    got = want = None
                elif kind in ("keep_alive", "revoke"):
                    target = lease_of(op[1]) or LeaseId(12345)
                    got = outcome(getattr(store, kind), target)
                    want = outcome(getattr(model, kind), target)
                elif kind == "advance":
                    clock.advance(op[1])
                    got = want = None
                elif kind == "compact":
                    revision = max(model.revision - op[1], 1)
                    got = outcome(store.compact, revision)
                    want = outcome(model.compact, revision)
                else:
                    revision = max(model.revision - op[2], 1)
                    got = outcome(store.range, op[1], revision=revision, limit=op[3])
                    want = outcome(model.range, op[1], revision=revision, limit=op[3])
                assert got == want, op
                assert store.range("") == model.range(""), op

            start = model.compacted + 1
            with store.watch("", start) as watch:
                seen: list[Event] = []
                while batch := watch.poll(0):
                    seen.extend(batch)
            assert seen == model.watch_events(start)
            for revision in range(max(model.compacted, 1), model.revision + 1):
                assert store.range("", revision=revision) == model.range("", revision=revision)
        finally:
            store.close()
