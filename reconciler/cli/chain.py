"""`circle introduction`, `log` and `verify [REV]`: the Human Chain of a clone, read-only.

`log` verifies the chain from the repository's introduction and shows every approved step;
`verify REV` says whether the transition from the approved head to REV has quorum (exit 0) or
not (exit 1, naming what is missing): usable as a CI status check on a pull request.
`circle approve` (`reconciler.cli.approve`) signs such a transition.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli import answers
from reconciler.cli.chain_options import (
    Trust,
    introduction,
    introduction_option,
    named,
    open_repo,
    proposal,
    revision_argument,
    trust_option,
    warned,
)
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import json_text, print_json, stderr, stdout

if TYPE_CHECKING:
    import pygit2

# `log` and `verify` first look for the answer they gave to the same question
# (`reconciler.cli.answers`); only when there is none do they import the chain (pygit2 and the
# document models: most of their time on a long chain once the verified head is cached).


@click.command("introduction")
@repo_option
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default=None,
    help="json (the default: the introduction file nodes take) or text for people.",
)
def introduction_command(repo: Path, output: str | None) -> int:
    """Print the introduction (circle id, first commit, policy sha256): JSON for nodes
    (`circle introduction > introduction.json`, from a trusted copy), text with -o text."""
    intro = introduction(open_repo(repo), None, int(time.time()))
    if output == "text":
        stdout.print(
            f"circle          {intro.circle}\nfirst commit    {intro.commit}\n"
            f"policy sha256   {intro.policy_sha256}",
            markup=False,
        )
        return 0
    print_json(
        {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    )
    return 0


@click.command("log")
@repo_option
@introduction_option
@trust_option
@output_option
def log_command(
    repo: Path, introduction_file: Path | None, trust: Trust, output: str | None
) -> int:
    """The approved chain: seq, commit, signers and policy version, verified from the start."""
    mode = settings(output).output
    now = int(time.time())
    asked, code = answers.ask(
        repo, "log", now, trust=trust.label, introduction=introduction_file, output=mode
    )
    if code is not None:
        return code
    from reconciler.chain import approvals, headcache
    from reconciler.chain.walk import MAIN, Chain

    git = open_repo(repo)
    walker = Chain(
        git, introduction(git, introduction_file, now), MAIN, identities=trust.verifier()
    )
    steps, state = headcache.walk(git, walker, now)
    if mode == "json":
        text = json_text(
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
    elif steps:
        text = "".join(
            f"{step.seq:>4}  {step.commit[:12]}  policy v{step.policy_version}  "
            f"signed by {', '.join(step.signers)}\n"
            for step in steps
        )
    elif approvals.head(git, approvals.REF) is None:
        text = (
            f"no approved transition yet: this clone has no {approvals.REF}, where the "
            "approvals are kept (`circle pull` fetches them; `circle clone` brings them)\n"
        )
    else:
        text = "no approved transition yet\n"
    held = answers.window(headcache.instants(git, state.seq + 1 if state else 1), now)
    return answers.answer(None if warned() else asked, text, 0, held)


@click.command("verify")
@revision_argument
@repo_option
@introduction_option
@trust_option
@output_option
def verify_command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    trust: Trust,
    output: str | None,
) -> int:
    """Exit 0 if the transition from the approved head to REVISION (default: HEAD, the
    commit checked out) has quorum, 1 if not; it names the commit it judged."""
    mode = settings(output).output
    now = int(time.time())
    asked, code = answers.ask(
        repo, "verify", now, trust=trust.label, introduction=introduction_file,
        revision=revision, output=mode,
    )  # fmt: skip
    if code is not None:
        return code
    from reconciler.chain import headcache, propose

    git = open_repo(repo)
    found = proposal(git, revision, now, trust.verifier(), introduction_file)
    judged = propose.judge(found, now)
    if mode == "json":
        text = json_text(
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
        text = f"{named(git, revision, found.target)}: not approved: {judged.unmet}\n"
    else:
        what = "the approved head" if found.approved else "approved"
        text = (
            f"{named(git, revision, found.target)}: {what} (seq {found.seq}), signed by "
            f"{', '.join(judged.signers)}\n"
        )
    hinted = not judged.approved and _no_approvals_hint(git)
    head_seq = found.state.seq if found.state else 0
    held = answers.window(headcache.instants(git, head_seq + 1), now)
    kept = None if warned() or hinted else asked  # an answer with words on stderr is not kept
    return answers.answer(kept, text, 0 if judged.approved else 1, held)


def _no_approvals_hint(git: pygit2.Repository) -> bool:
    """Say (on stderr) that a clone without the approvals ref cannot see any approval."""
    from reconciler.chain import approvals

    if approvals.head(git, approvals.REF) is not None:
        return False
    stderr.print(
        f"hint: this clone has no {approvals.REF}, where the approvals are kept: "
        "`circle pull` fetches them",
        markup=False,
    )
    return True
