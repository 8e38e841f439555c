"""Rolling updates on `circle up`: a new version that never becomes Ready halts its rollout
(RolloutStalled, with the new replica's reason) while the old replicas keep serving; a newer
approved commit pre-empts the halted rollout and rolls out to every slot (RolledOut)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import git, run_circle_process
from tests.reconciler.local.test_circle_up import assignments, events, predict, wait_for
from tests.reconciler.node.runtime_world import needs_sandbox

pytestmark = pytest.mark.slow

COMMAND = "command: [python3, -m, langid_service]"
BROKEN = 'command: [python3, -c, "import sys; sys.exit(3)"]'


def change(site: Path, edits: list[tuple[str, str]], message: str) -> None:
    """Commit the edits (old -> new) of the workload and approve them by the quorum."""
    repo = site / "circle"
    workload = repo / "workloads" / "langid.yaml"
    text = workload.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    workload.write_text(text)
    git(repo, "commit", "-qam", message)
    for owner in ("alice", "bob"):
        key = site / "keys" / "owners" / owner
        done = run_circle_process("approve", "--repo", str(repo), "--key", str(key))
        assert done.code == 0, done.stderr


def test_a_version_that_never_gets_ready_stalls_and_a_newer_commit_takes_over(
    tmp_path: Path,
) -> None:
    needs_sandbox()
    site = tmp_path / "up"
    try:
        # The deadline leaves the broken replica time to fail and say why, on a loaded machine.
        done = run_circle_process("up", "--dir", str(site), "--ttl", "3",
                                  "--progress-deadline", "8", "-o", "json")  # fmt: skip
        assert done.code == 0, done.stderr
        (langid,) = json.loads(done.stdout)["workloads"]
        assert langid["ready"] == 2

        change(site, [(COMMAND, BROKEN)], "langid: a version that cannot start")
        reasons = lambda: [e for e in events(site) if e["reason"] == "RolloutStalled"]  # noqa: E731
        wait_for(lambda: bool(reasons()), 90, "RolloutStalled")
        (stalled,) = reasons()
        assert stalled["object"] == "workload/langid"
        assert "rolling update to commit" in stalled["message"]
        assert "the old replicas keep serving" in stalled["message"]
        # The broken replica is said, whatever the moment of its crash loop: in back-off, or
        # running again between two crashes (then by its restarts).
        said = ("CrashLoopBackOff", "Exited", "Error", "restarted")
        assert any(word in stalled["message"] for word in said), stalled["message"]
        old = [row for row in assignments(site) if row["seq"] == 1]
        assert [row["phase"] for row in old] == ["Ready", "Ready"]  # still serving
        for row in old:
            assert predict(row["endpoints"][0]) == "fr"

        fixed = [
            (BROKEN, COMMAND),
            ('PYTHONUNBUFFERED: "1"', 'PYTHONUNBUFFERED: "1"\n  FIXED: "1"'),
        ]
        change(site, fixed, "langid: fixed")

        def rolled_out() -> bool:
            rows = assignments(site)
            return len(rows) == 2 and all(r["seq"] == 3 and r["phase"] == "Ready" for r in rows)

        wait_for(rolled_out, 120, "every slot at seq 3 and Ready")
        done_events = [e for e in events(site) if e["reason"] == "RolledOut"]
        assert any("(seq 3) in every slot" in e["message"] for e in done_events), done_events
    finally:
        run_circle_process("down", "--dir", str(site), "--purge")
    assert not site.exists()
