"""A second owner joins, over real Git: `circle clone` from the plain URL of a bare remote,
review and approval of a proposal branch the first owner pushed with `circle push`, the approval
pushed back and pulled by the first owner; a plain `git clone` made whole by `circle pull`; and
the refusals, which leave nothing behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.chain import approvals
from tests.conftest import Result, edit, git
from tests.reconciler.node.world import World, make_world


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    """The example circle, approved, pushed to a bare `origin.git` that the owners' repository
    knows as its remote `origin`."""
    made = make_world(tmp_path, circle)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(made.circle, "remote", "add", "origin", str(origin))
    pushed = circle("push", "--repo", str(made.circle))
    assert pushed.code == 0, pushed.stderr
    return made


def propose(world: World, circle: Callable[..., Result], branch: str, replicas: int) -> str:
    """A workload change on a new `branch` of the first owner's repository (checked out),
    approved by alice: its rule needs two owners."""
    git(world.circle, "switch", "-q", "-c", branch)
    edit(world.circle / "workloads/langid.yaml", "replicas: 2", f"replicas: {replicas}")
    git(world.circle, "commit", "-q", "-am", f"langid: {replicas} replicas")
    signed = circle(
        "approve", branch, "--repo", str(world.circle), "--key", str(world.keys / "alice")
    )
    assert signed.code == 0, signed.stderr
    return git(world.circle, "rev-parse", "HEAD")


def commit_file(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"{name}: {text.strip()}")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_second_owner_joins_reviews_approves_and_the_first_lands_nothing_by_surprise(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    owner, keys, origin = world.circle, world.keys, tmp_path / "origin.git"
    genesis = git(owner, "rev-parse", "main")
    change = propose(world, circle, "scale", 3)

    # On the proposal branch, `circle push` pushes it and the approvals, never main.
    pushed = circle("push", "--repo", str(owner))
    assert pushed.code == 0, pushed.stderr
    approvals_tip = git(owner, "rev-parse", approvals.REF)
    assert pushed.stdout.splitlines() == [
        f"pushed scale ({change[:12]}) and approvals ({approvals_tip[:12]}) to origin",
        "co-signers: circle pull, then circle review origin/scale",
    ]
    assert git(origin, "rev-parse", "main") == genesis
    assert git(origin, "rev-parse", "scale") == change

    # The second owner starts from the plain URL.
    second = tmp_path / "second"
    cloned = circle("clone", str(origin), str(second))
    assert cloned.code == 0, cloned.stderr
    lines = cloned.stdout.splitlines()
    assert lines[:3] == [
        f"cloned circle example-ai-circle into {second} (origin: {origin})",
        f"approved head: seq 1 ({genesis[:12]}), signed by alice, bob, carol",
        "1 proposal waiting: origin/scale",
    ]
    assert lines[3] == "next:"
    assert lines[4].split() == ["cd", str(second)]
    assert lines[5].startswith("  circle review origin/scale ")
    assert lines[6].startswith("  circle approve origin/scale --key KEY ")
    assert lines[7].startswith("  circle push ")
    assert git(second, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(second, "status", "--porcelain") == ""
    assert (second / "circle.yaml").read_bytes() == (owner / "circle.yaml").read_bytes()
    assert git(second, "rev-parse", approvals.REF) == approvals_tip
    refspecs = git(second, "config", "--get-all", "remote.origin.fetch").splitlines()
    assert "+refs/circle/approvals*:refs/circle/remotes/origin/approvals*" in refspecs
    git(second, "fetch", "-q")  # a plain fetch brings the approvals along, no error

    # ... the same for tools.
    third = circle("clone", str(origin), str(tmp_path / "third"), "-o", "json")
    assert third.code == 0, third.stderr
    report = third.json()
    assert report["circle"] == "example-ai-circle"
    assert report["introduction"] == genesis
    assert report["head"] == {"seq": 1, "commit": genesis, "signers": ["alice", "bob", "carol"]}
    assert report["pendingProposals"] == 1
    assert report["proposals"] == [{"revision": change, "branches": ["origin/scale"]}]
    assert report["directory"] == str(tmp_path / "third")

    # Review, approve, push the approval (from main: main and the approvals).
    review = circle("review", "origin/scale", "--repo", str(second))
    assert review.code == 0, review.stderr
    assert "workload langid: replicas 2 -> 3" in review.stdout
    signed = circle("approve", "origin/scale", "--repo", str(second), "--key", str(keys / "bob"))
    assert signed.code == 0, signed.stderr
    back = circle("push", "--repo", str(second))
    assert back.code == 0, back.stderr
    assert back.stdout.startswith(f"pushed main ({genesis[:12]}) and approvals (")

    # The first owner pulls it: the proposal is approved, main has not moved.
    assert circle("verify", "scale", "--repo", str(owner)).code == 1
    pulled = circle("pull", "--repo", str(owner))
    assert pulled.code == 0, pulled.stderr
    assert pulled.stdout.startswith("main up to date; approvals merged from origin")
    verified = circle("verify", "scale", "--repo", str(owner), "-o", "json")
    assert verified.code == 0, verified.stdout
    assert verified.json()["signers"] == ["alice", "bob"]
    assert git(origin, "rev-parse", "main") == genesis


def test_a_plain_git_clone_is_made_whole_by_circle_pull(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    origin = tmp_path / "origin.git"
    plain = tmp_path / "plain"
    git(tmp_path, "clone", "-q", str(origin), str(plain))
    assert git(plain, "for-each-ref", approvals.REF) == ""
    assert circle("log", "--repo", str(plain)).stdout.strip() == (
        "no approved transition yet: this clone has no refs/circle/approvals, where the "
        "approvals are kept (`circle pull` fetches them; `circle clone` brings them)"
    )
    unseen = circle("verify", "--repo", str(plain))
    assert unseen.code == 1
    assert "hint: this clone has no refs/circle/approvals" in unseen.stderr
    assert "`circle pull` fetches them" in unseen.stderr

    pulled = circle("pull", "--repo", str(plain))
    assert pulled.code == 0, pulled.stderr
    assert pulled.stdout.splitlines() == [
        "main up to date; approvals fetched from origin (none here before)",
        "origin now fetches refs/circle/approvals too (git fetch keeps it in "
        "refs/circle/remotes/origin/approvals; circle pull merges it)",
    ]
    assert circle("log", "--repo", str(plain), "-o", "json").json()[0]["seq"] == 1
    again = circle("pull", "--repo", str(plain), "-o", "json")
    assert again.json() == {
        "main": "up to date",
        "remote": "origin",
        "approvals": "up to date",
        "checkedOut": False,
        "configured": False,
    }


def test_a_clone_without_main_gets_it_from_circle_pull(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    """A remote whose HEAD names no branch (made with `git init --bare` where the default is
    master): `git clone` checks nothing out, and `circle log` says what to do."""
    odd = tmp_path / "odd.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "master", str(odd))
    propose(world, circle, "scale", 3)
    git(world.circle, "push", "-q", str(odd), "main", "scale", approvals.REF)
    plain = tmp_path / "plain"
    git(tmp_path, "clone", "-q", str(odd), str(plain))  # "remote HEAD refers to nonexistent ref"

    lost = circle("log", "--repo", str(plain))
    assert lost.code == 1
    assert lost.stderr.strip() == (
        "circle: error: refs/heads/main does not exist (no commits yet); in a clone of a "
        "circle, run circle pull, or start from circle clone URL"
    )
    pulled = circle("pull", "--repo", str(plain))
    assert pulled.code == 0, pulled.stderr
    assert pulled.stdout.splitlines()[0] == (
        "main created and checked out; approvals fetched from origin (none here before)"
    )
    assert git(plain, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(plain, "rev-parse", "--abbrev-ref", "main@{upstream}") == "origin/main"
    assert git(plain, "status", "--porcelain") == ""
    assert (plain / "circle.yaml").is_file()
    assert circle("verify", "origin/scale", "--repo", str(plain)).code == 1  # one signature

    # On another branch, main is made and HEAD stays where it is.
    elsewhere = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", "-b", "scale", str(odd), str(elsewhere))
    done = circle("pull", "--repo", str(elsewhere))
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("main created (not checked out: HEAD is branch scale); ")
    assert git(elsewhere, "rev-parse", "--abbrev-ref", "HEAD") == "scale"


def test_push_a_named_branch_and_the_races_on_it(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    owner, origin = world.circle, tmp_path / "origin.git"
    genesis = git(owner, "rev-parse", "main")
    change = propose(world, circle, "scale", 3)
    git(owner, "switch", "-q", "main")

    missing = circle("push", "--branch", "nope", "--repo", str(owner))
    assert missing.code == 2
    assert missing.stderr == "circle: error: no branch nope here (git branch lists them)\n"
    named = circle("push", "--branch", "scale", "--repo", str(owner), "-o", "json")
    assert named.code == 0, named.stderr
    assert named.json()["pushed"] == ["refs/heads/scale", approvals.REF]
    assert named.json()["commits"]["refs/heads/scale"] == change
    assert git(origin, "rev-parse", "main") == genesis

    # A co-signer pushed approvals first: merged, retried, pushed.
    second = tmp_path / "second"
    assert circle("clone", str(origin), str(second)).code == 0
    bob = circle("approve", "origin/scale", "--repo", str(second), "--key", str(world.keys / "bob"))
    assert bob.code == 0, bob.stderr
    assert circle("push", "--repo", str(second)).code == 0
    git(owner, "switch", "-q", "scale")
    commit_file(owner, "notes.txt", "draft\n")
    racing = circle("push", "--repo", str(owner))
    assert racing.code == 0, racing.stderr
    assert "origin moved; merging its approvals (attempt 1)" in racing.stderr
    assert circle("verify", change, "--repo", str(owner)).code == 0  # bob's approval, merged

    # Someone else moved origin's scale: refused, never forced.
    git(second, "fetch", "-q")
    git(second, "switch", "-q", "-c", "scale", "origin/scale")
    commit_file(second, "notes.txt", "theirs\n")
    git(second, "push", "-q", "origin", "scale")
    theirs = git(second, "rev-parse", "scale")
    commit_file(owner, "notes.txt", "draft 2\n")
    refused = circle("push", "--repo", str(owner))
    assert refused.code == 1
    assert refused.stderr.splitlines()[-1] == (
        "circle: error: origin's scale has commits that yours lacks (someone pushed to it, or "
        "yours was rewritten): merge or rebase onto it (git fetch origin scale); circle push "
        "never forces"
    )
    assert git(origin, "rev-parse", "scale") == theirs


def not_a_circle(tmp_path: Path) -> tuple[str, str]:
    """A repository with a main, but no circle.yaml; and what `clone` says of it."""
    source = tmp_path / "src"
    git(tmp_path, "init", "-q", "-b", "main", str(source))
    (source / "notes.txt").write_text("hello\n")
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", "notes")
    first = git(source, "rev-parse", "main")
    return str(source), f"not a circle: {first[:12]} has no circle.yaml"


def empty_remote(tmp_path: Path) -> tuple[str, str]:
    bare = tmp_path / "empty.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    return str(bare), "not a circle: it has no main branch"


@pytest.mark.parametrize(
    ("make", "empty_target"),
    [(not_a_circle, False), (not_a_circle, True), (empty_remote, False), (empty_remote, True)],
    ids=["no-policy", "no-policy-into-empty-folder", "no-main", "no-main-into-empty-folder"],
)
def test_a_url_that_is_not_a_circle_is_refused_and_nothing_is_written(
    tmp_path: Path,
    circle: Callable[..., Result],
    make: Callable[[Path], tuple[str, str]],
    empty_target: bool,
) -> None:
    url, message = make(tmp_path)
    target = tmp_path / "joined" / "circle"
    if empty_target:
        target.mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = circle("clone", url, str(target))
    assert done.code == 2
    assert done.stderr == f"circle: error: {url}: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if empty_target:
        assert list(target.iterdir()) == []
    else:
        assert not (tmp_path / "joined").exists()


def test_a_folder_that_is_not_empty_is_refused_untouched(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "mine.txt").write_text("mine\n")
    before = snapshot(target)
    done = circle("clone", str(tmp_path / "origin.git"), str(target))
    assert done.code == 2
    assert done.stderr == (
        f"circle: error: {target}: exists and is not an empty folder: clone into a new one\n"
    )
    assert snapshot(target) == before
    hostile = circle("clone", "--", "--upload-pack=touch ran", str(tmp_path / "x"))
    assert hostile.code == 2
    assert "a remote cannot start with '-'" in hostile.stderr
    assert not (tmp_path / "x").exists()


def test_a_pinned_introduction_of_another_circle_is_refused_and_nothing_is_kept(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(world.intro.read_text()), "commit": "1" * 40}))
    target = tmp_path / "second"
    done = circle("clone", str(tmp_path / "origin.git"), str(target), "--introduction", str(other))
    assert done.code == 1
    assert "does not descend from the introduction 111111111111" in done.stderr
    assert not target.exists()
    pinned = circle(
        "clone", str(tmp_path / "origin.git"), str(target), "--introduction", str(world.intro)
    )
    assert pinned.code == 0, pinned.stderr


def test_clone_names_the_folder_after_the_url(
    world: World, circle: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = circle("clone", "origin.git")
    assert done.code == 0, done.stderr
    assert done.stdout.startswith(
        f"cloned circle example-ai-circle into origin (origin: {tmp_path}"
    )
    assert (tmp_path / "origin" / "circle.yaml").is_file()
