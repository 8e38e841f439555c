"""`circle land`, `push`, `pull` (owners) and `circle follow` (nodes): moving the chain around.

`push` and `pull` carry `main` and the approvals ref together. Approvals made in different
clones are files at different paths, so they merge as a union: a push rejected because a
co-signer pushed first fetches, merges and tries again. `main` only ever fast-forwards.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click
import pygit2
import watchfiles

from reconciler.chain import approvals, follow
from reconciler.chain.gitcli import GitFailed, as_remote, git
from reconciler.chain.verify import IdentityVerifier, Introduction
from reconciler.cli.chain import REF, identities_option, introduction_option, open_repo, propose
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stderr, stdout
from reconciler.errors import CheckFailed, InputError

REMOTE_MAIN = "refs/circle/remote/main"
REMOTE_APPROVALS = "refs/circle/remote/approvals"
ATTEMPTS = 5


def _fast_forward(git_repo: pygit2.Repository, target: str) -> None:
    """Move main to `target`, and the work tree with it when main is checked out."""
    if not git_repo.is_bare and not git_repo.head_is_unborn and git_repo.head.name == REF:
        git(git_repo.workdir, "merge", "--ff-only", "--quiet", target)
    else:
        current = git_repo.references[REF]
        if not git_repo.descendant_of(pygit2.Oid(hex=target), current.target):
            raise CheckFailed(f"main cannot fast-forward to {target[:12]}")
        current.set_target(pygit2.Oid(hex=target), f"circle: fast-forward to {target[:12]}")


@click.command("land")
@click.argument("revision")
@repo_option
@introduction_option
@identities_option
@output_option
def land_command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Fast-forward main to REVISION if it is an approved commit of the chain; refuse otherwise."""
    git_repo = open_repo(repo)
    proposal = propose(git_repo, revision, int(time.time()), identities, introduction_file)
    target = proposal.target
    landed = next((step for step in proposal.steps if step.commit == target), None)
    if landed is None:
        raise CheckFailed(
            f"{target[:12]} is not approved (the approved head is seq "
            f"{proposal.state.seq if proposal.state else 0}); see circle review {revision}"
        )
    main = str(git_repo.references[REF].target)
    if main != target:
        if git_repo.descendant_of(pygit2.Oid(hex=main), pygit2.Oid(hex=target)):
            raise CheckFailed(f"main ({main[:12]}) is already past {target[:12]}")
        _fast_forward(git_repo, target)
    if settings(output).json:
        print_json({"main": target, "seq": landed.seq, "signers": list(landed.signers)})
    else:
        stdout.print(f"main is at seq {landed.seq} ({target[:12]})", markup=False)
    return 0


def _fetch(git_repo: pygit2.Repository, remote: str) -> None:
    """REMOTE's main and approvals into refs/circle/remote/; a remote without approvals yet
    is no error (the partial glob matches nothing)."""
    for ref in (REMOTE_MAIN, REMOTE_APPROVALS):
        if ref in git_repo.references:
            git_repo.references.delete(ref)
    git(
        git_repo.path, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
        f"+refs/heads/main:{REMOTE_MAIN}", f"+{approvals.REF}*:{REMOTE_APPROVALS}*",
    )  # fmt: skip


def _merge_remote_approvals(git_repo: pygit2.Repository) -> None:
    theirs = git_repo.references.get(REMOTE_APPROVALS)
    if theirs is not None:
        approvals.merge(git_repo, theirs.peel(pygit2.Commit).id)


@click.command("pull")
@click.argument("remote", default="origin")
@repo_option
@output_option
def pull_command(remote: str, repo: Path, output: str | None) -> int:
    """Fetch REMOTE's main and approvals: union the approvals, fast-forward main."""
    git_repo = open_repo(repo)
    _fetch(git_repo, as_remote(remote))
    _merge_remote_approvals(git_repo)
    theirs = str(git_repo.references[REMOTE_MAIN].target)
    ours_ref = git_repo.references.get(REF)
    ours = str(ours_ref.target) if ours_ref is not None else None
    if ours is None:
        fresh = not git_repo.is_bare and git_repo.lookup_reference("HEAD").target == REF
        git_repo.references.create(REF, pygit2.Oid(hex=theirs))
        if fresh:  # a `git init` on main: check the circle out (never over a user's file)
            git(git_repo.workdir, "read-tree", "-m", "-u", REF)
        state = "created"
    elif ours == theirs or git_repo.descendant_of(pygit2.Oid(hex=ours), pygit2.Oid(hex=theirs)):
        state = "up to date" if ours == theirs else "ahead"
    elif git_repo.descendant_of(pygit2.Oid(hex=theirs), pygit2.Oid(hex=ours)):
        _fast_forward(git_repo, theirs)
        state = "fast-forwarded"
    else:
        raise CheckFailed(
            f"main ({ours[:12]}) and {remote}'s main ({theirs[:12]}) have diverged: rebase your "
            "commits onto it (approvals were merged)"
        )
    if settings(output).json:
        print_json({"main": state, "remote": remote})
    else:
        stdout.print(f"main {state}; approvals merged from {remote}", markup=False)
    return 0


