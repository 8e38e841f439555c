"""`circle policy members add|remove|rotate-key` and `circle policy rules set`: change the owners.

One group, `policy`, because every command edits the same file into the same thing: the next
version of circle.yaml, with one set of options (`--repo`, `--dry-run`, `-o`) and one outcome
(what changed, which rules must approve it, what to run next). Under it a noun, then a verb, as
`kubectl config set-context` and `git remote add` are spelled: `members add`, `rules set`.

Each command reads circle.yaml from the working tree and the approved head from the chain
(verified from the introduction, as `circle log` does), applies one change
(`reconciler.desired.policy_edit`: comments and layout kept), sets `version` to the approved
version + 1 and `previous` to the sha256 of the approved circle.yaml, and checks the result as
`circle validate` would and against the chain's evolution rule, before writing it atomically.
It never commits and never signs. `approved_policy` and `checked` also serve `circle validate`
and `circle describe`, which report a working tree's circle.yaml that the chain would refuse.
"""

from __future__ import annotations

import dataclasses
import shlex
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pygit2

from qss.durable import write_atomically
from reconciler.chain import quorum
from reconciler.chain.trees import commit_of, policy_at
from reconciler.chain.values import IdentityVerifier
from reconciler.chain.verify import ChainError, parse_policy
from reconciler.chain.walk import MAIN, Chain, Deferred
from reconciler.cli.chain_options import identities_option, introduction, introduction_option
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, stderr, stdout
from reconciler.desired.documents import MAX_DOCUMENT_BYTES, decode
from reconciler.desired.evolution import ApprovedPolicy, evolution_problems
from reconciler.desired.folder import display_prefix, list_tree
from reconciler.desired.model import Circle
from reconciler.desired.model.circle import GOVERNANCE_RULE, POLICY_FILE
from reconciler.desired.model.types import MLDSA65, member_key_blob
from reconciler.desired.policy_edit import (
    AddMember,
    Change,
    PolicyEditError,
    RemoveMember,
    RotateKey,
    SetRule,
    edit_policy,
)
from reconciler.desired.problems import START, Problem, Severity, Stage, sort_key
from reconciler.desired.repository import PathRole, Report, analyse, classify
from reconciler.desired.review import describe_changes
from reconciler.desired.shipped import load_presets
from reconciler.errors import InputError, ReconcilerError
from reconciler.files import read_bounded

MAX_KEY_FILE = 16 * 1024


class NotACircle(InputError):
    """The folder is not a circle repository: no Git working tree of a circle here."""


class NotApprovedYet(InputError):
    """A circle whose first commit no quorum has approved yet: there is no approved head."""


# -- the approved head, and a working tree checked against it ------------------------------------


