"""The owners' commands' memory of the verified chain: the steps a walk from the introduction
found, kept in the clone's Git folder (`.git/circle/verified.json`) and keyed by what they
depend on, so `log`, `verify`, `review`, `approve` and `land` answer at once on a long chain.

    {"format": "circle-verified-head/1", "introduction": {...}, "main": OID,
     "approvals": OID | null, "trust": ROOT, "approvedFolders": SHA256,
     "steps": [[seq, commit, [signers], policyVersion], ...],
     "state": {"commit", "seq", "policySha256"} | null}

It is an optimization only: every answer is the one a cold walk gives.
- The same introduction, main and approvals ref: the steps as cached.
- main moved, or approvals were filed: if the approvals of every seq already walked are
  unchanged (`approvedFolders`, a digest of their folders' tree ids), the walk goes on from
  the cached state (as a node goes on from its state file); otherwise, cold.
- A missing, unreadable, malformed or foreign cache (another introduction), or a walk that
  fails from the cached state (main rewritten under it): cold, and the cache is written anew.
A cache is written atomically and only after a walk succeeded; a clone that cannot be written
(read-only) is simply walked every time.

Trust: the file is as trusted as the Git folder it sits in (whoever writes there can install
hooks that run on the owner's next `git` command); `git clone` never copies it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from qss.durable import write_atomically
from reconciler.chain import approvals
from reconciler.chain.values import Introduction, NodeState
from reconciler.chain.walk import MAIN, Chain, Deferred, Found, Step, find_introduction
from reconciler.errors import CheckFailed
from reconciler.files import read_bounded

FORMAT = "circle-verified-head/1"
NAME = "circle/verified.json"
INTRO_FORMAT = "circle-introduction-cache/1"
INTRO_NAME = "circle/introduction.json"
MAX_BYTES = 64 << 20  # 10,000 steps take about 1 MiB


@dataclass(frozen=True)
class Key:
    """What the walk's answer depends on."""

    main: str
    approvals: str | None
    trust: str  # the sigstore trust root, or none: sigstore approvals count under one only


@dataclass(frozen=True)
class Cached:
    steps: list[Step]
    state: NodeState | None
    key: Key
    folders: str  # `_folders` of the seqs walked, when it was written


def walk(repo: pygit2.Repository, walker: Chain, now: int) -> tuple[list[Step], NodeState | None]:
    """`walker.walk(now)` from the introduction, through the cache (see the module)."""
    key = _key(repo, _trust(walker))
    cached = _load(repo, walker.intro)
    if cached is not None and key is not None:
        if cached.key == key:
            return cached.steps, cached.state
        state = cached.state
        if state is not None and _folders(repo, state.seq) == cached.folders:
            with contextlib.suppress(CheckFailed):
                more, after = walker.walk(now, state)
                steps = cached.steps + more
                _store(repo, walker.intro, key, steps, after)
                return steps, after
    steps, state = walker.walk(now)
    if key is not None:
        _store(repo, walker.intro, key, steps, state)
    return steps, state


def instants(repo: pygit2.Repository, seq: int) -> set[int]:
    """The `issuedAt` and `expiresAt` of every statement filed for `seq` (the step after the
    approved head): the only clock instants at which an owner command's answer can change, as
    an approval starts or stops counting (`reconciler.cli.answers`). Junk gives nothing: it
    never counts, whatever the time."""
    found: set[int] = set()
    tree = approvals.snapshot(repo)
    if tree is None:
        return found
    for stored in approvals.read_seq(repo, seq, tree):
        try:
            document = json.loads(stored.statement)
            issued, expires = document["issuedAt"], document["expiresAt"]
        except (ValueError, KeyError, TypeError):
            continue
        found.update(value for value in (issued, expires) if type(value) is int)
    return found


