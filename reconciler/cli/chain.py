"""`circle introduction`, `log` and `verify [REV]`: the Human Chain of a clone, read-only.

`log` verifies the chain from the repository's introduction and shows every approved step;
`verify REV` says whether the transition from the approved head to REV has quorum (exit 0) or
not (exit 1, naming what is missing): usable as a CI status check on a pull request.
`circle approve` (`reconciler.cli.approve`) signs such a transition.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from reconciler.chain import headcache, propose
from reconciler.chain.values import IdentityVerifier
from reconciler.chain.walk import MAIN, Chain
from reconciler.cli.chain_options import (
    identities_option,
    introduction,
    introduction_option,
    named,
    open_repo,
    proposal,
    revision_argument,
)
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stdout


@click.command("introduction")
@repo_option
def introduction_command(repo: Path) -> int:
    """Print the introduction (circle id, first commit, policy sha256) as JSON, for nodes."""
    intro = introduction(open_repo(repo), None, int(time.time()))
    print_json(
        {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    )
    return 0


@click.command("log")
@repo_option
@introduction_option
@identities_option
@output_option
def log_command(
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """The approved chain: seq, commit, signers and policy version, verified from the start."""
    git = open_repo(repo)
    now = int(time.time())
    walker = Chain(git, introduction(git, introduction_file, now), MAIN, identities=identities)
    steps, _ = headcache.walk(git, walker, now)
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
    lines = [
        f"{step.seq:>4}  {step.commit[:12]}  policy v{step.policy_version}  "
        f"signed by {', '.join(step.signers)}"
        for step in steps
    ]
    # One write: rich's per-line rendering costs more than the walk on a long chain.
    click.echo("\n".join(lines) if lines else "no approved transition yet")
    return 0


@click.command("verify")
@revision_argument
@repo_option
@introduction_option
@identities_option
@output_option
def verify_command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Exit 0 if the transition from the approved head to REVISION (default: HEAD, the
    commit checked out) has quorum, 1 if not; it names the commit it judged."""
    now = int(time.time())
    git = open_repo(repo)
    found = proposal(git, revision, now, identities, introduction_file)
    judged = propose.judge(found, now)
    if settings(output).json:
        print_json(
            {
                "revision": found.target,
                "asked": revision,
                "approved": judged.approved,
                "head": found.approved,
                "seq": found.seq,
                "signers": list(judged.signers),
                "unmet": judged.unmet,
            }
        )
    elif judged.unmet:
        stdout.print(f"{named(git, revision, found.target)}: not approved: {judged.unmet}",
                     markup=False)  # fmt: skip
    else:
        what = "the approved head" if found.approved else "approved"
        stdout.print(f"{named(git, revision, found.target)}: {what} (seq {found.seq}), signed "
                     f"by {', '.join(judged.signers)}", markup=False)  # fmt: skip
    return 0 if judged.approved else 1
