"""The `circle` command: one entry point, `--help` everywhere, `--output json` for machines.

Exit codes: 0 success; 1 a check failed (validation, verification); 2 bad usage or input;
70 an internal error (a bug: please report it with the `--verbose` traceback). Errors print one
line, no traceback, unless `--verbose`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from reconciler import __version__
from reconciler.cli import (
    artifact,
    build,
    chain,
    dashboard,
    describe,
    get,
    init,
    keygen,
    logs,
    node,
    policy,
    presets,
    qss,
    review,
    schemas,
    sync,
    up,
    validate,
)
from reconciler.cli.context import Settings, output_option
from reconciler.cli.render import print_error
from reconciler.desired.problems import DocumentError
from reconciler.errors import ReconcilerError

EXIT_INTERNAL = 70


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit codes: 0 success, 1 a check failed, 2 bad usage or input.",
)
@click.version_option(__version__, "--version", "-V", prog_name="circle")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and more detail.")
@output_option
@click.pass_context
def cli(context: click.Context, verbose: bool, output: str | None) -> None:
    """Autonomous Circles: desired state in Git, changed only by a quorum of its owners."""
    context.obj = Settings(verbose=verbose, output=output or "text")


cli.add_command(validate.command)
cli.add_command(build.command)
cli.add_command(keygen.command)
cli.add_command(init.command)
cli.add_command(chain.introduction_command)
cli.add_command(chain.log_command)
cli.add_command(chain.verify_command)
cli.add_command(chain.approve_command)
cli.add_command(review.command)
cli.add_command(sync.clone_command)
cli.add_command(sync.land_command)
cli.add_command(sync.push_command)
cli.add_command(sync.pull_command)
cli.add_command(sync.follow_command)
cli.add_command(describe.command)
cli.add_command(schemas.command)
cli.add_command(presets.group)
cli.add_command(policy.group)
cli.add_command(qss.group)
cli.add_command(artifact.group)
cli.add_command(node.group)
cli.add_command(get.group)
cli.add_command(get.events_command)
cli.add_command(logs.command)
cli.add_command(up.up_command)
cli.add_command(up.status_command)
cli.add_command(up.down_command)
cli.add_command(dashboard.command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: run the CLI and turn every outcome into one exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = bool({"-v", "--verbose"} & set(args))
    json_output = _wants_json(args)
    try:
        code = cli.main(args=args, prog_name="circle", standalone_mode=False)
    except click.exceptions.Exit as done:
        code = done.exit_code
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except click.exceptions.Abort:
        print_error("aborted", json_output)
        code = 130
    except ReconcilerError as error:
        if verbose:
            raise
        problems = error.problems if isinstance(error, DocumentError) else ()
        print_error(str(error), json_output, problems)
        code = error.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # the last line of defence: users never see a traceback
        if verbose:
            raise
        print_error(
            f"internal error: {type(error).__name__}: {error} (run with --verbose for details)",
            json_output,
        )
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


def _wants_json(args: list[str]) -> bool:
    for index, arg in enumerate(args):
        if arg in ("-o", "--output") and index + 1 < len(args):
            return args[index + 1] == "json"
        if arg.startswith("--output="):
            return arg.partition("=")[2] == "json"
    return False
