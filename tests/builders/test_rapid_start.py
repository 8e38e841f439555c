"""Rapid start: a new version reuses the installed one's unchanged bytes in the kernel (hard
links, kernel copies) without ever trusting bytes that changed since they were verified, and
fetches what is new from several real chunk servers on loopback at once, leaving behind a
peer that stalls or lies.

Every refusal is checked for its error and for leaving everything as it was."""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from builders import kernel_copy
from builders.chunks import MAX_CHUNK, ChunkMissing, ChunkSource, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.manifest import ArtifactManifest, Chunk, Chunking, Entry, EntryType
from builders.materialize import (
    Assembly,
    ChunkUnavailable,
    TreeMismatch,
    materialize,
    verify_tree,
)
from builders.seal import read_seal, tree_facts, write_seal
from builders.sealed_trees import SealedTrees
from tests.builders.test_kernel_copy import takes_direct_writes
from tests.builders.test_materialize import Artifact, snapshot
from tests.qss.peers import Peer, returns, trickle

SIZE = 4096  # bytes per chunk
BOOT = "boot-a"


def blob(index: int) -> bytes:
    """A distinct chunk's worth of bytes."""
    seed = hashlib.sha256(index.to_bytes(4, "big")).digest()
    return (seed * (SIZE // len(seed) + 1))[:SIZE]


def artifact(files: Mapping[str, bytes]) -> Artifact:
    """A canonical manifest with SIZE-byte fixed chunks, its id, and the chunks' bytes."""
    entries: list[Entry] = []
    chunks: dict[str, bytes] = {}
    folders = {posixpath.dirname(path) for path in files} - {""}
    entries += [Entry(folder, EntryType.DIR, "0755") for folder in folders]
    for path, content in files.items():
        pieces = [content[i : i + SIZE] for i in range(0, len(content), SIZE)]
        chunks.update({hashlib.sha256(p).hexdigest(): p for p in pieces})
        entries.append(
            Entry(
                path,
                EntryType.FILE,
                "0644",
                len(content),
                hashlib.sha256(content).hexdigest(),
                tuple(Chunk(hashlib.sha256(p).hexdigest(), len(p)) for p in pieces),
            )
        )
    manifest = ArtifactManifest(tuple(entries), Chunking("fixed", SIZE, SIZE, SIZE), (), {})
    return Artifact(manifest.artifact_id, manifest.encode(), manifest, chunks)


MODEL_V1 = b"".join(blob(i) for i in range(32))
# v2: chunk 7 replaced; every other chunk of the model at the same offset as in v1.
MODEL_V2 = MODEL_V1[: 7 * SIZE] + blob(1000) + MODEL_V1[8 * SIZE :]
TOKENIZER = b'{"vocab": "unchanged"}\n' * 100


def v1() -> Artifact:
    return artifact({"model/weights.bin": MODEL_V1, "model/tokenizer.json": TOKENIZER})


def v2() -> Artifact:
    return artifact({"model/weights.bin": MODEL_V2, "model/tokenizer.json": TOKENIZER})


def new_chunk() -> str:
    return hashlib.sha256(blob(1000)).hexdigest()


class LyingStore(ChunkStore):
    """A peer's store that hands out every chunk with one bit flipped (served by a real
    ChunkServer, which trusts its store's `get` to have verified)."""

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        data = super().get(digest, limit)
        return bytes([data[0] ^ 0x01]) + data[1:]


def fill(store: ChunkStore, *artifacts: Artifact) -> ChunkStore:
    for each in artifacts:
        for digest, data in each.chunks.items():
            store.put(data, digest)
        store.put_manifest(each.id, each.data)
    return store


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[ChunkServer]:
    with ChunkServer(fill(ChunkStore(tmp_path / "peer"), v1(), v2())) as server:
        yield server


class Node:
    """A node's chunk store, artifacts and seals, materializing as a node does."""

    def __init__(self, root: Path) -> None:
        self.store = ChunkStore(root / "chunks", durable=False)
        self.artifacts = root / "artifacts"
        self.seals = root / "seals"
        self.assemblies: list[Assembly] = []
        self.origins: Counter[str] = Counter()
        self.problems: list[str] = []
        self.also_on_chunk: Callable[[ChunkSource, int], None] = lambda source, size: None
        self._lock = threading.Lock()
        self.boot = BOOT
        # What this node's chunk server serves besides its store: its sealed trees, and the
        # tree being written.
        self.trees = SealedTrees(self.artifacts, self.seals, self.store, boot_id=lambda: self.boot)

    def chunk_from(self, source: ChunkSource, size: int) -> None:
        with self._lock:
            self.origins[source.name] += 1
        self.also_on_chunk(source, size)

    def run(
        self,
        each: Artifact,
        *sources: ChunkSource,
        boot: str = BOOT,
        switch: bool = True,
        workers: int = 2,
        hedge_after: float = 1.0,
        deadline: float | None = None,
    ) -> Path:
        return materialize(
            each.id,
            each.data,
            sources=sources,
            store=self.store,
            artifacts_root=self.artifacts,
            workers=workers,
            switch=switch,
            seals=self.seals,
            boot_id=self._boot(boot),
            durable=False,
            hedge_after=hedge_after,
            deadline=deadline,
            on_problem=self.problems.append,
            on_chunk=self.chunk_from,
            on_assembled=self.assemblies.append,
            serving=self.trees,
        )

    def _boot(self, boot: str) -> str:
        self.boot = boot
        return boot


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "node")


@pytest.fixture(params=["page-cache", "direct"])
def copying(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """How reused ranges that are not reflinked get written: through the page cache, or past
    it (`O_DIRECT`, what `builders.kernel_copy` picks where it measures that faster), its
    sizes made small enough for these models' runs."""
    support = kernel_copy._Support()
    monkeypatch.setattr(kernel_copy, "_SUPPORT", support)
    monkeypatch.setattr(kernel_copy, "_MIN_DIRECT", 2 * SIZE)
    monkeypatch.setattr(kernel_copy, "_DIRECT_BUFFER", 4 * SIZE)
    support.direct[os.stat(tmp_path).st_dev] = request.param == "direct"
    return str(request.param)


def flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x10]))


