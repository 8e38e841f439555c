"""`circle validate [DIR]`: check a whole circle repository and report every problem."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import plural, print_json, print_problems, stdout
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState, Report


def counts(state: DesiredState) -> dict[str, int]:
    circle = state.circle.document if state.circle else None
    return {
        "members": len(circle.members) if circle else 0,
        "rules": len(circle.consensus.rules) if circle else 0,
        "nodes": len(state.nodes),
        "workloads": len(state.workloads),
        "builds": len(state.builds),
        "volumes": len(state.volumes),
    }


def report_json(path: Path, report: Report) -> dict[str, object]:
    circle = report.state.circle
    return {
        "path": str(path),
        "valid": not report.errors,
        "exitCode": report.exit_code,
        "documents": report.documents,
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "circle": {
            "id": circle.document.id,
            "version": circle.document.version,
            "policySha256": circle.sha256,
        }
        if circle
        else None,
        "counts": counts(report.state),
        "problems": [problem.as_dict() for problem in report.problems],
    }


def summary_line(path: Path, report: Report) -> str:
    parts = [plural(n, kind.removesuffix("s")) for kind, n in counts(report.state).items()]
    circle = report.state.circle
    name = f"circle {circle.document.id} v{circle.document.version}" if circle else "no circle"
    verdict = "valid" if not report.errors else f"invalid ({plural(len(report.errors), 'error')})"
    return (
        f"{path}: {name}, {plural(report.documents, 'document')} {verdict}; "
        f"{', '.join(parts)}; {plural(len(report.warnings), 'warning')}"
    )


@click.command("validate")
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@output_option
def command(directory: Path, output: str | None) -> int:
    """Validate the circle repository in DIRECTORY (default: the current one).

    Reports every problem as FILE:LINE:COL: MESSAGE. Exits 0 when valid (warnings allowed),
    1 when the documents do not fit together or break an admission rule, 2 when a document
    cannot be read.
    """
    report = check_circle_dir(directory)
    if settings(output).json:
        print_json(report_json(directory, report))
    else:
        print_problems(report.problems)
        stdout.print(summary_line(directory, report), markup=False)
    return report.exit_code
