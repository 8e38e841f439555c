"""Pre-staging on the node: the artifacts of a proposal on its way are fetched, verified and
sealed before its quorum lands, so that the install, when it does, finds the tree in place
(ADR 0008, issue 15 part 3). The policy is `reconciler.plan.prestage`'s; this is its adapter.

    agent pass --offer(Round)--> a thread of its own:
        pending   the quorum-pending next transitions, each with the members whose approvals
                  verify as the chain verifies them (`Verifier.vouch`, then `assess`: the
                  policy in force, the signature, the statement, its tree; expired ones do
                  not count), and the desired state at its commit (the strict parser)
        plan      what to stage and evict, within the budget
        evict, then stage: `Artifacts.stage`, the same materialization as an install
                  (chunks verified on arrival, the tree sealed), within DEADLINE in all

The node's own approvals ref is read (what `follow` absorbed: it never shrinks), in its own
quarantine repository: nothing outside the node's folder is read, and no lock is taken, so a
round never holds a follow back. A round runs again only when its inputs moved (the approved
state, the approvals, the source's main, what this node runs), or, after one that failed (no
source had an artifact, the deadline passed), once its backoff is over (RETRY, doubling).

A staged tree is never started by this: the runtime starts only what an assignment names, and
an assignment is accepted only at an approved commit (`reconciler.plan.admission`). Events:
ArtifactStaged, ArtifactStageEvicted, ArtifactStageUsed (an assignment took a staged tree, so
nothing was fetched); they wait in `take_events` for the agent's pass, as the runtime's do.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygit2

from builders import BuildError
from reconciler.chain import approvals, follow
from reconciler.chain.trees import TreeReader, desired_at
from reconciler.chain.values import IdentityVerifier, Introduction, NodeState
from reconciler.chain.walk import Chain
from reconciler.desired.model.types import format_bytes
from reconciler.errors import CheckFailed, InputError, ReconcilerError
from reconciler.node.artifacts import Artifacts, ArtifactUnavailable, StagedTree
from reconciler.node.records import EventType
from reconciler.plan import prestage
from reconciler.plan.prestage import Proposal, Skipped, Staged

DEADLINE = 600.0  # seconds for one round's transfers, all of them together
MAX_PENDING = 8  # candidate commits of the next seq looked at per round
RETRY = 5.0  # seconds before a round that failed is tried again with the same inputs,
RETRY_CAP = 600.0  # doubling up to this

_SIZE = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
_SHARE = re.compile(r"([0-9]{1,2}(?:\.[0-9]+)?)%")


@dataclass(frozen=True)
class Budget:
    """At most `size` bytes staged, or `share` of the disk's free space (what is staged
    counted as free); 0 bytes: pre-staging is off."""

    size: int | None = None
    share: float | None = None

    @property
    def off(self) -> bool:
        return self.size == 0 or self.share == 0

    def bytes(self, free: int, staged: int) -> int:
        if self.size is not None:
            return self.size
        return int((self.share or 0.0) * (free + staged))

    def __str__(self) -> str:
        if self.size is not None:
            return format_bytes(self.size) if self.size else "0 (off)"
        return f"{(self.share or 0.0) * 100:g}% of the free disk"


DEFAULT_BUDGET = "10%"
DEFAULT = Budget(share=0.10)  # DEFAULT_BUDGET, parsed


def parse_budget(text: str) -> Budget:
    """`--prestage-budget`: a size (512Mi, 20G, bytes) or a percentage of the free disk
    (10%); 0 turns pre-staging off. InputError otherwise."""
    value = text.strip()
    sized = _SIZE.fullmatch(value)
    if sized is not None:
        return Budget(size=int(sized.group(1)) * _UNITS[sized.group(2)])
    shared = _SHARE.fullmatch(value)
    if shared is not None:
        return Budget(share=float(shared.group(1)) / 100)
    raise InputError(
        f"--prestage-budget {text!r}: expected a size such as 20Gi or 512M, a share of the "
        "free disk such as 10%, or 0 to turn pre-staging off"
    )


def pending(
    repo: pygit2.Repository,
    intro: Introduction,
    state: NodeState | None,
    now: int,
    identities: IdentityVerifier | None = None,
) -> tuple[list[Proposal], list[Skipped]]:
    """The candidates of the next seq that a member of the policy in force validly approved
    (a commit no valid approval vouches for is not read past its commit object, as a walk
    reads it), each with its signers and its desired state; and those passed over, with why."""
    chain = Chain(repo, intro, identities=identities)  # the node's own approvals ref
    reader = TreeReader(repo)
    seq = state.seq + 1 if state is not None else 1
    start = None if state is None else state.commit
    found: list[Proposal] = []
    skipped: list[Skipped] = []
    for to in chain.candidate_commits(seq)[:MAX_PENDING]:
        evidence = chain.evidence(seq, to)
        try:
            header = reader.header(ref=chain.ref, seq=seq, from_commit=start, to_commit=to)
            vouched = chain.verifier.vouch(state, header, evidence, now)
            step = chain.transition(state, to)
            assessed = chain.verifier.assess(
                state, step, evidence, now, vouched=vouched, in_force_first=True
            )
        except CheckFailed as error:
            skipped.append(Skipped(to, str(error).splitlines()[0]))
            continue
        signers = frozenset(assessed.signers)
        if not signers:
            skipped.append(Skipped(to, "no current approval names its tree"))
            continue
        try:
            report = desired_at(repo, to)
        except ReconcilerError as error:
            found.append(Proposal(to, seq, signers, None, str(error).splitlines()[0]))
            continue
        if report.errors:
            problem = f"its documents do not validate: {report.errors[0]}"
            found.append(Proposal(to, seq, signers, None, problem))
            continue
        found.append(Proposal(to, seq, signers, report.state))
    return found, skipped


@dataclass(frozen=True)
class Round:
    """What one round plans from, as the agent's pass saw it."""

    state: NodeState
    running: tuple[tuple[str, str], ...]  # (workload, digest) this node runs now
    keep: frozenset[str]  # digests in use here or pinned by the approved head
    now: int  # the chain's clock (approval lifetimes)


