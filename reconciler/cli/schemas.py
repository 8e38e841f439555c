"""`circle schemas`: list, write or check the JSON Schemas generated from the models.

Without a flag it only lists each schema file and whether it matches the models; `--write`
writes those that differ, `--check` exits 1 if any does (the CI check).
"""

from __future__ import annotations

from pathlib import Path

import click

from qss.durable import write_atomically
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_columns, print_json, stdout
from reconciler.desired.schemas import WRITE_COMMAND, render_schemas


def schema_states(directory: Path) -> dict[str, str]:
    """Each schema file's state under `directory`: current, stale (differs) or missing."""
    states = {}
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file():
            states[name] = "missing"
        else:
            states[name] = "current" if path.read_text(encoding="utf-8") == text else "stale"
    return states


@click.command("schemas")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("schemas"),
    show_default=True,
    help="Folder of the schema files.",
)
@click.option("--write", "mode", flag_value="write", help="Write the schemas that differ.")
@click.option(
    "--check", "mode", flag_value="check", help="Exit 1 if a file differs from the models."
)
@output_option
def command(directory: Path, mode: str | None, output: str | None) -> int:
    """List the JSON Schemas of every document kind, generated from the models, and whether
    each file matches; --write writes them, --check exits 1 unless all match."""
    as_json = settings(output).json
    if mode == "write":
        return _write(directory, as_json)
    states = schema_states(directory)
    stale = [name for name, state in states.items() if state != "current"]
    if mode == "check":
        if as_json:
            print_json({"directory": str(directory), "stale": stale})
        elif stale:
            stdout.print(
                f"{directory}: out of date: {', '.join(stale)}; run `{WRITE_COMMAND}`", markup=False
            )
        else:
            stdout.print(f"{directory}: schemas match the models", markup=False)
        return 1 if stale else 0
    if as_json:
        print_json(
            {
                "directory": str(directory),
                "schemas": [{"file": name, "state": state} for name, state in states.items()],
            }
        )
        return 0
    print_columns(["SCHEMA", "STATE"], [[str(directory / n), s] for n, s in states.items()])
    if stale:
        stdout.print(
            f"{len(stale)} of {len(states)} differ from the models: run `{WRITE_COMMAND}`",
            markup=False,
        )
    return 0


def _write(directory: Path, as_json: bool) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)
            written.append(name)
    if as_json:
        print_json({"directory": str(directory), "written": written})
    else:
        stdout.print(f"{directory}: {len(written)} schema file(s) written", markup=False)
    return 0
