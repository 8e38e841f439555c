"""The verified-head cache is an optimization only: with it, without it, deleted, corrupted in
any way, stale after approvals or a rewritten main, every answer is the one a cold walk from
the introduction gives; a warm answer walks nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.chain import headcache
from reconciler.chain.propose import trusted_introduction
from reconciler.chain.walk import MAIN, Chain
from tests.conftest import Result, edit, git
from tests.reconciler.node.world import World, make_world

NOW = 1_900_000_000


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    return make_world(tmp_path, circle)


def answer(repo_dir: Path, *, cached: bool, counter: list[int] | None = None) -> object:
    repo = pygit2.Repository(str(repo_dir))
    walker = Chain(repo, trusted_introduction(repo, None, NOW).intro, MAIN)
    if counter is not None:
        walk = walker.walk

        def counted(now: int, state: object = None) -> object:
            counter.append(0 if state is None else 1)  # 0: cold, 1: on from a state
            return walk(now, state)  # type: ignore[arg-type]

        walker.walk = counted  # type: ignore[method-assign]
    return headcache.walk(repo, walker, NOW) if cached else walker.walk(NOW)


def cache_file(world: World) -> Path:
    return Path(pygit2.Repository(str(world.circle)).path) / "circle" / "verified.json"


def propose_and_approve(world: World, circle: Callable[..., Result], replicas: int) -> None:
    workload = world.circle / "workloads" / "langid.yaml"
    text = workload.read_text()
    current = next(line for line in text.splitlines() if line.startswith("replicas: "))
    edit(workload, current, f"replicas: {replicas}")
    git(world.circle, "commit", "-qam", f"{replicas} replicas")
    for owner in ("alice", "bob"):
        done = circle("approve", "--repo", str(world.circle), "--key", str(world.keys / owner))
        assert done.code == 0, done.stderr


def test_warm_answers_walk_nothing_and_equal_the_cold_walk(
    world: World, circle: Callable[..., Result]
) -> None:
    propose_and_approve(world, circle, 3)  # `circle approve` itself wrote a cache: remove it
    cache_file(world).unlink()
    cold = answer(world.circle, cached=False)
    walks: list[int] = []
    assert answer(world.circle, cached=True, counter=walks) == cold
    assert walks == [0]  # the first call walks from the introduction and writes the cache
    assert cache_file(world).stat().st_mode & 0o777 == 0o600
    walks.clear()
    assert answer(world.circle, cached=True, counter=walks) == cold
    assert walks == []  # the next: nothing walked

    # The commands through it say the same as before.
    log = circle("log", "--repo", str(world.circle), "-o", "json")
    assert [(s["seq"], s["commit"]) for s in json.loads(log.stdout)] == [
        (step.seq, step.commit)
        for step in cold[0]  # type: ignore[index]
    ]


def test_new_approvals_go_on_from_the_cached_state(
    world: World, circle: Callable[..., Result]
) -> None:
    walks: list[int] = []
    answer(world.circle, cached=True, counter=walks)
    propose_and_approve(world, circle, 3)  # main moved, approvals filed for seq 2
    walks.clear()
    warm = answer(world.circle, cached=True, counter=walks)
    assert walks == [1]  # on from seq 1, not from the introduction
    assert warm == answer(world.circle, cached=False)
    assert [step.seq for step in warm[0]] == [1, 2]  # type: ignore[index]


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{",
        b"\x00\xff" * 100,
        b'{"format": "circle-verified-head/9"}',
        b"[]",
    ],
    ids=["empty", "truncated", "binary", "other-format", "not-an-object"],
)
def test_a_corrupted_cache_changes_no_answer(
    world: World, circle: Callable[..., Result], damage: bytes
) -> None:
    propose_and_approve(world, circle, 3)
    cold = answer(world.circle, cached=False)
    answer(world.circle, cached=True)
    cache_file(world).write_bytes(damage)
    walks: list[int] = []
    assert answer(world.circle, cached=True, counter=walks) == cold
    assert walks == [0]
    assert json.loads(cache_file(world).read_bytes())["format"] == headcache.FORMAT  # rewritten


def test_an_inconsistent_cache_is_not_believed(world: World, circle: Callable[..., Result]) -> None:
    propose_and_approve(world, circle, 3)
    cold = answer(world.circle, cached=False)
    answer(world.circle, cached=True)
    document = json.loads(cache_file(world).read_bytes())
    for broken in (
        {**document, "steps": document["steps"][:1]},  # the state no longer ends the steps
        {**document, "steps": [document["steps"][1], document["steps"][0]]},  # out of order
        {**document, "state": None},
        {**document, "introduction": {**document["introduction"], "circle": "other"}},
    ):
        cache_file(world).write_text(json.dumps(broken))
        assert answer(world.circle, cached=True) == cold


def test_deleted_stale_or_rewritten_the_answer_is_the_cold_one(
    world: World, circle: Callable[..., Result]
) -> None:
    propose_and_approve(world, circle, 3)
    answer(world.circle, cached=True)
    cache_file(world).unlink()
    assert answer(world.circle, cached=True) == answer(world.circle, cached=False)

    # main rewritten under the cached state: going on from it fails; a cold walk answers.
    seq1 = json.loads(cache_file(world).read_bytes())["steps"][0][1]
    git(world.circle, "reset", "-q", "--hard", seq1)
    edit(world.circle / "workloads" / "langid.yaml", "replicas: 2", "replicas: 4")
    git(world.circle, "commit", "-qam", "another history")
    walks: list[int] = []
    assert answer(world.circle, cached=True, counter=walks) == answer(world.circle, cached=False)

    # An approval filed for a seq already walked: the cache is not trusted past it.
    answer(world.circle, cached=True)
    document = json.loads(cache_file(world).read_bytes())
    document["approvedFolders"] = "0" * 64
    cache_file(world).write_text(json.dumps(document))
    document["main"] = "0" * 40  # stale key, so the cached steps must be re-derived
    cache_file(world).write_text(json.dumps(document))
    walks.clear()
    assert answer(world.circle, cached=True, counter=walks) == answer(world.circle, cached=False)
    assert walks == [0]


def test_a_clone_where_no_cache_can_be_written_is_walked_every_time(world: World) -> None:
    shutil.rmtree(cache_file(world).parent, ignore_errors=True)
    cache_file(world).parent.write_text("not a folder")  # where the cache would go
    walks: list[int] = []
    assert answer(world.circle, cached=True, counter=walks) == answer(world.circle, cached=False)
    assert answer(world.circle, cached=True, counter=walks) is not None
    assert walks == [0, 0]
    assert cache_file(world).parent.read_text() == "not a folder"


def test_the_introduction_is_kept_until_a_root_is_merged_in(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    repo = pygit2.Repository(str(world.circle))
    first = headcache.introduction(repo, NOW)
    kept = Path(repo.path) / headcache.INTRO_NAME
    assert json.loads(kept.read_text())["introduction"]["commit"] == first.intro.commit
    propose_and_approve(world, circle, 3)  # main goes on: the same introduction, found at once
    assert headcache.introduction(repo, NOW) == first
    assert json.loads(kept.read_text())["main"] == git(world.circle, "rev-parse", "main")

    other = tmp_path / "other"
    git(tmp_path, "init", "-q", "-b", "main", str(other))
    (other / "x").write_text("another history\n")
    git(other, "add", "x")
    git(other, "commit", "-qm", "another root")
    git(world.circle, "fetch", "-q", str(other), "main:refs/heads/other")
    git(world.circle, "merge", "-q", "--allow-unrelated-histories", "-m", "merge", "other")
    found = headcache.introduction(repo, NOW)
    assert found.intro == first.intro
    assert found.foreign_roots == (git(world.circle, "rev-parse", "other"),)  # named, not kept

    kept.write_text("{")  # damaged: found again
    assert headcache.introduction(repo, NOW) == found
