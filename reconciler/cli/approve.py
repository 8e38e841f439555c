"""`circle approve [REV]`: sign the transition from the approved head to REV and file the
approval in the approvals ref, after the checks `circle verify` makes."""

from __future__ import annotations

import time
from pathlib import Path

import click

from qss.durable import write_atomically
from reconciler.chain import approvals, propose, signing, statements
from reconciler.chain.values import IdentityVerifier
from reconciler.cli.chain_options import (
    identities_option,
    introduction_option,
    named,
    open_repo,
    proposal,
    revision_argument,
)
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stderr, stdout
from reconciler.errors import InputError


@click.command("approve")
@revision_argument
@repo_option
@introduction_option
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Sign with this Ed25519 SSH private key.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The key's passphrase, for an encrypted key.",
)
@click.option(
    "--statement-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the statement to sign elsewhere: ssh-keygen -Y sign -n circle-approval-v1 ...",
)
@click.option(
    "--statement",
    "statement_in",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="File a statement signed elsewhere (with --signature).",
)
@click.option(
    "--signature",
    "signature_in",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The SSHSIG of --statement (ssh-keygen -Y sign writes FILE.sig).",
)
@click.option(
    "--ssh-keygen",
    "use_ssh_keygen",
    is_flag=True,
    help="Sign with `ssh-keygen -Y sign`: KEY may then be a .pub whose private half is in "
    "ssh-agent, or an encrypted key ssh-keygen asks the passphrase of.",
)
@identities_option
@output_option
def approve_command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    statement_out: Path | None,
    statement_in: Path | None,
    signature_in: Path | None,
    use_ssh_keygen: bool,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Sign the transition from the approved head to REVISION (default: HEAD) and file it in
    the approvals ref; refuse a transition no quorum could approve, naming why."""
    git = open_repo(repo)
    if statement_in is not None or signature_in is not None:
        if statement_in is None or signature_in is None:
            raise InputError("--statement and --signature go together")
        path = approvals.add(git, statement_in.read_bytes(), signature_in.read_text())
        stdout.print(f"filed {path}", markup=False)
        return 0
    now = int(time.time())
    found = proposal(git, revision, now, identities, introduction_file)
    statement = propose.statement(found, now)  # refuses the approved head itself
    propose.approvable(found, now)  # refuses what no quorum could approve
    invalid = propose.invalid_documents(git, found)
    if invalid is not None:
        stderr.print(
            f"warning: {found.target[:12]}'s desired state does not validate ({invalid}): "
            "once approved, nodes keep the last valid step until a commit fixes it",
            markup=False,
        )
    if statement_out is not None:
        write_atomically(statement_out, statement)
        stdout.print(
            f"statement for seq {found.seq} ({found.target[:12]}) written to {statement_out}; "
            f"sign it with ssh-keygen -Y sign -n {statements.NAMESPACE} -f KEY {statement_out}",
            markup=False,
        )
        return 0
    if key_file is None:
        raise InputError("give --key KEY, or --statement-out FILE to sign elsewhere")
    if use_ssh_keygen:
        done = propose.approve(
            git,
            found,
            statement,
            lambda data: signing.with_ssh_keygen(data, key_file),
            str(key_file),
        )
    else:
        lines = passphrase_file.read_bytes().splitlines() if passphrase_file else None
        passphrase = (lines or [b""])[0] if lines is not None else None
        done = propose.approve(
            git,
            found,
            statement,
            lambda data: signing.with_key_file(data, key_file, passphrase),
            str(key_file),
        )
    if settings(output).json:
        print_json(
            {"seq": done.seq, "commit": done.commit, "member": done.member, "path": done.path}
        )
    else:
        stdout.print(f"approved seq {done.seq} {named(git, revision, done.commit)} as "
                     f"{done.member}", markup=False)  # fmt: skip
    return 0
