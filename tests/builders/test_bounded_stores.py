"""A chunk store reads only regular files, and no more of them than a chunk or a manifest may
hold: a FIFO, a symlink or a huge file planted in a store (a source folder, or the node's own
cache) is refused at once, never waited on, followed or read whole, and the next source serves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from builders.chunks import MAX_MANIFEST, ChunkCorrupt, ChunkStore
from builders.materialize import materialize
from tests.builders.test_materialize import Artifact, make_artifact
from tests.conftest import Result
from tests.qss.peers import MiB, allocations, returns

GiB = 1024 * MiB


@pytest.fixture
def artifact() -> Artifact:
    return make_artifact({"data.bin": bytes(range(200))})


def filled(root: Path, artifact: Artifact) -> ChunkStore:
    store = ChunkStore(root)
    for digest, data in artifact.chunks.items():
        store.put(data, digest)
    store.put_manifest(artifact.id, artifact.data)
    return store


def plant_fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def plant_symlink(path: Path, outside: Path) -> None:
    path.symlink_to(outside)


def plant_huge(path: Path, outside: Path) -> None:
    path.write_bytes(b"")
    os.truncate(path, 10 * GiB)  # sparse


PLANTS = pytest.mark.parametrize(
    ("plant", "found"),
    [
        (plant_fifo, "a FIFO is there, not a file"),
        (plant_symlink, "a symlink is there, not a file (never followed)"),
        (plant_huge, f"holds more than the {MAX_MANIFEST} bytes of a manifest"),
    ],
    ids=["fifo", "symlink", "huge-file"],
)


@PLANTS
def test_a_chunk_that_is_not_a_regular_file_is_skipped_for_the_next_source(
    tmp_path: Path, artifact: Artifact, plant: Callable[[Path, Path], None], found: str
) -> None:
    bad, good = filled(tmp_path / "bad", artifact), filled(tmp_path / "good", artifact)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not a chunk")
    digest = next(iter(artifact.chunks))
    bad.path(digest).unlink()
    plant(bad.path(digest), outside)
    node = ChunkStore(tmp_path / "node")

    with allocations() as peak:
        path = returns(
            lambda: materialize(
                artifact.id,
                artifact.data,
                sources=[bad, good],
                store=node,
                artifacts_root=tmp_path / "artifacts",
            )
        )

    assert (path / "data.bin").read_bytes() == bytes(range(200))
    assert peak[0] < 64 * MiB
    assert outside.read_bytes() == b"not a chunk"  # a link is never followed
    assert not bad.path(digest).exists()  # the store drops what cannot be the chunk


@PLANTS
def test_a_manifest_that_is_not_a_regular_file_is_refused(
    circle: Callable[..., Result],
    tmp_path: Path,
    artifact: Artifact,
    plant: Callable[[Path, Path], None],
    found: str,
) -> None:
    store = filled(tmp_path / "store", artifact)
    outside = tmp_path / "outside"
    outside.write_bytes(artifact.data)  # even the right bytes, behind a link, are not read
    manifest = store.manifest_path(artifact.id)
    manifest.unlink()
    plant(manifest, outside)

    with allocations() as peak, pytest.raises(ChunkCorrupt) as refused:
        returns(lambda: store.get_manifest(artifact.id))
    verified = returns(
        lambda: circle(
            "artifact", "verify", str(tmp_path), "--id", artifact.id, "--store", str(store.root)
        )
    )

    assert str(refused.value) == f"{manifest}: {found}"
    assert peak[0] < 64 * MiB
    assert verified.code == 1
    assert verified.stderr == (
        f"circle: error: no manifest of {artifact.id} found: {refused.value}\n"
    )
