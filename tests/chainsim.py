"""`ChainSimulator`: a real circle repository (pygit2) with generated members, for chain tests
and the chain benchmark. Commits, forks, resets and approvals are real Git objects; approvals are
real SSHSIG signatures filed in the approvals ref exactly as `circle approve` files them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pygit2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import sshsig
from reconciler.chain import approvals
from reconciler.chain.statements import NAMESPACE, Approval
from reconciler.chain.trees import TreeReader, commit_of
from reconciler.chain.values import Introduction, NodeState, sha256
from reconciler.chain.walk import MAIN, Chain, introduction
from tests.conftest import EXAMPLE

NOW = 1_700_000_100
_AUTHOR = pygit2.Signature("sim", "sim@example.org", 1_700_000_000, 0)
_DOCUMENTS = ("circle.yaml", "nodes", "workloads", "builds", "volumes")


def circle_policy(keys: dict[str, Ed25519PrivateKey], version: int = 1) -> bytes:
    """The example circle.yaml with its owners' keys replaced by `keys`' public halves."""
    text = (EXAMPLE / "circle.yaml").read_text()
    for name, key in keys.items():
        text = re.sub(
            rf"ssh-ed25519 \S+ {name}@example-circle",
            sshsig.public_key_line(key, f"{name}@test"),
            text,
        )
    return text.replace("version: 1\n", f"version: {version}\n").encode()


class ChainSimulator:
    """One circle: members alice, bob, carol (the example's policy: governance 3 of 3,
    workloads 2, everything else 2), plus `mallory`, who is no member."""

    def __init__(self, root: Path) -> None:
        self.keys = {n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "mallory")}
        self.repo = pygit2.init_repository(str(root), bare=True, initial_head="main")
        files = {
            str(path.relative_to(EXAMPLE)): path.read_bytes()
            for top in _DOCUMENTS
            for path in sorted((EXAMPLE / top).rglob("*") if top != "circle.yaml" else [])
            if path.is_file()
        }
        files["circle.yaml"] = circle_policy(self.keys)
        self.first = self.commit(files, "the circle", parents=[])
        self.trees = TreeReader(self.repo)

    # --- history -------------------------------------------------------------------------

    def read(self, path: str, revision: str = MAIN) -> bytes:
        blob = self.repo.get(commit_of(self.repo, revision).tree[path].id)
        assert isinstance(blob, pygit2.Blob)
        return bytes(blob.data)

    def commit(
        self,
        files: dict[str, bytes | None],
        message: str = "change",
        *,
        parents: list[str] | None = None,
        ref: str | None = MAIN,
        modes: dict[str, int] | None = None,
    ) -> str:
        """Commit `files` (None deletes) on top of `parents` (default: the tip of `ref`)."""
        if parents is None:
            parents = [str(self.repo.references[ref].target)] if ref else []
        base: Any = commit_of(self.repo, parents[0]).tree if parents else None
        tree = self._write(base, files, modes or {})
        oid = self.repo.create_commit(None, _AUTHOR, _AUTHOR, message, tree, parents)
        if ref is not None:
            self.repo.references.create(ref, oid, force=True)
        return str(oid)

    def _write(self, base: Any, files: dict[str, bytes | None], modes: dict[str, int]) -> Any:
        index = pygit2.Index()
        if base is not None:
            index.read_tree(base)
        for path, data in files.items():
            if data is None:
                index.remove(path)
            else:
                mode = modes.get(path, pygit2.GIT_FILEMODE_BLOB)
                index.add(pygit2.IndexEntry(path, self.repo.create_blob(data), mode))
        return index.write_tree(self.repo)

    def edit(self, path: str, old: str, new: str, *, ref: str = MAIN, **extra: Any) -> str:
        """Replace `old` by `new` in `path` at the tip of `ref` and commit it."""
        text = self.read(path, ref).decode()
        assert old in text, f"{old!r} not in {path}"
        return self.commit({path: text.replace(old, new, 1).encode()}, ref=ref, **extra)

    def scale(self, replicas: int, **extra: Any) -> str:
        """A workload change (the `workloads` rule: 2 of 3)."""
        text = self.read("workloads/langid.yaml").decode()
        changed = re.sub(r"replicas: \d+", f"replicas: {replicas}", text, count=1)
        return self.commit({"workloads/langid.yaml": changed.encode()}, **extra)

    def reset(self, commit: str, ref: str = MAIN) -> None:
        self.repo.references.create(ref, pygit2.Oid(hex=commit), force=True)

    # --- approvals -----------------------------------------------------------------------

    @functools.cached_property
    def intro(self) -> Introduction:
        return introduction(self.repo)

    def statement(
        self, seq: int, start: str | None, to: str, *, now: int = NOW, **overrides: Any
    ) -> bytes:
        """The statement `circle approve` would write for `seq: start -> to`."""
        step = self.trees.transition(ref=MAIN, seq=seq, from_commit=start, to_commit=to)
        in_force = step.policy_from if step.policy_from is not None else step.policy_to
        intro = self.intro
        fields: dict[str, Any] = {
            "circle": intro.circle,
            "introduction": intro.commit,
            "ref": step.ref,
            "seq": seq,
            "from_commit": step.from_commit,
            "to_commit": step.to_commit,
            "to_tree": step.to_tree,
            "tree_sha256": step.tree_sha256,
            "policy_sha256": sha256(in_force),
            "issued_at": now - 60,
            "expires_at": now + 86_400,
        } | overrides
        return Approval(**fields).encode()

    def sign(
        self, statement: bytes, *names: str, namespace: str = NAMESPACE
    ) -> list[tuple[bytes, str]]:
        return [(statement, sshsig.sign(statement, self.keys[n], namespace)) for n in names]

    def approve(
        self,
        seq: int,
        start: str | None,
        to: str,
        names: Iterable[str],
        *,
        now: int = NOW,
        **overrides: Any,
    ) -> None:
        """File approvals of `seq: start -> to` by `names`."""
        data = self.statement(seq, start, to, now=now, **overrides)
        approvals.add_many(self.repo, self.sign(data, *names))

    def chain(self) -> Chain:
        return Chain(self.repo, self.intro)

    def walk(self, state: NodeState | None = None, now: int = NOW) -> NodeState | None:
        return self.chain().walk(now, state)[1]
