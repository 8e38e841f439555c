"""`ChainSimulator`: a real circle repository (pygit2) with generated members, for chain tests
and the chain benchmark. Commits, forks, resets and approvals are real Git objects; approvals are
real SSHSIG signatures (and, for members given an ML-DSA-65 key, real ML-DSA envelopes) filed in
the approvals ref exactly as `circle approve` files them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pygit2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from pygit2.enums import FileMode

from builders import sshsig
from reconciler.chain import approvals, mldsa
from reconciler.chain.statements import NAMESPACE, Approval
from reconciler.chain.trees import TreeReader, commit_of
from reconciler.chain.values import Introduction, NodeState, sha256
from reconciler.chain.walk import MAIN, Chain, introduction
from tests.conftest import EXAMPLE

NOW = 1_700_000_100
_AUTHOR = pygit2.Signature("sim", "sim@example.org", 1_700_000_000, 0)
_DOCUMENTS = ("circle.yaml", "nodes", "workloads", "builds", "volumes", "secrets")


def circle_policy(
    keys: dict[str, Ed25519PrivateKey],
    version: int = 1,
    *,
    pq: Mapping[str, MLDSA65PrivateKey] | None = None,
    signatures: Mapping[str, str] | None = None,
) -> bytes:
    """The example circle.yaml with its owners' keys replaced by `keys`' public halves; the
    members of `pq` also hold those ML-DSA-65 keys (listed after their SSH key), and each rule
    named in `signatures` counts signatures as it says (`classic`, `hybrid`, `post-quantum`)."""
    text = (EXAMPLE / "circle.yaml").read_text()
    for name, key in keys.items():
        line = sshsig.public_key_line(key, f"{name}@test")
        if pq and name in pq:
            mldsa_line = mldsa.public_key_line(pq[name], f"{name}@pq")
            line += f"\n      - type: ml-dsa-65\n        key: {mldsa_line}"
        text = re.sub(rf"ssh-ed25519 \S+ {name}@example-circle", line, text)
    for rule, mode in (signatures or {}).items():
        text, found = re.subn(rf"(    - name: {rule}\n)", rf"\g<1>      signatures: {mode}\n", text)
        assert found == 1, f"the example has no rule {rule}"
    return text.replace("version: 1\n", f"version: {version}\n").encode()


class ChainSimulator:
    """One circle: members alice, bob, carol (the example's policy: governance 3 of 3,
    workloads 2, everything else 2), plus `mallory`, who is no member.

    The members named in `pq` also hold an ML-DSA-65 key (`self.pq`; mallory always has one
    too), and the rules named in `signatures` count signatures as it says, e.g.
    `{"workloads": "hybrid"}`: the circle is introduced with that policy."""

    def __init__(
        self,
        root: Path,
        *,
        pq: Iterable[str] = (),
        signatures: Mapping[str, str] | None = None,
    ) -> None:
        self.keys = {n: Ed25519PrivateKey.generate() for n in ("alice", "bob", "carol", "mallory")}
        self.pq = {n: MLDSA65PrivateKey.generate() for n in dict.fromkeys([*pq, "mallory"])}
        self.repo = pygit2.init_repository(str(root), bare=True, initial_head="main")
        files: dict[str, bytes | None] = {
            str(path.relative_to(EXAMPLE)): path.read_bytes()
            for top in _DOCUMENTS
            for path in sorted((EXAMPLE / top).rglob("*") if top != "circle.yaml" else [])
            if path.is_file()
        }
        members = {name: key for name, key in self.pq.items() if name != "mallory"}
        files["circle.yaml"] = circle_policy(self.keys, pq=members, signatures=signatures)
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
                entry = pygit2.IndexEntry(path, self.repo.create_blob(data), FileMode(mode))
                index.add(entry)
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

    def sign_mldsa(
        self, statement: bytes, *names: str, namespace: str = NAMESPACE
    ) -> list[tuple[bytes, str]]:
        """ML-DSA-65 envelopes of `statement` by `names`' ML-DSA keys (`namespace` as context)."""
        return [(statement, mldsa.sign(statement, self.pq[n], namespace)) for n in names]

    def approve(
        self,
        seq: int,
        start: str | None,
        to: str,
        names: Iterable[str],
        *,
        now: int = NOW,
        pq: Iterable[str] = (),
        **overrides: Any,
    ) -> None:
        """File approvals of `seq: start -> to` by `names` (SSHSIG) and by `pq` (ML-DSA-65)."""
        data = self.statement(seq, start, to, now=now, **overrides)
        approvals.add_many(self.repo, self.sign(data, *names) + self.sign_mldsa(data, *pq))

    def chain(self) -> Chain:
        return Chain(self.repo, self.intro)

    def walk(self, state: NodeState | None = None, now: int = NOW) -> NodeState | None:
        return self.chain().walk(now, state)[1]
