"""The `circle` command frame: help everywhere, exit codes, one-line errors, --verbose."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

from reconciler import __version__
from reconciler.cli.main import cli
from tests.conftest import EXAMPLE, Result, copy_example, edit, run_circle_process


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    context = click.Context(group)
    for name in sorted(group.list_commands(context)):
        command = group.get_command(context, name)
        assert command is not None, name
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


COMMANDS = list(command_paths(cli))


def test_commands_load_lazily_and_each_name_is_its_own() -> None:
    """`circle --version` imports no command module; every lazy name resolves to a command
    of that name (the group asserts it), and no command is left out of the map."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from reconciler.cli.main import cli; "
         "print(sorted(m for m in sys.modules if m.startswith('reconciler.cli.')))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == str(
        [f"reconciler.cli.{m}" for m in ("context", "main", "render")]
    )
    package = Path(__file__).parents[3] / "reconciler" / "cli"
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "main"}
    helpers = {"answers", "context", "render", "chain_options", "provenance"}
    named = {target.partition(":")[0] for target in cli.lazy.values()}
    assert modules - helpers == named


def test_version(circle: Callable[..., Result]) -> None:
    result = circle("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"circle, version {__version__}"


def test_help_lists_the_commands(circle: Callable[..., Result]) -> None:
    result = circle("--help")
    assert result.code == 0
    for name in ("validate", "describe", "schemas", "presets"):
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(path) for path in COMMANDS])
def test_every_command_has_help(circle: Callable[..., Result], path: tuple[str, ...]) -> None:
    result = circle(*path, "--help")
    assert result.code == 0
    assert result.stdout.startswith(f"Usage: circle {' '.join(path)}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["validate", "--bogus"], "No such option '--bogus'"),
        (["--output", "yaml", "validate"], "Invalid value for '--output'"),
    ],
    ids=["unknown-command", "unknown-option", "bad-output-format"],
)
def test_bad_usage_exits_2(circle: Callable[..., Result], args: list[str], message: str) -> None:
    result = circle(*args)
    assert result.code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_usage_under_json_output_is_one_json_error(circle: Callable[..., Result]) -> None:
    for args, message in [
        (["verify", "--bogus", "-o", "json"], "No such option '--bogus'."),
        (["-o", "json", "frobnicate"], "No such command 'frobnicate'."),
    ]:
        result = circle(*args)
        assert result.code == 2
        assert result.json() == {"error": message, "problems": []}
        assert result.stderr == ""


def test_missing_directory_is_one_line(circle: Callable[..., Result], tmp_path: Path) -> None:
    result = circle("validate", str(tmp_path / "nowhere"))
    assert result.code == 2
    assert result.stderr == f"circle: error: {tmp_path / 'nowhere'}: not a directory\n"
    assert result.stdout == ""


def test_missing_directory_as_json(circle: Callable[..., Result], tmp_path: Path) -> None:
    result = circle("validate", str(tmp_path / "nowhere"), "--output", "json")
    assert result.code == 2
    assert result.json() == {
        "error": f"{tmp_path / 'nowhere'}: not a directory",
        "problems": [],
    }


def test_output_option_before_or_after_the_command(circle: Callable[..., Result]) -> None:
    before = circle("-o", "json", "validate", str(EXAMPLE)).json()
    after = circle("validate", str(EXAMPLE), "-o", "json").json()
    assert before == after
    assert before["valid"] is True


def test_no_traceback_without_verbose_but_with_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")

    quiet = run_circle_process("validate", missing)
    loud = run_circle_process("--verbose", "validate", missing)

    assert quiet.code == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert "InputError" in loud.stderr
    assert loud.code != 0


def test_unreadable_document_in_a_real_process(tmp_path: Path) -> None:
    """The whole path a user takes: a real process, a broken file, one line, exit 2."""
    circle_dir = copy_example(tmp_path / "c")
    edit(circle_dir / "volumes/model-data.yaml", "n: 6", "n: six")

    result = run_circle_process("validate", cwd=circle_dir)

    assert result.code == 2
    assert result.stdout.splitlines()[0] == (
        "volumes/model-data.yaml:9:4: expected an integer, found the string 'six'"
    )
    assert result.stderr == ""


def test_a_bug_is_one_line_and_exit_70_without_verbose(
    circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: even an unexpected exception shows no traceback."""

    def broken(directory: Path) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("reconciler.cli.validate.check_circle_dir", broken)

    result = circle("validate", str(EXAMPLE))

    assert result.code == 70
    assert result.stderr == (
        "circle: error: internal error: RuntimeError: simulated bug "
        "(run with --verbose for details)\n"
    )
    with pytest.raises(RuntimeError, match="simulated bug"):
        circle("--verbose", "validate", str(EXAMPLE))