Event = tuple[EventType, str, str, str]  # type, reason, subject, message


class Prestager:
    """The node's pre-staging thread (see the module). `budget` off: nothing is ever staged,
    and what a previous run staged is evicted."""

    def __init__(
        self,
        artifacts: Artifacts,
        folder: Path,
        intro: Introduction,
        budget: Budget,
        *,
        deadline: float = DEADLINE,
        say: Callable[[str], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        free: Callable[[Path], int] | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.folder = folder
        self.intro = intro
        self.budget = budget
        self.deadline = deadline
        self.say = say or (lambda line: None)
        self.on_bytes = on_bytes or (lambda size: None)
        self.clock = clock
        self.free = free or (lambda path: shutil.disk_usage(path).free)
        self._offered: Round | None = None
        self._last: tuple[object, ...] | None = None  # the inputs of the last round
        self._settled = False  # whether it did all it planned
        self._failures = 0
        self._retry_at = 0.0  # monotonic: when a round that failed may run again
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._staged_bytes = 0
        artifacts.on_taken = self._taken

    # -- the agent's side ---------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="prestage", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the round in progress (a transfer is bounded by its deadline; the
        thread is a daemon, so an exit never waits for it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def offer(self, round_: Round) -> None:
        """Plan from `round_` as soon as the thread is free (the newest offer wins)."""
        with self._lock:
            self._offered = round_
        self._wake.set()

    def take_events(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    @property
    def staged_bytes(self) -> int:
        return self._staged_bytes

    # -- the thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                offered = self._offered
            if offered is None or self._stop.is_set():
                continue
            try:
                self.run_round(offered)
            except (ReconcilerError, BuildError, OSError, pygit2.GitError) as error:
                self.say(f"pre-staging: {error}")
                self._ended(None, settled=False)

    def run_round(self, round_: Round) -> None:
        """One round (see the module); synchronous (the thread calls it, and tests may)."""
        repository = self.folder / follow.REPOSITORY
        try:
            repo = pygit2.Repository(str(repository))
        except pygit2.GitError:
            return  # nothing followed yet
        inputs = (round_.state, round_.running, round_.keep, *_tips(repo), self.budget)
        if inputs == self._last and (self._settled or time.monotonic() < self._retry_at):
            self._publish()
            return
        staged_now = self.artifacts.staged()
        settled = True
        if self.budget.off:
            proposals: list[Proposal] = []
            passed: list[Skipped] = []
        else:
            proposals, passed = pending(repo, self.intro, round_.state, round_.now)
        wanted, skipped = prestage.wants(dict(round_.running), proposals)
        for item in [*passed, *skipped]:
            self.say(f"pre-staging: {item.subject[:19]} not staged: {item.reason}")
        sizes: dict[str, int] = {}
        for want in wanted:
            if want.digest in staged_now or want.digest in sizes or want.digest in round_.keep:
                continue
            try:
                manifest = self.artifacts.manifest(want.digest)
            except ArtifactUnavailable as error:
                self.say(f"pre-staging: {error}")
                settled = False
                continue
            sizes[want.digest] = sum(entry.size for entry in manifest.files())
        records = {
            d: Staged(d, r.size, r.staged_at) for d, r in staged_now.items()
        }  # fmt: skip
        staged_total = sum(r.size for r in staged_now.values())
        budget = self.budget.bytes(self._free_bytes(), staged_total)
        planned = prestage.plan(wanted, records, sizes, budget, round_.keep)
        for digest in planned.evict:
            gone = self.artifacts.evict(digest)
            if gone is not None:
                self._event(
                    EventType.NORMAL,
                    "ArtifactStageEvicted",
                    digest,
                    f"pre-staged {format_bytes(gone.size)} evicted: {_why_evicted(digest, wanted)}",
                )
        ends = time.monotonic() + self.deadline
        for want in planned.stage:
            left = ends - time.monotonic()
            if left <= 0 or self._stop.is_set():
                settled = False
                break
            began = time.monotonic()
            try:
                record = self.artifacts.stage(want.digest, now=int(self.clock()), deadline=left)
            except ArtifactUnavailable as error:
                self.say(f"pre-staging: {error}")
                settled = False
                continue
            if record is None:
                continue  # installed for real meanwhile
            by = ", ".join(want.signers)
            self._event(
                EventType.NORMAL,
                "ArtifactStaged",
                want.digest,
                f"workload {want.workload}'s artifact at seq {want.seq} ({want.commit[:12]}), "
                f"approved so far by {by}: {format_bytes(record.size)} staged in "
                f"{time.monotonic() - began:.2f} s, not started until its quorum lands",
            )
        self._ended(inputs, settled=settled)
        self._publish()

    def _ended(self, inputs: tuple[object, ...] | None, *, settled: bool) -> None:
        self._last, self._settled = inputs, settled
        if settled:
            self._failures = 0
            return
        self._failures += 1
        delay = min(RETRY_CAP, RETRY * 2 ** min(self._failures - 1, 16))
        self._retry_at = time.monotonic() + delay

    def _free_bytes(self) -> int:
        with contextlib.suppress(OSError):
            return self.free(self.artifacts.root if self.artifacts.root.exists() else self.folder)
        return 0

    def _publish(self) -> None:
        self._staged_bytes = sum(r.size for r in self.artifacts.staged().values())
        self.on_bytes(self._staged_bytes)

    def _taken(self, record: StagedTree) -> None:
        self._event(
            EventType.NORMAL,
            "ArtifactStageUsed",
            record.artifact_id,
            f"the pre-staged tree ({format_bytes(record.size)}) is installed: its seal held, "
            "nothing fetched",
        )
        self._wake.set()  # the staged bytes went down: say so

    def _event(self, kind: EventType, reason: str, digest: str, message: str) -> None:
        with self._lock:
            self._events.append((kind, reason, subject_of(digest), message))
        self.say(f"pre-staging: {reason} {digest[:19]}: {message}")


def subject_of(digest: str) -> str:
    """The subject of an event about an artifact: `artifact/` and 16 hex digits of its id."""
    return f"artifact/{digest.removeprefix('sha256:')[:16]}"


def _tips(repo: pygit2.Repository) -> tuple[str | None, str | None]:
    """What a round depends on in the repository: the node's approvals and SOURCE's main."""
    found: list[str | None] = []
    for ref in (approvals.REF, follow.MAIN):
        try:
            found.append(str(repo.references[ref].target))
        except (KeyError, pygit2.GitError):
            found.append(None)
    return found[0], found[1]


def _why_evicted(digest: str, wanted: list[prestage.Want]) -> str:
    if any(want.digest == digest for want in wanted):
        return "it no longer fits in the budget"
    return "no pending proposal names it any more"
