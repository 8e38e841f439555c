"""`circle approve [REV]`: sign the transition from the approved head to REV and file the
approval in the approvals ref, after the checks `circle verify` makes.

With several `--key`s (an Ed25519 key and an ML-DSA-65 key, for a `hybrid` rule), every key
signs the same statement bytes and the approvals are filed together, one pair per key.
"""

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
from reconciler.files import read_bounded


@click.command("approve")
@revision_argument
@repo_option
@introduction_option
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Sign with this private key (Ed25519 SSH or ML-DSA-65); repeat it to sign with "
    "several keys (one approval each).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The passphrase of the encrypted keys (keys that are not encrypted need none).",
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
    help="Sign the SSH keys with `ssh-keygen -Y sign`: KEY may then be a .pub whose private "
    "half is in ssh-agent, or an encrypted key ssh-keygen asks the passphrase of (ML-DSA keys "
    "are still signed here).",
)
@identities_option
@output_option
def approve_command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    key_files: tuple[Path, ...],
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
    if not key_files:
        raise InputError("give --key KEY, or --statement-out FILE to sign elsewhere")
    lines = passphrase_file.read_bytes().splitlines() if passphrase_file else None
    passphrase = (lines or [b""])[0] if lines is not None else None
    signs = [
        (_signer(key_file, passphrase, use_ssh_keygen), str(key_file)) for key_file in key_files
    ]
    publics = [line for line in map(_public_line, key_files) if line is not None]
    earlier = propose.earlier_statement(found, publics, now) if publics else None
    if earlier is not None:  # so that this signature pairs with the member's earlier one
        statement = earlier
        stderr.print(
            "signing the statement you filed for this transition earlier (a hybrid rule "
            "counts a classic and an ML-DSA signature of the same statement)",
            markup=False,
        )
    done = propose.approve_all(git, found, statement, signs)
    first = done[0]
    if settings(output).json:
        print_json(
            {
                "seq": first.seq,
                "commit": first.commit,
                "member": first.member,
                "path": first.path,
                "approvals": [
                    {
                        "key": item.key,
                        "type": item.key_type,
                        "member": item.member,
                        "path": item.path,
                    }
                    for item in done
                ],
            }
        )
    else:
        for item in done:
            how = "" if len(done) == 1 else f" with {item.key_type} key {item.key}"
            stdout.print(f"approved seq {item.seq} {named(git, revision, item.commit)} as "
                         f"{item.member}{how}", markup=False)  # fmt: skip
    return 0


def _public_line(key_file: Path) -> str | None:
    """The public key line of KEY (KEY.pub beside it, or KEY itself when it is a .pub), when
    it can be had without unlocking anything; None otherwise."""
    public = key_file if key_file.suffix == ".pub" else key_file.with_name(key_file.name + ".pub")
    try:
        text = read_bounded(public, 16 << 10).decode("utf-8", "replace").strip()
    except InputError:
        return None
    return text if text and "\n" not in text else None


def _signer(key_file: Path, passphrase: bytes | None, use_ssh_keygen: bool) -> propose.Sign:
    """How `key_file` signs: in this process (an ML-DSA key always), or by ssh-keygen."""
    if signing.is_mldsa_key_file(key_file):
        return lambda data: signing.with_mldsa_key_file(data, key_file, passphrase)
    if use_ssh_keygen:
        return lambda data: signing.with_ssh_keygen(data, key_file)
    return lambda data: signing.with_key_file(data, key_file, passphrase)
