"""Moving an owner's chain between clones: `clone` a circle, `land` a revision on main once it
is approved, and `push` / `pull` a branch together with the approvals ref.

Approvals made in different clones are files at different paths, so they merge as a union
(`approvals.merge`): a push rejected because a co-signer pushed first fetches, merges and tries
again. `main` only ever fast-forwards; a diverged main is reported, never merged, and no branch
is ever forced.

A clone's remote fetches the approvals ref too (`approvals_refspec`): into
`refs/circle/remotes/REMOTE/approvals`, never over the clone's own approvals, which only
`pull` changes, by a union.
"""

from __future__ import annotations

import enum
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.chain import approvals, headcache
from reconciler.chain.gitcli import GitFailed, git
from reconciler.chain.propose import Proposal, trusted_introduction
from reconciler.chain.trees import bounded_commit
from reconciler.chain.values import IdentityVerifier, Introduction, NodeState
from reconciler.chain.walk import MAIN, Chain, Step
from reconciler.errors import CheckFailed, InputError

REMOTE_MAIN = "refs/circle/remote/main"
REMOTE_APPROVALS = "refs/circle/remote/approvals"
REMOTE_HEADS = "refs/circle/remote/heads/"  # the branches a rejected push carries, as fetched
ORIGIN = "origin"
ATTEMPTS = 5
MAX_PROPOSALS = 1000  # branch tips and filed commits looked at for `Cloned.waiting`
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")


def approvals_refspec(remote: str) -> str:
    """What a named remote's `git fetch` brings of the approvals: a tracking ref of its own (a
    partial glob, so that a remote without approvals yet is no error)."""
    return f"+{approvals.REF}*:refs/circle/remotes/{remote}/approvals*"


def fast_forward(repo: pygit2.Repository, target: str) -> None:
    """Move main to `target`, and the work tree with it when main is checked out."""
    if not repo.is_bare and not repo.head_is_unborn and repo.head.name == MAIN:
        git(repo.workdir, "merge", "--ff-only", "--quiet", target)
    else:
        current = repo.references[MAIN]
        if not repo.descendant_of(pygit2.Oid(hex=target), current.target):
            raise CheckFailed(f"main cannot fast-forward to {target[:12]}")
        current.set_target(pygit2.Oid(hex=target), f"circle: fast-forward to {target[:12]}")


@dataclass(frozen=True)
class Landed:
    seq: int
    commit: str
    signers: tuple[str, ...]


def land(repo: pygit2.Repository, proposal: Proposal, revision: str) -> Landed:
    """Fast-forward main to the proposal's revision if it is an approved commit of the chain."""
    target = proposal.target
    landed = next((step for step in proposal.steps if step.commit == target), None)
    if landed is None:
        raise CheckFailed(
            f"{target[:12]} is not approved (the approved head is seq "
            f"{proposal.state.seq if proposal.state else 0}); see circle review {revision}"
        )
    main = str(repo.references[MAIN].target)
    if main != target:
        if repo.descendant_of(pygit2.Oid(hex=main), pygit2.Oid(hex=target)):
            raise CheckFailed(f"main ({main[:12]}) is already past {target[:12]}")
        fast_forward(repo, target)
    return Landed(landed.seq, target, landed.signers)


def _top(repo: pygit2.Repository) -> str:
    """Where git runs for a transport: the work tree's top, as when the owner types `git
    push` there (a remote's relative URL means the same), or the bare repository."""
    return str(repo.workdir or repo.path)


def fetch(repo: pygit2.Repository, remote: str, extra: Sequence[str] = ()) -> None:
    """REMOTE's main and approvals into refs/circle/remote/ (and the `extra` refspecs: a named
    remote's own); a remote without approvals yet is no error (the partial glob matches
    nothing)."""
    for ref in (REMOTE_MAIN, REMOTE_APPROVALS):
        if ref in repo.references:
            repo.references.delete(ref)
    git(
        _top(repo), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", remote,
        f"+{MAIN}:{REMOTE_MAIN}", f"+{approvals.REF}*:{REMOTE_APPROVALS}*", *extra,
    )  # fmt: skip


class Main(enum.Enum):
    """What `pull` did to main."""

    CREATED = "created"
    UP_TO_DATE = "up to date"
    AHEAD = "ahead"  # ours has commits the remote's lacks: `circle push` them
    FAST_FORWARDED = "fast-forwarded"


