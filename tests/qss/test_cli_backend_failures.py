"""`circle qss ls`, `scrub` and `rm` over backends of which some fail (an unmounted directory, a
redis-server that is down): every failed backend is named with its reason, what the others
hold is still reported, and the exit code is 1. And `scrub --repair` rewrites a share slot
that holds a symlink, a FIFO or a directory, without following the link or waiting on the FIFO.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from qss.keys import generate_key_file, read_key_file
from qss.manifest import Manifest
from qss.store import share_key
from tests.conftest import Result
from tests.qss.conftest import free_port
from tests.qss.helpers import Cluster, get_bytes, payload, put_bytes
from tests.qss.peers import returns

NAMES = [f"b{i}" for i in range(6)]


@pytest.fixture
def six(tmp_path: Path) -> Cluster:
    return Cluster.of_directories(tmp_path / "backends", NAMES)


@pytest.fixture
def stored(six: Cluster, tmp_path: Path) -> Manifest:
    storage_key = secrets.token_bytes(32)
    return put_bytes(six.store(), tmp_path / "staging", payload(5000), storage_key, k=4, n=6)


def options(six: Cluster, *extra: str) -> list[str]:
    return [*(arg for name in NAMES for arg in ("-b", f"{name}=dir:{six.root(name)}")), *extra]


def unmount(six: Cluster, name: str) -> Path:
    """Take the backend's folder away (an unmounted disk); where it went."""
    away = six.root(name).with_name(f"{name}-away")
    six.root(name).rename(away)
    return away


def unavailable_dir(six: Cluster, name: str) -> str:
    root = six.root(name)
    return (
        f"dir backend '{name}' ({root}) is unavailable: root {root} cannot be opened: No such "
        "file or directory"
    )


@pytest.fixture
def down_redis() -> tuple[list[str], str]:
    """A redis backend `r` whose server is down; its options and the reason it fails with."""
    port = free_port()
    reason = (
        f"redis backend 'r' (redis://127.0.0.1:{port}/0, prefix 'qss:') is unavailable: list "
        "'m/': cannot connect: Connection refused"
    )
    return ["-b", f"r=redis://127.0.0.1:{port}", "--timeout", "5"], reason


def test_ls_names_every_failed_backend_lists_the_rest_and_exits_1(
    circle: Callable[..., Result],
    six: Cluster,
    stored: Manifest,
    down_redis: tuple[list[str], str],
) -> None:
    unmount(six, "b2")
    redis_options, redis_reason = down_redis

    listed = circle("qss", "ls", *options(six, *redis_options))

    assert listed.code == 1
    assert stored.object_id[:16] in listed.stdout
    assert "source.bin" in listed.stdout
    assert listed.stderr.splitlines() == [
        f"circle: error: backend b2 could not be listed: {unavailable_dir(six, 'b2')}",
        f"circle: error: backend r could not be listed: {redis_reason}",
    ]

    as_json = circle("qss", "ls", *options(six, *redis_options), "-o", "json")

    assert as_json.code == 1
    document = as_json.json()
    assert [item["objectId"] for item in document["objects"]] == [stored.object_id]
    assert document["failedBackends"] == [
        {"backend": "b2", "reason": unavailable_dir(six, "b2")},
        {"backend": "r", "reason": redis_reason},
    ]
    assert document["unreadableObjects"] == []


def test_ls_of_healthy_backends_exits_0(
    circle: Callable[..., Result], six: Cluster, stored: Manifest
) -> None:
    listed = circle("qss", "ls", *options(six), "-o", "json")
    assert listed.code == 0, listed
    assert listed.json()["failedBackends"] == []
    assert [item["objectId"] for item in listed.json()["objects"]] == [stored.object_id]