def _open(directory: Path) -> pygit2.Repository:
    if not directory.is_dir():
        raise NotACircle(f"{directory}: not a directory")
    if not (directory / POLICY_FILE).exists():
        raise NotACircle(f"{directory}: no {POLICY_FILE}: not a circle repository")
    try:
        repo = pygit2.Repository(str(directory), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
    except pygit2.GitError:
        raise NotACircle(
            f"{directory}: not a circle repository: not the top of a Git working tree "
            "(circle init makes one)"
        ) from None
    if repo.workdir is None or Path(repo.workdir).resolve() != directory.resolve():
        raise NotACircle(f"{directory}: not a circle repository: not a Git working tree")
    return repo


def approved_policy(
    directory: Path,
    now: int,
    identities: IdentityVerifier | None,
    introduction_file: Path | None = None,
) -> tuple[ApprovedPolicy, bytes]:
    """The policy at the approved head of the circle in `directory` (the chain verified from
    its introduction), and its exact bytes. NotACircle, NotApprovedYet, or the ChainError that
    stops the walk."""
    repo = _open(directory)
    try:
        intro = introduction(repo, introduction_file, now)
    except ChainError as error:
        raise NotACircle(f"{directory}: not a circle repository: {error}") from None
    _, state = Chain(repo, intro, MAIN, identities=identities).walk(now)
    if state is None:
        raise NotApprovedYet(
            f"{directory}: circle {intro.circle} has no approved step yet: the owners approve "
            "its first commit first (circle approve --key KEY)"
        )
    data = policy_at(repo, commit_of(repo, state.commit))
    circle = parse_policy(data)
    head = ApprovedPolicy(circle.id, circle.version, state.policy_sha256, state.seq, state.commit)
    return head, data


def _sigstore() -> IdentityVerifier:
    def make() -> IdentityVerifier:
        from reconciler.chain.sigstore import SigstoreVerifier  # slow to import: when needed

        return SigstoreVerifier.instance("production")

    return Deferred(make, "production")


def checked(directory: Path, report: Report) -> tuple[Report, ApprovedPolicy | None]:
    """`report` (`circle validate`'s, on `directory`) with the evolution rule checked against
    the approved head when `directory` is a circle repository with one, and that head."""
    file = display_prefix(directory) + POLICY_FILE
    try:
        head, _ = approved_policy(directory, int(time.time()), _sigstore())
    except (NotACircle, NotApprovedYet):
        return report, None
    except ReconcilerError as error:
        unread = Problem(
            file,
            START,
            f"the approved chain cannot be read ({error}): version and previous were not "
            "checked against it",
            "policy.evolution.unread",
            Severity.WARNING,
            Stage.REPOSITORY,
        )
        return _with(report, [unread]), None
    try:
        data = read_bounded(directory / POLICY_FILE, MAX_DOCUMENT_BYTES)
    except InputError:
        return report, head  # reported already
    return _with(report, evolution_problems(data, file, head)), head


def _with(report: Report, problems: list[Problem]) -> Report:
    if not problems:
        return report
    merged = sorted([*report.problems, *problems], key=sort_key)
    return dataclasses.replace(report, problems=tuple(merged))


def head_json(head: ApprovedPolicy | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "seq": head.seq,
        "commit": head.commit,
        "policyVersion": head.version,
        "policySha256": head.sha256,
    }


def chosen_repo(directory: Path | None, repo: Path) -> Path:
    """DIR (the argument, kept for old scripts) or `--repo DIR`: one of them, or here."""
    given = click.get_current_context().get_parameter_source("repo")
    if directory is None:
        return repo
    if given is not click.core.ParameterSource.DEFAULT and repo != directory:
        raise InputError(f"give DIR or --repo, not both ({directory}, {repo})")
    return directory


# -- reading a public key ------------------------------------------------------------------------


def read_public_key(path: Path) -> str:
    """The one `ssh-ed25519 AAAA... [comment]` or `ml-dsa-65 BASE64 [comment]` line of a .pub
    file; InputError otherwise (and never a word of a private key in the message)."""
    data = read_bounded(path, MAX_KEY_FILE)
    text = data.decode("utf-8", errors="replace")
    if "PRIVATE KEY" in text:
        public = path.with_name(path.name + ".pub")
        give = str(public) if public.is_file() else "KEY.pub"
        raise InputError(f"{path}: this is a private key; give {give}, its public half")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InputError(
            f"{path}: expected one public key line 'ssh-ed25519 AAAA... [comment]' or "
            f"'ml-dsa-65 BASE64 [comment]', found {len(lines)} lines"
        )
    line = lines[0]
    try:
        member_key_blob(line)
    except ValueError as error:
        kind = line.split()[0][:32]
        if kind not in ("ssh-ed25519", MLDSA65):
            raise InputError(
                f"{path}: not an Ed25519 or ML-DSA-65 public key (it starts {kind!r}): give a "
                ".pub line 'ssh-ed25519 AAAA... [comment]' (circle keygen or ssh-keygen -t "
                "ed25519) or 'ml-dsa-65 BASE64 [comment]' (circle keygen --type ml-dsa-65)"
            ) from None
        raise InputError(f"{path}: {error}") from None
    return line


# -- one change, checked, written and explained --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Options:
    repo: Path
    introduction_file: Path | None
    identities: IdentityVerifier | None
    dry_run: bool
    output: str | None


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "--dry-run", is_flag=True, help="Check and show the change; write nothing."
    )(function)
    return repo_option(introduction_option(identities_option(output_option(function))))


