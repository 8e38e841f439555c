"""A circle repository in a working directory: read its documents and check them.

Only the listing and the reading happen here; `reconciler.desired.repository.analyse` decides.
Symbolic links are never followed: a document that is a link is refused, a linked folder is
not entered.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.desired.documents import MAX_DOCUMENT_BYTES
from reconciler.desired.repository import PathRole, Report, analyse, classify
from reconciler.desired.shipped import load_presets
from reconciler.errors import InputError
from reconciler.files import read_bounded

MAX_TREE_FILES = 200_000
SKIPPED_FOLDERS = frozenset({".git"})


def list_tree(root: Path) -> tuple[set[str], set[str]]:
    """Repository paths (with '/') of the regular files and of the symbolic links under `root`."""
    files: set[str] = set()
    links: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=False):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS or prefix)
        for name in names + [d for d in subfolders if (Path(folder) / d).is_symlink()]:
            path = Path(folder) / name
            (links if path.is_symlink() else files).add(prefix + name)
        if len(files) > MAX_TREE_FILES:
            raise InputError(
                f"{root}: more than {MAX_TREE_FILES} files; is this a circle repository?"
            )
    return files, links


def display_prefix(root: Path) -> str:
    """How problems name files under `root`: relative to the working directory when possible."""
    try:
        if root.resolve() == Path.cwd().resolve():
            return ""
    except OSError:
        pass
    return str(root).rstrip("/") + "/"


def check_circle_dir(root: Path) -> Report:
    """Read and check the circle repository at `root`."""
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    prefix = display_prefix(root)
    files, links = list_tree(root)
    documents: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    for path in sorted(files | links):
        role, _ = classify(path)
        if role is not PathRole.DOCUMENT:
            continue
        if path in links:
            refused[path] = "is a symbolic link; circle documents must be regular files"
            continue
        documents[path] = read_bounded(root / path, MAX_DOCUMENT_BYTES, display=prefix + path)
    return analyse(
        documents, files, load_presets().admission, display_prefix=prefix, refused=refused
    )
