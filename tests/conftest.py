"""Shared fixtures: a fresh copy of the example circle, and the `circle` command run for real.

`circle` runs in-process through its entry point (so a test sees exactly what a user sees:
stdout, stderr and the exit code) or, where the process boundary matters, as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from reconciler.cli.main import main
from tests import output_shapes

# CI explores the same examples on every run, so that a red build always means a change broke
# something; local runs keep exploring new examples (and keep what they find in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example-circle-repo"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_circle_inprocess(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    result = Result(code if isinstance(code, int) else 0, out, err)
    output_shapes.check(args, result.code, result.stdout)
    return result


@pytest.fixture
def circle(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `circle ARGS...` in-process; returns exit code, stdout and stderr."""
    return lambda *args: run_circle_inprocess(capsys, *args)


def run_circle_process(*args: str, cwd: Path | None = None) -> Result:
    completed = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    output_shapes.check(args, result.code, result.stdout)
    return result


def copy_example(destination: Path) -> Path:
    shutil.copytree(EXAMPLE, destination, ignore=shutil.ignore_patterns("__pycache__", ".*cache"))
    return destination


def without_secrets(repo: Path) -> None:
    """Take the example's sealed secret out of a copy: secrets/, the workload's `secrets:`,
    the nodes' kemPublicKey lines and the volume's recipients (who need them), as the example
    was before it had one (for the tests of sealing itself)."""
    shutil.rmtree(repo / "secrets")
    workload = repo / "workloads" / "langid.yaml"
    text = workload.read_text(encoding="utf-8")
    workload.write_text(text[: text.index("# The API key of its admin endpoint")], encoding="utf-8")
    for node in (repo / "nodes").glob("*.yaml"):
        lines = node.read_text(encoding="utf-8").splitlines(keepends=True)
        node.write_text("".join(x for x in lines if not x.startswith("kemPublicKey: ")))
    volume = repo / "volumes" / "model-data.yaml"
    text = volume.read_text(encoding="utf-8")
    volume.write_text(text[: text.index("# Shared with every admitted node")], encoding="utf-8")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A private copy of example-circle-repo that a test may change."""
    return copy_example(tmp_path / "circle")


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` in `path` (fails loudly if it is not there once)."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def git(folder: Path, *args: str) -> str:
    """Run the real `git -C folder ARGS` (an author set); its stdout, stripped."""
    return subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip


OWNERS = ("alice", "bob", "carol")


@pytest.fixture
def served(tmp_path: Path, circle: Callable[..., Result]) -> dict[str, Path]:
    """A circle made by `circle init` (three owners, threshold 2, keys made by `circle keygen`),
    its first commit approved by all three and pushed to a bare origin, and the introduction a
    node is given: what a node follows."""
    keys = tmp_path / "keys"
    keys.mkdir()
    members = []
    for name in OWNERS:
        assert circle("keygen", str(keys / name)).code == 0
        members += ["--member", f"{name}={keys / name}.pub"]
    owner = tmp_path / "owner"
    assert circle("init", str(owner), "--name", "demo", *members, "--threshold", "2").code == 0
    for name in OWNERS:
        assert circle("approve", "--repo", str(owner), "--key", str(keys / name)).code == 0
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    assert circle("push", str(origin), "--repo", str(owner)).code == 0
    intro = tmp_path / "intro.json"
    intro.write_text(circle("introduction", "--repo", str(owner)).stdout)
    return {"keys": keys, "owner": owner, "origin": origin, "intro": intro}