def _check_repository(root: Path, new: bytes) -> None:
    """Refuse when the repository, with `new` as its circle.yaml, has an error it did not have
    (a member key that is also a node's key, say): what `circle validate` would report."""
    prefix = display_prefix(root)
    files, links = list_tree(root)
    documents: dict[str, bytes] = {}
    refused: dict[str, str] = {}
    for path in sorted(files | links):
        if classify(path)[0] is not PathRole.DOCUMENT:
            continue
        if path in links:
            refused[path] = "is a symbolic link; circle documents must be regular files"
            continue
        documents[path] = read_bounded(root / path, MAX_DOCUMENT_BYTES, display=prefix + path)
    presets = load_presets().admission
    before = analyse(documents, files, presets, display_prefix=prefix, refused=refused)
    documents[POLICY_FILE] = new
    after = analyse(documents, files, presets, display_prefix=prefix, refused=refused)
    known = {str(problem) for problem in before.errors if problem.file != prefix + POLICY_FILE}
    fresh = [problem for problem in after.errors if str(problem) not in known]
    if fresh:
        more = f" (and {len(fresh) - 1} more)" if len(fresh) > 1 else ""
        raise PolicyEditError(f"the change would make the circle invalid: {fresh[0]}{more}")
    if len(before.errors) > len([p for p in before.errors if p.file == prefix + POLICY_FILE]):
        stderr.print(
            f"warning: {root} has other problems already (circle validate shows them)",
            markup=False,
        )


def _who(circle: Circle, rule: Any) -> str:
    weights = {member.id: member.weight for member in circle.members}
    names = rule.members if rule.members is not None else list(weights)
    shown = [name if weights.get(name, 1) == 1 else f"{name} ({weights[name]})" for name in names]
    text = f"weight {rule.threshold} of {', '.join(shown)}"
    text += f", including {', '.join(rule.required)}" if rule.required else ""
    return text + (f", {rule.signatures} signatures" if rule.signatures != "classic" else "")


def _approvals(old: Circle, new: Circle) -> list[dict[str, Any]]:
    """The rules a circle.yaml change must meet: those of the approved policy that cover
    circle.yaml, and the new policy's governance (TUF's root rotation: old AND new)."""
    found = [("approved", old.version, rule) for rule, _ in quorum.triggered(old, [POLICY_FILE])]
    governance = new.rule(GOVERNANCE_RULE)
    if governance is not None:
        found.append(("new", new.version, governance))
    return [
        {
            "policy": which,
            "version": version,
            "rule": rule.name,
            "threshold": rule.threshold,
            "members": list(
                rule.members if rule.members is not None else [m.id for m in policy.members]
            ),
            "required": list(rule.required),
            "signatures": rule.signatures,
            "needs": _who(policy, rule),
        }
        for which, version, rule in found
        for policy in [old if which == "approved" else new]
    ]


def _summary(change: Change) -> str:
    """The change in a commit message's words."""
    match change:
        case AddMember(member_id=member):
            return f"add member {member}"
        case RemoveMember(member_id=member):
            return f"remove member {member}"
        case RotateKey(member_id=member, keep_old=keep):
            return f"{'add a key for' if keep else 'rotate the key of'} {member}"
        case SetRule(name=rule):
            return f"set rule {rule}"


def _hint(change: Change) -> str | None:
    match change:
        case RotateKey(member_id=member, keep_old=False):
            return (
                f"{member}'s old key counts for the approved policy, the new key for the new "
                "one: approve once with each"
            )
        case AddMember(member_id=member):
            return f"{member}'s approval counts for the new policy's governance only"
        case RemoveMember(member_id=member):
            return f"{member}'s approval still counts for the approved policy, not the new one"
    return None


