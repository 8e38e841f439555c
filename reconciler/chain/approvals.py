"""Where approvals live: a dedicated ref of the circle's own Git repository.

    refs/circle/approvals -> commit -> tree
        <seq, 10 digits>/<to commit>/<SIGNER>-<PAIR>.statement   the exact bytes signed
        <seq, 10 digits>/<to commit>/<SIGNER>-<PAIR>.sig         SSHSIG, armored (or a sigstore
                                                                 bundle, JSON, or an ML-DSA
                                                                 envelope, armored)

SIGNER is 16 hex digits of the sha256 of the signer's key blob (an ML-DSA key's blob is
`string "ml-dsa-65", string KEY`; for a sigstore bundle, the sha256 of its certificate), PAIR
32 hex digits of the sha256 of the statement and signature: the name follows from the content.
Co-signers never touch the same path, a signer who signs again (after an expiry) adds a pair
beside the old one, and a path planted ahead of a signer holds the content its name says or is
skipped on reading. So approvals made in different clones merge as a union
of trees without conflicts, and a merge only ever adds. Nothing here is trusted: the chain
verifier checks every statement and signature it reads; this module only stores bytes. Git
notes are not used (one note per object, O(n) writes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pygit2

from builders import sshsig
from reconciler.chain import mldsa
from reconciler.chain.gitcli import GitFailed, git
from reconciler.chain.statements import MAX_STATEMENT_BYTES, decode
from reconciler.errors import CheckFailed

REF = "refs/circle/approvals"
# An armored SSHSIG is 300 bytes, a sigstore bundle about 6 KiB, an ML-DSA-65 envelope 7.2 KiB.
MAX_SIGNATURE_BYTES = 64 << 10
_AUTHOR = pygit2.Signature("circle", "circle@localhost", 0, 0)
_BLOB = pygit2.enums.ObjectType.BLOB


class ApprovalStoreError(CheckFailed):
    """The approvals ref holds something that is not an approval pair, or cannot be updated."""


@dataclass(frozen=True, slots=True)
class StoredApproval:
    path: str  # of the statement, inside the approvals tree
    statement: bytes
    signature: str


def _name(statement: bytes, signature: bytes) -> str:
    """The file name of an approval pair: its signer's and its content's digests."""
    text = signature.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        # sigstore takes most of a second to import: only for circles that use it.
        from reconciler.chain.sigstore import bundle_name

        signer = bundle_name(text)
    elif mldsa.is_envelope(text):
        signer = hashlib.sha256(mldsa.parse(text).public_key).hexdigest()
    else:
        signer = hashlib.sha256(sshsig.parse(text).public_key).hexdigest()
    return f"{signer[:16]}-{_pair_digest(statement, signature)}"


def _names_its_content(name: str, statement: bytes, signature: bytes) -> bool:
    digest = name.removesuffix(".statement").removesuffix(".sig").rpartition("-")[2]
    return digest == _pair_digest(statement, signature)


def _pair_digest(statement: bytes, signature: bytes) -> str:
    length = len(statement).to_bytes(8, "big")
    return hashlib.sha256(length + statement + signature).hexdigest()[:32]


def _head(repo: pygit2.Repository, ref: str = REF) -> pygit2.Commit | None:
    """The approvals commit `ref` names (an annotated tag of one is peeled), None without the
    ref; ApprovalStoreError when it names a tree, a blob or nothing."""
    reference = repo.references.get(ref)
    if reference is None:
        return None
    found: Any = repo.get(reference.target) if isinstance(reference.target, pygit2.Oid) else None
    for _ in range(8):  # a tag of a tag ...: a few levels, no more
        if not isinstance(found, pygit2.Tag):
            break
        found = repo.get(found.target)
    if not isinstance(found, pygit2.Commit):
        what = "nothing" if found is None else f"a {found.type_str}"
        raise ApprovalStoreError(f"{ref} points at {what}, not an approvals commit")
    return found


def head(repo: pygit2.Repository, ref: str) -> pygit2.Commit | None:
    """The approvals commit of `ref` (another clone's, fetched; a node's quarantine)."""
    return _head(repo, ref)


def add(repo: pygit2.Repository, statement: bytes, signature: str) -> str:
    """File one approval (statement bytes as signed, and its signature); returns its path.

    The statement must parse and the signature must name a key; whether it verifies, and for
    whom, is the chain verifier's business. Adding the same pair again changes nothing.
    """
    return add_many(repo, [(statement, signature)])[0]


def add_many(repo: pygit2.Repository, pairs: Iterable[tuple[bytes, str]]) -> list[str]:
    """File several approvals in one commit of the ref; returns their paths, in order."""
    files: dict[str, bytes] = {}
    paths: list[str] = []
    seqs: set[int] = set()
    for statement, signature in pairs:
        approval = decode(statement)
        base = f"{approval.seq:010d}/{approval.to_commit}/{_name(statement, signature.encode())}"
        files[f"{base}.statement"] = statement
        files[f"{base}.sig"] = signature.encode()
        paths.append(f"{base}.statement")
        seqs.add(approval.seq)
    head = _head(repo)
    new = _tree_of(repo, files)
    tree = _union(repo, head.tree, repo.get(new)) if head is not None else new
    if head is None or tree != head.tree.id:
        parents = [head.id] if head is not None else []
        message = f"approve seq {', '.join(map(str, sorted(seqs)))}"
        _move_ref(repo, head, repo.create_commit(None, _AUTHOR, _AUTHOR, message, tree, parents))
    return paths


def _tree_of(repo: pygit2.Repository, files: dict[str, bytes]) -> pygit2.Oid:
    """A tree holding `files` (path -> bytes), its folders created on the way."""
    nested: dict[str, Any] = {}
    for path, data in files.items():
        *folders, name = path.split("/")
        node = nested
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = data

    def write(node: dict[str, Any]) -> pygit2.Oid:
        builder = repo.TreeBuilder()
        for name, value in node.items():
            if isinstance(value, dict):
                builder.insert(name, write(value), pygit2.GIT_FILEMODE_TREE)
            else:
                builder.insert(name, repo.create_blob(value), pygit2.GIT_FILEMODE_BLOB)
        return builder.write()

    return write(nested)


def _union(repo: pygit2.Repository, ours: Any, theirs: Any) -> pygit2.Oid:
    """Our tree plus every path of theirs that we lack. A file both have is kept as ours unless
    ours does not hold what its name says and theirs does (a planted file loses to the real
    pair), so a union only adds. It costs what differs."""
    if ours.id == theirs.id:
        return ours.id  # type: ignore[no-any-return]
    builder = None
    for entry in theirs:
        name = entry.name
        mine = ours[name] if name in ours else None  # noqa: SIM401 (a Tree has no .get)
        if mine is None:
            value, mode = entry.id, entry.filemode
        elif mine.type_str == "tree" and entry.type_str == "tree" and mine.id != entry.id:
            value, mode = _union(repo, repo.get(mine.id), repo.get(entry.id)), mine.filemode
        elif (
            mine.id != entry.id
            and _pair_holds(repo, theirs, name)
            and not _pair_holds(repo, ours, name)
        ):
            value, mode = entry.id, entry.filemode
        else:
            continue
        builder = builder or repo.TreeBuilder(ours)
        builder.insert(name, value, mode)
    return builder.write() if builder is not None else ours.id


def _pair_holds(repo: pygit2.Repository, folder: Any, name: str) -> bool:
    """Whether the approval pair that file `name` belongs to in `folder` is what it is named."""
    stem = name.removesuffix(".statement").removesuffix(".sig")
    try:
        statement = repo.get(folder[f"{stem}.statement"].id)
        signature = repo.get(folder[f"{stem}.sig"].id)
    except KeyError:
        return False
    return (
        isinstance(statement, pygit2.Blob)
        and isinstance(signature, pygit2.Blob)
        and _names_its_content(stem, statement.data, signature.data)
    )


def _move_ref(
    repo: pygit2.Repository,
    expected: pygit2.Commit | None,
    target: pygit2.Oid,
    *,
    isolated: bool = False,
) -> None:
    """Move the ref only if nobody else moved it meanwhile: a compare-and-swap under git's own
    ref lock (`git update-ref REF NEW OLD`), so two processes filing at once cannot lose one.
    `isolated`: in a node's quarantine, no hook and no outside configuration."""
    old = str(expected.id) if expected is not None else "0" * 40
    try:
        git(
            repo.path, "update-ref", "-m", "circle: approvals", REF, str(target), old,
            isolated=isolated,
        )  # fmt: skip
    except GitFailed:
        raise ApprovalStoreError(
            f"{REF} moved while an approval was being filed; try again"
        ) from None


