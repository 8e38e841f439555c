"""`circle review [REV]`: what approving REV would approve, in the owners' terms.

The desired-state changes (workload X: replicas 2 -> 4, member added, ...), the rules they
trigger with who signed and who is missing, and the approvals gone stale: made for another
version of the change, or before the approved head moved. Text for a terminal, `--output
markdown` for a pull-request comment, `--output json` for tools.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli import answers
from reconciler.cli.chain_options import (
    Trust,
    introduction_option,
    named,
    open_repo,
    proposal,
    revision_argument,
    trust_option,
    warned,
)
from reconciler.cli.context import repo_option, settings
from reconciler.cli.render import json_text

if TYPE_CHECKING:
    from reconciler.desired.review import Change


@click.command("review")
@revision_argument
@repo_option
@introduction_option
@trust_option
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json", "markdown"]),
    default=None,
    help="text for people (default), markdown for a pull-request comment, json for machines.",
)
def command(
    revision: str,
    repo: Path,
    introduction_file: Path | None,
    trust: Trust,
    output: str | None,
) -> int:
    """Show what approving REVISION would approve: its desired-state changes, the rules they
    trigger, who has signed, who is missing, and which approvals are stale."""
    mode = output or settings().output  # text, json or markdown
    now = int(time.time())
    asked, code = answers.ask(
        repo, "review", now, trust=trust.label, introduction=introduction_file,
        revision=revision, output=mode,
    )  # fmt: skip
    if code is not None:
        return code
    # Only now the chain (pygit2 and the document models): see `reconciler.cli.answers`.
    from reconciler.chain import headcache
    from reconciler.chain.review import review

    git = open_repo(repo)
    found = proposal(git, revision, now, trust.verifier(), introduction_file)
    kept = None if warned() else asked
    if found.approved:
        step = found.steps[-1]
        held = answers.window(headcache.instants(git, step.seq + 1), now)
        return answers.answer(
            kept, _render_approved(mode, step.seq, step.commit, step.signers), 0, held
        )
    done = review(git, found, now, trust.verifier())
    report = done.to_json()
    report["asked"] = revision
    changes = done.changes
    label = named(git, revision, found.target)
    if mode == "json":
        text = json_text(report)
    elif mode == "markdown":
        text = _markdown(report, changes, label) + "\n"
    else:
        text = _text(report, changes, label) + "\n"
    held = answers.window(done.instants | headcache.instants(git, found.seq), now)
    return answers.answer(kept, text, 0, held)


def _render_approved(mode: str, seq: int, commit: str, signers: tuple[str, ...]) -> str:
    if mode == "json":
        return json_text({"revision": commit, "seq": seq, "approved": True,
                          "signers": list(signers), "changes": [], "rules": [], "excluded": [],
                          "stale": []})  # fmt: skip
    line = f"{commit[:12]} is the approved head (seq {seq}), signed by {', '.join(signers)}"
    return (f"**{line}**" if mode == "markdown" else line) + "\n"


def _status(report: dict[str, Any]) -> str:
    if report["approved"]:
        return f"approved: seq {report['seq']} has quorum"
    unmet = [r for r in report["rules"] if not r["satisfied"]]
    return f"not approved: {len(unmet)} rule{'s' if len(unmet) != 1 else ''} unmet"


def _rule_line(rule: dict[str, Any]) -> str:
    from reconciler.chain.quorum import missing

    text = (
        f"{rule['rule']}{' (proposed policy)' if rule['policy'] != 'current' else ''}: "
        f"weight {rule['weight']}/{rule['threshold']}"
    )
    text += f", signed by {', '.join(rule['signed'])}" if rule["signed"] else ", no signature yet"
    if rule["requiredMissing"]:
        text += f"; required: {', '.join(rule['requiredMissing'])}"
    if not rule["satisfied"] and rule["missing"]:
        text += f"; {missing(rule['threshold'] - rule['weight'], rule['missing'])}"
    return text


def _text(report: dict[str, Any], changes: list[Change], label: str) -> str:
    start = report["from"][:12] if report["from"] else "the introduction"
    lines = [f"review of {label}: seq {report['seq']}, from {start}", ""]
    lines += ["changes:"] + [f"  {c.line()}" for c in changes] or ["  none"]
    lines += ["", "rules:"]
    lines += [f"  {'ok ' if r['satisfied'] else 'NO '} {_rule_line(r)}" for r in report["rules"]]
    if report["excluded"]:
        lines += ["", "not counted:"] + [f"  {e}" for e in report["excluded"]]
    if report["stale"]:
        lines += ["", "stale approvals (sign again):"]
        lines += [f"  {s['member']}: {s['reason']}" for s in report["stale"]]
    lines += ["", _status(report)]
    return "\n".join(lines)


def _markdown(report: dict[str, Any], changes: list[Change], label: str) -> str:
    mark = "✅" if report["approved"] else "❌"
    lines = [
        f"### {mark} circle review: `{label}` (seq {report['seq']})",
        "",
        "**Changes**",
        "",
    ]
    lines += [f"- {c.line()}" for c in changes] or ["- none"]
    lines += [
        "",
        "**Rules**",
        "",
        "| rule | weight | signed | missing |",
        "| --- | --- | --- | --- |",
    ]
    for rule in report["rules"]:
        absent = ", ".join(rule["requiredMissing"] + ([] if rule["satisfied"] else rule["missing"]))
        lines.append(
            f"| {'✅' if rule['satisfied'] else '❌'} {rule['rule']} | "
            f"{rule['weight']}/{rule['threshold']} | {', '.join(rule['signed']) or '-'} | "
            f"{absent or '-'} |"
        )
    if report["excluded"]:
        lines += ["", "**Not counted**", ""] + [f"- {e}" for e in report["excluded"]]
    if report["stale"]:
        lines += ["", "**Stale approvals** (sign again)", ""]
        lines += [f"- {s['member']}: {s['reason']}" for s in report["stale"]]
    lines += ["", f"**{_status(report)}**"]
    return "\n".join(lines)
