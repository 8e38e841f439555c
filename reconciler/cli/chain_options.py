"""What the Human Chain commands share: `--introduction`, `--sigstore-root`, opening the
repository, and placing a revision on the approved chain (naming junk roots on stderr).

Importing this module costs nothing heavy (pygit2, the chain, the document models are imported
when used), so `log`, `verify` and `review` can replay a kept answer (`reconciler.cli.answers`)
in the time Python takes to start."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from reconciler.cli.render import stderr
from reconciler.errors import InputError

if TYPE_CHECKING:
    import pygit2

    from reconciler.chain.propose import Proposal
    from reconciler.chain.values import IdentityVerifier, Introduction


def open_repo(path: Path) -> pygit2.Repository:
    import pygit2

    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        raise InputError(f"{path}: not a Git repository") from None


@dataclass(frozen=True)
class Trust:
    """`--sigstore-root`: the root's name or file, and a label that changes with its content."""

    value: str

    @property
    def label(self) -> str:
        if self.value in ("none", "production", "staging"):
            return self.value
        try:
            return "file:" + hashlib.sha256(Path(self.value).read_bytes()).hexdigest()
        except OSError:
            return f"unreadable:{self.value}"  # the verifier says why, if a bundle is met

    def verifier(self) -> IdentityVerifier | None:
        """The identity verifier, made (sigstore imported) only when a bundle is met."""
        if self.value == "none":
            return None
        from reconciler.chain.walk import Deferred

        value = self.value

        def make() -> IdentityVerifier:
            # sigstore takes most of a second to import: only when a sigstore approval is met.
            from reconciler.chain.sigstore import SigstoreVerifier

            if value in ("production", "staging"):
                return SigstoreVerifier.instance(value)
            return SigstoreVerifier.from_file(Path(value))

        return Deferred(make, self.label)


_SIGSTORE_HELP = (
    "Trust root for sigstore approvals, verified offline: production or staging (the roots "
    "shipped with sigstore-python), a trusted_root.json file, or none."
)


def identities_option(function: click.decorators.FC) -> click.decorators.FC:
    """`--sigstore-root`, given to the command as its IdentityVerifier (or None)."""
    return click.option(
        "--sigstore-root",
        "identities",
        default="production",
        show_default=True,
        callback=lambda context, parameter, value: Trust(value).verifier(),
        help=_SIGSTORE_HELP,
    )(function)


def trust_option(function: click.decorators.FC) -> click.decorators.FC:
    """`--sigstore-root`, given to the command as a `Trust` (nothing imported yet)."""
    return click.option(
        "--sigstore-root",
        "trust",
        default="production",
        show_default=True,
        callback=lambda context, parameter, value: Trust(value),
        help=_SIGSTORE_HELP,
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


WARNED = "circle.warned"


def warned() -> bool:
    """Whether the running command printed a warning (kept answers hold stdout only, so an
    answer that came with one is not kept)."""
    return bool(click.get_current_context().meta.get(WARNED))


def introduction(repo: pygit2.Repository, introduction_file: Path | None, now: int) -> Introduction:
    """The circle's introduction; roots of other histories merged into main are named."""
    from reconciler.chain.propose import trusted_introduction

    found = trusted_introduction(repo, introduction_file, now)
    if found.foreign_roots:
        click.get_current_context().meta[WARNED] = True
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
    from reconciler.chain.propose import propose

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
