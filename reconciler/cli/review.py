"""`circle review [REV]`: what approving REV would approve, in the owners' terms.

The desired-state changes (workload X: replicas 2 -> 4, member added, ...), the rules they
trigger with who signed and who is missing, and the approvals gone stale: made for another
version of the change, or before the approved head moved. Text for a terminal, `--output
markdown` for a pull-request comment, `--output json` for tools.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from reconciler.chain.quorum import missing
from reconciler.chain.review import review
from reconciler.chain.values import IdentityVerifier
from reconciler.cli.chain_options import (
    identities_option,
    introduction_option,
    named,
    open_repo,
    proposal,
    revision_argument,
)
from reconciler.cli.context import repo_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.desired.review import Change


@click.command("review")
@revision_argument
@repo_option
@introduction_option
@identities_option
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
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Show what approving REVISION would approve: its desired-state changes, the rules they
    trigger, who has signed, who is missing, and which approvals are stale."""
    mode = output or settings().output  # text, json or markdown
    git = open_repo(repo)
    now = int(time.time())
    found = proposal(git, revision, now, identities, introduction_file)
    if found.approved:
        step = found.steps[-1]
        return _render_approved(mode, step.seq, step.commit, step.signers)
    done = review(git, found, now, identities)
    report = done.to_json()
    report["asked"] = revision
    changes = done.changes
    label = named(git, revision, found.target)
    if mode == "json":
        print_json(report)
    elif mode == "markdown":
        stdout.print(_markdown(report, changes, label), markup=False)
    else:
        stdout.print(_text(report, changes, label), markup=False)
    return 0


def _render_approved(mode: str, seq: int, commit: str, signers: tuple[str, ...]) -> int:
    if mode == "json":
        print_json({"revision": commit, "seq": seq, "approved": True, "signers": list(signers),
                    "changes": [], "rules": [], "excluded": [], "stale": []})  # fmt: skip
        return 0
    line = f"{commit[:12]} is the approved head (seq {seq}), signed by {', '.join(signers)}"
    stdout.print(f"**{line}**" if mode == "markdown" else line, markup=False)
    return 0


def _status(report: dict[str, Any]) -> str:
    if report["approved"]:
        return f"approved: seq {report['seq']} has quorum"
    unmet = [r for r in report["rules"] if not r["satisfied"]]
    return f"not approved: {len(unmet)} rule{'s' if len(unmet) != 1 else ''} unmet"


def _rule_line(rule: dict[str, Any]) -> str:
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
        missing = ", ".join(
            rule["requiredMissing"] + ([] if rule["satisfied"] else rule["missing"])
        )
        lines.append(
            f"| {'✅' if rule['satisfied'] else '❌'} {rule['rule']} | "
            f"{rule['weight']}/{rule['threshold']} | {', '.join(rule['signed']) or '-'} | "
            f"{missing or '-'} |"
        )
    if report["excluded"]:
        lines += ["", "**Not counted**", ""] + [f"- {e}" for e in report["excluded"]]
    if report["stale"]:
        lines += ["", "**Stale approvals** (sign again)", ""]
        lines += [f"- {s['member']}: {s['reason']}" for s in report["stale"]]
    lines += ["", f"**{_status(report)}**"]
    return "\n".join(lines)
