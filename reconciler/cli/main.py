"""The `circle` command: one entry point, `--help` everywhere, `--output json` for machines.

Exit codes: 0 success; 1 a check failed (validation, verification); 2 bad usage or input;
70 an internal error (a bug: please report it with the `--verbose` traceback). Errors print one
line, no traceback, unless `--verbose`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from reconciler import __version__
from reconciler.cli.context import Settings, output_option
from reconciler.cli.render import print_error
from reconciler.desired.problems import DocumentError
from reconciler.errors import ReconcilerError

EXIT_INTERNAL = 70


# Each command's module is imported only when the command runs (or when help lists it): a
# command pays for its own imports, not for all of them (`circle verify` no longer loads the
# dashboard's web stack or the agent). Order is the order `circle --help` lists them in.
COMMANDS: dict[str, str] = {
    "validate": "validate:command",
    "build": "build:command",
    "keygen": "keygen:command",
    "init": "init:command",
    "introduction": "chain:introduction_command",
    "log": "chain:log_command",
    "verify": "chain:verify_command",
    "approve": "approve:approve_command",
    "review": "review:command",
    "clone": "sync:clone_command",
    "land": "sync:land_command",
    "push": "sync:push_command",
    "pull": "sync:pull_command",
    "follow": "sync:follow_command",
    "describe": "describe:command",
    "schemas": "schemas:command",
    "presets": "presets:group",
    "policy": "policy:group",
    "secret": "secret:group",
    "qss": "qss:group",
    "artifact": "artifact:group",
    "node": "node:group",
    "get": "get:group",
    "events": "get:events_command",
    "logs": "logs:command",
    "up": "up:up_command",
    "status": "up:status_command",
    "down": "up:down_command",
    "dashboard": "dashboard:command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are `module:attribute` names under `reconciler.cli`."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(f"reconciler.cli.{module}"), attribute)
        assert isinstance(command, click.Command), target
        assert command.name == cmd_name, (target, command.name)
        return command


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
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
        if json_output:  # a machine asked: the same one JSON object as every other error
            print_error(error.format_message(), True)
        else:
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
