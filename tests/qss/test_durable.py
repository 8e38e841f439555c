"""The one durable atomic write: all or nothing, its mode from the first byte whatever the umask,
never through a link, and `exclusive` never replaces anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qss.durable import atomic_writer, write_atomically


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_write_replaces_the_file_with_its_mode_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        write_atomically(target, "new ✓", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert names(tmp_path) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")

    def write_half() -> None:
        with atomic_writer(target) as handle:
            handle.write(b"half")
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        write_half()
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["out"]


def test_a_link_at_the_target_is_replaced_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep me")
    target = tmp_path / "target"
    target.symlink_to(elsewhere)
    write_atomically(target, b"mine", mode=0o600)
    assert not target.is_symlink()
    assert target.read_bytes() == b"mine"
    assert elsewhere.read_bytes() == b"keep me"


@pytest.mark.parametrize("kind", ["file", "link", "dangling-link"])
def test_exclusive_refuses_anything_already_there(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "key"
    if kind == "file":
        target.write_bytes(b"an old key")
    elif kind == "link":
        (tmp_path / "real").write_bytes(b"real")
        target.symlink_to(tmp_path / "real")
    else:
        target.symlink_to(tmp_path / "missing")
    before = sorted((p.name, p.is_symlink()) for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError):
        write_atomically(target, b"new key", mode=0o600, exclusive=True)
    assert sorted((p.name, p.is_symlink()) for p in tmp_path.iterdir()) == before
    if kind == "file":
        assert target.read_bytes() == b"an old key"


def test_exclusive_creates_a_new_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_atomically(target, b"secret", mode=0o600, exclusive=True)
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["key"]