class Approvals(enum.Enum):
    """What merging a remote's approvals did to ours."""

    FETCHED = "fetched"  # we had none
    MERGED = "merged"
    UP_TO_DATE = "up to date"
    NONE = "none"  # the remote has none


def merge_remote_approvals(repo: pygit2.Repository, ref: str = REMOTE_APPROVALS) -> Approvals:
    """Union the approvals fetched into `ref` into ours."""
    theirs = approvals.head(repo, ref)  # a tree or blob there: ApprovalStoreError
    if theirs is None:
        return Approvals.NONE
    ours = approvals.head(repo, approvals.REF)
    merged = approvals.merge(repo, theirs.id)
    if ours is None:
        return Approvals.FETCHED
    return Approvals.UP_TO_DATE if merged == ours.id else Approvals.MERGED


def named_remote(repo: pygit2.Repository, remote: str) -> pygit2.Remote | None:
    """The remote configured under the name `remote` (None for a path or URL)."""
    try:
        return repo.remotes[remote]
    except (KeyError, ValueError, pygit2.GitError):
        return None


def _brings_approvals(remote: pygit2.Remote) -> bool:
    return any(
        remote.get_refspec(index).src_matches(approvals.REF)
        for index in range(remote.refspec_count)
    )


@dataclass(frozen=True)
class Pulled:
    """What `pull` did."""

    main: Main
    approvals: Approvals
    checked_out: bool = False  # main was created and checked out into an empty work tree
    configured: bool = False  # REMOTE's fetch refspecs now bring the approvals ref too
    elsewhere: str | None = None  # where HEAD stays when main moved without it (`branch X`)


def pull(repo: pygit2.Repository, remote: str) -> Pulled:
    """Fetch REMOTE's main and approvals: union the approvals, fast-forward main.

    A named remote also updates its tracking refs (its branches: the proposals), and is
    configured to bring the approvals ref when it does not yet (a plain `git clone`). A clone
    without main gets it, checked out when nothing is (HEAD unborn, the index empty)."""
    named = named_remote(repo, remote)
    extra: list[str] = []
    configure = named is not None and not _brings_approvals(named)
    if named is not None:
        # Only tracking refs: a refspec into refs/heads/ or refs/circle/approvals (a mirror's
        # `+refs/*:refs/*`) would force our branches and drop our approvals.
        extra = [
            spec.string
            for spec in map(named.get_refspec, range(named.refspec_count))
            if spec.dst.startswith(("refs/remotes/", "refs/circle/remotes/"))
        ]
        if configure:
            extra.append(approvals_refspec(remote))
    fetch(repo, remote, extra)
    if configure:
        repo.remotes.add_fetch(remote, approvals_refspec(remote))
    approvals_done = merge_remote_approvals(repo)
    main, checked_out = _pull_main(repo, remote, str(repo.references[REMOTE_MAIN].target))
    if named is not None and main is Main.CREATED:
        tracking = repo.branches.remote.get(f"{remote}/main")
        if tracking is not None:
            repo.branches.local["main"].upstream = tracking
    moved = main in (Main.CREATED, Main.FAST_FORWARDED) and not checked_out
    return Pulled(main, approvals_done, checked_out, configure, _elsewhere(repo) if moved else None)


def _pull_main(repo: pygit2.Repository, remote: str, theirs: str) -> tuple[Main, bool]:
    """Main moved to REMOTE's (fetched) `theirs` when it may: what happened, and whether main
    was checked out."""
    ours_ref = repo.references.get(MAIN)
    if ours_ref is None:
        empty = not repo.is_bare and repo.head_is_unborn and len(repo.index) == 0
        repo.references.create(MAIN, pygit2.Oid(hex=theirs))
        if empty:  # a `git init`, or a clone whose remote's HEAD names no branch: check main out
            if repo.lookup_reference("HEAD").target != MAIN:
                git(repo.workdir, "symbolic-ref", "HEAD", MAIN)
            git(repo.workdir, "read-tree", "-m", "-u", MAIN)  # never over a user's file
        return Main.CREATED, empty
    ours = str(ours_ref.target)
    if ours == theirs or repo.descendant_of(pygit2.Oid(hex=ours), pygit2.Oid(hex=theirs)):
        return (Main.UP_TO_DATE if ours == theirs else Main.AHEAD), False
    if repo.descendant_of(pygit2.Oid(hex=theirs), pygit2.Oid(hex=ours)):
        fast_forward(repo, theirs)
        return Main.FAST_FORWARDED, False
    raise CheckFailed(
        f"main ({ours[:12]}) and {remote}'s main ({theirs[:12]}) have diverged: rebase your "
        "commits onto it (approvals were merged)"
    )


