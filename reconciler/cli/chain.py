"""`circle introduction`, `circle log`, `circle verify [REV]`: the Human Chain, read-only.

`log` verifies the chain cold from the repository's introduction and shows every approved step;
`verify REV` says whether the transition from the approved head to REV has quorum (exit 0) or
not (exit 1, naming what is missing): usable as a CI status check on a pull request.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import pygit2

from builders import BuildError, sshsig
from qss.durable import write_atomically
from reconciler.chain import approvals, follow, quorum, statements
from reconciler.chain import verify as chain
from reconciler.chain.verify import IdentityVerifier
from reconciler.chain.walk import Chain, Deferred, Step, find_introduction
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stderr, stdout
from reconciler.desired.model.circle import POLICY_FILE
from reconciler.desired.model.types import ed25519_key_blob
from reconciler.errors import InputError

REF = "refs/heads/main"


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

    return Deferred(make)


def introduction_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--introduction",
        "introduction_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The circle's introduction (JSON from `circle introduction`), when main holds "
        "more than one root commit; by default it is read from main.",
    )(function)


def trusted_introduction(
    git: pygit2.Repository, introduction_file: Path | None, now: int
) -> chain.Introduction:
    """The introduction given, or the one main's history has; junk roots merged into main are
    named on stderr (they are not part of the approved chain)."""
    if introduction_file is not None:
        return follow.load_introduction(introduction_file)
    found = find_introduction(git, REF, now=now)
    if found.foreign_roots:
        roots = ", ".join(root[:12] for root in found.foreign_roots)
        stderr.print(
            f"warning: main merges {len(found.foreign_roots)} root commit(s) of another "
            f"history ({roots}): not part of the circle's approved chain",
            markup=False,
        )
    return found.intro


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


@dataclass(frozen=True)
class Proposal:
    """Where the chain stands, and the transition REVISION would be from there."""

    walker: Chain
    steps: list[Step]
    state: chain.NodeState | None
    target: str
    seq: int

    @property
    def intro(self) -> chain.Introduction:
        return self.walker.intro

    @property
    def approved(self) -> bool:
        return self.state is not None and self.target == self.state.commit

    def transition(self) -> chain.Transition:
        return self.walker.transition(self.state, self.target)

    def evidence(self) -> list[chain.Evidence]:
        found: list[chain.Evidence] = self.walker.candidates(self.seq).get(self.target, [])
        return found


def propose(
    git: pygit2.Repository,
    revision: str,
    now: int,
    identities: IdentityVerifier | None,
    introduction_file: Path | None = None,
) -> Proposal:
    """The approved chain (verified from the introduction) and REVISION's place after it."""
    intro = trusted_introduction(git, introduction_file, now)
    walker = Chain(git, intro, REF, identities=identities)
    steps, state = walker.walk(now)
    try:
        target = str(git.revparse_single(revision).peel(pygit2.Commit).id)
    except (KeyError, ValueError, pygit2.InvalidSpecError):
        raise InputError(f"{revision}: no such commit") from None
    seq = (
        state.seq
        if state is not None and target == state.commit
        else (state.seq + 1 if state else 1)
    )
    return Proposal(walker, steps, state, target, seq)