@click.command("push")
@click.argument("remote", default="origin")
@repo_option
@output_option
def push_command(remote: str, repo: Path, output: str | None) -> int:
    """Push main and the approvals ref to REMOTE together, merging co-signers' approvals when
    REMOTE has moved (retried up to 5 times)."""
    git_repo = open_repo(repo)
    remote = as_remote(remote)
    refs = [f"{REF}:{REF}"]
    if approvals.REF in git_repo.references:
        refs.append(f"{approvals.REF}:{approvals.REF}")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            git(git_repo.path, "push", "--quiet", "--atomic", remote, *refs)
            break
        except GitFailed as error:
            if "rejected" not in error.stderr and "fetch first" not in error.stderr:
                raise
            if attempt == ATTEMPTS:
                raise CheckFailed(
                    f"{remote} kept moving: gave up after {ATTEMPTS} attempts"
                ) from None
            stderr.print(f"{remote} moved; merging its approvals (attempt {attempt})", markup=False)
            _fetch(git_repo, remote)
            _merge_remote_approvals(git_repo)
            theirs = git_repo.references[REMOTE_MAIN].target
            ours = git_repo.references[REF].target
            if theirs != ours and not git_repo.descendant_of(ours, theirs):
                raise CheckFailed(
                    f"{remote}'s main has commits that yours lacks: circle pull {remote} first"
                ) from None
    if settings(output).json:
        print_json({"pushed": [ref.partition(":")[0] for ref in refs], "remote": remote})
    else:
        stdout.print(f"pushed main and approvals to {remote}", markup=False)
    return 0


@click.command("follow")
@click.argument("source")
@click.option(
    "--introduction",
    "introduction_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The circle's introduction (JSON from `circle introduction`): the node's trust anchor.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The node's folder: its state file (0600) and quarantine repository.",
)
@click.option("--watch", is_flag=True, help="Keep following: on every change of SOURCE.")
@click.option(
    "--interval", type=click.FloatRange(min=1), default=30, show_default=True,
    help="With --watch: seconds between fetches (a local SOURCE is also watched for changes).",
)  # fmt: skip
@identities_option
@output_option
def follow_command(
    source: str,
    introduction_file: Path,
    state_dir: Path,
    watch: bool,
    interval: float,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Fetch SOURCE (a path or URL) into quarantine, verify the chain from the node's own
    state, and move the state to the newest approved commit of SOURCE's main.

    Exit 1 with the refusal when SOURCE's main is not approved, behind the applied commit
    (rollback), beside it (rewritten history) or when approvals conflict; the state file is
    then unchanged."""
    intro = follow.load_introduction(introduction_file)
    if not watch:
        return _follow_once(source, intro, state_dir, identities, output)
    local = Path(source)
    # A service manager stops the node with SIGTERM: finish as after Ctrl-C (a state file being
    # written is either replaced whole or not at all; its temporary file is removed).
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                _follow_once(source, intro, state_dir, identities, output)
            except (CheckFailed, InputError) as error:
                stderr.print(f"refused: {error}", markup=False)
            if local.exists():
                for _ in watchfiles.watch(
                    local, rust_timeout=int(interval * 1000), yield_on_timeout=True
                ):
                    break
            else:
                time.sleep(interval)
    except KeyboardInterrupt:
        if not stopping:
            raise
        return 0


def _follow_once(
    source: str,
    intro: Introduction,
    state_dir: Path,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    with follow.exclusive(state_dir):
        repository = follow.fetch(source, state_dir)
        done = follow.advance(
            repository, intro, state_dir / follow.STATE_FILE, int(time.time()), identities
        )
    state = done.state
    if settings(output).json:
        print_json(
            {
                "state": None if state is None else {
                    "commit": state.commit, "seq": state.seq, "policySha256": state.policy_sha256
                },
                "applied": [
                    {"seq": s.seq, "commit": s.commit, "signers": list(s.signers)}
                    for s in done.applied
                ],
                "source": done.target,
                "refused": done.refusal,
            }
        )  # fmt: skip
    else:
        for step in done.applied:
            stdout.print(
                f"applied seq {step.seq} ({step.commit[:12]}), signed by {', '.join(step.signers)}",
                markup=False,
            )
        if state is not None:
            stdout.print(f"at seq {state.seq} ({state.commit[:12]})", markup=False)
        if done.refusal:
            stderr.print(f"refused {done.target[:12]}: {done.refusal}", markup=False)
    return 1 if done.refusal else 0
