"""A node keeps one copy of each byte: a cold materialization writes every chunk, verified on
arrival, straight into its tree (not into the chunk store), and the node's chunk server serves
it from there, only as a range of a file whose seal holds."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.assemble import Writer
from builders.chunks import ChunkMissing, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.manifest import Chunk
from builders.materialize import STAGING_PREFIX, ChunkUnavailable, MaterializeError, verify_tree
from builders.seal import forget_seal, read_seal
from tests.builders.test_rapid_start import (
    SIZE,
    TOKENIZER,
    LyingStore,
    Node,
    artifact,
    blob,
    fill,
    flip_bit,
    v1,
)


def weights_chunk() -> str:
    entry = next(e for e in v1().manifest.files() if e.path == "model/weights.bin")
    return entry.chunks[3].sha256


def tokenizer_chunk() -> str:
    return hashlib.sha256(TOKENIZER[:SIZE]).hexdigest()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[ChunkServer]:
    with ChunkServer(fill(ChunkStore(tmp_path / "upstream"), v1())) as server:
        yield server


@pytest.fixture
def holder(tmp_path: Path, upstream: ChunkServer) -> Node:
    """A node that installed v1 cold: its chunks are in its tree, none in its store."""
    node = Node(tmp_path / "holder")
    with HttpChunkSource(upstream.url) as source:
        node.run(v1(), source)
    return node


def test_a_cold_install_keeps_one_copy_and_serves_it_from_the_sealed_tree(
    tmp_path: Path, holder: Node
) -> None:
    assert list(holder.store.digests()) == []  # nothing written twice
    assert holder.assemblies[-1].direct == sum(len(data) for data in v1().chunks.values())
    other = Node(tmp_path / "other")
    with (
        ChunkServer(holder.store, trees=holder.trees) as served,
        HttpChunkSource(served.url) as peer,
    ):
        installed = other.run(v1(), peer)

    verify_tree(installed, v1().manifest)
    assert other.origins[peer.name] == len(v1().chunks)
    assert other.problems == []


def test_a_tree_edited_after_its_seal_is_not_served_from(holder: Node) -> None:
    weights = holder.artifacts / v1().hex / "model/weights.bin"
    flip_bit(weights, 3 * SIZE + 7)
    flip_bit(weights, 3 * SIZE + 7)  # the bytes are as they were; the file was written since
    with (
        ChunkServer(holder.store, trees=holder.trees) as served,
        HttpChunkSource(served.url) as peer,
    ):
        with pytest.raises(ChunkMissing, match=f"chunk {weights_chunk()[:16]} is not at "):
            peer.get(weights_chunk(), SIZE)
        assert not peer.has(weights_chunk())
        # The other file of the tree is untouched: its seal still holds for it.
        assert peer.get(tokenizer_chunk(), SIZE) == TOKENIZER[:SIZE]
        assert peer.has(tokenizer_chunk())


@pytest.mark.parametrize("how", ["no seal", "another boot", "a seal of other facts"])
def test_the_chunk_server_never_serves_a_range_of_an_unsealed_file(holder: Node, how: str) -> None:
    if how == "no seal":
        forget_seal(holder.seals, v1().id)
    elif how == "another boot":
        holder.boot = "boot-b"  # rebooted: every tree is hashed in full before it is trusted
    else:  # sealed when the files were other inodes: not these files' seal
        seal = holder.seals / f"{v1().hex}.json"
        document = json.loads(seal.read_text())
        for fact in document["facts"]:
            fact[3] += 1
        seal.write_text(json.dumps(document))
    with (
        ChunkServer(holder.store, trees=holder.trees) as served,
        HttpChunkSource(served.url) as peer,
    ):
        for digest in (weights_chunk(), tokenizer_chunk()):
            with pytest.raises(ChunkMissing):
                peer.get(digest, SIZE)
            assert not peer.has(digest)


def test_a_staging_folder_left_by_a_crash_is_never_served(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    leftover = node.artifacts / f"{STAGING_PREFIX}0123456789abcdef/model"
    leftover.mkdir(parents=True)
    (leftover / "tokenizer.json").write_bytes(TOKENIZER)
    with (
        ChunkServer(node.store, trees=node.trees) as served,
        HttpChunkSource(served.url) as peer,
        pytest.raises(ChunkMissing),
    ):
        peer.get(tokenizer_chunk(), SIZE)


def test_a_cold_install_refuses_a_tampered_chunk_and_leaves_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path / "node")
    with (
        ChunkServer(fill(LyingStore(tmp_path / "liar"), v1())) as liar,
        HttpChunkSource(liar.url) as lying,
        pytest.raises(ChunkUnavailable, match=f"available from none of 1 sources: {liar.url}: "),
    ):
        node.run(v1(), lying)

    assert [path.name for path in node.artifacts.iterdir()] == []  # no staging folder left
    assert read_seal(node.seals, v1().id) is None
    assert list(node.store.digests()) == []


def test_a_cold_install_drops_a_lying_peer_and_writes_only_verified_bytes(
    tmp_path: Path, upstream: ChunkServer
) -> None:
    node = Node(tmp_path / "node")
    with (
        ChunkServer(fill(LyingStore(tmp_path / "liar"), v1())) as liar,
        HttpChunkSource(liar.url) as lying,
        HttpChunkSource(upstream.url) as honest,
    ):
        installed = node.run(v1(), lying, honest)

    verify_tree(installed, v1().manifest)
    assert node.origins[lying.name] == 0
    assert node.origins[honest.name] == len(v1().chunks)
    assert len(node.problems) == 1
    assert node.problems[0].startswith(f"chunk source {liar.url} sent ")
    assert node.problems[0].endswith(", not its bytes: dropped for this transfer")


def test_a_chunk_needed_in_several_places_is_fetched_once_and_written_in_each(
    tmp_path: Path,
) -> None:
    repeated = blob(7) + blob(8) + blob(7)
    shared = artifact({"a/one.bin": repeated, "b/two.bin": blob(7) + blob(9)})
    node = Node(tmp_path / "node")
    with (
        ChunkServer(fill(ChunkStore(tmp_path / "upstream"), shared)) as server,
        HttpChunkSource(server.url) as source,
    ):
        installed = node.run(shared, source)

    verify_tree(installed, shared.manifest)
    assert node.assemblies[-1].fetched == 3 * SIZE  # blobs 7, 8 and 9, each once
    assert node.assemblies[-1].direct == 5 * SIZE  # and written in all five places
    assert os.readlink(node.artifacts / "current") == shared.hex


def test_a_full_disk_on_the_cold_path_fails_the_install_and_leaves_nothing(
    tmp_path: Path, upstream: ChunkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(tmp_path / "node")
    real_pwrite = os.pwrite
    writes = 0

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        nonlocal writes
        writes += 1
        if writes > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_disk)
    with (
        HttpChunkSource(upstream.url) as source,
        pytest.raises(
            MaterializeError,
            match=r"cannot write file 'model/[a-z]+\.[a-z]+' at chunk \d+ \([0-9a-f]{64}\): "
            "No space left on device",
        ),
    ):
        node.run(v1(), source)
    monkeypatch.undo()

    assert [path.name for path in node.artifacts.iterdir()] == []
    assert read_seal(node.seals, v1().id) is None


def test_a_place_left_unwritten_is_fetched_again_then_refused(
    tmp_path: Path, upstream: ChunkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(tmp_path / "node")
    lost = weights_chunk()
    real_land = Writer._land
    landings: list[str] = []

    def losing(writer: Writer, chunk: Chunk, data: bytes) -> None:
        landings.append(chunk.sha256)
        if chunk.sha256 != lost:  # this one's bytes never reach the tree
            real_land(writer, chunk, data)

    monkeypatch.setattr(Writer, "_land", losing)
    with (
        HttpChunkSource(upstream.url) as source,
        pytest.raises(
            MaterializeError,
            match=rf"chunk {lost} \({SIZE} bytes\) was not written in every place of the tree "
            r"that needs it \(1 chunks left unwritten\)",
        ),
    ):
        node.run(v1(), source)
    monkeypatch.undo()

    assert landings.count(lost) == 2  # fetched again once before the refusal
    assert [path.name for path in node.artifacts.iterdir()] == []
    assert read_seal(node.seals, v1().id) is None
