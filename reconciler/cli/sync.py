"""`circle land`, `push`, `pull` (owners) and `circle follow` (nodes): moving the chain around.

`push` and `pull` carry `main` and the approvals ref together (`reconciler.chain.sync`);
`follow` is what a node runs (`reconciler.chain.follow`).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click
import watchfiles

from reconciler.chain import follow, sync
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


@click.command("pull")
@click.argument("remote", default="origin")
@repo_option
@output_option
def pull_command(remote: str, repo: Path, output: str | None) -> int:
    """Fetch REMOTE's main and approvals: union the approvals, fast-forward main."""
    state = sync.pull(open_repo(repo), as_remote(remote))
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
    remote = as_remote(remote)

    def retrying(attempt: int) -> None:
        stderr.print(f"{remote} moved; merging its approvals (attempt {attempt})", markup=False)

    pushed = sync.push(open_repo(repo), remote, retrying)
    if settings(output).json:
        print_json({"pushed": pushed, "remote": remote})
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
    done = follow.follow_once(source, intro, state_dir, int(time.time()), identities)
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