def _next_steps(options: _Options, summary: str, version: int) -> list[str]:
    git = "git" if options.repo == Path(".") else f"git -C {shlex.quote(str(options.repo))}"
    repo = "" if options.repo == Path(".") else f" --repo {shlex.quote(str(options.repo))}"
    message = shlex.quote(f"{POLICY_FILE} v{version}: {summary}")
    return [
        f"{git} commit -m {message} {POLICY_FILE}",
        f"circle review{repo}",
        f"circle approve{repo} --key KEY",
        f"circle verify{repo}",
        f"circle log{repo}",
    ]


_WHY = (
    "commit it (nothing is committed for you)",
    "what the owners sign, and who is missing",
    "each owner, until the rules above are met",
    "exits 0 once they are",
)


def _run(options: _Options, change: Change) -> int:
    repo = options.repo
    now = int(time.time())
    head, approved = approved_policy(repo, now, options.identities, options.introduction_file)
    path = repo / POLICY_FILE
    shown = display_prefix(repo) + POLICY_FILE
    data = read_bounded(path, MAX_DOCUMENT_BYTES, display=shown)
    edited = edit_policy(
        decode(data, shown), change, version=head.next_version, previous=head.sha256
    )
    as_json = settings(options.output).json
    if not edited.done:
        if as_json:
            print_json({"file": shown, "written": False, "changes": [], "done": []})
        else:
            stdout.print(f"{shown}: nothing to change: it says so already", markup=False)
        return 0
    assert edited.loaded is not None
    new = edited.text.encode()
    wrong = evolution_problems(new, shown, head)
    if wrong:  # never, unless policy_edit and the chain disagree: refuse, do not write
        raise PolicyEditError(str(wrong[0]))
    _check_repository(repo, new)
    if not options.dry_run:
        if read_bounded(path, MAX_DOCUMENT_BYTES, display=shown) != data:
            raise InputError(f"{shown} changed while it was being edited: run the command again")
        write_atomically(path, new, mode=stat.S_IMODE(path.stat().st_mode))
    old_policy, new_policy = parse_policy(approved), edited.loaded.document
    changes = describe_changes({POLICY_FILE: approved}, {POLICY_FILE: new}, [POLICY_FILE])
    approvals = _approvals(old_policy, new_policy)
    steps = _next_steps(options, _summary(change), new_policy.version)
    hint = _hint(change)
    if as_json:
        print_json(
            {
                "file": shown,
                "written": not options.dry_run,
                "dryRun": options.dry_run,
                "version": new_policy.version,
                "previous": head.sha256,
                "sha256": edited.sha256,
                "approvedHead": head_json(head),
                "seq": head.seq + 1,
                "done": list(edited.done),
                "changes": [
                    {"subject": c.subject, "action": str(c.action), "details": list(c.details),
                     "line": c.line()}
                    for c in changes
                ],
                "approvals": approvals,
                "hint": hint,
                "next": steps,
            }
        )  # fmt: skip
        return 0
    verb = "not written (--dry-run)" if options.dry_run else "written"
    lines = [f"{shown} {verb}: {'; '.join(edited.done)}"]
    lines.append(f"  version {new_policy.version}, previous {head.previous_text()}")
    lines += [f"changes from {head.where()}:"] + [f"  {c.line()}" for c in changes]
    lines.append(f"to approve it as seq {head.seq + 1}, the owners must meet:")
    lines += [
        f"  {a['policy']} policy v{a['version']}, rule {a['rule']}: {a['needs']}" for a in approvals
    ]
    if hint:
        lines.append(f"  ({hint})")
    lines.append("next:")
    width = max(len(step) for step in steps)
    whys = [*_WHY, f"then shows seq {head.seq + 1}"]
    lines += [f"  {step.ljust(width)}   # {why}" for step, why in zip(steps, whys, strict=True)]
    stdout.print("\n".join(lines), markup=False)
    return 0


def _options(
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    dry_run: bool,
    output: str | None,
) -> _Options:
    return _Options(repo, introduction_file, identities, dry_run, output)


# -- the commands ---------------------------------------------------------------------------------


@click.group("policy")
def group() -> None:
    """Change the owners and their rules: each command writes the next circle.yaml.

    The version goes up by one and `previous` names the sha256 of the approved circle.yaml, as
    the Human Chain requires; comments and layout stay. Nothing is committed or signed: commit
    the file, then the owners approve it (circle review shows who must).
    """


