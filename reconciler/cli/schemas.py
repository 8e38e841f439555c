"""`circle schemas`: write or check the JSON Schemas generated from the models."""

from __future__ import annotations

from pathlib import Path

import click

from qss.durable import write_atomically
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.desired.schemas import WRITE_COMMAND, render_schemas


def stale_schemas(directory: Path) -> list[str]:
    """Schema files under `directory` that differ from the models (or are missing)."""
    stale = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


@click.command("schemas")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("schemas"),
    show_default=True,
    help="Folder of the schema files.",
)
@click.option("--write", "mode", flag_value="write", help="Write the schemas (the default).")
@click.option(
    "--check", "mode", flag_value="check", help="Exit 1 if a file differs from the models."
)
@output_option
def command(directory: Path, mode: str | None, output: str | None) -> int:
    """Generate the JSON Schemas of every document kind from the models."""
    if mode == "check":
        stale = stale_schemas(directory)
        if settings(output).json:
            print_json({"directory": str(directory), "stale": stale})
        elif stale:
            stdout.print(
                f"{directory}: out of date: {', '.join(stale)}; run `{WRITE_COMMAND}`", markup=False
            )
        else:
            stdout.print(f"{directory}: schemas match the models", markup=False)
        return 1 if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)
            written.append(name)
    if settings(output).json:
        print_json({"directory": str(directory), "written": written})
    else:
        stdout.print(f"{directory}: {len(written)} schema file(s) written", markup=False)
    return 0
