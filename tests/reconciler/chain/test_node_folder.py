"""The node's folder is the node's alone: `circle follow` refuses a folder another user owns or
may write, or that sits where others could replace it; it never follows a link, never blocks on
a FIFO, refuses a state file whose fields are not exactly typed, runs no Git hook and reads no
Git configuration from outside the folder. Every refusal is one line and exit 1, and the state
file stays byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.chain import node_state
from reconciler.chain.node_state import StateFileError
from tests.conftest import Result

NOBODY = 65534


@pytest.fixture
def node(tmp_path: Path, served: dict[str, Path], circle: Callable[..., Result]) -> Path:
    """A node folder that followed the served circle to seq 1."""
    folder = tmp_path / "node"
    done = follow(circle, served, folder)
    assert done.code == 0, done.stderr
    return folder


def follow(circle: Callable[..., Result], served: dict[str, Path], folder: Path) -> Result:
    return circle(
        "follow", str(served["origin"]), "--introduction", str(served["intro"]),
        "--state", str(folder),
    )  # fmt: skip


def refused(done: Result, fragment: str) -> None:
    assert done.code == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert fragment in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_of_another_user_is_refused(
    node: Path, served: dict[str, Path], circle: Callable[..., Result]
) -> None:
    before = (node / "state.json").read_bytes()
    os.chown(node, NOBODY, NOBODY)
    refused(follow(circle, served, node), f"belongs to uid {NOBODY}, not to this agent's uid 0")
    assert (node / "state.json").read_bytes() == before


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_folder_others_may_write_is_refused(
    node: Path, served: dict[str, Path], circle: Callable[..., Result], mode: int
) -> None:
    before = (node / "state.json").read_bytes()
    node.chmod(mode)
    refused(follow(circle, served, node), f"permissions {mode:04o} let others write")
    assert (node / "state.json").read_bytes() == before


def test_a_folder_inside_a_folder_others_may_write_is_refused(
    tmp_path: Path, served: dict[str, Path], circle: Callable[..., Result]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused(follow(circle, served, shared / "node"), f"{shared}: is writable by others")
    assert not (shared / "node").exists()
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace what is ours in it
    done = follow(circle, served, shared / "node")
    assert done.code == 0, done.stderr


@pytest.mark.parametrize("name", ["state.json", "lock"])
@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_a_state_path_that_is_no_regular_file_is_refused_at_once(
    node: Path, served: dict[str, Path], name: str, kind: str
) -> None:
    """A FIFO would block a reader forever: run as a real process, bounded by a timeout."""
    path = node / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "folder":
        path.mkdir(0o700)
    else:
        (node / "elsewhere").write_bytes(b"")
        path.symlink_to("elsewhere")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "follow", str(served["origin"]),
         "--introduction", str(served["intro"]), "--state", str(node)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    expected = "a symbolic link" if kind == "symlink" else "not a regular file"
    if kind == "folder" and name == "lock":
        expected = "Is a directory"
    refused(Result(done.returncode, done.stdout, done.stderr), f"{path}: ")
    assert expected in done.stderr


def test_the_quarantine_repository_must_be_a_folder_of_the_node(
    node: Path, served: dict[str, Path], circle: Callable[..., Result], tmp_path: Path
) -> None:
    repository = node / "repo.git"
    repository.rename(tmp_path / "moved.git")
    repository.symlink_to(tmp_path / "moved.git")
    refused(follow(circle, served, node), "the quarantine repository is not a folder of this")


def test_the_quarantine_runs_no_hook_and_reads_no_outside_configuration(
    node: Path,
    served: dict[str, Path],
    circle: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "hook-ran"
    for hooks in (node / "repo.git/hooks", tmp_path / "global-hooks"):
        hooks.mkdir(exist_ok=True)
        hook = hooks / "reference-transaction"
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(
        f"[core]\n\thooksPath = {tmp_path / 'global-hooks'}\n"
        f'[url "{tmp_path / "nowhere"}"]\n\tinsteadOf = {served["origin"]}\n'
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-the-quarantine"))
    done = circle(
        "follow", str(served["origin"]), "--introduction", str(served["intro"]),
        "--state", str(node), "-o", "json",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert done.json()["state"]["seq"] == 1
    assert not marker.exists()


STATE = {"format": "circle-node-state/1", "seq": 1}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seq": "1"}, "seq must be a whole number from 1"),
        ({"seq": True}, "seq must be a whole number from 1"),
        ({"seq": 1.0}, "seq must be a whole number from 1"),
        ({"seq": 0}, "seq must be a whole number from 1"),
        ({"commit": 1}, "commit must be a full commit id"),
        ({"commit": "A" * 40}, "commit must be a full commit id"),
        ({"policySha256": ["x"]}, "policySha256 must be 64 hex digits"),
        ({"extra": 1}, "expected exactly the fields"),
        ({"format": "circle-node-state/2"}, "expected format circle-node-state/1"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "",
)
def test_a_state_file_with_inexact_types_is_refused(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    document = {**STATE, "commit": "a" * 40, "policySha256": "b" * 64} | change
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    before = path.read_bytes()
    with pytest.raises(StateFileError, match=reason):
        node_state.load(path)
    assert path.read_bytes() == before


def test_a_deeply_nested_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"[" * 4000)
    path.chmod(0o600)
    with pytest.raises(StateFileError, match="not a node state file"):
        node_state.load(path)


@pytest.mark.parametrize(
    "text",
    [
        '{"circle": "demo", "commit": 1, "policySha256": "x"}',
        '{"circle": "demo", "commit": "' + "a" * 40 + '", "policySha256": "' + "b" * 64
        + '", "more": 1}',
        "[" * 3000,
        "not json",
    ],
)  # fmt: skip
def test_an_inexact_introduction_is_refused(
    tmp_path: Path, served: dict[str, Path], circle: Callable[..., Result], text: str
) -> None:
    intro = tmp_path / "bad-intro.json"
    intro.write_text(text)
    done = circle(
        "follow", str(served["origin"]), "--introduction", str(intro), "--state",
        str(tmp_path / "node"),
    )  # fmt: skip
    assert done.code == 2
    assert f"{intro}: not an introduction" in done.stderr
