"""`circle clone`, `land`, `push`, `pull` (owners) and `circle follow` (nodes): moving the
chain around.

`clone` starts an owner's clone from a URL, verified; `push` and `pull` carry a branch and the
approvals ref together (`reconciler.chain.sync`); `follow` is what a node runs
(`reconciler.chain.follow`).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import click
import watchfiles

from reconciler.chain import approvals, follow, sync
from reconciler.chain.gitcli import as_remote
from reconciler.chain.values import IdentityVerifier, Introduction
from reconciler.cli.chain_options import (
    identities_option,
    introduction_option,
    open_repo,
    proposal,
)
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stderr, stdout
from reconciler.errors import CheckFailed, InputError

MAX_SHOWN = 5  # waiting proposals `clone` names


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
    found = proposal(git_repo, revision, int(time.time()), identities, introduction_file)
    landed = sync.land(git_repo, found, revision)
    if settings(output).json:
        print_json({"main": landed.commit, "seq": landed.seq, "signers": list(landed.signers)})
    else:
        stdout.print(f"main is at seq {landed.seq} ({landed.commit[:12]})", markup=False)
    return 0


@click.command("clone")
@click.argument("url")
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(path_type=Path))
@introduction_option
@identities_option
@output_option
def clone_command(
    url: str,
    folder: Path | None,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Clone the circle at URL into DIR (new or empty; default: named after URL) with main
    checked out and the approvals ref, its remote set to fetch the approvals too; verify the
    chain from the introduction and say what waits for review.

    A URL that is no circle, or a chain that does not verify, leaves nothing behind."""
    url = as_remote(url)
    target = folder if folder is not None else Path(_folder_name(url))
    cloned = sync.clone(url, target, int(time.time()), identities, introduction_file)
    if cloned.foreign_roots:
        roots = ", ".join(root[:12] for root in cloned.foreign_roots)
        stderr.print(
            f"warning: main merges {len(cloned.foreign_roots)} root commit(s) of another "
            f"history ({roots}): not part of the circle's approved chain",
            markup=False,
        )
    head, waiting = cloned.head, cloned.waiting
    if settings(output).json:
        print_json(
            {
                "circle": cloned.intro.circle,
                "introduction": cloned.intro.commit,
                "policySha256": cloned.intro.policy_sha256,
                "directory": str(target.absolute()),
                "remote": url,
                "head": None if head is None else {
                    "seq": head.seq, "commit": head.commit, "signers": list(head.signers)
                },
                "pendingProposals": len(waiting),
                "proposals": [
                    {"revision": w.commit, "branches": list(w.branches)}
                    for w in waiting[:MAX_SHOWN]
                ],
                "foreignRoots": list(cloned.foreign_roots),
            }
        )  # fmt: skip
        return 0
    say = functools.partial(stdout.print, markup=False)
    say(f"cloned circle {cloned.intro.circle} into {target} (origin: {url})")
    if head is None:
        say("approved head: none yet (the first commit waits for its owners' approvals)")
    else:
        say(
            f"approved head: seq {head.seq} ({head.commit[:12]}), signed by "
            f"{', '.join(head.signers)}"
        )
    if waiting:
        shown = ", ".join(_revision(w) for w in waiting[:MAX_SHOWN])
        more = f" and {len(waiting) - MAX_SHOWN} more" if len(waiting) > MAX_SHOWN else ""
        plural = "proposal" if len(waiting) == 1 else "proposals"
        say(f"{len(waiting)} {plural} waiting: {shown}{more}")
        first = _revision(waiting[0])
        steps = [
            (f"circle review {first}", "what approving it would approve"),
            (f"circle approve {first} --key KEY", "sign it with your member key"),
            ("circle push", f"your approval, to {sync.ORIGIN}"),
        ]
    else:
        say("no proposal waiting")
        steps = [
            ("git switch -c NAME; edit; git commit -a", "propose a change on a branch"),
            ("circle approve NAME --key KEY", "sign it with your member key"),
            ("circle push", f"the branch and your approval, to {sync.ORIGIN}"),
        ]
    say("next:")
    steps.insert(0, (f"cd {shlex.quote(str(target))}", ""))
    width = max(len(command) for command, _ in steps)
    for command, why in steps:
        say(f"  {command.ljust(width)}   {why}".rstrip())
    return 0


def _folder_name(url: str) -> str:
    """The folder `git clone URL` would make: the URL's last part, without `.git`."""
    name = re.split(r"[/:]", url.rstrip("/").removesuffix("/.git"))[-1].removesuffix(".git")
    if not name or name in (".", ".."):
        raise InputError(f"{url}: cannot name a folder after it: give DIR")
    return name


def _revision(waiting: sync.Waiting) -> str:
    """How to name a waiting commit: a branch of the remote's (what co-signers share), else
    one of ours, else the commit."""
    remote = [name for name in waiting.branches if name.startswith(f"{sync.ORIGIN}/")]
    return (remote or list(waiting.branches) or [waiting.commit[:12]])[0]


