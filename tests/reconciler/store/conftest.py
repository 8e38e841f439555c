"""Fixtures of the state store tests: a real etcd for the session, and a fresh store of each
backend for every test (`harness`), with a way to let time pass on it.

etcd is found as $CIRCLE_ETCD, then in .ci/cache/etcd (where `bash .ci/setup --test` unpacks
Debian's etcd-server), then on PATH (`etcd_process`). Without one the etcd tests are skipped,
saying so; under CI (CI set) they fail instead, so that they are never silently skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.store import EtcdStore, SqliteStore, StateStore
from tests.reconciler.store.etcd_process import (
    ETCD_MISSING,
    ROOT,
    EtcdFailed,
    EtcdServer,
    find_etcd,
    free_port,
    running_etcd,
)

__all__ = ["ROOT", "EtcdServer", "FakeClock", "Harness", "free_port"]

KINDS = ["sqlite", "etcd"]


class FakeClock:
    """A clock that moves only when told to: lease expiry without waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Harness:
    """A fresh store (`kind` sqlite or etcd) reachable at `url` from other processes too.
    `advance(s)` lets s seconds pass for its leases: a fake clock's for sqlite, real ones for
    etcd. `wait_for(check)` waits (a generous bound) until `check()` is true after expiry,
    which etcd does on its own schedule."""

    kind: str
    store: StateStore
    url: str
    advance: Callable[[float], None]
    wait_for: Callable[[Callable[[], bool]], bool]


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd of our own for the session (`etcd_process`)."""
    executable = find_etcd()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail(ETCD_MISSING, pytrace=False)  # CI runs them: never a silent skip
        pytest.skip(ETCD_MISSING)
    try:
        with running_etcd(executable, tmp_path_factory.mktemp("etcd")) as server:
            yield server
    except EtcdFailed as error:
        pytest.fail(str(error), pytrace=False)


def _wait_for(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """A fresh store of each backend: a new SQLite file, or the session's etcd emptied."""
    kind: str = request.param
    if kind == "sqlite":
        path = tmp_path / "state.db"
        with SqliteStore(path, clock=clock, poll_interval=0.01) as store:
            yield Harness(kind, store, f"sqlite:{path}", clock.advance, lambda check: check())
        return
    server: EtcdServer = request.getfixturevalue("etcd_server")
    with EtcdStore([(server.host, server.port)], timeout=10) as etcd:
        etcd.delete("", prefix=True)
        yield Harness(kind, etcd, server.url, time.sleep, _wait_for)
