"""Read Git trees with pygit2 into the listings `reconciler.core.changes` works on."""

from __future__ import annotations

import hashlib
from typing import Any

import pygit2

from reconciler.core.changes import MODE_SUBMODULE, Listing


def listing(repo: pygit2.Repository, tree: Any) -> Listing:
    """path -> (mode, sha256 of the blob) for every blob, link and submodule under `tree`."""
    found: dict[str, tuple[int, str]] = {}

    def walk(node: Any, prefix: str) -> None:
        for entry in node:
            path = f"{prefix}{entry.name}"
            mode = int(entry.filemode)
            if entry.type_str == "tree":
                walk(repo[entry.id], path + "/")
            elif mode == MODE_SUBMODULE:
                found[path] = (mode, str(entry.id))  # a commit elsewhere: only its id is known
            else:
                blob = repo.get(entry.id)
                assert isinstance(blob, pygit2.Blob)
                found[path] = (mode, hashlib.sha256(blob.data).hexdigest())

    walk(tree, "")
    return found