# -- reuse in the kernel -------------------------------------------------------------------------


def test_v2_reuses_v1_in_the_kernel_and_fetches_only_its_new_chunk(
    node: Node, peer: ChunkServer, copying: str, tmp_path: Path
) -> None:
    with HttpChunkSource(peer.url) as source:
        first = node.run(v1(), source)
        second = node.run(v2(), source)

    assembly = node.assemblies[-1]
    assert assembly.fetched == SIZE  # the one new chunk, nothing else
    assert assembly.linked_files == 1  # the tokenizer: no byte copied
    reused = assembly.reused
    assert reused.total == len(MODEL_V1) - SIZE
    assert reused.written == 0  # the kernel moved them (or shared their blocks)
    if copying == "page-cache":
        assert reused.direct == 0
    elif takes_direct_writes(tmp_path):
        assert reused.direct == len(MODEL_V1) - SIZE  # both runs: page-aligned throughout
    assert assembly.direct == SIZE  # hashed on arrival, written straight into the tree
    assert assembly.from_store == 0
    tokenizer = "model/tokenizer.json"
    assert (second / tokenizer).stat().st_ino == (first / tokenizer).stat().st_ino
    assert (second / "model/weights.bin").read_bytes() == MODEL_V2
    verify_tree(second, v2().manifest)
    verify_tree(first, v1().manifest)  # the base is untouched
    assert os.readlink(node.artifacts / "current") == v2().hex


@pytest.mark.parametrize("store", ["store-kept", "store-emptied"])
@pytest.mark.parametrize(
    ("path", "offset"),
    [("model/weights.bin", 3 * SIZE + 17), ("model/tokenizer.json", 5)],
    ids=["in-a-reused-range", "in-a-file-to-link"],
)
def test_a_bit_flipped_in_v1_since_its_install_never_leaks_into_v2(
    node: Node, peer: ChunkServer, path: str, offset: int, store: str, copying: str
) -> None:
    with HttpChunkSource(peer.url) as source:
        first = node.run(v1(), source)
        flip_bit(first / path, offset)  # a write: its ctime moves, its seal no longer holds
        if store == "store-emptied":
            node.store.collect_garbage(())
        edited = (first / path).read_bytes()

        second = node.run(v2(), source)

    verify_tree(second, v2().manifest)  # every bit as the manifest says
    assert (second / path).stat().st_ino != (first / path).stat().st_ino
    assert (first / path).read_bytes() == edited  # the edited v1 is left as it is
    assembly = node.assemblies[-1]
    if path == "model/weights.bin":
        assert assembly.reused.total == 0
    else:
        assert assembly.linked_files == 0