def introduction(repo: pygit2.Repository, now: int) -> Found:
    """`find_introduction(repo)`, which walks all of main's history for its root commits, kept
    beside the steps: the same main, or a main that only added commits and no root to a
    history of one root, has the same introduction. Anything else: found again."""
    try:
        main = repo.references[MAIN].resolve().target
    except (KeyError, ValueError, pygit2.GitError):
        return find_introduction(repo, MAIN, now=now)  # which says what is wrong
    path = Path(repo.path) / INTRO_NAME
    try:
        data = json.loads(read_bounded(path, 1 << 16))
        if data["format"] != INTRO_FORMAT:
            raise ValueError("another format")
        was = pygit2.Oid(hex=str(data["main"]))
        found = data["introduction"]
        intro = Introduction(str(found["circle"]), str(found["commit"]), str(found["policySha256"]))
        if was != main:
            if not repo.descendant_of(main, was):
                raise ValueError("main rewritten")
            walker = repo.walk(main, pygit2.enums.SortMode.TOPOLOGICAL)
            walker.hide(was)
            if any(not commit.parents for commit in walker):
                raise ValueError("a root merged in")
    except Exception:  # noqa: BLE001 - any doubt: find it again
        fresh = find_introduction(repo, MAIN, now=now)
        if not fresh.foreign_roots:  # one root: later commits keep it, unless a root comes
            document = {
                "format": INTRO_FORMAT,
                "main": str(main),
                "introduction": _intro(fresh.intro),
            }
            with contextlib.suppress(OSError):
                path.parent.mkdir(mode=0o700, exist_ok=True)
                write_atomically(path, json.dumps(document), mode=0o600)
        return fresh
    if was != main:
        document = {"format": INTRO_FORMAT, "main": str(main), "introduction": _intro(intro)}
        with contextlib.suppress(OSError):
            write_atomically(path, json.dumps(document), mode=0o600)
    return Found(intro)


def _path(repo: pygit2.Repository) -> Path:
    return Path(repo.path) / NAME


def _trust(walker: Chain) -> str:
    identities = walker.verifier.identities
    if identities is None:
        return "none"
    if isinstance(identities, Deferred):
        return identities.label or "unlabelled"
    return type(identities).__qualname__


def _key(repo: pygit2.Repository, trust: str) -> Key | None:
    try:
        main = str(repo.references[MAIN].resolve().target)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    head = approvals.head(repo, approvals.REF)
    return Key(main, None if head is None else str(head.id), trust)


def _folders(repo: pygit2.Repository, upto: int) -> str:
    """A digest of the approvals folders of seq 1 .. `upto`: their names and tree ids."""
    digest = hashlib.sha256()
    tree = approvals.snapshot(repo)
    if tree is not None:
        for entry in tree:
            name = str(entry.name)
            if name.isdigit() and int(name) <= upto:
                digest.update(f"{name} {entry.id}\n".encode())
    return digest.hexdigest()


def _load(repo: pygit2.Repository, intro: Introduction) -> Cached | None:
    path = _path(repo)
    try:
        data = json.loads(read_bounded(path, MAX_BYTES))
        if data["format"] != FORMAT or data["introduction"] != _intro(intro):
            return None
        steps = [
            Step(int(seq), str(commit), tuple(str(s) for s in signers), int(version))
            for seq, commit, signers, version in data["steps"]
        ]
        found = data["state"]
        state = None if found is None else NodeState(
            str(found["commit"]), int(found["seq"]), str(found["policySha256"])
        )  # fmt: skip
        if [step.seq for step in steps] != list(range(1, len(steps) + 1)):
            return None
        if (state is None) != (not steps) or (
            state is not None and (state.seq, state.commit) != (steps[-1].seq, steps[-1].commit)
        ):
            return None
        was = data["approvals"]
        key = Key(str(data["main"]), None if was is None else str(was), str(data["trust"]))
        return Cached(steps, state, key, str(data["approvedFolders"]))
    except Exception:  # noqa: BLE001 - any damage means: no cache
        return None


def _intro(intro: Introduction) -> dict[str, str]:
    return {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}


def _store(
    repo: pygit2.Repository,
    intro: Introduction,
    key: Key,
    steps: list[Step],
    state: NodeState | None,
) -> None:
    document: dict[str, Any] = {
        "format": FORMAT,
        "introduction": _intro(intro),
        "main": key.main,
        "approvals": key.approvals,
        "trust": key.trust,
        "approvedFolders": _folders(repo, state.seq if state else 0),
        "steps": [[s.seq, s.commit, list(s.signers), s.policy_version] for s in steps],
        "state": None
        if state is None
        else {"commit": state.commit, "seq": state.seq, "policySha256": state.policy_sha256},
    }
    path = _path(repo)
    with contextlib.suppress(OSError):  # a read-only clone is walked every time
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomically(path, json.dumps(document, separators=(",", ":")), mode=0o600)
