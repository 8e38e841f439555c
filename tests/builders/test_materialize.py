"""Materialization: a verified manifest and verified chunks become a tree on disk, written entry
by entry into staging, renamed into place, with `current` switched atomically; any refusal or
failure leaves the previous version and `current` exactly as they were."""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from builders.chunks import MAX_CHUNK, ChunkMissing, ChunkStore
from builders.manifest import ArtifactManifest, Chunk, Chunking, Entry, ManifestRefused
from builders.materialize import (
    ChunkUnavailable,
    MaterializeError,
    Progress,
    TreeMismatch,
    materialize,
    verify_tree,
)

CHUNK = 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    id: str
    data: bytes
    manifest: ArtifactManifest
    chunks: dict[str, bytes]

    @property
    def hex(self) -> str:
        return self.id.removeprefix("sha256:")

    def chunks_of(self, path: str) -> list[str]:
        entry = next(entry for entry in self.manifest.entries if entry.path == path)
        return [chunk.sha256 for chunk in entry.chunks]


def make_artifact(
    files: Mapping[str, bytes],
    *,
    executable: tuple[str, ...] = (),
    symlinks: Mapping[str, str] | None = None,
    prefetch: tuple[str, ...] = (),
    file_sha: Mapping[str, str] | None = None,
) -> Artifact:
    """A canonical manifest with fixed-size chunks, its id, and the chunks' bytes."""
    entries: list[Entry] = []
    chunks: dict[str, bytes] = {}
    folders: set[str] = set()
    for path in [*files, *(symlinks or {})]:
        parent = posixpath.dirname(path)
        while parent:
            folders.add(parent)
            parent = posixpath.dirname(parent)
    entries += [Entry(folder, "dir", "0755") for folder in folders]
    for path, content in files.items():
        pieces = [content[i : i + CHUNK] for i in range(0, len(content), CHUNK)]
        chunks.update({sha(piece): piece for piece in pieces})
        entries.append(
            Entry(
                path,
                "file",
                "0755" if path in executable else "0644",
                len(content),
                (file_sha or {}).get(path, sha(content)),
                tuple(Chunk(sha(piece), len(piece)) for piece in pieces),
            )
        )
    entries += [Entry(path, "symlink", target=target) for path, target in (symlinks or {}).items()]
    manifest = ArtifactManifest(
        tuple(entries), Chunking("fixed", CHUNK, CHUNK, CHUNK), prefetch, {"builder": "test"}
    )
    return Artifact(manifest.artifact_id, manifest.encode(), manifest, chunks)


