"""Read a proposed transition's facts out of the circle's Git repository (pygit2).

Everything the pure verifier (`reconciler.chain.verify`) needs about `from -> to`: the changed
paths, the `to` tree and its sha256 manifest, the links and submodules in it, ancestry, and the
circle.yaml bytes on both sides.

A `TreeReader` keeps what a walk along the chain reads again: the listing of the last trees and
the sha256 of every blob it hashed. The `to` listing of one step is the `from` listing of the
next, and it is derived from the previous one through libgit2's tree diff, so a step costs
what it changes, not the size of the repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pygit2

from reconciler.chain.changes import (
    MODE_LINK,
    MODE_SUBMODULE,
    Listing,
    changed_paths,
    special_entries,
    tree_sha256,
)
from reconciler.chain.values import Header, Transition
from reconciler.chain.verify import ChainError, PolicyError
from reconciler.desired.documents import MAX_DOCUMENT_BYTES
from reconciler.desired.model.circle import POLICY_FILE
from reconciler.desired.repository import PathRole, Report, analyse, classify
from reconciler.desired.shipped import load_presets

_FULL_ID = re.compile(r"[0-9a-f]{40}")
_KEPT_LISTINGS = 4
MAX_COMMIT_BYTES = 1 << 20  # a commit object: headers and a message; real ones are < 10 KiB


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Git objects that are missing or malformed (a repository is anyone's content) become a
    ChainError about `what`, never an exception of libgit2's; so does a tree nested deeper than
    Python can walk."""
    try:
        yield
    except RecursionError:
        raise ChainError(f"{what}: the tree is nested too deeply to be read") from None
    except (KeyError, ValueError, TypeError, pygit2.GitError) as error:
        raise ChainError(
            f"{what}: unreadable Git object ({type(error).__name__}: {error})"
        ) from None


def bounded_commit(repo: pygit2.Repository, oid: pygit2.Oid, name: str) -> Any:
    """The commit `oid`, refused unread when it is no commit or larger than any commit needs
    to be (anyone with push rights can make a gigabyte commit message)."""
    try:
        kind, size = repo.odb.read_header(oid)
    except (KeyError, ValueError, pygit2.GitError):
        raise ChainError(f"{name}: not a commit of this repository") from None
    if kind != pygit2.enums.ObjectType.COMMIT:
        what = {
            pygit2.enums.ObjectType.TAG: "a tag",
            pygit2.enums.ObjectType.TREE: "a tree",
            pygit2.enums.ObjectType.BLOB: "a blob",
        }.get(kind, "no commit")
        raise ChainError(f"{name} is {what}, not a commit")
    if size > MAX_COMMIT_BYTES:
        raise ChainError(f"{name} is a commit of {size} bytes, over the {MAX_COMMIT_BYTES} allowed")
    return repo.get(oid)


def commit_of(repo: pygit2.Repository, revision: str) -> Any:
    """The commit a revision a person typed names (a branch, a tag, HEAD~2, an id)."""
    try:
        return repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.InvalidSpecError):
        raise ChainError(f"{revision}: no such commit") from None


def exact_commit(repo: pygit2.Repository, commit_id: str) -> Any:
    """The commit with exactly this full id: no abbreviation, no tag peeled to its commit, so
    one commit has one name on the chain."""
    if not _FULL_ID.fullmatch(commit_id):
        raise ChainError(f"{commit_id[:40]}: not a commit of this repository")
    return bounded_commit(repo, pygit2.Oid(hex=commit_id), commit_id[:12])


def policy_at(repo: pygit2.Repository, commit: Any, tree: Any = None) -> bytes:
    """The exact bytes of circle.yaml in `commit` (whose tree is `tree`, when already read),
    refused unread when it is larger than any document may be."""
    where = str(commit.id)[:12]
    with reading(f"{where}: {POLICY_FILE}"):
        try:
            entry = (commit.tree if tree is None else tree)[POLICY_FILE]
        except KeyError:
            raise PolicyError(f"{where} has no {POLICY_FILE}") from None
        kind, size = repo.odb.read_header(entry.id)
        if kind != pygit2.enums.ObjectType.BLOB or entry.filemode not in _FILE_MODES:
            raise PolicyError(f"{where}: {POLICY_FILE} is not a file")
        if size > MAX_DOCUMENT_BYTES:
            raise PolicyError(
                f"{where}: {POLICY_FILE} is {size} bytes, over the {MAX_DOCUMENT_BYTES} a "
                "document may have"
            )
        blob: Any = repo.get(entry.id)
        return bytes(blob.data)