@group.group("members")
def members() -> None:
    """Add or remove an owner, or rotate an owner's key."""


@group.group("rules")
def rules() -> None:
    """Change a consensus rule (or add one)."""


KEY_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


@members.command("add")
@click.argument("member_id", metavar="ID")
@click.option("--key", "key_file", type=KEY_FILE, required=True, help="Their KEY.pub.")
@click.option("--weight", type=click.IntRange(1, 1000), help="Votes they carry (default 1).")
@_common
def add_command(member_id: str, key_file: Path, weight: int | None, **common: Any) -> int:
    """Add owner ID with the public key in KEY.pub (Ed25519, or ML-DSA-65 from `circle keygen
    --type ml-dsa-65`; give them the other kind too with `rotate-key ID --keep-old`)."""
    return _run(_options(**common), AddMember(member_id, read_public_key(key_file), weight))


@members.command("remove")
@click.argument("member_id", metavar="ID")
@_common
def remove_command(member_id: str, **common: Any) -> int:
    """Remove owner ID (and from the rules that list them). Refused when a rule would become
    unsatisfiable or requires them: change that rule first."""
    return _run(_options(**common), RemoveMember(member_id))


@members.command("rotate-key")
@click.argument("member_id", metavar="ID")
@click.option("--key", "key_file", type=KEY_FILE, required=True, help="The new KEY.pub.")
@click.option(
    "--old",
    help="The key that goes (a .pub file or its SHA256: fingerprint), when ID has several.",
)
@click.option("--keep-old", is_flag=True, help="Add the new key and keep the old one.")
@_common
def rotate_command(
    member_id: str, key_file: Path, old: str | None, keep_old: bool, **common: Any
) -> int:
    """Give owner ID a new key (TUF-style: the new key is added, the old one of the same type,
    Ed25519 or ML-DSA-65, removed unless --keep-old). The change is approved with the old key
    for the approved policy and the new key for the new one."""
    old_key = old
    if old is not None and not old.startswith("SHA256:"):
        old_key = read_public_key(Path(old))
    change = RotateKey(member_id, read_public_key(key_file), old_key, keep_old)
    return _run(_options(**common), change)


@rules.command("set")
@click.argument("rule")
@click.option("--threshold", type=click.IntRange(1), help="Weight of signatures needed.")
@click.option("--paths", multiple=True, metavar="PATTERN", help="Paths it covers (repeat).")
@click.option("--members", "rule_members", multiple=True, metavar="ID", help="Members who count.")
@click.option("--all-members", is_flag=True, help="Every member counts (no member list).")
@click.option("--required", multiple=True, metavar="ID", help="Members who must sign (repeat).")
@click.option("--no-required", is_flag=True, help="No member is required.")
@click.option(
    "--signatures",
    type=click.Choice(["classic", "hybrid", "post-quantum"]),
    help="What counts: any valid signature (classic), a classic and an ML-DSA one of the same "
    "statement (hybrid), ML-DSA ones only (post-quantum).",
)
@_common
def set_command(
    rule: str,
    threshold: int | None,
    paths: tuple[str, ...],
    rule_members: tuple[str, ...],
    all_members: bool,
    required: tuple[str, ...],
    no_required: bool,
    signatures: str | None,
    **common: Any,
) -> int:
    """Set RULE's threshold, paths, members, required members or signatures; a new RULE needs
    --paths and --threshold. Lists given replace the rule's (repeat the option for more)."""
    if required and no_required:
        raise InputError("give --required or --no-required, not both")
    change = SetRule(
        rule,
        threshold=threshold,
        paths=paths or None,
        members=rule_members or None,
        all_members=all_members,
        required=() if no_required else (required or None),
        signatures=signatures,
    )
    if change == SetRule(rule):
        raise InputError(
            "say what to set: --threshold, --paths, --members, --all-members, --required, "
            "--no-required or --signatures"
        )
    return _run(_options(**common), change)