def snapshot(repo: pygit2.Repository, ref: str = REF) -> pygit2.Tree | None:
    """The approvals tree as `ref` points now: what a walk reads, consistently (a node reads
    the approvals it fetched into quarantine)."""
    found = _head(repo, ref)
    return found.tree if found is not None else None


def read(repo: pygit2.Repository, commit: pygit2.Oid | None = None) -> Iterator[StoredApproval]:
    """Every approval pair under the ref (or under `commit` of the approvals history)."""
    head = repo.get(commit) if commit is not None else _head(repo)
    if head is None:
        return
    if not isinstance(head, pygit2.Commit):
        raise ApprovalStoreError(f"{commit} is not a commit")
    yield from read_tree(repo, head.tree)


def read_tree(repo: pygit2.Repository, tree: pygit2.Tree) -> Iterator[StoredApproval]:
    """Every approval pair in an approvals `tree` (from `snapshot`)."""
    for seq_entry in tree:
        yield from _pairs(repo, seq_entry, str(seq_entry.name))


def read_seq(repo: pygit2.Repository, seq: int, tree: pygit2.Tree) -> Iterator[StoredApproval]:
    """The approval pairs filed for sequence number `seq` in the approvals `tree` (from
    `snapshot`): one folder, however many the ref holds."""
    name = f"{seq:010d}"
    if name in tree:
        yield from _pairs(repo, tree[name], name)


