"""`circle init` to a first approved commit, the way a newcomer does it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result


def test_init_approve_verify(circle: Callable[..., Result], tmp_path: Path) -> None:
    for name in ("alice", "bob", "carol"):
        assert circle("keygen", str(tmp_path / name), "-C", name).code == 0
    repo = tmp_path / "my-circle"
    members = [
        arg for n in ("alice", "bob", "carol") for arg in ("--member", f"{n}={tmp_path / n}.pub")
    ]

    made = circle("init", str(repo), "--name", "my-circle", *members, "-o", "json")

    assert made.code == 0, made.stderr
    assert made.json()["circle"] == "my-circle"
    assert circle("validate", str(repo)).code == 0
    assert circle("verify", "--repo", str(repo)).code == 1
    for name in ("alice", "bob"):
        assert circle("approve", "--repo", str(repo), "--key", str(tmp_path / name)).code == 0
    not_yet = circle("verify", "--repo", str(repo))
    assert (
        "rule governance needs weight 3, has 2 (alice, bob); missing one of: carol"
        in not_yet.stdout
    )
    assert circle("approve", "--repo", str(repo), "--key", str(tmp_path / "carol")).code == 0
    assert circle("verify", "--repo", str(repo)).code == 0


def test_init_refusals(circle: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    busy = circle("init", str(tmp_path / "busy"), "--name", "c", "--member", "a=x.pub")
    assert busy.code == 2
    assert busy.stderr == f"circle: error: {tmp_path / 'busy'}: exists and is not empty\n"

    (tmp_path / "bad.pub").write_text("ssh-rsa AAAA bad\n")
    bad = circle(
        "init", str(tmp_path / "new"), "--name", "c", "--member", f"a={tmp_path / 'bad.pub'}"
    )
    assert bad.code == 2
    assert "--member a: invalid public key" in bad.stderr

    assert circle("keygen", str(tmp_path / "solo")).code == 0
    two = circle(
        "init",
        str(tmp_path / "n2"),
        "--name",
        "c",
        "--member",
        f"a={tmp_path / 'solo.pub'}",
        "--preset",
        "two-of-three",
    )
    assert two.code == 2
    assert two.stderr == "circle: error: preset two-of-three is for 3 members; 1 given\n"
