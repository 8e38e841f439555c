"""The owners' commands judge the change in hand: `verify`, `review` and `approve` default to
HEAD and name the commit they judged, so a status check on a pull-request branch fails until
that branch has its quorum; `approve` refuses a transition no quorum could approve (a policy
change without its version bump), naming why, and files nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.chain import approvals
from tests.conftest import Result, edit, git
from tests.reconciler.node.world import World, make_world


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    return make_world(tmp_path, circle)


def approvals_tip(repo: Path) -> str | None:
    head = approvals.head(pygit2.Repository(str(repo)), approvals.REF)
    return None if head is None else str(head.id)


def test_a_pull_request_branch_fails_its_status_check_until_its_quorum(
    world: World, circle: Callable[..., Result]
) -> None:
    repo = world.circle
    git(repo, "checkout", "-q", "-b", "more-replicas")
    edit(repo / "workloads" / "langid.yaml", "replicas: 2", "replicas: 3")
    git(repo, "commit", "-qam", "langid: 3 replicas")
    tip = git(repo, "rev-parse", "HEAD")

    # As a CI job runs it: no argument, on the branch checked out.
    check = circle("verify", "--repo", str(repo))
    assert check.code == 1
    assert check.stdout.startswith(f"{tip[:12]} (HEAD, branch more-replicas): not approved: ")
    assert (
        "missing weight 2 from: alice, bob, carol" in check.stdout
    )  # all are needed, not "one of"
    said = json.loads(circle("verify", "--repo", str(repo), "-o", "json").stdout)
    assert (said["asked"], said["revision"], said["approved"]) == ("HEAD", tip, False)
    assert said["seq"] == 2
    # main itself is the approved head: asking for it says so, and that is not this branch.
    on_main = circle("verify", "main", "--repo", str(repo))
    assert on_main.code == 0
    assert "the approved head (seq 1)" in on_main.stdout

    comment = circle("review", "--repo", str(repo), "-o", "markdown")
    assert comment.code == 0
    assert f"`{tip[:12]} (HEAD, branch more-replicas)`" in comment.stdout
    assert "replicas 2 -> 3" in comment.stdout

    for owner in ("alice", "bob"):
        signed = circle("approve", "--repo", str(repo), "--key", str(world.keys / owner))
        assert signed.code == 0, signed.stderr
        assert signed.stdout.strip() == (
            f"approved seq 2 {tip[:12]} (HEAD, branch more-replicas) as {owner}"
        )
    check = circle("verify", "--repo", str(repo))
    assert check.code == 0
    assert check.stdout.strip() == (
        f"{tip[:12]} (HEAD, branch more-replicas): the approved head (seq 2), signed by alice, bob"
    )


def test_approve_refuses_a_policy_change_without_its_version_bump(
    world: World, circle: Callable[..., Result]
) -> None:
    repo = world.circle
    edit(repo / "circle.yaml", "approvalLifetime: 7d", "approvalLifetime: 30d")  # version stays 1
    git(repo, "commit", "-qam", "longer approvals")
    tip = git(repo, "rev-parse", "HEAD")
    before = approvals_tip(repo)

    refused = circle("approve", "--repo", str(repo), "--key", str(world.keys / "alice"))
    assert refused.code == 1
    assert refused.stderr.startswith(f"circle: error: {tip[:12]} can never be approved: ")
    assert "circle.yaml goes from version 1 to 1; expected 2" in refused.stderr
    assert approvals_tip(repo) == before  # nothing filed

    verify = circle("verify", "--repo", str(repo))  # a status check says the same
    assert verify.code == 1
    assert (
        f"{tip[:12]} can never be approved: circle.yaml goes from version 1 to 1; expected 2"
        in (verify.stderr)
    )


def test_approve_warns_when_the_desired_state_does_not_validate(
    world: World, circle: Callable[..., Result]
) -> None:
    repo = world.circle
    edit(repo / "workloads" / "langid.yaml", "replicas: 2", "replicas: '2'")
    git(repo, "commit", "-qam", "a string where a number goes")
    signed = circle("approve", "--repo", str(repo), "--key", str(world.keys / "alice"))
    assert signed.code == 0, signed.stderr  # a valid transition: its content is the nodes' call
    assert "does not validate (workloads/langid.yaml:" in signed.stderr
    assert "nodes keep the last valid step" in signed.stderr