def _elsewhere(repo: pygit2.Repository) -> str | None:
    """Where HEAD is when it is not on main: `branch NAME`, `detached`; None on main or bare."""
    if repo.is_bare:
        return None
    if repo.head_is_detached:
        return "detached"
    name = repo.lookup_reference("HEAD").target
    if name == MAIN:
        return None
    return f"branch {str(name).removeprefix('refs/heads/')}"


def branches_to_push(repo: pygit2.Repository, asked: Sequence[str]) -> list[str]:
    """The branches (full ref names) `push` carries: those `asked`; else the branch checked
    out when it is not main (a proposal); else main."""
    if asked:
        refs = []
        for name in asked:
            ref = f"refs/heads/{name.removeprefix('refs/heads/')}"
            if ref not in repo.references:
                raise InputError(f"no branch {name} here (git branch lists them)")
            if ref not in refs:
                refs.append(ref)
        return refs
    if repo.is_bare or repo.head_is_detached or repo.head_is_unborn:
        return [MAIN]
    return [repo.head.name]


def push(
    repo: pygit2.Repository,
    remote: str,
    retrying: Callable[[int], None],
    branches: Sequence[str] = (MAIN,),
) -> list[str]:
    """Push `branches` (full ref names) and the approvals ref to REMOTE together (atomically),
    merging co-signers' approvals when REMOTE has moved, up to ATTEMPTS times
    (`retrying(attempt)` says so). A branch REMOTE holds commits of that ours lacks is
    refused, never forced. The refs pushed."""
    refs = [f"{branch}:{branch}" for branch in branches]
    if approvals.REF in repo.references:
        refs.append(f"{approvals.REF}:{approvals.REF}")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            git(_top(repo), "push", "--quiet", "--atomic", "--", remote, *refs)
            break
        except GitFailed as error:
            if "rejected" not in error.stderr and "fetch first" not in error.stderr:
                raise
            if attempt == ATTEMPTS:
                raise CheckFailed(
                    f"{remote} kept moving: gave up after {ATTEMPTS} attempts"
                ) from None
            retrying(attempt)
            _fetch_pushed(repo, remote, branches)
            merge_remote_approvals(repo)
            for branch in branches:
                _check_not_behind(repo, remote, branch)
    return [ref.partition(":")[0] for ref in refs]


def _fetch_pushed(repo: pygit2.Repository, remote: str, branches: Sequence[str]) -> None:
    """REMOTE's approvals and its versions of `branches` (those it has) into
    refs/circle/remote/."""
    for name in list(repo.references):
        if name.startswith(REMOTE_HEADS) or name == REMOTE_APPROVALS:
            repo.references.delete(name)
    specs = [f"+{b}*:{REMOTE_HEADS}{b.removeprefix('refs/heads/')}*" for b in branches]
    git(
        _top(repo), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", remote,
        f"+{approvals.REF}*:{REMOTE_APPROVALS}*", *specs,
    )  # fmt: skip


def _check_not_behind(repo: pygit2.Repository, remote: str, branch: str) -> None:
    short = branch.removeprefix("refs/heads/")
    found = repo.references.get(f"{REMOTE_HEADS}{short}")
    if found is None:
        return
    theirs, ours = found.target, repo.references[branch].target
    if theirs == ours or repo.descendant_of(ours, theirs):
        return
    if branch == MAIN:
        raise CheckFailed(
            f"{remote}'s main has commits that yours lacks: circle pull {remote} first"
        )
    raise CheckFailed(
        f"{remote}'s {short} has commits that yours lacks (someone pushed to it, or yours was "
        f"rewritten): merge or rebase onto it (git fetch {remote} {short}); circle push "
        "never forces"
    )


@dataclass(frozen=True)
class Waiting:
    """A commit that could be the chain's next step: a branch tip past the approved head, or a
    commit approvals are filed for; with the branches at it."""

    commit: str
    branches: tuple[str, ...]


@dataclass(frozen=True)
class Cloned:
    folder: Path
    intro: Introduction
    foreign_roots: tuple[str, ...]
    head: Step | None  # the approved head (None: nothing approved yet)
    waiting: tuple[Waiting, ...]  # newest first