def folders(repo: pygit2.Repository, seq: int, tree: pygit2.Tree | None) -> list[str]:
    """The names of the `to` folders filed under `seq` (unchecked: anyone can make one)."""
    name = f"{seq:010d}"
    if tree is None or name not in tree:
        return []
    seq_tree = repo.get(tree[name].id)
    if not isinstance(seq_tree, pygit2.Tree):
        return []
    return sorted(str(entry.name) for entry in seq_tree)


def read_folder(
    repo: pygit2.Repository,
    seq: int,
    to: str,
    tree: pygit2.Tree | None,
    signers: Container[str] | None = None,
) -> Iterator[StoredApproval]:
    """The approval pairs filed for `seq: -> to`; with `signers` (SIGNER parts of file names),
    only theirs: the others are not even read."""
    name = f"{seq:010d}"
    if tree is None or name not in tree:
        return
    seq_tree = repo.get(tree[name].id)
    if not isinstance(seq_tree, pygit2.Tree) or to not in seq_tree:
        return
    to_tree = repo.get(seq_tree[to].id)
    if isinstance(to_tree, pygit2.Tree):
        yield from _folder(repo, to_tree, f"{name}/{to}", signers)


def _pairs(repo: pygit2.Repository, seq_entry: Any, seq_name: str) -> Iterator[StoredApproval]:
    seq_tree = repo.get(seq_entry.id)
    if not isinstance(seq_tree, pygit2.Tree):
        return
    for to_entry in seq_tree:
        to_tree = repo.get(to_entry.id)
        if isinstance(to_tree, pygit2.Tree):
            yield from _folder(repo, to_tree, f"{seq_name}/{to_entry.name}", None)


def _folder(
    repo: pygit2.Repository, to_tree: pygit2.Tree, prefix: str, signers: Container[str] | None
) -> Iterator[StoredApproval]:
    files = {str(entry.name): entry.id for entry in to_tree}
    # A statement is often filed more than once (one member's SSH and ML-DSA signatures of it,
    # co-signers of one statement): one blob, read once (its id is its content).
    statements: dict[pygit2.Oid, bytes | None] = {}
    for name, statement_id in files.items():
        if not name.endswith(".statement"):
            continue
        if signers is not None and name.partition("-")[0] not in signers:
            continue
        signature_id = files.get(name.removesuffix(".statement") + ".sig")
        if signature_id is None:
            continue
        if statement_id in statements:
            statement = statements[statement_id]
        else:
            statement = statements[statement_id] = _blob(repo, statement_id, MAX_STATEMENT_BYTES)
        signature = _blob(repo, signature_id, MAX_SIGNATURE_BYTES)
        if statement is None or signature is None:
            continue
        if _names_its_content(name, statement, signature):
            yield StoredApproval(
                f"{prefix}/{name}", statement, signature.decode("utf-8", "replace")
            )


def _blob(repo: pygit2.Repository, oid: pygit2.Oid, limit: int) -> bytes | None:
    """The bytes of blob `oid` if it is one of at most `limit` bytes: larger ones are no
    approval, and are not even read."""
    try:
        kind, size = repo.odb.read_header(oid)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if kind != _BLOB or size > limit:
        return None
    return bytes(repo.odb.read(oid)[1])  # the raw object: no Blob made around it


def merge(repo: pygit2.Repository, other: pygit2.Oid, *, isolated: bool = False) -> pygit2.Oid:
    """Union the approvals of `other` (fetched from another clone) into the ref.

    Pairs are added, never replaced or removed: a path on both sides is kept as ours (names
    follow from content, so only a forged file can differ), and a deletion on their side is
    never followed.
    """
    head = _head(repo)
    theirs: Any = repo.get(other)
    if not isinstance(theirs, pygit2.Commit):
        raise ApprovalStoreError(f"{other} is not an approvals commit")
    if head is None:
        _move_ref(repo, None, theirs.id, isolated=isolated)
        return theirs.id
    if head.id == theirs.id or repo.descendant_of(head.id, theirs.id):
        return head.id
    tree = _union(repo, head.tree, theirs.tree)
    if tree == theirs.tree.id and repo.descendant_of(theirs.id, head.id):
        _move_ref(repo, head, theirs.id, isolated=isolated)  # theirs holds all of ours
        return theirs.id
    # Otherwise a merge commit, even when theirs brings nothing new: theirs may have dropped
    # files (never followed), and our next push must still descend from it.
    parents = [head.id, theirs.id]
    commit = repo.create_commit(None, _AUTHOR, _AUTHOR, "merge approvals", tree, parents)
    _move_ref(repo, head, commit, isolated=isolated)
    return commit
