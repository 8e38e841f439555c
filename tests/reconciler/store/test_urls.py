"""Choosing a store by URL: `open_store` and `resolve_store_url`."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import InputError, ReconcilerError
from reconciler.store import (
    BadStoreUrl,
    EtcdStore,
    SqliteStore,
    StoreError,
    open_store,
    parse_etcd_endpoints,
    resolve_store_url,
)


def test_a_sqlite_url_opens_the_file(tmp_path: Path) -> None:
    with open_store(f"sqlite:{tmp_path}/state.db") as store:
        assert isinstance(store, SqliteStore)
        assert store.url == f"sqlite:{tmp_path}/state.db"
    assert (tmp_path / "state.db").exists()


@pytest.mark.parametrize(
    ("url", "endpoints"),
    [
        ("etcd://127.0.0.1:2379", [("127.0.0.1", 2379)]),
        ("etcd://a.example:2379,b.example:22379/", [("a.example", 2379), ("b.example", 22379)]),
        ("etcd://[::1]:2379", [("::1", 2379)]),
    ],
    ids=["one", "two", "ipv6"],
)
def test_etcd_urls_name_their_endpoints(url: str, endpoints: list[tuple[str, int]]) -> None:
    assert parse_etcd_endpoints(url) == endpoints
    with open_store(url) as store:  # opening connects to nothing yet
        assert isinstance(store, EtcdStore)
        assert store.endpoints == tuple(endpoints)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "not a store URL"),
        ("sqlite:", "needs a file path"),
        ("redis://127.0.0.1:6379", "not a store URL"),
        ("http://127.0.0.1:2379", "not a store URL"),
        ("etcd://", "'' is not HOST:PORT"),
        ("etcd://host", "'host' is not HOST:PORT"),
        ("etcd://host:0", "is not HOST:PORT"),
        ("etcd://host:65536", "is not HOST:PORT"),
        ("etcd://user@host:2379", "is not HOST:PORT"),
        ("etcd://host:2379/prefix", "is not HOST:PORT"),
        ("etcd://host:2379?x=1", "is not HOST:PORT"),
        ("etcd://a:1,,b:2", "'' is not HOST:PORT"),
    ],
    ids=[
        "empty",
        "sqlite-no-path",
        "redis",
        "http",
        "etcd-nothing",
        "no-port",
        "port-0",
        "port-too-big",
        "user",
        "path",
        "query",
        "empty-endpoint",
    ],
)
def test_bad_urls_are_input_errors(url: str, problem: str) -> None:
    with pytest.raises(BadStoreUrl, match=problem) as raised:
        open_store(url)
    assert raised.value.exit_code == 2
    assert isinstance(raised.value, InputError)
    assert isinstance(raised.value, StoreError)
    assert isinstance(raised.value, ReconcilerError)


def test_a_clock_is_only_for_sqlite() -> None:
    with pytest.raises(BadStoreUrl, match="etcd keeps its own time"):
        open_store("etcd://127.0.0.1:2379", clock=lambda: 0.0)


def test_the_store_url_comes_from_the_caller_then_the_environment_then_the_default() -> None:
    env = {"CIRCLE_STORE": "etcd://10.0.0.1:2379"}
    assert resolve_store_url("sqlite:a.db", environ=env, default="sqlite:d.db") == "sqlite:a.db"
    assert resolve_store_url(None, environ=env, default="sqlite:d.db") == "etcd://10.0.0.1:2379"
    assert resolve_store_url(None, environ={}, default="sqlite:d.db") == "sqlite:d.db"
    assert resolve_store_url(None, environ={"CIRCLE_STORE": ""}, default="sqlite:d.db") == (
        "sqlite:d.db"
    )
    with pytest.raises(BadStoreUrl, match="set CIRCLE_STORE"):
        resolve_store_url(None, environ={})
