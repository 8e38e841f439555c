"""Deterministic builds from a folder, and the chunk store they fill."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builders import BuildError
from builders.chunks import ChunkCorrupt, ChunkMissing, ChunkStore, chunk_digest
from builders.tree import ARCHIVE_CHUNKING, MODEL_CHUNKING, TreeBuild, build_tree

SOURCE = {
    "app/main.py": b"print('hello')\n",
    "app/lib/util.py": b"X = 1\n",
    "app/run.sh": b"#!/bin/sh\nexec python3 main.py\n",
    "data/empty": b"",
    "README": b"readme\n",
}


def make_source(root: Path, order: list[str], umask: int) -> Path:
    """Write SOURCE under `root` in the given order and umask, with scattered mtimes."""
    previous = os.umask(umask)
    try:
        for index, name in enumerate(order):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(SOURCE[name])
            os.utime(path, (1_000_000 + index * 7919, 2_000_000 + index * 104_729))
        (root / "app/run.sh").chmod((root / "app/run.sh").stat().st_mode | 0o100)
    finally:
        os.umask(previous)
    return root


def test_the_same_tree_gives_the_same_id_whatever_the_umask_order_and_mtimes(
    tmp_path: Path,
) -> None:
    names = list(SOURCE)
    first = make_source(tmp_path / "one", names, 0o022)
    second = make_source(tmp_path / "two", list(reversed(names)), 0o077)

    one = build_tree(TreeBuild(first), ChunkStore(tmp_path / "store-1"))
    two = build_tree(TreeBuild(second), ChunkStore(tmp_path / "store-2"))

    assert one.artifact_id == two.artifact_id
    modes = {entry.path: entry.mode for entry in one.entries}
    assert modes["app/run.sh"] == "0755"
    assert modes["app/main.py"] == "0644"
    assert modes["app/lib"] == "0755"


def test_the_id_is_the_same_in_another_process_locale_and_timezone(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", list(SOURCE), 0o022)
    here = build_tree(TreeBuild(source), ChunkStore(tmp_path / "store")).artifact_id
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from builders.chunks import ChunkStore
        from builders.tree import TreeBuild, build_tree
        store = ChunkStore(Path({str(tmp_path / "other")!r}))
        print(build_tree(TreeBuild(Path({str(source)!r})), store).artifact_id)
        """
    )
    environment = {**os.environ, "TZ": "Pacific/Kiritimati", "LC_ALL": "C", "PYTHONHASHSEED": "77"}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=60,
    )
    assert completed.stdout.strip() == here


def test_include_exclude_and_prefetch(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", list(SOURCE), 0o022)
    manifest = build_tree(
        TreeBuild(source, include=("app/**",), exclude=("app/lib/**",), prefetch=("app/*.py",)),
        ChunkStore(tmp_path / "store"),
    )
    assert [e.path for e in manifest.entries] == ["app", "app/main.py", "app/run.sh"]
    assert manifest.prefetch == ("app/main.py",)


def test_every_chunk_is_in_the_store(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", list(SOURCE), 0o022)
    store = ChunkStore(tmp_path / "store")
    manifest = build_tree(TreeBuild(source), store)
    for digest in manifest.chunk_digests():
        assert chunk_digest(store.get(digest)) == digest


def test_symlinks_and_special_files_are_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", list(SOURCE), 0o022)
    (source / "app/link").symlink_to("main.py")
    with pytest.raises(BuildError, match="app/link: a symbolic link, and this build allows none"):
        build_tree(TreeBuild(source), ChunkStore(tmp_path / "store"))
    allowed = build_tree(TreeBuild(source, allow_symlinks=True), ChunkStore(tmp_path / "store"))
    assert any(e.type == "symlink" and e.target == "main.py" for e in allowed.entries)

    (source / "app/link").unlink()
    os.mkfifo(source / "app/pipe")
    with pytest.raises(BuildError, match="app/pipe: not a regular file"):
        build_tree(TreeBuild(source), ChunkStore(tmp_path / "store"))


def test_an_escaping_symlink_is_refused_at_build_time(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", list(SOURCE), 0o022)
    (source / "app/evil").symlink_to("../../../etc/passwd")
    with pytest.raises(BuildError, match="escapes the artifact"):
        build_tree(TreeBuild(source, allow_symlinks=True), ChunkStore(tmp_path / "store"))


def test_content_defined_chunking_reuses_almost_every_chunk_after_an_edit(tmp_path: Path) -> None:
    """The model builder: insert a few bytes into an 8 MiB file; only the chunks around the
    edit change. Fixed-size chunking would change every chunk after it."""
    data = hashlib.shake_256(b"weights").digest(8 * 1024 * 1024)  # fixed: the test is exact
    for name, content in (("v1", data), ("v2", data[:3_000_000] + b"edit" + data[3_000_000:])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(content)
    store = ChunkStore(tmp_path / "store")

    v1 = build_tree(TreeBuild(tmp_path / "v1", chunking=MODEL_CHUNKING), store)
    v2 = build_tree(TreeBuild(tmp_path / "v2", chunking=MODEL_CHUNKING), store)
    fixed1 = build_tree(TreeBuild(tmp_path / "v1", chunking=ARCHIVE_CHUNKING), store)
    fixed2 = build_tree(TreeBuild(tmp_path / "v2", chunking=ARCHIVE_CHUNKING), store)

    new = v2.chunk_digests() - v1.chunk_digests()
    assert len(new) <= 2 < len(v2.chunk_digests())
    assert fixed2.chunk_digests().isdisjoint(fixed1.chunk_digests())


def test_the_store_refuses_a_corrupt_chunk_and_forgets_it(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    digest = store.put(b"chunk")
    path = store.path(digest)
    path.write_bytes(b"chunK")
    with pytest.raises(ChunkCorrupt, match=f"chunk {digest[:16]} in .* does not match its digest"):
        store.get(digest)
    assert not path.exists()
    with pytest.raises(ChunkMissing):
        store.get(digest)
    with pytest.raises(ChunkCorrupt, match="hashes to"):
        store.put(b"other", digest)


def test_garbage_collection_keeps_what_live_manifests_need(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    keep, drop = store.put(b"keep"), store.put(b"drop")
    assert store.collect_garbage([keep]) == 1
    assert set(store.digests()) == {keep}
    assert not store.has(drop)