_FILE_MODES = (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE)


def files_at(
    repo: pygit2.Repository, commit: Any, paths: tuple[str, ...], read: Callable[[str], bool]
) -> dict[str, bytes]:
    """Each of `paths` that is a file in `commit`: its bytes where `read(path)` (at most
    MAX_DOCUMENT_BYTES + 1 of them, enough for the parser to say it is too large), b"" for the
    others (their presence is all that is asked)."""
    found: dict[str, bytes] = {}
    with reading(f"{str(commit.id)[:12]}: files"):
        tree = commit.tree  # each `.tree` reads the object again: once here
        for path in paths:
            try:
                entry = tree[path]
            except KeyError:
                continue
            kind, size = repo.odb.read_header(entry.id)
            if kind != pygit2.enums.ObjectType.BLOB:
                continue
            if not read(path):
                found[path] = b""
            elif size > MAX_DOCUMENT_BYTES:
                found[path] = b"\0" * (MAX_DOCUMENT_BYTES + 1)  # refused by size, unread
            else:
                blob: Any = repo.get(entry.id)
                found[path] = bytes(memoryview(blob))
    return found


class TreeReader:
    """Listings of trees (path -> (mode, sha256)), with the caches a walk along a chain needs."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self._digests: dict[pygit2.Oid, str] = {}
        self._policies: dict[pygit2.Oid, bytes] = {}
        self._listings: OrderedDict[pygit2.Oid, dict[str, tuple[int, str]]] = OrderedDict()

    def _digest(self, oid: pygit2.Oid, mode: int) -> str:
        if mode == MODE_SUBMODULE:
            return str(oid)  # a commit elsewhere: only its id is known
        digest = self._digests.get(oid)
        if digest is None:
            blob = self.repo.get(oid)
            if not isinstance(blob, pygit2.Blob):
                raise ChainError(f"{oid} is not a blob")
            digest = self._digests[oid] = hashlib.sha256(memoryview(blob)).hexdigest()
        return digest

    def listing(self, tree: Any, after: Any = None) -> Listing:
        """The listing of `tree`; from the cached listing of `after` plus their diff if known."""
        found = self._listings.get(tree.id)
        if found is None:
            previous = self._listings.get(after.id) if after is not None else None
            found = self._full(tree) if previous is None else self._patched(previous, after, tree)
            self._listings[tree.id] = found
            while len(self._listings) > _KEPT_LISTINGS:
                self._listings.popitem(last=False)
        self._listings.move_to_end(tree.id)
        return found

    def _full(self, tree: Any) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        self._add(tree, "", found)
        return found

    def _add(self, tree: Any, prefix: str, found: dict[str, tuple[int, str]]) -> None:
        for entry in tree:
            path = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                self._add(self.repo[entry.id], path + "/", found)
            else:
                mode = int(entry.filemode)
                found[path] = (mode, self._digest(entry.id, mode))

    def _patched(
        self, previous: dict[str, tuple[int, str]], old: Any, new: Any
    ) -> dict[str, tuple[int, str]]:
        """`previous` (the listing of `old`) turned into the listing of `new`, descending only
        into the folders whose ids differ: a step costs what it changes."""
        found = dict(previous)
        self._compare(old, new, "", found)
        return found

    def _compare(self, old: Any, new: Any, prefix: str, found: dict[str, tuple[int, str]]) -> None:
        before = {entry.name: entry for entry in old}
        for entry in new:
            was = before.pop(entry.name, None)
            if was is not None and was.id == entry.id and was.filemode == entry.filemode:
                continue
            path = f"{prefix}{entry.name}"
            if was is not None and was.type_str == "tree" and entry.type_str == "tree":
                self._compare(self.repo[was.id], self.repo[entry.id], path + "/", found)
                continue
            if was is not None:
                self._drop(was, path, found)
            if entry.type_str == "tree":
                self._add(self.repo[entry.id], path + "/", found)
            else:
                mode = int(entry.filemode)
                found[path] = (mode, self._digest(entry.id, mode))
        for name, was in before.items():  # gone from `new`
            self._drop(was, f"{prefix}{name}", found)

    def _drop(self, entry: Any, path: str, found: dict[str, tuple[int, str]]) -> None:
        if entry.type_str != "tree":
            found.pop(path, None)
            return
        for inner in [known for known in found if known.startswith(path + "/")]:
            del found[inner]

    def _policy(self, commit: Any, tree: Any) -> bytes:
        """circle.yaml of `commit` (whose tree is `tree`), read once per version."""
        with reading(f"{str(commit.id)[:12]}: {POLICY_FILE}"):
            try:
                oid = tree[POLICY_FILE].id
            except KeyError:
                raise ChainError(f"{str(commit.id)[:12]} has no {POLICY_FILE}") from None
        found = self._policies.get(oid)
        if found is None:
            found = self._policies[oid] = policy_at(self.repo, commit, tree)
        return found

    def _ends(self, from_commit: str | None, to_commit: str) -> tuple[Any, Any]:
        to = exact_commit(self.repo, to_commit)
        start: Any = None if from_commit is None else exact_commit(self.repo, from_commit)
        return start, to

    def header(self, *, ref: str, seq: int, from_commit: str | None, to_commit: str) -> Header:
        """What the commit objects say of `from_commit -> to_commit`: no tree of `to` is read,
        and no ancestry walked (the policy in force is `from`'s, already applied; for seq 1,
        `to`'s own)."""
        with reading(f"seq {seq} ({to_commit[:12]})"):
            start, to = self._ends(from_commit, to_commit)
            in_force = to if start is None else start
            return Header(
                ref, seq, None if start is None else str(start.id), str(to.id), str(to.tree_id),
                self._policy(in_force, in_force.tree),
            )  # fmt: skip

    def transition(
        self, *, ref: str, seq: int, from_commit: str | None, to_commit: str
    ) -> Transition:
        with reading(f"seq {seq} ({to_commit[:12]})"):
            start, to = self._ends(from_commit, to_commit)
            descends = start is None or (
                start.id in to.parent_ids or self.repo.descendant_of(to.id, start.id)
            )
            to_tree = to.tree  # each `.tree` reads the object again: once per commit here
            start_tree = None if start is None else start.tree
            old = None if start_tree is None else self.listing(start_tree)
            new = self.listing(to_tree, after=start_tree)
            links, submodules = special_entries(new)
            return Transition(
                ref=ref,
                seq=seq,
                from_commit=None if start is None else str(start.id),
                to_commit=str(to.id),
                to_tree=str(to_tree.id),
                tree_sha256=tree_sha256(new),
                changed=tuple(changed_paths(old, new)),
                descends=descends,
                policy_from=None if start is None else self._policy(start, start_tree),
                policy_to=self._policy(to, to_tree),
                links=links,
                submodules=submodules,
            )


def transition(
    repo: pygit2.Repository, *, ref: str, seq: int, from_commit: str | None, to_commit: str
) -> Transition:
    """The facts of `from_commit -> to_commit` (one-off; a walk keeps a `TreeReader`)."""
    return TreeReader(repo).transition(
        ref=ref, seq=seq, from_commit=from_commit, to_commit=to_commit
    )


def desired_at(repo: pygit2.Repository, commit_id: str) -> Report:
    """The desired state at commit `commit_id` (an approved step: trusted content), read from
    Git as `circle validate` reads a working folder: documents bounded, links refused."""
    commit = exact_commit(repo, commit_id)
    files: set[str] = set()
    documents: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    with reading(f"{commit_id[:12]}: the desired state"):
        pending: list[tuple[str, Any]] = [("", commit.tree)]
        while pending:
            prefix, tree = pending.pop()
            for entry in tree:
                path = f"{prefix}{entry.name}"
                if entry.type_str == "tree":
                    pending.append((path + "/", repo.get(entry.id)))
                    continue
                files.add(path)
                if classify(path)[0] is not PathRole.DOCUMENT:
                    continue
                if entry.filemode == MODE_LINK:
                    refused[path] = "is a symbolic link; circle documents must be regular files"
                    continue
                kind, size = repo.odb.read_header(entry.id)
                if kind != pygit2.enums.ObjectType.BLOB:
                    continue
                if size > MAX_DOCUMENT_BYTES:
                    documents[path] = b"\0" * (MAX_DOCUMENT_BYTES + 1)  # refused by size, unread
                else:
                    blob: Any = repo.get(entry.id)
                    documents[path] = bytes(memoryview(blob))
    return analyse(documents, files, load_presets().admission, refused=refused)
