"""`circle up`, `status` and `down` refuse what they cannot do with one clear line and exit 2,
leaving nothing of a circle behind; and the circle `make_circle` writes is a real one: demo
keys of its own, the node set asked for, its genesis approved by the owners' quorum."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.folder import check_circle_dir
from reconciler.local.make import make_circle
from reconciler.local.site import Record, Site
from tests.conftest import EXAMPLE, Result, copy_example, run_circle_process


def example_keys() -> set[str]:
    text = "".join(p.read_text() for p in [EXAMPLE / "circle.yaml", *EXAMPLE.glob("nodes/*")])
    return set(re.findall(r"ssh-ed25519 (\S+)", text))


def test_a_repository_that_does_not_validate_is_refused_with_its_problems(
    tmp_path: Path,
) -> None:
    repo = copy_example(tmp_path / "repo")
    workload = repo / "workloads" / "langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: two"))
    site = tmp_path / "up"
    done = run_circle_process("up", str(repo), "--dir", str(site))
    assert done.code == 2, done.stderr
    assert "does not validate" in done.stderr
    assert re.search(r"workloads/langid\.yaml:\d+:\d+: ", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not (site / "up.json").exists()
    assert not (site / "circle").exists()  # nothing was made


def test_down_and_status_refuse_a_folder_without_a_circle(tmp_path: Path) -> None:
    for command in ("down", "status"):
        done = run_circle_process(command, "--dir", str(tmp_path / "nothing"))
        assert done.code == 2, (command, done.stderr)
        assert "no circle is up here" in done.stderr
    assert not (tmp_path / "nothing" / "up.json").exists()


def test_a_damaged_record_is_refused_and_kept(tmp_path: Path) -> None:
    site = tmp_path / "up"
    site.mkdir()
    (site / "up.json").write_text('{"format": "circle-up/1", "circle": 7}')
    before = (site / "up.json").read_bytes()
    for command in ("up", "status", "down"):
        done = run_circle_process(command, "--dir", str(site))
        assert done.code == 2, (command, done.stderr)
        assert f"{site / 'up.json'}: not a record of circle up" in done.stderr
        assert "`circle down --purge` removes this folder" in done.stderr
    assert (site / "up.json").read_bytes() == before
    # ... and `circle down --purge` does.
    purged = run_circle_process("down", "--dir", str(site), "--purge")
    assert purged.code == 0, purged.stderr
    assert not site.exists()


def test_a_folder_holding_another_circle_is_refused(tmp_path: Path) -> None:
    site = Site(tmp_path / "up")
    site.root.mkdir()
    site.write_record(
        Record("other-circle", "/somewhere/else", ("node-a",), ("alice",), 10, 500000, "p", (), 0)
    )
    done = run_circle_process("up", str(EXAMPLE), "--dir", str(site.root))
    assert done.code == 2, done.stderr
    assert "holds circle other-circle made from /somewhere/else" in done.stderr
    assert "circle down --purge" in done.stderr
    assert not site.repo.exists()


def test_a_second_circle_up_on_the_same_folder_is_refused_while_one_works(
    tmp_path: Path,
) -> None:
    site = tmp_path / "up"
    site.mkdir()
    with (site / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = run_circle_process("up", "--dir", str(site))
    assert done.code == 2, done.stderr
    assert "another `circle up` or `circle down` is working on it" in done.stderr
    assert not (site / "up.json").exists()


def test_up_needs_root_and_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the command as another user")
    site = tmp_path / "up"
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "reconciler", "up", "--dir", str(site)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "needs root" in done.stderr
    assert not site.exists()


@pytest.mark.parametrize("count", [0, 27], ids=["none", "too-many"])
def test_a_node_count_out_of_range_is_refused(tmp_path: Path, count: int) -> None:
    done = run_circle_process("up", "--nodes", str(count), "--dir", str(tmp_path / "up"))
    assert done.code == 2
    assert "--nodes" in done.stderr
    assert not (tmp_path / "up").exists()


@pytest.mark.parametrize("count", [2, 4], ids=["fewer", "more"])
def test_the_circle_made_has_its_own_keys_the_nodes_asked_for_and_an_approved_genesis(
    tmp_path: Path, circle: Callable[..., Result], count: int
) -> None:
    site = Site(tmp_path / "up")
    steps: list[str] = []
    made = make_circle(EXAMPLE, site, count, steps.append)
    assert steps[0].startswith("checking")
    assert made.owners == ("alice", "bob", "carol")
    assert made.approved_by == ("alice", "bob", "carol")  # circle.yaml: every owner
    report = check_circle_dir(site.repo)
    assert not report.errors, report.errors
    state = report.state
    expected = ["node-a", "node-b", "node-c", "node-d"][:count]
    assert sorted(state.nodes) == expected == list(made.nodes)
    domains = {loaded.document.failure_domain for loaded in state.nodes.values()}
    assert len(domains) == count  # a new node is a failure domain of its own
    # No key of the example's is reused; each node's key is the one in DIR/keys/nodes.
    made_keys = set(re.findall(r"ssh-ed25519 (\S+)", (site.repo / "circle.yaml").read_text()))
    assert len(made_keys) == 3
    assert not made_keys & example_keys()
    for name in expected:
        line = site.node_key(name).with_suffix(".pub").read_text().split()[1]
        assert state.nodes[name].document.public_key.split()[1] == line
    assert "# The circle's policy" in (site.repo / "circle.yaml").read_text()  # comments kept
    # Every backend is a folder of this site's, on a node of this circle.
    for backend in state.volumes["model-data"].document.backends:
        assert backend.url == f"dir:{site.qss / backend.name}"
        assert backend.node in expected
    # The genesis is approved (verify says so), and the volume's object is stored.
    verified = circle("verify", "main", "--repo", str(site.repo), "-o", "json")
    assert verified.code == 0, verified.stderr
    listed = circle("qss", "ls", "--volume", "model-data", "--repo", str(site.repo),
                    "-o", "json")  # fmt: skip
    assert listed.code == 0, listed.stderr
    assert "langid-model.json" in json.dumps(listed.json())
    assert not (site.root / "staging").exists()
