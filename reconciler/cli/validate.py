"""`circle validate [--repo DIR]`: check a whole circle repository and report every problem.

In a circle repository with an approved chain, circle.yaml is also checked against the approved
head, as the Human Chain will check it: a changed circle.yaml must be the next version and name
the approved one's sha256 (each problem says the expected value).
"""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.policy import checked, chosen_repo, head_json
from reconciler.cli.render import print_json, print_problems, report_json, stdout, summary_line
from reconciler.desired.folder import check_circle_dir


@click.command("validate")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@repo_option
@output_option
def command(directory: Path | None, repo: Path, output: str | None) -> int:
    """Validate the circle repository in DIRECTORY or --repo (default: the current one).

    Reports every problem as FILE:LINE:COL: MESSAGE. Exits 0 when valid (warnings allowed),
    1 when the documents do not fit together, break an admission rule or (in a circle
    repository) change circle.yaml without its next version and previous, 2 when a document
    cannot be read.
    """
    root = chosen_repo(directory, repo)
    report, head = checked(root, check_circle_dir(root))
    if settings(output).json:
        print_json({**report_json(root, report), "approvedHead": head_json(head)})
    else:
        print_problems(report.problems)
        stdout.print(summary_line(root, report), markup=False)
    return report.exit_code
