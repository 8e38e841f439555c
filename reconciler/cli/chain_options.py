"""What the Human Chain commands share: `--introduction`, `--sigstore-root`, opening the
repository, and placing a revision on the approved chain (naming junk roots on stderr)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click
import pygit2

from reconciler.chain.propose import Proposal, propose, trusted_introduction
from reconciler.chain.values import IdentityVerifier, Introduction
from reconciler.chain.walk import Deferred
from reconciler.cli.render import stderr
from reconciler.errors import InputError


def open_repo(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        raise InputError(f"{path}: not a Git repository") from None


def _identities(
    context: click.Context, parameter: click.Parameter, value: str
) -> IdentityVerifier | None:
    if value == "none":
        return None

    def make() -> IdentityVerifier:
        # sigstore takes most of a second to import: only when a sigstore approval is met.
        from reconciler.chain.sigstore import SigstoreVerifier

        if value in ("production", "staging"):
            return SigstoreVerifier.instance(value)
        return SigstoreVerifier.from_file(Path(value))

    if value in ("production", "staging"):
        label = value
    else:
        try:
            label = "file:" + hashlib.sha256(Path(value).read_bytes()).hexdigest()
        except OSError:
            label = f"unreadable:{value}"  # the verifier says why, if a bundle is met
    return Deferred(make, label)


def identities_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--sigstore-root",
        "identities",
        default="production",
        show_default=True,
        callback=_identities,
        help="Trust root for sigstore approvals, verified offline: production or staging (the "
        "roots shipped with sigstore-python), a trusted_root.json file, or none.",
    )(function)


def introduction_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--introduction",
        "introduction_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The circle's introduction (JSON from `circle introduction`), when main holds "
        "more than one root commit; by default it is read from main.",
    )(function)


def introduction(repo: pygit2.Repository, introduction_file: Path | None, now: int) -> Introduction:
    """The circle's introduction; roots of other histories merged into main are named."""
    found = trusted_introduction(repo, introduction_file, now)
    if found.foreign_roots:
        roots = ", ".join(root[:12] for root in found.foreign_roots)
        stderr.print(
            f"warning: main merges {len(found.foreign_roots)} root commit(s) of another "
            f"history ({roots}): not part of the circle's approved chain",
            markup=False,
        )
    return found.intro


def proposal(
    repo: pygit2.Repository,
    revision: str,
    now: int,
    identities: IdentityVerifier | None,
    introduction_file: Path | None,
) -> Proposal:
    return propose(repo, revision, now, identities, introduction(repo, introduction_file, now))


def revision_argument(function: click.decorators.FC) -> click.decorators.FC:
    """REVISION, default HEAD: the commit checked out is the change in hand (on a
    pull-request branch in CI, the proposal), never main by surprise."""
    return click.argument("revision", default="HEAD")(function)


def named(repo: pygit2.Repository, revision: str, commit: str) -> str:
    """How a command names the commit it judged: `1a2b3c4d5e6f (HEAD, branch feature)`."""
    parts = [revision] if revision != commit and not commit.startswith(revision) else []
    if revision == "HEAD":
        if repo.head_is_detached:
            parts.append("detached")
        else:
            parts.append(f"branch {repo.head.shorthand}")
    return f"{commit[:12]} ({', '.join(parts)})" if parts else commit[:12]
