"""`remove_tree`: a hostile tree goes whole (any depth, read-only folders), and nothing a link
points at is touched."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from reconciler.files import remove_tree


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(sys.getrecursionlimit() + 500):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.close(fd)
    remove_tree(root)
    assert os.listdir(tmp_path) == []


def test_links_are_removed_and_what_they_point_at_stays(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "to-folder").symlink_to(outside)
    (root / "to-file").symlink_to(outside / "keep")
    (root / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(root / "fifo")
    (root / "ro").mkdir()
    (root / "ro" / "file").write_text("x")
    os.chmod(root / "ro", 0o555)  # noqa: S103 - a read-only folder, as volumes have
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep").read_text() == "kept"


def test_a_link_given_as_the_tree_is_removed_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_tree(link)
    assert not link.exists()
    assert (target / "keep").read_text() == "kept"


def test_a_missing_path_or_a_file(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")
    single = tmp_path / "file"
    single.write_text("x")
    remove_tree(single)
    assert not single.exists()
