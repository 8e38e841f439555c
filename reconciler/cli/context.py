"""Settings every command shares: `--verbose` and `--output`, given before or after the command."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

OUTPUTS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    verbose: bool = False
    output: str = "text"

    @property
    def json(self) -> bool:
        return self.output == "json"


def output_option(function: F) -> F:
    """`--output text|json`, accepted on the group and on every command (the command's wins)."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUTS),
        default=None,
        help="Output format: text for people (default), json for machines.",
    )(function)


def repo_option(function: F) -> F:
    """`--repo DIR`: the circle repository a command works on (default: here)."""
    return click.option(
        "--repo",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("."),
        show_default=True,
        help="The circle repository.",
    )(function)


def settings(output: str | None = None) -> Settings:
    """The settings of the running command, with its own `--output` applied."""
    context = click.get_current_context()
    base = context.find_object(Settings) or Settings()
    return Settings(verbose=base.verbose, output=output or base.output)