def test_scrub_names_every_failed_backend_and_exits_1(
    circle: Callable[..., Result], six: Cluster, stored: Manifest
) -> None:
    unmount(six, "b2")
    before = six.snapshot()

    scrubbed = circle("qss", "scrub", *options(six))

    assert scrubbed.code == 1
    assert scrubbed.stdout.splitlines() == [
        f"{stored.object_id[:16]} source.bin: 4-of-6, 5 healthy, 1 unreachable; margin 1",
        "  share 2 on b2 (b2): unreachable",
        "1 object scrubbed, 1 not fully healthy",
    ]
    assert scrubbed.stderr.splitlines() == [
        "circle: error: backend b2 could not be listed (its objects were not scrubbed): "
        + unavailable_dir(six, "b2")
    ]

    as_json = circle("qss", "scrub", *options(six), "-o", "json")

    assert as_json.code == 1
    document = as_json.json()
    assert [item["objectId"] for item in document["objects"]] == [stored.object_id]
    assert document["failedBackends"] == [{"backend": "b2", "reason": unavailable_dir(six, "b2")}]
    assert six.snapshot() == before


def test_rm_names_the_failed_backend_and_a_second_rm_finishes_the_job(
    circle: Callable[..., Result], six: Cluster, stored: Manifest
) -> None:
    away = unmount(six, "b2")
    reason = unavailable_dir(six, "b2")
    keys_away = sorted(str(path.relative_to(away)) for path in away.rglob("*") if path.is_file())

    removed = circle("qss", "rm", stored.object_id, *options(six))

    assert removed.code == 1
    assert removed.stdout == f"removed {stored.object_id[:16]} source.bin from 5 of 6 backends\n"
    assert removed.stderr == (
        "circle: error: backend b2 may still hold part of it (run rm again once it is back): "
        f"{reason}\n"
    )
    others = [name for name in NAMES if name != "b2"]
    assert [list(six.backend(name).list()) for name in others] == [[]] * 5

    away.rename(six.root("b2"))
    assert sorted(six.backend("b2").list()) == keys_away  # b2 kept its part

    again = circle("qss", "rm", stored.object_id[:16], *options(six), "-o", "json")

    assert again.code == 0, again
    assert again.json() == {
        "removed": stored.object_id,
        "name": "source.bin",
        "failedBackends": [],
    }
    assert six.stored_keys() == set()


def plant_symlink(path: Path, outside: Path) -> None:
    path.symlink_to(outside)


def plant_fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def plant_directory(path: Path, outside: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("plant", "status"),
    [(plant_symlink, "corrupt"), (plant_fifo, "corrupt"), (plant_directory, "missing")],
    ids=["symlink", "fifo", "directory"],
)
def test_scrub_repair_replaces_a_slot_that_is_not_a_regular_file(
    circle: Callable[..., Result],
    six: Cluster,
    tmp_path: Path,
    plant: Callable[[Path, Path], None],
    status: str,
) -> None:
    key = tmp_path / "storage.key"
    generate_key_file(key)
    data = payload(5000, "repair")
    manifest = put_bytes(six.store(), tmp_path / "staging", data, read_key_file(key), k=4, n=6)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours\n")
    slot = six.root("b0") / share_key(manifest, 0, 0)
    slot.unlink()
    plant(slot, outside)

    repaired = returns(
        lambda: circle("qss", "scrub", "--repair", manifest.object_id, *options(six))
    )

    assert repaired.code == 0, repaired
    assert repaired.stdout.splitlines() == [
        f"{manifest.object_id[:16]} source.bin: 4-of-6, 5 healthy, 1 {status}; margin 1",
        f"  share 0 on b0 (b0): {status}",
        "  repaired: share 0 -> b0; now 6 of 6 healthy, manifest version 2",
        "1 object scrubbed, 0 not fully healthy",
    ]
    assert slot.is_file()
    assert not slot.is_symlink()
    assert outside.read_bytes() == b"not yours\n"  # the link's target was never touched
    read, result = get_bytes(six.store(), manifest.object_id, read_key_file(key), tmp_path / "o")
    assert read == data
    assert result.problems == ()


def test_a_key_file_that_is_a_fifo_is_refused_not_waited_on(
    circle: Callable[..., Result], six: Cluster, tmp_path: Path
) -> None:
    fifo = tmp_path / "storage.key"
    os.mkfifo(fifo, 0o600)
    (tmp_path / "data").write_bytes(b"payload")

    result = returns(
        lambda: circle("qss", "put", str(tmp_path / "data"), "--key", str(fifo), *options(six))
    )

    assert result.code == 2
    assert result.stderr == f"circle: error: {fifo}: not a regular file\n"
    assert six.stored_keys() == set()
