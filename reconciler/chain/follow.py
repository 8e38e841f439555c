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
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.chain import approvals, node_state
from reconciler.chain.gitcli import GitFailed, as_remote, git
from reconciler.chain.values import IdentityVerifier, Introduction, MainFacts, NodeState
from reconciler.chain.verify import ChainError
from reconciler.chain.walk import Chain, Step, tip_commit
from reconciler.errors import CheckFailed, InputError
from reconciler.files import read_bounded

MAX_INTRODUCTION_BYTES = 4096
_CIRCLE = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

MAIN = "refs/quarantine/main"
APPROVALS = "refs/quarantine/circle/approvals"  # SOURCE's, as fetched; read into approvals.REF
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
    data = read_bounded(path, MAX_INTRODUCTION_BYTES)
    try:
        if len(data) > MAX_INTRODUCTION_BYTES:
            raise ValueError
        document = json.loads(data)
        if not isinstance(document, dict) or set(document) != {"circle", "commit", "policySha256"}:
            raise ValueError
        intro = Introduction(document["circle"], document["commit"], document["policySha256"])
        if not (
            isinstance(intro.circle, str)
            and _CIRCLE.fullmatch(intro.circle)
            and isinstance(intro.commit, str)
            and _SHA1.fullmatch(intro.commit)
            and isinstance(intro.policy_sha256, str)
            and _SHA256.fullmatch(intro.policy_sha256)
        ):
            raise ValueError
    except (ValueError, RecursionError):
        raise InputError(
            f"{path}: not an introduction: expected JSON with exactly circle (a circle id), "
            "commit (40 hex digits) and policySha256 (64 hex digits), as `circle introduction` "
            "prints"
        ) from None
    return intro


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold the node folder alone for one round (fetch, verify, save): two `follow`s on one
    state could otherwise save out of order and move a node back. The folder must be the
    node agent's alone (`node_state.check_folder`)."""
    node_state.check_folder(folder)
    descriptor = node_state.open_private(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{folder}: another `circle follow` is using this state") from None
        yield
    finally:
        os.close(descriptor)


def fetch(source: str, folder: Path) -> pygit2.Repository:
    """Fetch SOURCE's main and approvals into the quarantine repository under `folder`.

    The fetch runs no hook and reads no system or user Git configuration: what it does depends
    on the node folder alone."""
    path = folder / REPOSITORY
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pygit2.init_repository(str(path), bare=True)
    else:
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise node_state.StateFileError(
                f"{path}: the quarantine repository is not a folder of this agent's (a link, a "
                "file or another user's): remove it and follow again"
            )
    _check_quarantine(path)
    try:
        git(
            path, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--",
            as_remote(source), f"+refs/heads/main:{MAIN}",
            f"+refs/circle/approvals*:{APPROVALS}*",
            isolated=True,
        )  # fmt: skip
    except GitFailed as error:
        if "couldn't find remote ref" in error.stderr:
            raise ChainError(f"{source} has no main branch (no commits yet)") from None
        raise
    try:
        repo = pygit2.Repository(str(path))
    except pygit2.GitError as error:
        raise node_state.StateFileError(
            f"{path}: the quarantine repository cannot be opened ({error}): remove it and "
            "follow again"
        ) from None
    _absorb_approvals(repo)
    return repo


# The fixed paths of a bare repository git opens before anything else: a FIFO or device at one
# would hang the fetch, a link would lead it elsewhere.
_QUARANTINE_FILES = ("HEAD", "config", "packed-refs", "shallow", "objects/info/alternates")
_QUARANTINE_FOLDERS = ("objects", "refs")


def _check_quarantine(path: Path) -> None:
    for name, folder in [(n, False) for n in _QUARANTINE_FILES] + [
        (n, True) for n in _QUARANTINE_FOLDERS
    ]:
        try:
            info = os.lstat(path / name)
        except FileNotFoundError:
            continue
        if (stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)) and (
            info.st_uid == os.geteuid()
        ):
            continue
        raise node_state.StateFileError(
            f"{path / name}: not a {'folder' if folder else 'regular file'} of this agent's in "
            "the quarantine repository: remove the repository and follow again"
        )


def _absorb_approvals(repo: pygit2.Repository) -> None:
    """Union what SOURCE's approvals ref holds now into the node's own approvals ref, which
    never shrinks: whoever can push to SOURCE can drop approvals there (an empty tree, a
    force-push, a ref made a tag), never from a node that has seen them."""
    try:
        theirs = approvals.head(repo, APPROVALS)
    except approvals.ApprovalStoreError:
        return  # a tree or a blob there: nothing to add; what the node holds stays
    if theirs is not None:
        approvals.merge(repo, theirs.id, isolated=True)


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
    target = str(tip_commit(repo, MAIN, display="the source's main").id)
    chain = Chain(repo, intro, identities=identities)  # the node's own, never-shrinking union
    chain.verifier.check_main(state, _main_facts(repo, intro, state, target))
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


def _main_facts(
    repo: pygit2.Repository, intro: Introduction, state: NodeState | None, target: str
) -> MainFacts:
    """Where SOURCE's main stands against the introduction and the applied commit (Git's
    ancestry); the rule is `Verifier.check_main`'s."""
    root, head = pygit2.Oid(hex=intro.commit), pygit2.Oid(hex=target)
    descends = root in repo and (head == root or repo.descendant_of(head, root))
    if state is None or pygit2.Oid(hex=state.commit) not in repo:
        return MainFacts(target, from_introduction=descends, behind=False, ahead=False)
    applied = pygit2.Oid(hex=state.commit)
    return MainFacts(
        target,
        from_introduction=descends,
        behind=repo.descendant_of(applied, head),
        ahead=repo.descendant_of(head, applied),
    )


def _why_not(chain: Chain, state: NodeState | None, target: str, now: int) -> str:
    seq = state.seq + 1 if state else 1
    evidence = chain.candidates(seq).get(target, [])
    try:
        chain.check(state, target, evidence, now)
    except CheckFailed as error:
        return str(error)
    return f"seq {seq} ({target[:12]}) is approved but a step before it is not"


def follow_once(
    source: str,
    intro: Introduction,
    folder: Path,
    now: int,
    identities: IdentityVerifier | None = None,
) -> Followed:
    """One round of a node: hold its folder, fetch SOURCE into quarantine, advance its state."""
    with exclusive(folder):
        repository = fetch(source, folder)
        return advance(repository, intro, folder / STATE_FILE, now, identities)
