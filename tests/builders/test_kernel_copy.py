"""Kernel copies of byte ranges: whatever the method the filesystem allows (reflink,
copy_file_range, read and write), the target range ends up holding exactly the source's, and
nothing outside it changes. On a filesystem with reflinks (CIRCLE_REFLINK_DIR, or an XFS with
reflink=1 made for the test on a loop device), block-aligned ranges share their blocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.kernel_copy import CopyCounts, copy_range

BLOCK = 4096


@pytest.fixture(scope="module")
def reflink_root() -> Iterator[Path]:
    """A folder on a filesystem with reflinks: CIRCLE_REFLINK_DIR, or else (as root, with
    xfsprogs: `.ci/setup --test` installs it) a small XFS made with reflink=1 on a loop device,
    unmounted afterwards. Skipped, saying why, where neither can be had."""
    given = os.environ.get("CIRCLE_REFLINK_DIR")
    if given:
        yield Path(given)
        return
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("no reflink filesystem: set CIRCLE_REFLINK_DIR, or run as root with xfsprogs")
    work = Path(tempfile.mkdtemp(prefix="reflink-"))
    image, mount = work / "xfs.img", work / "mnt"
    mount.mkdir()
    try:
        with open(image, "wb") as sink:
            sink.truncate(320 << 20)  # sparse: XFS's smallest filesystem is 300 MiB
        for step in (
            ["mkfs.xfs", "-q", "-m", "reflink=1", str(image)],
            ["mount", "-o", "loop", str(image), str(mount)],
        ):
            done = subprocess.run(step, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                pytest.skip(f"no reflink filesystem: {step[0]} failed: {done.stderr.strip()}")
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True, timeout=60, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(params=["tmp", "reflink"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "tmp":
        yield tmp_path
        return
    root: Path = request.getfixturevalue("reflink_root")
    place = Path(tempfile.mkdtemp(prefix="kernel-copy-", dir=root))
    try:
        yield place
    finally:
        shutil.rmtree(place)


@pytest.mark.parametrize(
    ("source_offset", "target_offset", "length"),
    [
        (0, 0, 64 * BLOCK),  # aligned: a reflink where there are reflinks
        (3 * BLOCK + 100, 3 * BLOCK + 100, 40 * BLOCK + 50),  # same misalignment in both
        (7, BLOCK, 5000),  # misaligned against each other: copied
        (0, 0, 10),  # shorter than a block
    ],
    ids=["aligned", "same-misalignment", "misaligned", "tiny"],
)
def test_the_range_is_copied_exactly(
    folder: Path, source_offset: int, target_offset: int, length: int
) -> None:
    source_bytes = os.urandom(80 * BLOCK)
    (folder / "source").write_bytes(source_bytes)
    before = b"\xaa" * (100 * BLOCK)
    (folder / "target").write_bytes(before)
    source = os.open(folder / "source", os.O_RDONLY)
    target = os.open(folder / "target", os.O_WRONLY)
    try:
        counts = copy_range(source, source_offset, target, target_offset, length)
    finally:
        os.close(source)
        os.close(target)

    found = (folder / "target").read_bytes()
    end = target_offset + length
    assert found[target_offset:end] == source_bytes[source_offset : source_offset + length]
    assert found[:target_offset] == before[:target_offset]
    assert found[end:] == before[end:]
    assert counts.cloned + counts.copied + counts.written == length
    if "kernel-copy-" in folder.name:  # on the reflink filesystem
        aligned = (source_offset - target_offset) % BLOCK == 0 and length >= 2 * BLOCK
        assert (counts.cloned > 0) == aligned


def test_a_source_shorter_than_the_range_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(b"short")
    source = os.open(tmp_path / "source", os.O_RDONLY)
    target = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="the source file ended before the range"):
            copy_range(source, 0, target, 0, 100)
    finally:
        os.close(source)
        os.close(target)


def test_counts_add_up() -> None:
    total = CopyCounts(1, 2, 3)
    total.add(CopyCounts(10, 20, 30))
    assert total == CopyCounts(11, 22, 33)
