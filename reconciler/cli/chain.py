"""`circle introduction`, `circle log`, `circle verify [REV]`: the Human Chain, read-only.

`log` verifies the chain cold from the repository's introduction and shows every approved step;
`verify REV` says whether the transition from the approved head to REV has quorum (exit 0) or
not (exit 1, naming what is missing): usable as a CI status check on a pull request.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import pygit2

from reconciler.adapters import approvals
from reconciler.adapters.chain_git import transition
from reconciler.adapters.chain_walk import introduction, policy, walk
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.core import chain, quorum
from reconciler.errors import InputError

REF = "refs/heads/main"


def repo_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--repo",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("."),
        show_default=True,
        help="The circle repository.",
    )(function)


def open_repo(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        raise InputError(f"{path}: not a Git repository") from None


@click.command("introduction")
@repo_option
def introduction_command(repo: Path) -> int:
    """Print the introduction (circle id, first commit, policy sha256) as JSON, for nodes."""
    intro = introduction(open_repo(repo), REF)
    print_json(
        {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    )
    return 0


@click.command("log")
@repo_option
@output_option
def log_command(repo: Path, output: str | None) -> int:
    """The approved chain: seq, commit, signers and policy version, verified from the start."""
    git = open_repo(repo)
    steps, _ = walk(git, introduction(git, REF), REF, int(time.time()))
    if settings(output).json:
        print_json(
            [
                {
                    "seq": s.seq,
                    "commit": s.commit,
                    "signers": list(s.signers),
                    "policyVersion": s.policy_version,
                }
                for s in steps
            ]
        )
        return 0
    for step in steps:
        stdout.print(
            f"{step.seq:>4}  {step.commit[:12]}  policy v{step.policy_version}  "
            f"signed by {', '.join(step.signers)}",
            markup=False,
        )
    if not steps:
        stdout.print("no approved transition yet", markup=False)
    return 0


@click.command("verify")
@click.argument("revision", default="main")
@repo_option
@output_option
def verify_command(revision: str, repo: Path, output: str | None) -> int:
    """Exit 0 if the transition from the approved head to REVISION has quorum, 1 if not."""
    git = open_repo(repo)
    now = int(time.time())
    intro = introduction(git, REF)
    steps, state = walk(git, intro, REF, now)
    try:
        target = str(git.revparse_single(revision).peel(pygit2.Commit).id)
    except (KeyError, ValueError):
        raise InputError(f"{revision}: no such commit") from None
    seq = (
        state.seq
        if state is not None and target == state.commit
        else (state.seq + 1 if state else 1)
    )
    unmet = ""
    signers: list[str] = list(steps[-1].signers) if steps and steps[-1].commit == target else []
    if state is None or target != state.commit:
        step = transition(
            git, ref=REF, seq=seq, from_commit=state.commit if state else None, to_commit=target
        )
        prefix = f"{seq:010d}/{target}/"
        evidence = [
            chain.Evidence(a.statement, a.signature)
            for a in approvals.read(git)
            if a.path.startswith(prefix)
        ]
        try:
            verdict = chain.verify(
                intro,
                state,
                step,
                policy(step.policy_from) if step.policy_from is not None else None,
                policy(step.policy_to),
                evidence,
                now,
            )
            signers = list(verdict.signers)
        except quorum.QuorumNotMet as error:
            unmet = str(error)
    if settings(output).json:
        print_json(
            {
                "revision": target,
                "approved": not unmet,
                "seq": seq,
                "signers": signers,
                "unmet": unmet or None,
            }
        )
    elif unmet:
        stdout.print(f"{target[:12]}: not approved: {unmet}", markup=False)
    else:
        stdout.print(f"{target[:12]}: approved (seq {seq})", markup=False)
    return 1 if unmet else 0
