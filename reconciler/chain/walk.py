"""Walk the approved chain of a repository: cold from its introduction, or on from a node state.

For seq n = state.seq + 1, n + 1, ... the approvals filed under that seq are read (one folder
of the approvals ref), each candidate `to` is read from Git and verified from the state the
previous step produced. Exactly one candidate may verify per seq: two approved `to` commits
for one seq are an equivocation and stop the walk with an error; none ends the chain there.

A `Chain` keeps what the next step reads again (the last tree listings, every blob's sha256,
every parsed policy), so a walk costs about one tree diff and the signature checks per step.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pygit2

from builders import BuildError, sshsig
from reconciler.chain import approvals, mldsa
from reconciler.chain.trees import TreeReader, bounded_commit, commit_of, exact_commit, policy_at
from reconciler.chain.values import (
    Evidence,
    IdentityVerifier,
    Introduction,
    NodeState,
    Transition,
    sha256,
)
from reconciler.chain.verify import (
    ChainError,
    Verdict,
    Verifier,
    check_mldsa,
    check_ssh,
    parse_policy,
)
from reconciler.desired.model import Circle
from reconciler.desired.model.circle import POLICY_FILE
from reconciler.errors import CheckFailed

MAIN = "refs/heads/main"
_SEQ = re.compile(r"[0-9]{10}")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")  # candidates are named by full commit ids only


@dataclass(frozen=True)
class Step:
    seq: int
    commit: str
    signers: tuple[str, ...]
    policy_version: int


@dataclass(frozen=True)
class Found:
    """A repository's introduction, and the root commits on its main that are not it (another
    history merged in: junk, until the owners say otherwise)."""

    intro: Introduction
    foreign_roots: tuple[str, ...] = ()


def introduction(
    repo: pygit2.Repository, ref: str = MAIN, *, now: int | None = None
) -> Introduction:
    """This repository's introduction: its circle id, first commit and first policy's sha256."""
    return find_introduction(repo, ref, now=now).intro


def find_introduction(repo: pygit2.Repository, ref: str = MAIN, *, now: int | None = None) -> Found:
    """The introduction of the history on `ref`.

    One root commit is the introduction. With several (anyone who can push may merge another
    root into main), the introduction is the one root whose first transition is approved by its
    own policy's governance; the others are named, never trusted. With none or several such
    roots, the owners must say which (`--introduction FILE`)."""
    tip = tip_commit(repo, ref)
    walker = repo.walk(tip.id, pygit2.enums.SortMode.TOPOLOGICAL)
    roots = [commit for commit in walker if not commit.parents]
    if len(roots) == 1:
        only = _introduction_at(repo, roots[0], alone=True)
        assert only is not None
        return Found(only)
    stamp = int(time.time()) if now is None else now
    # Only a root some approval of seq 1 names can be the circle's: the others are not read.
    filed = set(approvals.folders(repo, 1, approvals.snapshot(repo)))
    intros = [_introduction_at(repo, root, alone=False) for root in roots if str(root.id) in filed]
    approved = [i for i in intros if i is not None and _genesis_approved(repo, i, ref, stamp)]
    names = ", ".join(str(root.id)[:12] for root in roots)
    if len(approved) != 1:
        which = "none has" if not approved else f"{len(approved)} have"
        raise ChainError(
            f"{ref} has {len(roots)} root commits ({names}) and {which} an approved first "
            "transition: give the circle's introduction with --introduction FILE"
        )
    chosen = approved[0]
    return Found(chosen, tuple(str(r.id) for r in roots if str(r.id) != chosen.commit))


def _introduction_at(repo: pygit2.Repository, root: Any, *, alone: bool) -> Introduction | None:
    """The introduction `root` would be; None when it holds no valid policy (refused instead
    when it is the only root: then it is the circle's, and broken)."""
    try:
        first = policy_at(repo, root)  # the blob alone: no need to read the whole tree
        return Introduction(parse_policy(first).id, str(root.id), sha256(first))
    except ChainError:
        if alone:
            raise
        return None


def _genesis_approved(repo: pygit2.Repository, intro: Introduction, ref: str, now: int) -> bool:
    """Whether the first step to `intro`'s own commit is approved by its own policy (only the
    approvals filed for that commit are read)."""
    chain = Chain(repo, intro, ref)
    try:
        chain.check(None, intro.commit, chain.evidence(1, intro.commit), now)
    except CheckFailed:
        return False
    return True


def tip_commit(repo: pygit2.Repository, ref: str = MAIN, *, display: str | None = None) -> Any:
    """The commit `ref` points at; a ChainError for a missing ref, a tag, a tree, a blob or an
    oversized commit (a circle's main names its commits exactly: no tag is peeled)."""
    shown = display or ref
    try:
        target = repo.references[ref].target
    except KeyError:
        hint = "; in a clone of a circle, run circle pull, or start from circle clone URL"
        raise ChainError(
            f"{shown} does not exist (no commits yet){hint if ref == MAIN else ''}"
        ) from None
    except (pygit2.GitError, ValueError) as error:
        raise ChainError(f"{shown} cannot be read: {error}") from None
    if not isinstance(target, pygit2.Oid):
        raise ChainError(f"{shown} is a symbolic reference, not a commit")
    if target not in repo:
        raise ChainError(f"{shown} points at nothing ({str(target)[:12]}), not a commit")
    return bounded_commit(repo, target, f"{shown} ({str(target)[:12]})")


class Chain:
    """The approved chain of one repository, as a node or an owner's clone verifies it.

    The approvals ref is read as it is when the Chain is made (a snapshot), so a walk sees one
    consistent set of approvals even while co-signers file more.
    """

    def __init__(
        self,
        repo: pygit2.Repository,
        intro: Introduction,
        ref: str = MAIN,
        *,
        identities: IdentityVerifier | None = None,
        approvals_ref: str = approvals.REF,
    ) -> None:
        self.repo = repo
        self.intro = intro
        self.ref = ref
        self.approvals = approvals.snapshot(repo, approvals_ref)
        self._trees = TreeReader(repo)
        self.verifier = Verifier(intro, identities=identities)
        self.policies = self.verifier.policies
        self._read: dict[int, dict[str, list[Evidence]]] | None = None  # every seq, when read

    def _likely_signers(self) -> set[bytes]:
        """Keys of the first policy's and of the tip's members: the signatures worth checking
        ahead (others are checked in turn, if ever a policy in force names their key)."""
        keys: set[bytes] = set()
        for revision in (self.intro.commit, self.ref):
            try:
                data = policy_at(self.repo, commit_of(self.repo, revision))
                keys |= self.policies(data).by_key.keys()
            except CheckFailed:
                continue
        return keys

    def candidate_commits(self, seq: int) -> list[str]:
        """The `to` commits approvals are filed for under `seq`: folders named by the full id
        of a commit of this repository (another spelling of a commit is no second candidate,
        and a name of nothing is no candidate at all)."""
        if self._read is not None:
            return sorted(self._read.get(seq, {}))
        return [
            to
            for to in approvals.folders(self.repo, seq, self.approvals)
            if _COMMIT_ID.fullmatch(to) and _is_commit(self.repo, to)
        ]

    def evidence(self, seq: int, to: str, signers: set[str] | None = None) -> list[Evidence]:
        """The approvals filed for `seq: -> to` (only those by `signers`, file names' SIGNER
        parts, when given: the others are not read)."""
        if self._read is not None:
            return self._read.get(seq, {}).get(to, [])
        return [
            Evidence(stored.statement, stored.signature)
            for stored in approvals.read_folder(self.repo, seq, to, self.approvals, signers)
        ]

    def candidates(self, seq: int) -> dict[str, list[Evidence]]:
        """The approvals filed for `seq`, by the `to` commit they approve."""
        return {to: self.evidence(seq, to) for to in self.candidate_commits(seq)}

    def _signer_names(self, state: NodeState | None) -> set[str] | None:
        """The SIGNER file-name parts of the keys of the policy in force after `state`: pairs
        by anyone else cannot count, so they are not read. None (read all) when the policy has
        sigstore members, whose bundles are named by certificate, not by key."""
        try:
            commit = exact_commit(self.repo, self.intro.commit if state is None else state.commit)
            policy = self.policies(policy_at(self.repo, commit))
        except CheckFailed:
            return None
        if policy.by_identity:
            return None
        return {hashlib.sha256(blob).hexdigest()[:16] for blob in policy.by_key}

    def policy(self, data: bytes) -> Circle:
        """`data` parsed as a policy, once per distinct policy (PolicyError if it is none)."""
        return self.policies(data).circle

    def transition(self, state: NodeState | None, to: str) -> Transition:
        seq = state.seq + 1 if state else 1
        return self._trees.transition(
            ref=self.ref, seq=seq, from_commit=state.commit if state else None, to_commit=to
        )

    def check(
        self,
        state: NodeState | None,
        to: str,
        evidence: list[Evidence],
        now: int,
        *,
        vouched_first: bool = True,
    ) -> Verdict:
        """The verdict on `state -> to` with `evidence`, or the ChainError that refuses it.

        Only the commit object of `to` is read until a member's valid approval vouches for it
        (`reconciler.chain.verify.vouch`); then its trees, then its policy if it changes one.
        Without `vouched_first` (an owner asking about their own commit), the trees are read
        at once, so that an unsigned change is refused rule by rule."""
        vouched = None
        if vouched_first:
            seq = state.seq + 1 if state else 1
            header = self._trees.header(
                ref=self.ref, seq=seq, from_commit=state.commit if state else None, to_commit=to
            )
            vouched = self.verifier.vouch(state, header, evidence, now)
        return self.verifier.verify(
            state, self.transition(state, to), evidence, now, vouched=vouched
        )

    def _judge(self, state: NodeState | None, to: str, names: set[str] | None, now: int) -> Verdict:
        """`check` of one candidate as a node walks: its folder read now (by members' keys
        only, until a policy change asks for its new members' approvals too), and dropped
        after, so a seq with much junk costs one folder at a time."""
        seq = state.seq + 1 if state else 1
        header = self._trees.header(
            ref=self.ref, seq=seq, from_commit=state.commit if state else None, to_commit=to
        )
        self.verifier.place(state, header)  # misplaced: refused before its folder is read
        evidence = self.evidence(seq, to, names)
        vouched = self.verifier.vouch(state, header, evidence, now)
        step = self.transition(state, to)
        if names is not None and POLICY_FILE in step.changed:
            evidence = self.evidence(seq, to)  # the new policy's members count for it too
        return self.verifier.verify(state, step, evidence, now, vouched=vouched)

    def next(self, state: NodeState | None, now: int) -> tuple[Step, NodeState] | None:
        """The approved step after `state`, or None if there is none (yet).

        Candidates that do not verify (unsigned, unreadable, invalid: whatever their content)
        are simply not this chain's next step; two that do are an equivocation."""
        seq = state.seq + 1 if state else 1
        names = self._signer_names(state) if self._read is None else None
        chosen = self.verifier.choose(
            seq,
            [
                (to, functools.partial(self._judge, state, to, names, now))
                for to in self.candidate_commits(seq)
            ],
        )
        if chosen is None:
            return None
        to, verdict = chosen
        return Step(seq, to, verdict.signers, verdict.policy.version), verdict.state

    def walk(self, now: int, state: NodeState | None = None) -> tuple[list[Step], NodeState | None]:
        """Every approved step after `state` (from the introduction when None), and the state
        after the last one.

        From the introduction, every approval is read at once and the SSH and ML-DSA
        signatures are checked ahead on other cores while this thread reads Git (`_Ahead`)."""
        workers = _cores()
        ahead = _Ahead(workers) if state is None and workers > 1 else None
        if ahead is not None:
            self._read = _read_all(self.repo, self.approvals, ahead, self._likely_signers())
            self.verifier.ssh = ahead
            self.verifier.mldsa_check = ahead.check_mldsa
        try:
            steps: list[Step] = []
            while True:
                found = self.next(state, now)
                if found is None:
                    break
                step, state = found
                steps.append(step)
            return steps, state
        finally:
            if ahead is not None:
                ahead.close()
                self.verifier.ssh = check_ssh
                self.verifier.mldsa_check = check_mldsa


def _cores() -> int:
    """The cores this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_Parsed = sshsig.SshSignature | mldsa.MlDsaSignature


class _Ahead:
    """SSH and ML-DSA signatures checked ahead of a walk on a thread pool. OpenSSL verifies
    without the GIL, so later steps' signatures are checked while the walk reads Git; the walk
    still asks for every signature it counts and gets exactly the answer `check_ssh` (or
    `check_mldsa`) would give."""

    BATCH = 64

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="circle-verify")
        self._pending: dict[tuple[bytes, _Parsed], tuple[Future[_Results], int]] = {}

        self._batch: list[tuple[bytes, _Parsed]] = []

    def add(self, statement: bytes, signature: _Parsed) -> None:
        """Queue one pair; a full batch goes to the pool at once (checking starts while the
        approvals are still being read)."""
        self._batch.append((statement, signature))
        if len(self._batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            future = self._pool.submit(_check_all, batch)
            for index, pair in enumerate(batch):
                self._pending[pair] = (future, index)

    def __call__(self, statement: bytes, signature: sshsig.SshSignature) -> None:
        if not self._answer(statement, signature):
            check_ssh(statement, signature)

    def check_mldsa(self, statement: bytes, signature: mldsa.MlDsaSignature) -> None:
        if not self._answer(statement, signature):
            check_mldsa(statement, signature)

    def _answer(self, statement: bytes, signature: _Parsed) -> bool:
        """Raise what checking ahead found, if `signature` was checked ahead (True)."""
        found = self._pending.get((statement, signature))
        if found is None:
            return False
        future, index = found
        error = future.result()[index]
        if error is not None:
            raise error
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_Results = list[BuildError | mldsa.MlDsaError | None]


def _check_all(batch: list[tuple[bytes, _Parsed]]) -> _Results:
    results: _Results = []
    for statement, signature in batch:
        try:
            if isinstance(signature, mldsa.MlDsaSignature):
                check_mldsa(statement, signature)
            else:
                check_ssh(statement, signature)
            results.append(None)
        except (BuildError, mldsa.MlDsaError) as error:
            results.append(error)
    return results


def _read_all(
    repo: pygit2.Repository, tree: pygit2.Tree | None, ahead: _Ahead, keys: set[bytes]
) -> dict[int, dict[str, list[Evidence]]]:
    """Every approval in the approvals `tree`, by seq and `to` commit; the SSH and ML-DSA
    signatures by `keys` are handed to `ahead` as they are read, in seq order."""
    found: dict[int, dict[str, list[Evidence]]] = {}
    if tree is not None:
        for stored in approvals.read_tree(repo, tree):
            seq, to, _ = stored.path.split("/", 2)
            if not (_SEQ.fullmatch(seq) and _COMMIT_ID.fullmatch(to)):
                continue
            parsed: sshsig.SshSignature | None = None
            envelope: mldsa.MlDsaSignature | None = None
            try:
                if mldsa.is_envelope(stored.signature):
                    envelope = mldsa.parse(stored.signature)
                else:
                    parsed = sshsig.parse(stored.signature)
            except (BuildError, mldsa.MlDsaError):
                pass  # a sigstore bundle, or malformed: checked (and refused) in turn
            found.setdefault(int(seq), {}).setdefault(to, []).append(
                Evidence(stored.statement, stored.signature, parsed, envelope)
            )
            checked = parsed or envelope
            if checked is not None and checked.public_key in keys:
                ahead.add(stored.statement, checked)
    ahead.flush()
    return found


def _is_commit(repo: pygit2.Repository, commit_id: str) -> bool:
    try:
        kind, _ = repo.odb.read_header(pygit2.Oid(hex=commit_id))
    except (KeyError, ValueError, pygit2.GitError):
        return False
    return bool(kind == pygit2.enums.ObjectType.COMMIT)


class Deferred:
    """An identity verifier made the first time a bundle is met (sigstore is slow to import,
    and most circles never use it)."""

    def __init__(self, make: Callable[[], IdentityVerifier], label: str = "") -> None:
        self._make = make
        self._made: IdentityVerifier | None = None
        self.label = label  # which trust root: answers cached under one hold for it only

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]:
        if self._made is None:
            self._made = self._make()
        return self._made.identify(message, bundle)
