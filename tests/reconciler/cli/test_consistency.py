"""What a user can rely on from every command: camelCase JSON, errors in JSON with their
problems, no write without asking for it (and nothing written by a refusal), a public key given
for a private one named as such, and tables that fit an 80-column terminal without breaking a
word."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reconciler.cli.init as init_module
from reconciler.cli.render import fit_widths, print_columns, shorten
from tests.conftest import ROOT, Result, copy_example, edit

CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")


def snake_keys(value: Any, at: str = "") -> list[str]:
    """Every object key in a JSON value that is not camelCase, with where it is."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not CAMEL.fullmatch(key) and not key.isdigit():
                found.append(f"{at}.{key}")
            found += snake_keys(item, f"{at}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += snake_keys(item, f"{at}[{index}]")
    return found


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what a refusal must leave as it was."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# -- camelCase JSON --------------------------------------------------------------------------


def test_json_of_keys_presets_schemas_and_init_is_camel_case(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    outputs = [
        circle("keygen", str(tmp_path / "alice"), "-o", "json"),
        circle("node", "keygen", str(tmp_path / "node"), "-o", "json"),
        circle("qss", "keygen", str(tmp_path / "storage.key"), "-o", "json"),
        circle("presets", "list", "-o", "json"),
        circle("presets", "show", "majority-with-unanimous-governance", "-o", "json"),
        circle("schemas", "--dir", str(tmp_path / "schemas"), "-o", "json"),
        circle("schemas", "--check", "--dir", str(tmp_path / "schemas"), "-o", "json"),
    ]
    member = f"alice={tmp_path / 'alice'}.pub"
    outputs.append(
        circle("init", str(tmp_path / "c"), "--name", "c", "--member", member, "-o", "json")
    )
    for result in outputs:
        assert snake_keys(result.json()) == [], result.stdout


# -- errors in JSON carry their problems ------------------------------------------------------


def test_a_build_of_a_broken_circle_fails_with_its_problems_in_json(
    example: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    edit(example / "builds/langid-model.yaml", "builder: model", "builder: modle")
    before = tree(example)

    result = circle("build", "--repo", str(example), "--store", str(tmp_path / "s"), "-o", "json")

    assert result.code == 2
    error = result.json()
    assert error["error"] == f"{example}: fix these problems before building"
    [problem] = error["problems"]
    assert problem["file"] == f"{example}/builds/langid-model.yaml"
    assert problem["line"] > 0
    assert "modle" in problem["message"]
    assert result.stderr == ""
    assert tree(example) == before
    assert not (tmp_path / "s").exists()

    text = circle("build", "--repo", str(example), "--store", str(tmp_path / "s"))
    assert text.code == 2
    assert text.stdout == ""
    assert text.stderr.splitlines() == [
        f"{problem['file']}:{problem['line']}:{problem['column']}: {problem['message']}",
        f"circle: error: {example}: fix these problems before building",
    ]


def test_a_broken_volume_fails_qss_with_its_problems_in_json(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    repo = copy_example(tmp_path / "circle")
    edit(repo / "volumes/model-data.yaml", "kind: Volume", "kind: Volum")

    result = circle("qss", "ls", "--volume", "model-data", "--repo", str(repo), "-o", "json")

    assert result.code == 2
    error = result.json()
    assert error["error"] == f"{repo}: volume model-data cannot be read"
    assert [p["file"] for p in error["problems"]] == [f"{repo}/volumes/model-data.yaml"]


# -- no surprising writes ---------------------------------------------------------------------


def test_schemas_without_a_flag_lists_and_writes_nothing(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    folder = tmp_path / "schemas"

    listed = circle("schemas", "--dir", str(folder))

    assert listed.code == 0
    assert not folder.exists()
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["SCHEMA", "STATE"]
    assert lines[1].split() == [f"{folder}/admission-policy.json", "missing"]
    assert lines[-1] == "9 of 9 differ from the models: run `circle schemas --write`"

    assert circle("schemas", "--dir", str(folder), "--write").code == 0
    assert len(list(folder.iterdir())) == 9
    again = circle("schemas", "--dir", str(folder), "-o", "json").json()
    assert {item["state"] for item in again["schemas"]} == {"current"}


def test_qss_get_never_overwrites_a_file_without_force(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "storage.key"
    assert circle("qss", "keygen", str(key)).code == 0
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(5000))
    backends = []
    for index in range(6):
        (tmp_path / f"b{index}").mkdir()
        backends += ["-b", f"dir:{tmp_path / f'b{index}'}"]
    put = circle("qss", "put", str(source), "--key", str(key), *backends)
    assert put.code == 0, put.stderr
    object_id = put.stdout.strip()
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious\n")

    refused = circle("qss", "get", object_id, str(out), "--key", str(key), *backends)

    assert refused.code == 2
    assert (
        refused.stderr == f"circle: error: {out}: exists; refusing to overwrite it (use --force)\n"
    )
    assert out.read_bytes() == b"precious\n"
    forced = circle("qss", "get", object_id, str(out), "--key", str(key), *backends, "--force")
    assert forced.code == 0, forced.stderr
    assert out.read_bytes() == source.read_bytes()


@pytest.fixture
def owner_key(circle: Callable[..., Result], tmp_path: Path) -> Path:
    assert circle("keygen", str(tmp_path / "alice")).code == 0
    return tmp_path / "alice.pub"


def test_a_refused_init_leaves_nothing_and_can_be_run_again(
    circle: Callable[..., Result], tmp_path: Path, owner_key: Path
) -> None:
    repo = tmp_path / "deep" / "my-circle"
    member = ("--member", f"alice={owner_key}")

    bad = circle("init", str(repo), "--name", "My_Circle", *member)

    assert bad.code == 2
    assert bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"{repo}/circle.yaml:3:5: invalid name 'My_Circle': expected 1-63 lowercase letters, "
        "digits and '-', starting with a letter and not ending with '-'",
        f"circle: error: {repo}: circle.yaml would be invalid; nothing written",
    ]
    assert sorted(tmp_path.iterdir()) == sorted([owner_key, tmp_path / "alice"])
    as_json = circle("init", str(repo), "--name", "My_Circle", *member, "-o", "json")
    assert as_json.json()["problems"][0]["file"] == f"{repo}/circle.yaml"

    good = circle("init", str(repo), "--name", "my-circle", *member)
    assert good.code == 0, good.stderr
    assert circle("validate", str(repo)).code == 0


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_an_init_failing_while_it_writes_leaves_nothing(
    circle: Callable[..., Result],
    tmp_path: Path,
    owner_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    existing: bool,
) -> None:
    """The disk fills up after the first commit: no folder (or an empty one, as it was)."""
    repo = tmp_path / "parent" / "my-circle"
    if existing:
        repo.mkdir(parents=True)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(init_module, "introduction", disk_full)
    failed = circle("init", str(repo), "--name", "my-circle", "--member", f"alice={owner_key}")

    assert failed.code == 2
    assert failed.stderr == f"circle: error: {repo}: cannot create it: No space left on device\n"
    if existing:
        assert list(repo.iterdir()) == []
    else:
        assert not (tmp_path / "parent").exists()
    monkeypatch.undo()
    again = circle("init", str(repo), "--name", "my-circle", "--member", f"alice={owner_key}")
    assert again.code == 0, again.stderr


# -- --repo and --output on init --------------------------------------------------------------


def test_init_takes_repo_and_output_as_every_command_does(
    circle: Callable[..., Result], tmp_path: Path, owner_key: Path
) -> None:
    repo = tmp_path / "c"
    member = ("--member", f"alice={owner_key}")

    made = circle("init", "--repo", str(repo), "--name", "c", *member)

    assert made.code == 0, made.stderr
    lines = made.stdout.splitlines()
    intro = circle("introduction", "--repo", str(repo)).json()
    assert lines[0] == f"{repo}: circle c, first commit {intro['commit'][:12]} on main (1 member)"
    assert lines[1].endswith(json.dumps(intro))
    assert circle("introduction", "--repo", str(repo), "-o", "json").json() == intro
    assert circle("introduction", "--repo", str(repo), "-o", "text").stdout.splitlines() == [
        "circle          c",
        f"first commit    {intro['commit']}",
        f"policy sha256   {intro['policySha256']}",
    ]
    assert circle("init", str(tmp_path / "d"), "--name", "d", *member, "-o", "json").json() == (
        circle("introduction", "--repo", str(tmp_path / "d")).json()
    )
    both = circle(
        "init", str(tmp_path / "e"), "--repo", str(tmp_path / "f"), "--name", "e", *member
    )
    assert both.code == 2
    assert both.stderr == (
        f"circle: error: give DIR or --repo, not both ({tmp_path / 'e'}, {tmp_path / 'f'})\n"
    )
    assert not (tmp_path / "e").exists()
    assert not (tmp_path / "f").exists()


# -- a public key where a private key is needed ------------------------------------------------


def test_a_public_key_given_for_a_private_one_is_named(
    example: Path, circle: Callable[..., Result], tmp_path: Path, owner_key: Path
) -> None:
    private = tmp_path / "alice"
    hint = f"circle: error: {owner_key} is a public key: give the private key {private}\n"
    before = tree(example)

    attest = circle("build", "--repo", str(example), "--store", str(tmp_path / "s"),
                    "--attest", str(owner_key))  # fmt: skip
    node_run = circle("node", "run", "--source", str(example), "--introduction", "intro.json",
                      "--state", str(tmp_path / "state"), "--key", str(owner_key),
                      "--store", f"sqlite:{tmp_path / 'store.db'}")  # fmt: skip

    for result in (attest, node_run):
        assert (result.code, result.stderr) == (2, hint)
    assert tree(example) == before
    assert not (tmp_path / "s").exists()
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "store.db").exists()

    for command in (["keygen"], ["node", "keygen"]):
        made = circle(*command, str(tmp_path / "bob.pub"))
        assert made.code == 2
        assert made.stderr == (
            f"circle: error: {tmp_path / 'bob.pub'} is a public key's name: give the private "
            f"key's path {tmp_path / 'bob'} (its public key goes to {tmp_path / 'bob'}.pub)\n"
        )
        assert not (tmp_path / "bob.pub").exists()
        assert not (tmp_path / "bob").exists()


# -- tables at 80 columns ---------------------------------------------------------------------


def test_columns_fit_80_columns_by_shortening_the_widest_cell_in_its_middle(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = "/root/.local/share/circle/up/logs/a-rather-long-node-name-for-the-site-1.log"
    rows = [["node-1", "running", "4242", "yes", "yes", log]]
    header = ["NODE", "AGENT", "PID", "REGISTERED", "LEADER", "LOG"]

    monkeypatch.setenv("COLUMNS", "80")
    print_columns(header, rows)
    fitted = capsys.readouterr().out.splitlines()
    monkeypatch.delenv("COLUMNS")
    print_columns(header, rows)
    piped = capsys.readouterr().out.splitlines()

    assert all(len(line) <= 80 for line in fitted)
    assert fitted[1].split()[:5] == ["node-1", "running", "4242", "yes", "yes"]
    cell = fitted[1].split()[5]
    assert "…" in cell
    head, tail = cell.split("…")
    assert log.startswith(head)
    assert log.endswith(tail)
    assert tail.endswith(".log")
    assert piped[1].split()[5] == log  # piped, nothing is cut


def test_fitting_keeps_every_column_at_least_its_header() -> None:
    assert fit_widths([4, 30, 30], [4, 4, 4], 40) == [4, 15, 15]
    assert fit_widths([4, 30, 9], [4, 4, 9], 30) == [4, 11, 9]
    assert fit_widths([4, 30, 12], [4, 4, 5], 20) == [4, 8, 8]  # as narrow as allowed
    assert fit_widths([10, 10], [10, 10], 5) == [10, 10]  # cannot fit: left whole
    assert fit_widths([10, 10], [2, 2], None) == [10, 10]
    assert shorten("sha256:0123456789", 9) == "sha2…6789"
    assert shorten("short", 9) == "short"


def test_rich_tables_end_a_long_word_with_an_ellipsis_at_80_columns(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    """`qss ls` in a real process at COLUMNS=80: a long object name is cut with an ellipsis,
    not folded over lines mid-word."""
    key = tmp_path / "storage.key"
    assert circle("qss", "keygen", str(key)).code == 0
    name = "a-model-file-with-a-name-much-too-long-for-its-column-" * 2 + ".bin"
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 100)
    backends = []
    for index in range(6):
        (tmp_path / f"b{index}").mkdir()
        backends += ["-b", f"dir:{tmp_path / f'b{index}'}"]
    assert circle("qss", "put", str(source), "--key", str(key), "--name", name, *backends).code == 0

    listed = subprocess.run(
        [sys.executable, "-m", "reconciler", "qss", "ls", *backends],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "a-model-file" in line]
    assert len(rows) == 1
    assert "…" in rows[0]