def test_one_flipped_bit_in_a_reused_range_of_the_installed_v2_is_found(
    node: Node, peer: ChunkServer, copying: str
) -> None:
    with HttpChunkSource(peer.url) as source:
        node.run(v1(), source)
        second = node.run(v2(), source)
    flip_bit(second / "model/weights.bin", 20 * SIZE + 1)
    digest = v2().manifest.entries[-1].chunks[20].sha256

    with pytest.raises(TreeMismatch, match=rf"chunk 20 \({digest}, bytes "):
        verify_tree(second, v2().manifest)
    seal = read_seal(node.seals, v2().id)
    assert seal is not None
    assert not seal.holds(BOOT, tree_facts(second))  # the start would hash it, and refuse


def test_a_flipped_bit_in_a_new_chunk_drops_the_peer_and_takes_it_elsewhere(
    tmp_path: Path, node: Node, peer: ChunkServer
) -> None:
    liar_store = fill(LyingStore(tmp_path / "liar"), v1(), v2())
    with (
        ChunkServer(liar_store) as liar,
        HttpChunkSource(liar.url) as lying,
        HttpChunkSource(peer.url) as honest,
    ):
        node.run(v1(), honest)
        second = node.run(v2(), lying, honest)

    verify_tree(second, v2().manifest)
    assert node.origins[honest.name] == len(v1().chunks) + 1  # v1's, then v2's new one
    assert node.origins[lying.name] == 0
    assert node.problems == [
        f"chunk source {liar.url} sent {SIZE} bytes hashing to "
        f"{hashlib.sha256(bytes([blob(1000)[0] ^ 1]) + blob(1000)[1:]).hexdigest()[:16]} for "
        f"chunk {new_chunk()[:16]}, not its bytes: dropped for this transfer"
    ]


def test_with_only_a_lying_peer_the_new_chunk_is_refused_and_nothing_changes(
    tmp_path: Path, node: Node, peer: ChunkServer
) -> None:
    with HttpChunkSource(peer.url) as honest:
        node.run(v1(), honest)
    before = snapshot(node.artifacts)
    seals_before = snapshot(node.seals)
    liar_store = fill(LyingStore(tmp_path / "liar"), v2())
    with (
        ChunkServer(liar_store) as liar,
        HttpChunkSource(liar.url) as lying,
        pytest.raises(
            ChunkUnavailable,
            match=rf"chunk {new_chunk()} \({SIZE} bytes, needed by 'model/weights.bin'\) is "
            rf"available from none of 1 sources: {liar.url}: sent {SIZE} bytes hashing to ",
        ),
    ):
        node.run(v2(), lying)

    assert snapshot(node.artifacts) == before
    assert snapshot(node.seals) == seals_before
    assert os.readlink(node.artifacts / "current") == v1().hex
    assert not node.store.has(new_chunk())


def test_a_tree_left_from_a_crash_before_the_switch_is_hashed_after_the_reboot(
    node: Node, peer: ChunkServer
) -> None:
    with HttpChunkSource(peer.url) as source:
        node.run(v1(), source)
        staged = node.run(v2(), source, switch=False)  # pre-staged; then the power went
    # What a crash can leave: the tree renamed into place and sealed, but bytes that never
    # reached the disk. Its facts still match (the seal is made to match them here).
    flip_bit(staged / "model/weights.bin", 7 * SIZE + 3)
    write_seal(node.seals, v2().id, staged, BOOT)
    assert os.readlink(node.artifacts / "current") == v1().hex

    with HttpChunkSource(peer.url) as source:
        again = node.run(v2(), source, boot="boot-b")  # the next boot

    assert again == staged
    verify_tree(again, v2().manifest)  # hashed in full, found wrong, rebuilt
    seal = read_seal(node.seals, v2().id)
    assert seal is not None
    assert seal.boot_id == "boot-b"
    assert os.readlink(node.artifacts / "current") == v2().hex


def test_a_staging_folder_left_by_a_crash_is_never_adopted(node: Node, peer: ChunkServer) -> None:
    with HttpChunkSource(peer.url) as source:
        node.run(v1(), source)
        leftover = node.artifacts / ".staging-0123456789abcdef"
        (leftover / "model").mkdir(parents=True)
        (leftover / "model/weights.bin").write_bytes(MODEL_V2[:-1] + b"\x00")

        second = node.run(v2(), source)

    verify_tree(second, v2().manifest)
    assert (leftover / "model/weights.bin").read_bytes() == MODEL_V2[:-1] + b"\x00"


def test_nothing_sealed_in_another_boot_is_reused(node: Node, peer: ChunkServer) -> None:
    with HttpChunkSource(peer.url) as source:
        node.run(v1(), source)
        second = node.run(v2(), source, boot="boot-b")

    assembly = node.assemblies[-1]
    assert assembly.linked_files == 0
    assert assembly.reused.total == 0
    # v1's chunks went into its tree, not the store: fetched again, hashed on arrival.
    assert assembly.direct == len(MODEL_V2) + len(TOKENIZER)
    verify_tree(second, v2().manifest)


