"""What a node runs: fetch a circle into quarantine, verify, and move its state forward.

    SOURCE --git fetch--> STATE/repo.git   refs/quarantine/main, refs/quarantine/circle/*
           --Chain (from the persisted state)--> the approved steps up to SOURCE's main
           --node_state.save (atomic, 0600)--> STATE/state.json

Nothing fetched is trusted: the refs are quarantined (the fetch may force them; they only ever
name candidates), and the node moves only along transitions it verified itself from its own
state. SOURCE's main decides how far: an approved step that main does not contain (not landed)
waits. A main behind the applied commit is a rollback and one beside it a fork: both are
refused and the state file is left byte-identical.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.adapters import node_state
from reconciler.adapters.chain_walk import Chain, Step
from reconciler.adapters.gitcli import as_remote, git
from reconciler.core.chain import (
    ChainError,
    ForkError,
    IdentityVerifier,
    Introduction,
    NodeState,
    RollbackError,
)
from reconciler.errors import CheckFailed, InputError

MAIN = "refs/quarantine/main"
APPROVALS = "refs/quarantine/circle/approvals"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
REPOSITORY = "repo.git"


@dataclass(frozen=True)
class Followed:
    """Where a node stands after one round: its state, what it applied, and what it refused."""

    state: NodeState | None
    applied: tuple[Step, ...]
    target: str  # SOURCE's main
    refusal: str | None = None


def load_introduction(path: Path) -> Introduction:
    """The introduction a node is configured with (the JSON `circle introduction` prints)."""
    try:
        document = json.loads(path.read_bytes())
        intro = Introduction(
            str(document["circle"]), str(document["commit"]), str(document["policySha256"])
        )
    except OSError as error:
        raise InputError(f"{path}: cannot read the introduction: {error.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"{path}: not an introduction: expected JSON with circle, commit and policySha256 "
            "(as `circle introduction` prints)"
        ) from None
    if len(intro.commit) != 40 or len(intro.policy_sha256) != 64:
        raise InputError(f"{path}: the introduction's commit or policySha256 is malformed")
    return intro


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold the node folder alone for one round (fetch, verify, save): two `follow`s on one
    state could otherwise save out of order and move a node back."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder}: another `circle follow` is using this state") from None
        yield
    finally:
        os.close(descriptor)


def fetch(source: str, folder: Path) -> pygit2.Repository:
    """Fetch SOURCE's main and approvals into the quarantine repository under `folder`."""
    path = folder / REPOSITORY
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        pygit2.init_repository(str(path), bare=True)
    git(
        path, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", as_remote(source),
        f"+refs/heads/main:{MAIN}", f"+refs/circle/approvals*:{APPROVALS}*",
    )  # fmt: skip
    return pygit2.Repository(str(path))


def advance(
    repo: pygit2.Repository,
    intro: Introduction,
    state_file: Path,
    now: int,
    identities: IdentityVerifier | None = None,
) -> Followed:
    """Verify from the persisted state up to SOURCE's main; save the state it reaches.

    A ChainError (rollback, fork, equivocation, ...) leaves the state file untouched. When main
    is ahead of the newest approved step, the state moves as far as approved and the refusal
    of the rest is returned."""
    state = node_state.load(state_file)
    try:
        target = str(repo.references[MAIN].target)
    except KeyError:
        raise ChainError("the source has no main branch") from None
    _check_direction(repo, intro, state, target)
    chain = Chain(repo, intro, identities=identities, approvals_ref=APPROVALS)
    applied: list[Step] = []
    current = state
    while current is None or current.commit != target:
        found = chain.next(current, now)
        if found is None:
            break
        step, reached = found
        if reached.commit != target and not repo.descendant_of(target, reached.commit):
            break  # approved, but not on main yet
        applied.append(step)
        current = reached
    refusal = None
    if current is None or current.commit != target:
        refusal = _why_not(chain, current, target, now)
    if applied and current is not None:
        node_state.save(state_file, current)
    return Followed(current, tuple(applied), target, refusal)


def _check_direction(
    repo: pygit2.Repository, intro: Introduction, state: NodeState | None, target: str
) -> None:
    root = pygit2.Oid(hex=intro.commit)
    head = pygit2.Oid(hex=target)
    if head != root and (root not in repo or not repo.descendant_of(head, root)):
        raise ForkError(
            f"the source's main ({target[:12]}) does not descend from the introduction "
            f"{intro.commit[:12]}: another history"
        )
    if state is None or state.commit == target:
        return
    applied = pygit2.Oid(hex=state.commit)
    if applied in repo and repo.descendant_of(applied, head):
        raise RollbackError(
            f"the source's main ({target[:12]}) is behind the applied seq {state.seq} "
            f"({state.commit[:12]}): refusing to roll back"
        )
    if applied not in repo or not repo.descendant_of(head, applied):
        raise ForkError(
            f"the source's main ({target[:12]}) does not descend from the applied seq "
            f"{state.seq} ({state.commit[:12]}): history was rewritten"
        )


def _why_not(chain: Chain, state: NodeState | None, target: str, now: int) -> str:
    seq = state.seq + 1 if state else 1
    evidence = chain.candidates(seq).get(target, [])
    try:
        chain.check(state, target, evidence, now)
    except CheckFailed as error:
        return str(error)
    return f"seq {seq} ({target[:12]}) is approved but a step before it is not"