def clone(
    url: str,
    folder: Path,
    now: int,
    identities: IdentityVerifier | None = None,
    introduction_file: Path | None = None,
) -> Cloned:
    """Clone the circle at `url` into `folder` (new or empty): main checked out, the approvals
    ref fetched and merged, its remote `origin` configured to fetch the approvals too. The
    chain is verified from the introduction (main's, or the one in `introduction_file`) before
    anything is checked out; a refusal leaves nothing behind.

    InputError when `folder` is not new or empty, or `url` is not a circle; CheckFailed when
    its chain does not verify."""
    made = _fresh_folder(folder)
    try:
        try:
            git(
                Path.cwd(), "clone", "--quiet", "--no-checkout", "--branch", "main",
                "--origin", ORIGIN, "-c", f"remote.{ORIGIN}.fetch={approvals_refspec(ORIGIN)}",
                "--", url, str(folder.absolute()),
            )  # fmt: skip
        except GitFailed as error:
            if "not found in upstream" in error.stderr:
                raise InputError(f"{url}: not a circle: it has no main branch") from None
            raise
        repo = pygit2.Repository(str(folder))
        merge_remote_approvals(repo, f"refs/circle/remotes/{ORIGIN}/approvals")
        try:
            found = trusted_introduction(repo, introduction_file, now)
        except CheckFailed as error:
            raise InputError(f"{url}: not a circle: {error}") from None
        intro = found.intro
        _check_descends(repo, intro)
        # Through the head cache: the new clone's next owner commands start from its answer.
        steps, state = headcache.walk(repo, Chain(repo, intro, MAIN, identities=identities), now)
        waiting = _waiting(repo, state)
        git(folder, "checkout", "--quiet", "main")
    except BaseException:
        _remove(folder, made)
        raise
    return Cloned(folder, intro, found.foreign_roots, steps[-1] if steps else None, waiting)


def _fresh_folder(folder: Path) -> Path | None:
    """The topmost folder a clone into `folder` makes (removed on failure); None when
    `folder` is there and empty. Anything else there is refused."""
    if folder.is_symlink() or folder.exists():
        if not folder.is_dir() or any(folder.iterdir()):
            raise InputError(f"{folder}: exists and is not an empty folder: clone into a new one")
        return None
    top = folder.absolute()
    while not top.parent.exists():
        top = top.parent
    return top


def _remove(folder: Path, made: Path | None) -> None:
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    if not folder.is_dir():
        return
    for entry in folder.iterdir():  # it was empty: all of it is the clone's
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _check_descends(repo: pygit2.Repository, intro: Introduction) -> None:
    """main must hold the introduction's commit (it does when the introduction is main's own;
    a pinned one may be another circle's)."""
    root, main = pygit2.Oid(hex=intro.commit), repo.references[MAIN].target
    if root not in repo or (main != root and not repo.descendant_of(main, root)):
        raise CheckFailed(
            f"main ({str(main)[:12]}) does not descend from the introduction "
            f"{intro.commit[:12]}: not circle {intro.circle} as pinned"
        )


def _waiting(repo: pygit2.Repository, state: NodeState | None) -> tuple[Waiting, ...]:
    """The commits that could be the next step after `state`: branch tips (the clone's and its
    remote's) not contained in the approved head, and the commits approvals are filed for at
    the next seq; newest first. At most MAX_PROPOSALS are looked at."""
    branches: dict[str, list[str]] = {}
    for name in repo.references:
        if not name.startswith(("refs/heads/", "refs/remotes/")) or name.endswith("/HEAD"):
            continue
        target = repo.references[name].target
        if isinstance(target, pygit2.Oid):
            branches.setdefault(str(target), []).append(repo.references[name].shorthand)
    seq = state.seq + 1 if state is not None else 1
    filed = approvals.folders(repo, seq, approvals.snapshot(repo))
    candidates = sorted(set(branches) | {to for to in filed if _COMMIT_ID.fullmatch(to)})
    head = pygit2.Oid(hex=state.commit) if state is not None else None
    found: list[tuple[int, Waiting]] = []
    for commit_id in candidates[:MAX_PROPOSALS]:
        try:
            commit = bounded_commit(repo, pygit2.Oid(hex=commit_id), commit_id[:12])
        except CheckFailed:
            continue  # a tag, a blob, a huge commit: junk, no proposal
        if head is not None and (commit.id == head or repo.descendant_of(head, commit.id)):
            continue  # landed (or the approved head itself)
        found.append(
            (commit.commit_time, Waiting(commit_id, tuple(sorted(branches.get(commit_id, [])))))
        )
    found.sort(key=lambda pair: (-pair[0], pair[1].commit))
    return tuple(waiting for _, waiting in found)
