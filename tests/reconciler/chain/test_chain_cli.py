"""`circle introduction`, `circle log` and `circle verify` on a real circle repository."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from cryptography.hazmat.primitives import serialization

from reconciler.chain.trees import transition
from reconciler.chain.values import Introduction, Transition, sha256
from tests.conftest import Result, run_circle_inprocess
from tests.reconciler.chain.test_chain import KEYS
from tests.reconciler.chain.test_chain_git import circle, git, sign_and_file  # noqa: F401 - the fixture


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    return lambda *args: run_circle_inprocess(capsys, *args)


REF = "refs/heads/main"


def approve_now(
    repo: pygit2.Repository, intro: Introduction, step: Transition, *names: str
) -> None:
    sign_and_file(repo, intro, step, *names, now=int(time.time()))


def test_introduction_log_and_verify(circle: Path, cli: Callable[..., Result]) -> None:  # noqa: F811
    shown = cli("introduction", "--repo", str(circle))
    assert shown.code == 0
    data = shown.json()
    intro = Introduction(data["circle"], data["commit"], data["policySha256"])
    assert intro.circle == "example-ai-circle"
    assert intro.policy_sha256 == sha256((circle / "circle.yaml").read_bytes())

    repo = pygit2.Repository(str(circle))
    assert cli("verify", "--repo", str(circle)).code == 1
    approve_now(
        repo,
        intro,
        transition(repo, ref=REF, seq=1, from_commit=None, to_commit=intro.commit),
        "alice",
        "bob",
        "carol",
    )
    assert (
        cli("verify", "--repo", str(circle)).stdout.strip()
        == f"{intro.commit[:12]} (HEAD, branch main): the approved head (seq 1), signed by "
        "alice, bob, carol"
    )

    workload = circle / "workloads/langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
    git(circle, "commit", "-q", "-am", "three")
    head = git(circle, "rev-parse", "HEAD")
    change = transition(repo, ref=REF, seq=2, from_commit=intro.commit, to_commit=head)
    approve_now(repo, intro, change, "alice")

    one = cli("verify", "HEAD", "--repo", str(circle))
    assert one.code == 1
    assert "rule workloads needs weight 2, has 1 (alice); missing one of: bob, carol" in one.stdout

    approve_now(repo, intro, change, "carol")
    two = cli("verify", "HEAD", "--repo", str(circle), "-o", "json")
    assert two.code == 0
    assert two.json()["signers"] == ["alice", "carol"]

    log = cli("log", "--repo", str(circle), "-o", "json").json()
    assert [(entry["seq"], entry["commit"]) for entry in log] == [(1, intro.commit), (2, head)]


def key_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(
        KEYS[name].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def test_approve_with_keys_and_through_ssh_keygen(
    circle: Path,  # noqa: F811
    cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    for name in ("alice", "bob", "carol"):
        approved = cli("approve", "--repo", str(circle), "--key", str(key_file(tmp_path, name)))
        assert approved.code == 0, approved.stderr
    assert cli("verify", "--repo", str(circle)).code == 0

    outsider = cli("approve", "--repo", str(circle), "--key", str(key_file(tmp_path, "mallory")))
    assert outsider.code == 2

    workload = circle / "workloads/langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
    git(circle, "commit", "-q", "-am", "three")
    assert (
        cli("approve", "--repo", str(circle), "--key", str(key_file(tmp_path, "alice"))).code == 0
    )

    # Bob signs with the real ssh-keygen, as an owner whose key lives in an agent would.
    statement = tmp_path / "statement"
    assert cli("approve", "--repo", str(circle), "--statement-out", str(statement)).code == 0
    bob = key_file(tmp_path, "bob")
    subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "circle-approval-v1", "-f", str(bob), str(statement)],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    filed = cli(
        "approve", "--repo", str(circle), "--statement", str(statement),
        "--signature", f"{statement}.sig",
    )  # fmt: skip
    assert filed.code == 0, filed.stderr

    verified = cli("verify", "--repo", str(circle), "-o", "json")
    assert verified.code == 0
    assert verified.json()["signers"] == ["alice", "bob"]
