"""Kernel copies of byte ranges: whatever the method the filesystem allows (reflink,
copy_file_range, read and write), the target range ends up holding exactly the source's, and
nothing outside it changes. On a filesystem with reflinks (CIRCLE_REFLINK_DIR, or an XFS with
reflink=1 made for the test on a loop device), block-aligned ranges share their blocks.
Without reflinks, a long range's page-aligned middle may be written past the page cache
(`O_DIRECT`): the bytes are the same either way, next to other writers of the same file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import kernel_copy
from builders.kernel_copy import CopyCounts, copy_range

BLOCK = 4096
PROBE = 64 * BLOCK  # the probe and the buffer made small, so that ranges stay small


@pytest.fixture
def small_direct(monkeypatch: pytest.MonkeyPatch) -> kernel_copy._Support:
    """Direct writes through 16 KiB buffers, probes of 256 KiB, from a state that has
    measured no device yet (what the module learns is per process: the test gets its own)."""
    support = kernel_copy._Support()
    monkeypatch.setattr(kernel_copy, "_SUPPORT", support)
    monkeypatch.setattr(kernel_copy, "_DIRECT_BUFFER", 4 * BLOCK)
    monkeypatch.setattr(kernel_copy, "_PROBE", PROBE)
    monkeypatch.setattr(kernel_copy, "_MIN_DIRECT", 8 * BLOCK)
    return support


def takes_direct_writes(folder: Path) -> bool:
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError:
        return False
    finally:
        (folder / "probe").unlink(missing_ok=True)
    return True


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
    total = CopyCounts(1, 2, 3, 4)
    total.add(CopyCounts(10, 20, 30, 40))
    assert total == CopyCounts(11, 22, 33, 44)
    assert total.total == 110


def copy_between(
    folder: Path,
    source_bytes: bytes,
    before: bytes,
    source_offset: int,
    target_offset: int,
    length: int,
    direct: bool | None,
) -> tuple[bytes, CopyCounts]:
    (folder / "source").write_bytes(source_bytes)
    (folder / "target").write_bytes(before)
    source = os.open(folder / "source", os.O_RDONLY)
    target = os.open(folder / "target", os.O_WRONLY)
    try:
        counts = copy_range(source, source_offset, target, target_offset, length, direct=direct)
    finally:
        os.close(source)
        os.close(target)
    return (folder / "target").read_bytes(), counts


@pytest.mark.parametrize("direct", [True, False, None], ids=["direct", "cached", "measured"])
def test_a_long_range_is_copied_exactly_whichever_way(
    folder: Path, small_direct: kernel_copy._Support, direct: bool | None
) -> None:
    # Misaligned against each other (no reflink), neither end on a page: partial pages at
    # both ends, the middle direct where asked and where the filesystem takes it.
    source_offset, target_offset, length = 7, 3 * BLOCK + 100, 3 * PROBE + 5000
    source_bytes = os.urandom(source_offset + length + 99)
    before = b"\xaa" * (target_offset + length + 3 * BLOCK)
    found, counts = copy_between(
        folder, source_bytes, before, source_offset, target_offset, length, direct
    )

    end = target_offset + length
    assert found[target_offset:end] == source_bytes[source_offset : source_offset + length]
    assert found[:target_offset] == before[:target_offset]
    assert found[end:] == before[end:]
    assert counts.total == length
    assert counts.cloned == 0
    device = os.stat(folder / "target").st_dev
    if direct is False:
        assert counts.direct == 0
        assert device not in small_direct.direct  # nothing measured
    elif takes_direct_writes(folder):
        assert counts.direct > 0
        assert counts.direct % BLOCK == 0
        if direct is None:  # measured: the probe went both ways, the faster was kept
            assert device in small_direct.direct
            head = (-target_offset) % BLOCK
            middle = (length - head) // BLOCK * BLOCK  # the probe's two, then the rest
            assert counts.direct == (middle - PROBE if small_direct.direct[device] else PROBE)
    else:
        assert counts.direct == 0
        assert small_direct.direct[device] is False


def test_what_is_measured_for_a_device_is_kept(
    tmp_path: Path, small_direct: kernel_copy._Support
) -> None:
    device = os.stat(tmp_path).st_dev
    source_bytes = os.urandom(4 * PROBE)
    small_direct.direct[device] = False  # measured before: the page cache was faster
    _, counts = copy_between(tmp_path, source_bytes, b"", 0, 0, len(source_bytes), None)
    assert counts.direct == 0
    if takes_direct_writes(tmp_path):
        small_direct.direct[device] = True
        _, counts = copy_between(tmp_path, source_bytes, b"", 0, 0, len(source_bytes), False)
        assert counts.direct == 0  # asked for the page cache: it gets it, whatever was measured
        found, counts = copy_between(tmp_path, source_bytes, b"", 0, 0, len(source_bytes), None)
        assert counts.direct == len(source_bytes)  # aligned throughout: no partial page
        assert found == source_bytes


def test_a_short_source_is_an_error_when_written_direct(
    tmp_path: Path, small_direct: kernel_copy._Support
) -> None:
    (tmp_path / "source").write_bytes(os.urandom(PROBE))
    source = os.open(tmp_path / "source", os.O_RDONLY)
    target = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="the source file ended before the range"):
            copy_range(source, 0, target, 0, 4 * PROBE, direct=True)
    finally:
        os.close(source)
        os.close(target)


def test_direct_writes_leave_a_neighbour_writing_the_same_file_alone(
    tmp_path: Path, small_direct: kernel_copy._Support
) -> None:
    """As while a materialization lands new chunks (through the page cache) around a range it
    copies: the pages either side share a page with the range's ends and must keep both."""
    size = 12 * PROBE
    source_bytes = os.urandom(size)
    new_bytes = os.urandom(size)
    start, end = 2 * PROBE + 123, 10 * PROBE - 77  # the copied range; the rest is new
    (tmp_path / "source").write_bytes(source_bytes)
    (tmp_path / "target").write_bytes(b"")
    source = os.open(tmp_path / "source", os.O_RDONLY)
    target = os.open(tmp_path / "target", os.O_WRONLY)
    neighbour = os.open(tmp_path / "target", os.O_WRONLY)

    def land() -> None:
        for offset in range(0, size, 1000):  # small writes, in and out of the range's pages
            piece = (offset, min(offset + 1000, size))
            for low, high in ((piece[0], min(piece[1], start)), (max(piece[0], end), piece[1])):
                if low < high:
                    os.pwrite(neighbour, new_bytes[low:high], low)

    lander = threading.Thread(target=land)
    try:
        lander.start()
        copy_range(source, start, target, start, end - start, direct=True)
        lander.join()
    finally:
        for fd in (source, target, neighbour):
            os.close(fd)
    found = (tmp_path / "target").read_bytes()
    assert found[:start] == new_bytes[:start]
    assert found[start:end] == source_bytes[start:end]
    assert found[end:] == new_bytes[end:size]


