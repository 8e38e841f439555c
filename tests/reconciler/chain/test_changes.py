"""Changed paths and tree manifests over real Git repositories (pygit2 and the git CLI), and
approval statements that bind one transition."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pygit2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.chain.changes import changed_paths, special_entries, tree_sha256
from reconciler.chain.statements import Approval, StatementError, _decode_slowly, decode
from reconciler.chain.trees import TreeReader


def listing(repo: pygit2.Repository, tree: pygit2.Tree | pygit2.Oid) -> dict[str, tuple[int, str]]:
    found = repo.get(tree) if isinstance(tree, pygit2.Oid) else tree
    return dict(TreeReader(repo).listing(found))


SIGNATURE = pygit2.Signature("Alice", "alice@example.org", 1_700_000_000, 0)


def commit(repo: pygit2.Repository, files: dict[str, bytes | None], message: str) -> pygit2.Oid:
    """Write `files` (None deletes) into the work tree, stage everything, commit on HEAD."""
    root = Path(repo.workdir)
    for name, data in files.items():
        path = root / name
        if data is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    repo.index.add_all()
    repo.index.write()
    tree = repo.index.write_tree()
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return repo.create_commit("HEAD", SIGNATURE, SIGNATURE, message, tree, parents)


@pytest.fixture
def repo(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "circle"), initial_head="main")


def tree_of(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Tree:
    found = repo.get(oid)
    assert isinstance(found, pygit2.Commit)
    return found.tree


def git_names(repo: pygit2.Repository, old: pygit2.Oid, new: pygit2.Oid) -> list[str]:
    output = subprocess.run(
        ["git", "-C", repo.workdir, "diff", "--name-only", "--no-renames", str(old), str(new)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return sorted(output.split())


def test_a_rename_counts_as_a_delete_and_an_add_as_git_says(repo: pygit2.Repository) -> None:
    first = commit(repo, {"workloads/a.yaml": b"a", "nodes/n.yaml": b"n"}, "first")
    second = commit(
        repo, {"workloads/a.yaml": None, "circle.yaml": b"a", "nodes/n.yaml": b"m"}, "move"
    )

    changed = changed_paths(
        listing(repo, tree_of(repo, first)), listing(repo, tree_of(repo, second))
    )

    assert changed == ["circle.yaml", "nodes/n.yaml", "workloads/a.yaml"]
    assert changed == git_names(repo, first, second)


def test_a_mode_change_is_a_change(repo: pygit2.Repository) -> None:
    first = commit(repo, {"run.sh": b"#!/bin/sh\n"}, "first")
    (Path(repo.workdir) / "run.sh").chmod(0o755)
    second = commit(repo, {}, "chmod")
    old, new = listing(repo, tree_of(repo, first)), listing(repo, tree_of(repo, second))
    assert changed_paths(old, new) == ["run.sh"]
    assert tree_sha256(old) != tree_sha256(new)


def test_the_tree_manifest_is_sha256_of_content_and_stable(repo: pygit2.Repository) -> None:
    first = commit(repo, {"a": b"1", "d/b": b"2"}, "first")
    again = listing(repo, tree_of(repo, first))
    assert tree_sha256(again) == tree_sha256(dict(reversed(list(again.items()))))
    second = commit(repo, {"d/b": b"3"}, "edit")
    assert tree_sha256(listing(repo, tree_of(repo, second))) != tree_sha256(again)


def test_symlinks_and_submodules_are_found(repo: pygit2.Repository) -> None:
    root = Path(repo.workdir)
    (root / "workloads").mkdir()
    (root / "workloads/evil.yaml").symlink_to("../circle.yaml")
    tree = tree_of(repo, commit(repo, {"circle.yaml": b"x"}, "link"))
    builder = repo.TreeBuilder(tree)
    builder.insert("vendor", pygit2.Oid(hex="1" * 40), pygit2.GIT_FILEMODE_COMMIT)
    new = listing(repo, builder.write())
    assert special_entries(new) == (("workloads/evil.yaml",), ("vendor",))
    assert new["vendor"] == (0o160000, "1" * 40)


APPROVAL = Approval(
    circle="example-ai-circle",
    introduction="a" * 40,
    ref="refs/heads/main",
    seq=2,
    from_commit="b" * 40,
    to_commit="c" * 40,
    to_tree="d" * 40,
    tree_sha256="e" * 64,
    policy_sha256="f" * 64,
    issued_at=1_700_000_000,
    expires_at=1_700_604_800,
)


def test_statements_round_trip_canonically() -> None:
    data = APPROVAL.encode()
    assert decode(data) == APPROVAL
    with pytest.raises(StatementError, match="not in canonical form"):
        decode(data.replace(b'"seq":2', b'"seq": 2'))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b'"seq":2', b'"seq":0'), "bad seq"),
        ((b'"seq":2', b'"seq":true'), "bad seq"),
        ((b'"from":"' + b"b" * 40 + b'"', b'"from":null'), "only seq 1 has no `from` commit"),
        ((b'"type":"circle-approval/1"', b'"type":"circle-approval/2"'), "type must be"),
        ((b'"ref":"refs/heads/main"', b'"ref":"main"'), "bad ref"),
        ((b'"expiresAt":1700604800', b'"expiresAt":1600000000'), "expiresAt must come after"),
        ((b'"circle":"example-ai-circle"', b'"circle":"Example"'), "bad circle id"),
    ],
    ids=["seq-zero", "seq-bool", "missing-parent", "type", "ref", "expiry", "circle"],
)
def test_malformed_statements_are_refused(change: tuple[bytes, bytes], message: str) -> None:
    data = APPROVAL.encode()
    assert change[0] in data
    with pytest.raises(StatementError, match=message.replace("`", ".")):
        decode(data.replace(*change))


def test_expiry_and_issue_time() -> None:
    APPROVAL.check_current(1_700_000_000)
    with pytest.raises(StatementError, match="expired at 1700604800"):
        APPROVAL.check_current(1_700_604_800)
    with pytest.raises(StatementError, match="issued in the future"):
        APPROVAL.check_current(1_699_999_999)


_HEX = "0123456789abcdef"
_approvals = st.builds(
    Approval,
    circle=st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    introduction=st.text(_HEX, min_size=40, max_size=40),
    ref=st.from_regex(r"refs/[A-Za-z0-9._/-]{1,30}", fullmatch=True),
    seq=st.integers(1, 2**53 - 1),
    from_commit=st.none() | st.text(_HEX, min_size=40, max_size=40),
    to_commit=st.text(_HEX, min_size=40, max_size=40),
    to_tree=st.text(_HEX, min_size=40, max_size=40),
    tree_sha256=st.text(_HEX, min_size=64, max_size=64),
    policy_sha256=st.text(_HEX, min_size=64, max_size=64),
    issued_at=st.integers(0, 2**40 - 2),
    expires_at=st.integers(1, 2**40 - 1),
)


@settings(max_examples=300)
@given(_approvals, st.integers(0, 10_000), st.binary(max_size=3))
def test_the_fast_decoder_agrees_with_the_strict_one(
    approval: Approval, where: int, splice: bytes
) -> None:
    """`decode` reads canonical statements with one regular expression; on every statement and
    every byte-level mutation of one it must answer exactly as the JSON-parsing path does."""
    data = approval.encode()
    for candidate in (data, data[: where % len(data)] + splice + data[where % len(data) + 1 :]):
        try:
            expected: Approval | str = _decode_slowly(candidate)
        except StatementError as error:
            expected = str(error)
        try:
            found: Approval | str = decode(candidate)
        except StatementError as error:
            found = str(error)
        assert found == expected


_names = st.sampled_from(["a", "b", "c.yaml"])
_paths = st.lists(_names, min_size=1, max_size=3).map("/".join)
_kinds = st.sampled_from(
    [
        pygit2.GIT_FILEMODE_BLOB,
        pygit2.GIT_FILEMODE_BLOB_EXECUTABLE,
        pygit2.GIT_FILEMODE_LINK,
        0o160000,
    ]
)
_edits = st.lists(
    st.tuples(_paths, st.none() | st.tuples(_kinds, st.binary(max_size=3))), min_size=1, max_size=6
)


def _tree(repo: pygit2.Repository, files: dict[str, tuple[int, bytes]]) -> pygit2.Tree:
    nested: dict[str, Any] = {}
    for path, value in files.items():
        *folders, name = path.split("/")
        node = nested
        for folder in folders:
            child = node.get(folder)
            node = node.setdefault(folder, {}) if not isinstance(child, tuple) else {}
        node[name] = value

    def write(node: dict[str, Any]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                if value:
                    builder.insert(name, write(value), pygit2.GIT_FILEMODE_TREE)
            else:
                mode, data = value
                oid = (
                    pygit2.Oid(raw=hashlib.sha1(data).digest())  # noqa: S324 - a gitlink id
                    if mode == 0o160000
                    else repo.create_blob(data)
                )
                builder.insert(name, oid, mode)
        return builder.write()

    tree = repo.get(write(nested))
    assert isinstance(tree, pygit2.Tree)
    return tree


@settings(max_examples=80, deadline=None)
@given(st.lists(_edits, min_size=2, max_size=4))
def test_a_listing_patched_from_the_last_equals_a_full_one(
    tmp_path_factory: pytest.TempPathFactory, history: list[list[tuple[str, Any]]]
) -> None:
    """The chain walk derives each `to` listing from the previous one, descending only into
    changed folders: through files turning into folders and back, deletions, modes, links and
    submodules, it must equal a listing read from scratch."""
    repo = pygit2.init_repository(str(tmp_path_factory.mktemp("trees")), bare=True)
    walking = TreeReader(repo)
    files: dict[str, tuple[int, bytes]] = {}
    previous = None
    for edits in history:
        for path, value in edits:
            for known in [k for k in files if k.startswith(path + "/") or path.startswith(k + "/")]:
                del files[known]  # a file and a folder cannot share a name
            if value is None:
                files.pop(path, None)
            else:
                files[path] = value
        tree = _tree(repo, files)
        patched = walking.listing(tree, after=previous)
        assert dict(patched) == dict(TreeReader(repo).listing(tree))
        previous = tree
