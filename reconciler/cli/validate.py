"""`circle validate [DIR]`: check a whole circle repository and report every problem."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, print_problems, report_json, stdout, summary_line
from reconciler.desired.folder import check_circle_dir


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