def test_a_bad_pair_of_files_does_not_turn_reflinks_off(
    reflink_root: Path, tmp_path: Path, small_direct: kernel_copy._Support
) -> None:
    """A source cut short, or on another filesystem, makes that one copy fall back (or fail);
    the next copy on the same filesystem still shares blocks."""
    place = Path(tempfile.mkdtemp(prefix="kernel-copy-", dir=reflink_root))
    try:
        data = os.urandom(64 * BLOCK)
        (place / "short").write_bytes(data[: 8 * BLOCK])
        (tmp_path / "elsewhere").write_bytes(data)  # another filesystem: EXDEV
        (place / "source").write_bytes(data)
        target = os.open(place / "target", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for name in (place / "short", tmp_path / "elsewhere"):
                source = os.open(name, os.O_RDONLY)
                try:
                    if name.name == "short":
                        with pytest.raises(OSError, match="ended before the range"):
                            copy_range(source, 0, target, 0, len(data))
                    else:
                        assert copy_range(source, 0, target, 0, len(data)).total == len(data)
                finally:
                    os.close(source)
            source = os.open(place / "source", os.O_RDONLY)
            try:
                counts = copy_range(source, 0, target, 0, len(data))
            finally:
                os.close(source)
        finally:
            os.close(target)
        assert counts.cloned == len(data)
        assert (place / "target").read_bytes() == data
    finally:
        shutil.rmtree(place)
