"""Walk the approved chain of a repository: cold from its introduction, or on from a node state.

For seq n = state.seq + 1, n + 1, ... the approvals filed under that seq are read (one folder
of the approvals ref), each candidate `to` is read from Git and verified from the state the
previous step produced. Exactly one candidate may verify per seq: two approved `to` commits
for one seq are an equivocation and stop the walk with an error; none ends the chain there.

A `Chain` keeps what the next step reads again (the last tree listings, every blob's sha256,
every parsed policy), so a walk costs about one tree diff and the signature checks per step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pygit2

from builders import BuildError, sshsig
from reconciler.adapters import approvals
from reconciler.adapters.chain_git import TreeReader, commit_of, policy_at
from reconciler.core.chain import (
    ChainError,
    Evidence,
    IdentityVerifier,
    Introduction,
    NodeState,
    SshCheck,
    Transition,
    Verdict,
    check_ssh,
    members_by_key,
    sha256,
    verify,
)
from reconciler.core.documents import parse_document
from reconciler.errors import CheckFailed, DocumentError
from reconciler.model import KINDS, Circle

MAIN = "refs/heads/main"
_SEQ = re.compile(r"[0-9]{10}")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")  # candidates are named by full commit ids only


class Equivocation(ChainError):
    """Two different commits approved for one sequence number."""


@dataclass(frozen=True)
class Step:
    seq: int
    commit: str
    signers: tuple[str, ...]
    policy_version: int


def policy(data: bytes) -> Circle:
    try:
        loaded = parse_document(data, "circle.yaml", [KINDS["Circle"]])
    except DocumentError as error:
        raise ChainError(f"circle.yaml is not a valid policy: {error}") from None
    assert isinstance(loaded.document, Circle)
    return loaded.document


def introduction(repo: pygit2.Repository, ref: str = MAIN) -> Introduction:
    """This repository's introduction: its circle id, first commit and first policy's sha256."""
    try:
        tip = repo.references[ref].target
    except KeyError:
        raise ChainError(f"the repository has no {ref}") from None
    walker = repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL)
    roots = [commit for commit in walker if not commit.parents]
    if len(roots) != 1:
        raise ChainError(f"{ref} has {len(roots)} root commits; a circle has exactly one")
    first = policy_at(repo, roots[0])  # the blob alone: no need to read the whole tree
    return Introduction(policy(first).id, str(roots[0].id), sha256(first))


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
        self._identities = identities
        self._trees = TreeReader(repo)
        self._policies: dict[str, Circle] = {}
        self._read: dict[int, dict[str, list[Evidence]]] | None = None  # every seq, when read
        self._ssh: SshCheck = check_ssh

    def _likely_signers(self) -> set[bytes]:
        """Keys of the first policy's and of the tip's members: the signatures worth checking
        ahead (others are checked in turn, if ever a policy in force names their key)."""
        keys: set[bytes] = set()
        for revision in (self.intro.commit, self.ref):
            try:
                data = policy_at(self.repo, commit_of(self.repo, revision))
                keys |= members_by_key(self.policy(data)).keys()
            except CheckFailed:
                continue
        return keys

    def candidates(self, seq: int) -> dict[str, list[Evidence]]:
        """The approvals filed for `seq`, by the `to` commit they approve."""
        if self._read is not None:
            return self._read.get(seq, {})
        return candidates(self.repo, seq, self.approvals)

    def policy(self, data: bytes) -> Circle:
        """`data` parsed as a policy, once per distinct policy."""
        digest = sha256(data)
        found = self._policies.get(digest)
        if found is None:
            found = self._policies[digest] = policy(data)
        return found

    def transition(self, state: NodeState | None, to: str) -> Transition:
        seq = state.seq + 1 if state else 1
        return self._trees.transition(
            ref=self.ref, seq=seq, from_commit=state.commit if state else None, to_commit=to
        )

    def check(
        self, state: NodeState | None, to: str, evidence: list[Evidence], now: int
    ) -> tuple[Verdict, Circle]:
        """The verdict on `state -> to` with `evidence`, or the ChainError that refuses it."""
        step = self.transition(state, to)
        before = self.policy(step.policy_from) if step.policy_from is not None else None
        after = self.policy(step.policy_to)
        verdict = verify(
            self.intro, state, step, before, after, evidence, now, self._identities, ssh=self._ssh
        )
        return verdict, after

    def next(self, state: NodeState | None, now: int) -> tuple[Step, NodeState] | None:
        """The approved step after `state`, or None if there is none (yet).

        Candidates that do not verify are simply not this chain's next step; two that do are
        an equivocation."""
        seq = state.seq + 1 if state else 1
        approved: list[tuple[str, Verdict, Circle]] = []
        for to, evidence in sorted(self.candidates(seq).items()):
            try:
                approved.append((to, *self.check(state, to, evidence, now)))
            except CheckFailed:
                continue
        if len(approved) > 1:
            commits = ", ".join(to[:12] for to, _, _ in approved)
            raise Equivocation(f"seq {seq} has {len(approved)} approved commits ({commits})")
        if not approved:
            return None
        to, verdict, after = approved[0]
        return Step(seq, to, verdict.signers, after.version), verdict.state

    def walk(self, now: int, state: NodeState | None = None) -> tuple[list[Step], NodeState | None]:
        """Every approved step after `state` (from the introduction when None), and the state
        after the last one.

        From the introduction, every approval is read at once and the SSH signatures are
        checked ahead on other cores while this thread reads Git (`_Ahead`)."""
        workers = _cores()
        ahead = _Ahead(workers) if state is None and workers > 1 else None
        if ahead is not None:
            self._read = _read_all(self.repo, self.approvals, ahead, self._likely_signers())
            self._ssh = ahead
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
                self._ssh = check_ssh


def _cores() -> int:
    """The cores this process may run on (all of them where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _Ahead:
    """SSH signatures checked ahead of a walk on a thread pool. OpenSSL verifies without the
    GIL, so later steps' signatures are checked while the walk reads Git; the walk still asks
    for every signature it counts and gets exactly the answer `check_ssh` would give."""

    BATCH = 64

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="circle-verify")
        self._pending: dict[tuple[bytes, sshsig.SshSignature], tuple[Future[_Results], int]] = {}

        self._batch: list[tuple[bytes, sshsig.SshSignature]] = []

    def add(self, statement: bytes, signature: sshsig.SshSignature) -> None:
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
        found = self._pending.get((statement, signature))
        if found is None:
            check_ssh(statement, signature)
            return
        future, index = found
        error = future.result()[index]
        if error is not None:
            raise error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_Results = list[BuildError | None]


