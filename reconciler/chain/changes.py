"""What a transition changes: the paths that differ between two trees, and a tree's sha256. Pure.

Trees come in as listings (path -> (mode, content digest)) that the Git adapter reads. Changed
paths count a rename as a delete plus an add, so a rule protecting either name applies.
The chain verifier refuses symbolic links and submodules in the new tree unless the policy
allows them: a link can make a harmless-looking path mean a protected one, and a submodule
brings content the signatures do not cover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from reconciler.errors import CheckFailed

MODE_LINK = 0o120000
MODE_SUBMODULE = 0o160000

Listing = Mapping[str, tuple[int, str]]  # path -> (git mode, sha256 of content | commit id)


class TreeRefused(CheckFailed):
    """A tree holding what the policy does not allow (a symlink, a submodule)."""


def changed_paths(old: Listing | None, new: Listing) -> list[str]:
    """Every path added, removed or modified (content or mode) from `old` to `new`."""
    before = old or {}
    paths = set(before) | set(new)
    return sorted(path for path in paths if before.get(path) != new.get(path))


def special_entries(listing: Listing) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The symbolic links and the submodules of a tree, each in path order."""
    links: list[str] = []
    submodules: list[str] = []
    for path, (mode, _) in listing.items():
        if mode == MODE_LINK:
            links.append(path)
        elif mode == MODE_SUBMODULE:
            submodules.append(path)
    return tuple(sorted(links)), tuple(sorted(submodules))


def tree_sha256(listing: Listing) -> str:
    """A sha256 manifest of a tree: one line per entry, `MODE DIGEST PATH`, in byte order.

    Content is hashed with sha256 by the adapter, so nothing here relies on Git's SHA-1.
    """
    lines = [
        f"{mode:06o} {digest} {path}\n"
        for path, (mode, digest) in sorted(listing.items(), key=lambda item: item[0].encode())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