class FakeSource:
    """Test double for a peer or QSS: serves chunks from memory, records every get in order,
    and can serve corrupt bytes or wait at a barrier on each thread's first get."""

    def __init__(
        self,
        name: str,
        chunks: Mapping[str, bytes],
        *,
        corrupt: bool = False,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.name = name
        self.chunks = dict(chunks)
        self.corrupt = corrupt
        self.barrier = barrier
        self.fetched: list[str] = []
        self._lock = threading.Lock()
        self._threads: set[int] = set()

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        with self._lock:
            self.fetched.append(digest)
            first = threading.get_ident() not in self._threads
            self._threads.add(threading.get_ident())
        if self.barrier is not None and first:
            self.barrier.wait()
        if digest not in self.chunks:
            raise ChunkMissing(f"chunk {digest[:16]} is not at {self.name}")
        data = self.chunks[digest]
        if self.corrupt:
            return bytes([data[0] ^ 0x01]) + data[1:]  # one flipped bit
        return data

    def has(self, digest: str) -> bool:
        return digest in self.chunks


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "chunks")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def run(
    artifact: Artifact,
    store: ChunkStore,
    root: Path,
    *sources: FakeSource,
    workers: int = 4,
    allow_symlinks: bool = False,
) -> Path:
    return materialize(
        artifact.id,
        artifact.data,
        sources=sources,
        store=store,
        artifacts_root=root,
        workers=workers,
        allow_symlinks=allow_symlinks,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Everything under `root`: what a refused materialization must leave byte-identical."""
    state: dict[str, tuple[int, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: bytes | str | None = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = None
        state[str(path.relative_to(root))] = (info.st_mode, content)
    return state


FILES = {
    "app/main.py": b"print('hello')\n" * 20,
    "app/lib/util.py": b"def f():\n    return 1\n" * 9,
    "app/empty.txt": b"",
    "run.sh": b"#!/bin/sh\nexec python app/main.py\n",
    # Distinct 64-byte chunks, so a chunk's position says which one it is.
    "z/model.bin": b"".join(hashlib.sha256(bytes([i])).digest() for i in range(24)),
}


def v1() -> Artifact:
    return make_artifact(FILES, executable=("run.sh",), prefetch=("z/model.bin",))


# -- the happy path ------------------------------------------------------------------------------


def test_materializes_files_folders_modes_and_switches_current(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    source = FakeSource("peer", artifact.chunks)
    reports: list[Progress] = []

    result = materialize(
        artifact.id,
        artifact.data,
        sources=[source],
        store=store,
        artifacts_root=root,
        progress=reports.append,
    )

    assert result == root / artifact.hex
    for path, content in FILES.items():
        assert (result / path).read_bytes() == content
        assert mode(result / path) == (0o755 if path == "run.sh" else 0o644)
    assert {mode(result / folder) for folder in ("", "app", "app/lib", "z")} == {0o755}
    assert os.readlink(root / "current") == artifact.hex
    assert sorted(os.listdir(root)) == sorted([artifact.hex, "current"])
    assert sorted(source.fetched) == sorted(artifact.chunks)  # each distinct chunk once
    assert reports[-1] == Progress(
        len(artifact.chunks),
        len(artifact.chunks),
        sum(map(len, artifact.chunks.values())),
        sum(map(len, artifact.chunks.values())),
    )
    verify_tree(root / "current", artifact.manifest)


def test_prefetch_files_are_fetched_first(store: ChunkStore, root: Path) -> None:
    artifact = v1()
    source = FakeSource("peer", artifact.chunks)

    run(artifact, store, root, source, workers=1)

    model_chunks = artifact.chunks_of("z/model.bin")
    assert source.fetched[: len(model_chunks)] == model_chunks
    assert source.fetched[len(model_chunks)] == artifact.chunks_of("app/lib/util.py")[0]


def test_materializing_an_installed_id_again_fetches_nothing(store: ChunkStore, root: Path) -> None:
    artifact = v1()
    run(artifact, store, root, FakeSource("peer", artifact.chunks))
    again = FakeSource("peer", artifact.chunks)

    assert run(artifact, store, root, again) == root / artifact.hex
    assert again.fetched == []


@pytest.mark.parametrize("mask", [0o077, 0o000], ids=["umask-077", "umask-000"])
def test_modes_are_exact_whatever_the_umask(
    store: ChunkStore, root: Path, umask: None, mask: int
) -> None:
    artifact = v1()
    os.umask(mask)

    result = run(artifact, store, root, FakeSource("peer", artifact.chunks))

    modes = {str(path.relative_to(result)): mode(path) for path in result.rglob("*")}
    assert modes == {
        "app": 0o755,
        "app/lib": 0o755,
        "app/lib/util.py": 0o644,
        "app/main.py": 0o644,
        "app/empty.txt": 0o644,
        "run.sh": 0o755,
        "z": 0o755,
        "z/model.bin": 0o644,
    }
    assert mode(result) == 0o755


# -- deduplication and resumption ---------------------------------------------------------------


def test_a_new_version_fetches_only_its_new_chunks(store: ChunkStore, root: Path) -> None:
    first = v1()
    run(first, store, root, FakeSource("peer", first.chunks))
    changed = FILES["z/model.bin"][:512] + b"a new tail that is not in version one" * 3
    second = make_artifact({**FILES, "z/model.bin": changed}, executable=("run.sh",))
    source = FakeSource("peer", second.chunks)

    result = run(second, store, root, source)

    assert sorted(source.fetched) == sorted(set(second.chunks) - set(first.chunks))
    assert len(source.fetched) < len(second.chunks) // 2
    assert (result / "z/model.bin").read_bytes() == changed
    assert os.readlink(root / "current") == second.hex


def test_an_interrupted_transfer_resumes_without_fetching_again(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    wanted = artifact.chunks_of("z/model.bin")
    partial = FakeSource("peer", {digest: artifact.chunks[digest] for digest in wanted})
    with pytest.raises(ChunkUnavailable):
        run(artifact, store, root, partial, workers=1)
    complete = FakeSource("peer", artifact.chunks)

    run(artifact, store, root, complete)

    assert sorted(complete.fetched) == sorted(set(artifact.chunks) - set(wanted))


def test_chunks_shared_by_files_are_fetched_once(store: ChunkStore, root: Path) -> None:
    shared = b"x" * CHUNK
    artifact = make_artifact({"a": shared * 3, "b/c": shared + b"tail"})
    source = FakeSource("peer", artifact.chunks)

    result = run(artifact, store, root, source)

    assert sorted(source.fetched) == sorted({sha(shared), sha(b"tail")})
    assert (result / "a").read_bytes() == shared * 3


# -- refusals ------------------------------------------------------------------------------------


def test_a_corrupt_chunk_is_taken_from_the_next_source(store: ChunkStore, root: Path) -> None:
    artifact = v1()
    bad = FakeSource("bad-peer", artifact.chunks, corrupt=True)
    good = FakeSource("good-peer", artifact.chunks)

    problems: list[str] = []

    result = materialize(
        artifact.id,
        artifact.data,
        sources=[bad, good],
        store=store,
        artifacts_root=root,
        workers=4,
        on_problem=problems.append,
    )

    # A source that sends wrong bytes is dropped at once: asked no more than once per worker.
    assert 1 <= len(bad.fetched) <= 4 < len(artifact.chunks)
    assert sorted(good.fetched) == sorted(artifact.chunks)
    assert len(problems) == 1
    assert re.fullmatch(
        r"chunk source bad-peer sent \d+ bytes hashing to [0-9a-f]{16} for chunk [0-9a-f]{16}, "
        "not its bytes: dropped for this transfer",
        problems[0],
    )
    assert (result / "z/model.bin").read_bytes() == FILES["z/model.bin"]
    assert all(store.get(digest) == data for digest, data in artifact.chunks.items())


def test_corrupt_everywhere_refuses_naming_file_and_chunk(store: ChunkStore, root: Path) -> None:
    previous = v1()
    run(previous, store, root, FakeSource("peer", previous.chunks))
    before = snapshot(root)
    artifact = make_artifact({"app/main.py": b"version two\n"})
    digest = artifact.chunks_of("app/main.py")[0]

    with pytest.raises(
        ChunkUnavailable,
        match=rf"chunk {digest} \(12 bytes, needed by 'app/main.py'\) is available from none of "
        r"2 sources: a: sent 12 bytes hashing to [0-9a-f]{16}; b: sent 12 bytes",
    ):
        run(
            artifact,
            store,
            root,
            FakeSource("a", artifact.chunks, corrupt=True),
            FakeSource("b", artifact.chunks, corrupt=True),
        )

    assert snapshot(root) == before
    assert not store.has(digest)


def test_a_missing_chunk_names_every_file_that_needs_it(store: ChunkStore, root: Path) -> None:
    artifact = make_artifact({"a": b"same", "b": b"same", "c": b"other"})

    with pytest.raises(
        ChunkUnavailable,
        match=rf"chunk {sha(b'same')} \(4 bytes, needed by 'a', 'b'\) is available from none "
        r"of 1 sources: empty: missing",
    ):
        run(artifact, store, root, FakeSource("empty", {}), workers=1)


def test_one_flipped_bit_in_the_manifest_is_refused_before_anything_is_fetched(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    source = FakeSource("peer", artifact.chunks)
    flipped = bytearray(artifact.data)
    flipped[len(flipped) // 2] ^= 0x04

    with pytest.raises(ManifestRefused, match=rf"not the pinned {artifact.id}: refused unread"):
        materialize(artifact.id, bytes(flipped), sources=[source], store=store, artifacts_root=root)

    assert source.fetched == []
    assert not root.exists()
    assert list(store.digests()) == []


def test_a_symlink_is_refused_unless_allowed(store: ChunkStore, root: Path) -> None:
    artifact = make_artifact({"app/main.py": b"x"}, symlinks={"app/entry": "main.py"})
    source = FakeSource("peer", artifact.chunks)

    with pytest.raises(ManifestRefused, match="'app/entry' is a symlink, and this artifact allows"):
        run(artifact, store, root, source)
    assert source.fetched == []

    result = run(artifact, store, root, source, allow_symlinks=True)
    assert os.readlink(result / "app/entry") == "main.py"
    assert (result / "app/entry").read_bytes() == b"x"


def test_a_file_whose_bytes_differ_from_its_manifest_hash_is_refused(
    store: ChunkStore, root: Path
) -> None:
    # The id pins the manifest, not that its file hash agrees with its chunks: check both.
    artifact = make_artifact({"app/main.py": b"hello"}, file_sha={"app/main.py": "0" * 64})

    with pytest.raises(
        MaterializeError,
        match=rf"file 'app/main.py': its chunks hash to {sha(b'hello')}, the manifest says 0+",
    ):
        run(artifact, store, root, FakeSource("peer", artifact.chunks))

    assert os.listdir(root) == []


def test_a_flipped_bit_in_the_local_store_is_fetched_again(store: ChunkStore, root: Path) -> None:
    artifact = v1()
    digest = artifact.chunks_of("app/main.py")[0]
    store.put(artifact.chunks[digest])
    damaged = bytearray(store.path(digest).read_bytes())
    damaged[3] ^= 0x10
    store.path(digest).write_bytes(bytes(damaged))
    source = FakeSource("peer", artifact.chunks)

    result = run(artifact, store, root, source)

    assert source.fetched.count(digest) == 1
    assert (result / "app/main.py").read_bytes() == FILES["app/main.py"]


# -- verify_tree ---------------------------------------------------------------------------------


def test_verify_tree_names_the_file_and_chunk_of_a_flipped_bit(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    result = run(artifact, store, root, FakeSource("peer", artifact.chunks))
    target = result / "z/model.bin"
    target.chmod(0o644)
    content = bytearray(target.read_bytes())
    content[200] ^= 0x80
    target.write_bytes(bytes(content))
    digest = artifact.chunks_of("z/model.bin")[3]

    with pytest.raises(
        TreeMismatch,
        match=rf"file 'z/model.bin': chunk 3 \({digest}, bytes 192-255\) hashes to [0-9a-f]{{64}}",
    ):
        verify_tree(result, artifact.manifest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda tree: (tree / "extra").write_bytes(b""), r"'extra' is not in the manifest"),
        (lambda tree: (tree / "run.sh").chmod(0o4755), r"'run.sh' has mode 4755, expected 0755"),
        (lambda tree: (tree / "app/empty.txt").unlink(), r"file 'app/empty.txt' is missing"),
        (
            lambda tree: (tree / "app/main.py").write_bytes(b"short"),
            r"file 'app/main.py' holds 5 bytes, the manifest says 300",
        ),
        (
            lambda tree: (
                (tree / "app/empty.txt").unlink(),
                os.symlink("main.py", tree / "app/empty.txt"),
            ),
            r"'app/empty.txt' has the wrong type \(l",
        ),
    ],
    ids=["extra-file", "setuid-bit", "missing-file", "truncated", "file-replaced-by-symlink"],
)
def test_verify_tree_refuses_any_difference(
    store: ChunkStore, root: Path, change: object, message: str
) -> None:
    artifact = v1()
    result = run(artifact, store, root, FakeSource("peer", artifact.chunks))
    assert callable(change)
    change(result)

    with pytest.raises(TreeMismatch, match=message):
        verify_tree(result, artifact.manifest)


def test_a_damaged_installed_copy_is_replaced_on_the_next_materialization(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    result = run(artifact, store, root, FakeSource("peer", artifact.chunks))
    (result / "app/main.py").write_bytes(b"tampered")

    assert run(artifact, store, root, FakeSource("peer", artifact.chunks)) == result

    verify_tree(result, artifact.manifest)
    assert sorted(os.listdir(root)) == sorted([artifact.hex, "current"])


# -- failure leaves the previous version ---------------------------------------------------------


def test_disk_full_leaves_the_previous_version_and_current(
    store: ChunkStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = v1()
    run(previous, store, root, FakeSource("peer", previous.chunks))
    before = snapshot(root)
    artifact = make_artifact({**FILES, "app/main.py": b"version two\n" * 40})
    writes = 0
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        nonlocal writes
        writes += 1
        if writes > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(
        MaterializeError,
        match=r"cannot write file '[a-z/.]+' at chunk \d+ \([0-9a-f]{64}\): "
        "No space left on device",
    ):
        run(artifact, store, root, FakeSource("peer", artifact.chunks))
    monkeypatch.undo()

    assert snapshot(root) == before
    assert os.readlink(root / "current") == previous.hex
    verify_tree(root / "current", previous.manifest)


def test_current_switches_only_on_success(store: ChunkStore, root: Path) -> None:
    first = v1()
    run(first, store, root, FakeSource("peer", first.chunks))
    second = make_artifact({"only": b"two"})

    with pytest.raises(ChunkUnavailable):
        run(second, store, root, FakeSource("empty", {}))
    assert os.readlink(root / "current") == first.hex

    run(second, store, root, FakeSource("peer", second.chunks))
    assert os.readlink(root / "current") == second.hex
    assert (root / "current" / "only").read_bytes() == b"two"
    assert sorted(os.listdir(root)) == sorted([first.hex, second.hex, "current"])


def test_pre_staging_leaves_current_alone(store: ChunkStore, root: Path) -> None:
    first = v1()
    run(first, store, root, FakeSource("peer", first.chunks))
    second = make_artifact({"only": b"two"})

    staged = materialize(
        second.id,
        second.data,
        sources=[FakeSource("peer", second.chunks)],
        store=store,
        artifacts_root=root,
        switch=False,
    )

    assert os.readlink(root / "current") == first.hex
    verify_tree(staged, second.manifest)


def test_concurrent_materializations_of_one_id_give_one_result(
    store: ChunkStore, root: Path
) -> None:
    artifact = v1()
    # Both runs get past the "already installed?" check before either installs, so one
    # of them must lose the rename and adopt the winner's copy.
    source = FakeSource("peer", artifact.chunks, barrier=threading.Barrier(2, timeout=10))
    results: list[Path] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            results.append(run(artifact, store, root, source, workers=1))
        except BaseException as error:  # noqa: BLE001 - reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert results == [root / artifact.hex] * 2
    assert len(source.fetched) >= len(artifact.chunks) + 1  # both really ran
    assert sorted(os.listdir(root)) == sorted([artifact.hex, "current"])
    verify_tree(root / "current", artifact.manifest)