@click.command("pull")
@click.argument("remote", default="origin")
@repo_option
@output_option
def pull_command(remote: str, repo: Path, output: str | None) -> int:
    """Fetch REMOTE's main and approvals: union the approvals, fast-forward main. Works in a
    plain `git clone` too: it gets main and the approvals, and sets a named REMOTE to fetch
    the approvals from then on."""
    pulled = sync.pull(open_repo(repo), as_remote(remote))
    if settings(output).json:
        print_json(
            {
                "main": pulled.main.value,
                "remote": remote,
                "approvals": pulled.approvals.value,
                "checkedOut": pulled.checked_out,
                "configured": pulled.configured,
            }
        )
        return 0
    main = f"main {pulled.main.value}"
    if pulled.checked_out:
        main += " and checked out"
    elif pulled.elsewhere is not None:
        main += f" (not checked out: HEAD is {pulled.elsewhere})"
    approvals = {
        sync.Approvals.FETCHED: f"approvals fetched from {remote} (none here before)",
        sync.Approvals.MERGED: f"approvals merged from {remote}",
        sync.Approvals.UP_TO_DATE: f"approvals up to date with {remote}",
        sync.Approvals.NONE: f"{remote} has no approvals yet",
    }[pulled.approvals]
    stdout.print(f"{main}; {approvals}", markup=False)
    if pulled.configured:
        stdout.print(
            f"{remote} now fetches refs/circle/approvals too (git fetch keeps it in "
            f"refs/circle/remotes/{remote}/approvals; circle pull merges it)",
            markup=False,
        )
    return 0


@click.command("push")
@click.argument("remote", default="origin")
@click.option(
    "--branch",
    "branches",
    multiple=True,
    metavar="NAME",
    help="Push branch NAME (repeatable) instead of the branch checked out (main when HEAD is "
    "on main or detached).",
)
@repo_option
@output_option
def push_command(remote: str, branches: tuple[str, ...], repo: Path, output: str | None) -> int:
    """Push the branch checked out (or --branch NAME) and the approvals ref to REMOTE
    together, merging co-signers' approvals when REMOTE has moved (retried up to 5 times).
    On main, that is main; on a proposal branch, the branch and never main."""
    remote = as_remote(remote)
    git_repo = open_repo(repo)

    def retrying(attempt: int) -> None:
        stderr.print(f"{remote} moved; merging its approvals (attempt {attempt})", markup=False)

    pushed = sync.push(git_repo, remote, retrying, sync.branches_to_push(git_repo, branches))
    commits = {ref: str(git_repo.references[ref].target) for ref in pushed}
    if settings(output).json:
        print_json({"pushed": pushed, "remote": remote, "commits": commits})
        return 0
    shown = [
        f"{ref.removeprefix('refs/heads/').removeprefix('refs/circle/')} ({commits[ref][:12]})"
        for ref in pushed
    ]
    lacking = "" if approvals.REF in commits else " (no approvals here yet)"
    stdout.print(f"pushed {' and '.join(shown)} to {remote}{lacking}", markup=False)
    proposals = [ref.removeprefix("refs/heads/") for ref in pushed if ref.startswith("refs/heads/")]
    proposals = [name for name in proposals if name != "main"]
    if proposals and sync.named_remote(git_repo, remote) is not None:
        stdout.print(
            f"co-signers: circle pull, then circle review {remote}/{proposals[0]}", markup=False
        )
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
    said: list[object] = []  # what the last round said: a round that changes nothing is quiet
    try:
        while True:
            try:
                _follow_once(source, intro, state_dir, identities, output, said)
            except (CheckFailed, InputError) as error:
                if said != [str(error)]:
                    stderr.print(f"refused: {error}", markup=False)
                    said[:] = [str(error)]
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
    said: list[object] | None = None,
) -> int:
    """One round; with `said` (--watch), nothing is printed when the round changed nothing
    since the last one, and JSON is one line a round (JSON Lines)."""
    done = follow.follow_once(source, intro, state_dir, int(time.time()), identities)
    state = done.state
    if said is not None:
        now_said = [state, done.target, done.refusal]
        if not done.applied and said == now_said:
            return 1 if done.refusal else 0
        said[:] = now_said
    if settings(output).json:
        document = {
                "state": None if state is None else {
                    "commit": state.commit, "seq": state.seq, "policySha256": state.policy_sha256
                },
                "applied": [
                    {"seq": s.seq, "commit": s.commit, "signers": list(s.signers)}
                    for s in done.applied
                ],
                "source": done.target,
                "refused": done.refusal,
            }  # fmt: skip
        if said is None:
            print_json(document)
        else:
            sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
            sys.stdout.flush()
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