@click.command("introduction")
@repo_option
def introduction_command(repo: Path) -> int:
    """Print the introduction (circle id, first commit, policy sha256) as JSON, for nodes."""
    intro = trusted_introduction(open_repo(repo), None, int(time.time()))
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
    walker = Chain(
        git, trusted_introduction(git, introduction_file, now), REF, identities=identities
    )
    steps, _ = walker.walk(now)
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
    """Exit 0 if the transition from the approved head to REVISION has quorum, 1 if not."""
    now = int(time.time())
    proposal = propose(open_repo(repo), revision, now, identities, introduction_file)
    target, seq = proposal.target, proposal.seq
    unmet = ""
    last = proposal.steps[-1] if proposal.steps else None
    signers: list[str] = list(last.signers) if last and last.commit == target else []
    if not proposal.approved:
        try:
            verdict = proposal.walker.check(
                proposal.state, target, proposal.evidence(), now, vouched_first=False
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


def ssh_keygen_sign(statement: bytes, key_file: Path) -> str:
    """The SSHSIG `ssh-keygen -Y sign` makes of `statement` with `key_file` (a private key, or a
    public key whose private half ssh-agent holds); its prompts reach the terminal."""
    executable = shutil.which("ssh-keygen")
    if executable is None:
        raise InputError("ssh-keygen is not installed (apt-get install openssh-client)")
    with tempfile.TemporaryDirectory(prefix="circle-approve-") as folder:
        message = Path(folder) / "statement.json"
        message.write_bytes(statement)
        done = subprocess.run(
            [executable, "-Y", "sign", "-n", statements.NAMESPACE, "-f", str(key_file),
             str(message)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise InputError(f"ssh-keygen -Y sign with {key_file}: {said[0]}")
        return (Path(folder) / "statement.json.sig").read_text()


@click.command("approve")
@click.argument("revision", default="main")
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
    """Sign the transition from the approved head to REVISION and file it in the approvals ref."""
    git = open_repo(repo)
    if statement_in is not None or signature_in is not None:
        if statement_in is None or signature_in is None:
            raise InputError("--statement and --signature go together")
        path = approvals.add(git, statement_in.read_bytes(), signature_in.read_text())
        stdout.print(f"filed {path}", markup=False)
        return 0
    now = int(time.time())
    proposal = propose(git, revision, now, identities, introduction_file)
    intro, target, seq = proposal.intro, proposal.target, proposal.seq
    if proposal.approved:
        raise InputError(f"{target[:12]} is the approved head already (seq {seq})")
    step = proposal.transition()
    in_force_bytes = step.policy_from if step.policy_from is not None else step.policy_to
    in_force = proposal.walker.policy(in_force_bytes)
    statement = statements.Approval(
        circle=intro.circle,
        introduction=intro.commit,
        ref=REF,
        seq=seq,
        from_commit=step.from_commit,
        to_commit=step.to_commit,
        to_tree=step.to_tree,
        tree_sha256=step.tree_sha256,
        policy_sha256=chain.sha256(in_force_bytes),
        issued_at=now,
        expires_at=now + in_force.consensus.approval_lifetime,
    ).encode()
    if statement_out is not None:
        write_atomically(statement_out, statement.decode())
        stdout.print(
            f"statement for seq {seq} ({target[:12]}) written to {statement_out}; sign it with "
            f"ssh-keygen -Y sign -n {statements.NAMESPACE} -f KEY {statement_out}",
            markup=False,
        )
        return 0
    if key_file is None:
        raise InputError("give --key KEY, or --statement-out FILE to sign elsewhere")
    if use_ssh_keygen:
        signature = ssh_keygen_sign(statement, key_file)
        key_line = sshsig.parse(signature).public_key_line
    else:
        passphrase = passphrase_file.read_bytes().splitlines()[0] if passphrase_file else None
        try:
            key = sshsig.load_private_key(key_file.read_bytes(), passphrase)
        except BuildError as error:
            raise InputError(f"{key_file}: {error}") from error
        signature = sshsig.sign(statement, key, statements.NAMESPACE)
        key_line = sshsig.public_key_line(key)
    blob = ed25519_key_blob(key_line)
    member = chain.members_by_key(in_force).get(blob)
    if member is None and POLICY_FILE in step.changed:  # a member being admitted co-signs
        member = chain.members_by_key(proposal.walker.policy(step.policy_to)).get(blob)
    if member is None:
        raise InputError(f"{key_file}: this key belongs to no member of circle {intro.circle}")
    sshsig.verify(statement, signature, key_line, statements.NAMESPACE)
    path = approvals.add(git, statement, signature)
    if settings(output).json:
        print_json({"seq": seq, "commit": target, "member": member, "path": path})
    else:
        stdout.print(f"approved seq {seq} ({target[:12]}) as {member}", markup=False)
    return 0
