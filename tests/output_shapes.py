"""Every `-o json` output is checked against the JSON Schema of its command's output shape.

`schemas/output/<command path>.json` (`get-nodes.json` for `circle get nodes`) says what a
command prints with `-o json`; `error.json` what any command prints when it refuses. The
`circle` fixtures of `tests/conftest.py` call `check` on every run, so each test that reads a
command's JSON also holds the command to its published shape; `test_output_schemas.py` checks
that every command with `--output` has one, and that the schemas themselves follow the house
rules (camelCase keys, no unknown keys).

With CIRCLE_RECORD_OUTPUTS=DIR set, each JSON output is also appended to DIR/<name>.jsonl
(a tool for writing a new command's schema from what the tests saw).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import jsonschema

from reconciler.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas" / "output"
ERROR = "error"
JSON_BY_DEFAULT = {"introduction"}  # its output is a file format: nodes take it as it is


def command_path(args: Sequence[str]) -> tuple[list[str], str] | None:
    """The command path `args` runs (['get', 'nodes']) and its output mode, as click parses
    them (no callback runs); None for `--help`, `--version` and what does not parse."""
    if {"-h", "--help", "-V", "--version"} & set(args):
        return None
    try:
        context = cli.make_context("circle", list(args), resilient_parsing=True)
        mode = context.params.get("output") or "text"
        path: list[str] = []
        command: click.Command = cli
        rest = [*context._protected_args, *context.args]
        while isinstance(command, click.Group) and rest:
            name, found, rest = command.resolve_command(context, rest)
            if found is None or name is None:
                return None
            path.append(name)
            command = found
            context = command.make_context(name, rest, parent=context, resilient_parsing=True)
            rest = (
                [*context._protected_args, *context.args]
                if isinstance(command, click.Group)
                else []
            )
            mode = context.params.get("output") or mode
    except click.ClickException:
        return None
    if not path:
        return None
    if "-".join(path) in JSON_BY_DEFAULT and context.params.get("output") is None:
        mode = "json"
    return path, str(mode)


@functools.cache
def schema(name: str) -> dict[str, Any] | None:
    path = SCHEMAS / f"{name}.json"
    if not path.exists():
        return None
    found: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(found)
    return found


def documents(stdout: str) -> list[Any]:
    """One JSON document, or JSON Lines (one a line: `--watch`, `--follow`)."""
    try:
        return [json.loads(stdout)]
    except ValueError:
        return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def is_error(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and "error" in document
        and set(document) <= {"error", "problems"}
    )


def check(args: Sequence[str], code: int, stdout: str) -> None:
    """Validate `stdout` of `circle ARGS` against its schema when it printed JSON."""
    found = command_path(args)
    if found is None or found[1] != "json" or not stdout.strip():
        return
    path, _ = found
    name = "-".join(path)
    for document in documents(stdout):
        which = ERROR if is_error(document) else name
        if _record(which, document):
            continue
        shape = schema(which)
        assert shape is not None, f"circle {' '.join(path)} -o json: no schemas/output/{which}.json"
        try:
            jsonschema.validate(document, shape, cls=jsonschema.Draft202012Validator)
        except jsonschema.ValidationError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "(top)"
            raise AssertionError(
                f"circle {' '.join(path)} -o json (exit {code}) does not match "
                f"schemas/output/{which}.json at {where}: {error.message}"
            ) from None


def _record(name: str, document: Any) -> bool:
    """Record `document` (and check nothing) when CIRCLE_RECORD_OUTPUTS is set."""
    folder = os.environ.get("CIRCLE_RECORD_OUTPUTS")
    if folder:
        with open(Path(folder) / f"{name}.jsonl", "a", encoding="utf-8") as sink:
            sink.write(json.dumps(document) + "\n")
    return bool(folder)
