"""The node's artifacts across versions and reboots: v2 is assembled from v1's sealed bytes,
a seal from another boot is never trusted (the tree is hashed in full before it is started),
and bytes that never reached the disk before a crash refuse the start and are rebuilt."""

from __future__ import annotations

from pathlib import Path

from builders.chunks import ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.materialize import verify_tree
from builders.seal import read_seal, write_seal
from reconciler.node.artifacts import Artifacts
from tests.builders.test_rapid_start import SIZE, fill, flip_bit, v1, v2


class Boot:
    """The node's boot id, changed by a (simulated) reboot."""

    def __init__(self) -> None:
        self.id = "boot-a"

    def __call__(self) -> str:
        return self.id


def node(tmp_path: Path, source: HttpChunkSource, boot: Boot, said: list[str]) -> Artifacts:
    return Artifacts(tmp_path / "state", lambda: [source], say=said.append, boot_id=boot)


def test_v2_on_a_node_holding_v1_links_and_copies_what_did_not_change(tmp_path: Path) -> None:
    boot, said = Boot(), []
    with (
        ChunkServer(fill(ChunkStore(tmp_path / "peer"), v1(), v2())) as peer,
        HttpChunkSource(peer.url) as source,
    ):
        artifacts = node(tmp_path, source, boot, said)
        first = artifacts.ensure(v1().id)
        second = artifacts.ensure(v2().id)

    tokenizer = "model/tokenizer.json"
    assert (second.path / tokenizer).stat().st_ino == (first.path / tokenizer).stat().st_ino
    verify_tree(second.path, v2().manifest)
    assert second.tampered is None
    assert artifacts.check(second) is None  # sealed: trusted without hashing
    assert said == []


def test_a_reboot_hashes_the_tree_in_full_before_it_is_started(tmp_path: Path) -> None:
    boot, said = Boot(), []
    with (
        ChunkServer(fill(ChunkStore(tmp_path / "peer"), v1())) as peer,
        HttpChunkSource(peer.url) as source,
    ):
        artifacts = node(tmp_path, source, boot, said)
        installed = artifacts.ensure(v1().id)
        boot.id = "boot-b"

        again = artifacts.ensure(v1().id)

    assert again.tampered is None
    assert said == [
        f"artifact {v1().id[:19]} was sealed in another boot (its bytes may not have reached "
        "the disk): hashing it in full before it is used"
    ]
    seal = read_seal(artifacts.seals, v1().id)
    assert seal is not None
    assert seal.boot_id == "boot-b"  # sealed again once hashed
    assert again.path == installed.path


def test_bytes_lost_in_a_crash_refuse_the_start_after_the_reboot(tmp_path: Path) -> None:
    boot, said = Boot(), []
    with (
        ChunkServer(fill(ChunkStore(tmp_path / "peer"), v1(), v2())) as peer,
        HttpChunkSource(peer.url) as source,
    ):
        artifacts = node(tmp_path, source, boot, said)
        artifacts.ensure(v1().id)
        installed = artifacts.ensure(v2().id)
        # Lost before writeback: the inode as sealed, the bytes not (the seal is made to
        # match the facts, as they would after such a crash).
        flip_bit(installed.path / "model/weights.bin", 9 * SIZE + 5)
        write_seal(artifacts.seals, v2().id, installed.path, "boot-a")
        assert artifacts.check(installed) is None  # same boot: the seal is believed
        boot.id = "boot-b"

        rebuilt = artifacts.ensure(v2().id)

    digest = v2().manifest.entries[-1].chunks[9].sha256
    assert rebuilt.tampered is not None
    assert f"'model/weights.bin': chunk 9 ({digest}, bytes {9 * SIZE}-" in rebuilt.tampered
    verify_tree(rebuilt.path, v2().manifest)
    verify_tree(tmp_path / "state/artifacts" / v1().hex, v1().manifest)