# -- several sources at once ---------------------------------------------------------------------


def test_chunks_come_from_several_peers_at_once(tmp_path: Path, node: Node) -> None:
    store = fill(ChunkStore(tmp_path / "peers"), v1())
    # Throttled, so that no peer can take every chunk before the others have asked.
    with (
        ChunkServer(store, rate_limit=200_000) as a,
        ChunkServer(store, rate_limit=200_000) as b,
        ChunkServer(store, rate_limit=200_000) as c,
        HttpChunkSource(a.url) as first,
        HttpChunkSource(b.url) as second,
        HttpChunkSource(c.url) as third,
    ):
        result = node.run(v1(), first, second, third, workers=2)

    verify_tree(result, v1().manifest)
    assert set(node.origins) == {first.name, second.name, third.name}
    assert sum(node.origins.values()) == len(v1().chunks)
    stats = node.assemblies[-1].sources
    assert all(each.rate is not None and each.rate > 0 for each in stats)  # each measured


def test_a_stalled_peer_does_not_hold_back_the_others(
    tmp_path: Path, node: Node, peer: ChunkServer
) -> None:
    with (
        Peer(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n")) as stalled,
        HttpChunkSource(stalled.url, timeout=20) as slow,
        HttpChunkSource(peer.url) as good,
    ):
        result = returns(lambda: node.run(v1(), slow, good, workers=2, hedge_after=0.05))
        connections = stalled.connections
        problems = list(node.problems)

    verify_tree(result, v1().manifest)
    # Every chunk came from the good peer: those the stalled one held were asked again
    # elsewhere, and the transfer ended long before the stalled peer's own deadline (20 s)
    # could cut it off, which would have been reported.
    assert node.origins == Counter({good.name: len(v1().chunks)})
    assert problems == []
    assert 1 <= connections <= 2  # one request per worker, never one per chunk


def test_a_transfer_ends_at_its_deadline_and_leaves_nothing(node: Node, tmp_path: Path) -> None:
    with (
        Peer(trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n")) as stalled,
        HttpChunkSource(stalled.url, timeout=20) as slow,
        pytest.raises(
            ChunkUnavailable,
            match=r"the transfer did not finish within its deadline of 0.3 s: \d+ of "
            rf"{len(v1().chunks)} chunks still missing",
        ),
    ):
        returns(lambda: node.run(v1(), slow, deadline=0.3))

    assert [path.name for path in node.artifacts.iterdir()] == []
    assert not node.seals.exists()


def test_a_node_serves_what_it_holds_while_it_fetches_the_rest(tmp_path: Path, node: Node) -> None:
    store = fill(ChunkStore(tmp_path / "peers"), v1())
    served: list[bytes] = []
    refused: list[str] = []
    with (
        ChunkServer(store, rate_limit=100_000) as upstream,
        ChunkServer(node.store, trees=node.trees) as own,  # what this node's peers fetch from
        HttpChunkSource(upstream.url) as source,
        HttpChunkSource(own.url) as neighbour,
    ):
        chunks = [chunk for entry in v1().manifest.files() for chunk in entry.chunks]

        def on_chunk(origin: ChunkSource, size: int) -> None:
            if origin is source and not served:
                arrived = next(c for c in chunks if node.trees.has(c.sha256))
                served.append(neighbour.get(arrived.sha256, arrived.size))
                try:
                    neighbour.get(chunks[-1].sha256)
                except ChunkMissing as error:
                    refused.append(str(error))

        node.also_on_chunk = on_chunk
        node.run(v1(), source, workers=1)

    assert len(served) == 1
    assert hashlib.sha256(served[0]).hexdigest() in v1().chunks
    assert refused == [f"chunk {chunks[-1].sha256[:16]} is not at {own.url}"]


def test_a_durable_materialization_reuses_and_flushes(tmp_path: Path, peer: ChunkServer) -> None:
    store = ChunkStore(tmp_path / "chunks")  # durable: every chunk fsynced
    assemblies: list[Assembly] = []
    with HttpChunkSource(peer.url) as source:
        for each in (v1(), v2()):
            result = materialize(
                each.id,
                each.data,
                sources=[source],
                store=store,
                artifacts_root=tmp_path / "artifacts",
                seals=tmp_path / "seals",
                boot_id=BOOT,
                on_assembled=assemblies.append,
            )

    verify_tree(result, v2().manifest)
    assert assemblies[-1].linked_files == 1
    assert assemblies[-1].fetched == SIZE