def _check_all(batch: list[tuple[bytes, sshsig.SshSignature]]) -> _Results:
    results: _Results = []
    for statement, signature in batch:
        try:
            check_ssh(statement, signature)
            results.append(None)
        except BuildError as error:
            results.append(error)
    return results


def _read_all(
    repo: pygit2.Repository, tree: pygit2.Tree | None, ahead: _Ahead, keys: set[bytes]
) -> dict[int, dict[str, list[Evidence]]]:
    """Every approval in the approvals `tree`, by seq and `to` commit; the SSH signatures by
    `keys` are handed to `ahead` as they are read, in seq order."""
    found: dict[int, dict[str, list[Evidence]]] = {}
    if tree is not None:
        for stored in approvals.read_tree(repo, tree):
            seq, to, _ = stored.path.split("/", 2)
            if not (_SEQ.fullmatch(seq) and _COMMIT_ID.fullmatch(to)):
                continue
            try:
                parsed: sshsig.SshSignature | None = sshsig.parse(stored.signature)
            except BuildError:
                parsed = None  # not SSHSIG (a sigstore bundle) or malformed: checked in turn
            found.setdefault(int(seq), {}).setdefault(to, []).append(
                Evidence(stored.statement, stored.signature, parsed)
            )
            if parsed is not None and parsed.public_key in keys:
                ahead.add(stored.statement, parsed)
    ahead.flush()
    return found


def candidates(
    repo: pygit2.Repository, seq: int, tree: pygit2.Tree | None
) -> dict[str, list[Evidence]]:
    """The approvals filed for `seq` in the approvals `tree`, by the `to` commit they approve."""
    found: dict[str, list[Evidence]] = {}
    if tree is not None:
        for stored in approvals.read_seq(repo, seq, tree):
            to = stored.path.split("/", 2)[1]
            if _COMMIT_ID.fullmatch(to):  # another spelling of a commit is no second candidate
                found.setdefault(to, []).append(Evidence(stored.statement, stored.signature))
    return found


class Deferred:
    """An identity verifier made the first time a bundle is met (sigstore is slow to import,
    and most circles never use it)."""

    def __init__(self, make: Callable[[], IdentityVerifier]) -> None:
        self._make = make
        self._made: IdentityVerifier | None = None

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]:
        if self._made is None:
            self._made = self._make()
        return self._made.identify(message, bundle)
