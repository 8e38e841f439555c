"""Kept answers (`reconciler.cli.answers`) are an optimization only: a replayed answer is byte
for byte what the command prints afresh, and every change it depends on (approvals filed, main
moved, HEAD switched, the clock passing an approval's instant, the file damaged in any way)
gives the fresh answer again. Errors and answers made while the refs moved are never kept."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.chain import approvals, propose
from reconciler.cli import answers, chain_options
from tests.chainsim import NOW, ChainSimulator
from tests.conftest import Result

QUESTIONS = [
    ("log",),
    ("log", "-o", "json"),
    ("verify",),
    ("verify", "-o", "json"),
    ("review",),
    ("review", "-o", "json"),
    ("review", "-o", "markdown"),
]


@pytest.fixture
def sim(tmp_path: Path) -> ChainSimulator:
    """Seq 1 approved, seq 2 approved, a pending change on main signed by alice alone."""
    sim = ChainSimulator(tmp_path / "circle.git")
    sim.approve(1, None, sim.first, ["alice", "bob", "carol"])
    second = sim.scale(3)
    sim.approve(2, sim.first, second, ["alice", "bob"])
    pending = sim.scale(4)
    sim.approve(3, second, pending, ["alice"])
    return sim


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The commands' clock, set by the test: `clock[0]`."""
    now = [NOW]
    monkeypatch.setattr("time.time", lambda: float(now[0]))
    return now


@pytest.fixture
def ask(circle: Callable[..., Result], sim: ChainSimulator) -> Callable[..., Result]:
    repo = Path(sim.repo.path)
    return lambda *args: circle(args[0], "--repo", str(repo), "--sigstore-root", "none", *args[1:])


def kept_file(sim: ChainSimulator) -> Path:
    return Path(sim.repo.path) / answers.NAME


def replaying_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make answering afresh fail: what still answers was replayed."""

    def refuse(path: Path) -> None:
        raise AssertionError(f"{path} was opened: the answer was not replayed")

    monkeypatch.setattr(chain_options, "open_repo", refuse)


@pytest.mark.parametrize("question", QUESTIONS, ids=" ".join)
def test_a_replayed_answer_is_the_fresh_answer_byte_for_byte(
    question: tuple[str, ...],
    ask: Callable[..., Result],
    sim: ChainSimulator,
    clock: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh = ask(*question)
    assert fresh.code in (0, 1), fresh.stderr
    assert kept_file(sim).stat().st_mode & 0o777 == 0o600
    with monkeypatch.context() as patched:
        replaying_only(patched)
        again = ask(*question)
    assert (again.code, again.stdout, again.stderr) == (fresh.code, fresh.stdout, fresh.stderr)
    kept_file(sim).unlink()
    assert ask(*question) == fresh


def test_each_question_has_its_own_answer(
    ask: Callable[..., Result], sim: ChainSimulator, clock: list[int]
) -> None:
    fresh = {question: ask(*question) for question in QUESTIONS}
    assert fresh[("verify",)].code == 1
    assert "not approved" in fresh[("verify",)].stdout
    assert fresh[("log", "-o", "json")].json()[-1]["seq"] == 2
    assert {question: ask(*question) for question in QUESTIONS} == fresh
    kept = json.loads(kept_file(sim).read_text())["answers"]
    assert len(kept) == len(QUESTIONS)


def test_filing_an_approval_or_moving_main_gives_the_fresh_answer(
    ask: Callable[..., Result], sim: ChainSimulator, clock: list[int]
) -> None:
    before = ask("verify")
    assert before.code == 1
    pending = str(sim.repo.references["refs/heads/main"].target)
    sim.approve(3, sim.walk().commit, pending, ["bob"])  # type: ignore[union-attr]
    after = ask("verify")
    assert after.code == 0, after.stdout
    assert "the approved head (seq 3), signed by alice, bob" in after.stdout
    assert ask("log", "-o", "json").json()[-1]["seq"] == 3

    newer = sim.scale(5)
    moved = ask("verify", "-o", "json").json()
    assert (moved["revision"], moved["approved"], moved["seq"]) == (newer, False, 4)


def test_switching_head_names_the_other_branch(
    ask: Callable[..., Result], sim: ChainSimulator, clock: list[int]
) -> None:
    repo = Path(sim.repo.path)
    on_main = ask("verify")
    assert "(HEAD, branch main)" in on_main.stdout
    second = sim.walk(now=NOW)
    assert second is not None
    subprocess.run(["git", "-C", str(repo), "branch", "feature", second.commit], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "symbolic-ref", "HEAD", "refs/heads/feature"], check=True
    )
    on_feature = ask("verify")
    assert on_feature.code == 0
    assert "(HEAD, branch feature): the approved head (seq 2)" in on_feature.stdout
    subprocess.run(["git", "-C", str(repo), "update-ref", "--no-deref", "HEAD", second.commit],
                   check=True)  # fmt: skip
    assert "(HEAD, detached)" in ask("verify").stdout


def test_an_answer_holds_only_until_an_approval_starts_or_stops_counting(
    ask: Callable[..., Result], sim: ChainSimulator, clock: list[int]
) -> None:
    state = sim.walk()
    assert state is not None
    pending = str(sim.repo.references["refs/heads/main"].target)
    # bob's approval is issued 100 s from now: until then it is refused as issued in the
    # future; from then on, with alice's, it makes the quorum. carol's is issued after alice's
    # expires: it never meets hers.
    sim.approve(3, state.commit, pending, ["bob"], now=NOW + 160)
    sim.approve(3, state.commit, pending, ["carol"], now=NOW + 90_000)
    issued, alice_expires = NOW + 100, NOW + 86_400
    assert ask("verify").code == 1
    clock[0] = issued - 1
    assert ask("verify").code == 1
    clock[0] = issued
    assert ask("verify").code == 0
    # At every instant around every statement's times, the kept answer is the fresh one.
    instants = [NOW - 60, issued, alice_expires, NOW + 90_000 - 60, NOW + 160 + 86_400]
    probes = sorted({t + d for t in instants for d in (-1, 0, 1)} | {NOW})
    for moment in [*probes, *reversed(probes)]:
        clock[0] = moment
        for question in (("verify",), ("review", "-o", "json"), ("log",)):
            told = ask(*question)
            kept_file(sim).unlink()
            assert ask(*question) == told, (moment, question)


@pytest.mark.parametrize(
    "damage",
    [
        "garbage",
        "truncated",
        "checksum",
        "types",
        "format",
        "symlink",
        "huge",
    ],
)
def test_a_damaged_file_gives_the_fresh_answer(
    damage: str, ask: Callable[..., Result], sim: ChainSimulator, clock: list[int], tmp_path: Path
) -> None:
    fresh = ask("verify")
    path = kept_file(sim)
    data = path.read_text()
    document = json.loads(data)
    entry = document["answers"][0]
    if damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        path.write_text(data[: len(data) // 2])
    elif damage == "checksum":  # a different answer, its checksum left as it was
        entry["stdout"] = entry["stdout"].replace("not approved", "approved")
        entry["code"] = 0
        path.write_text(json.dumps(document))
    elif damage == "types":
        entry["code"] = "0"
        path.write_text(json.dumps(document))
    elif damage == "format":
        document["format"] = "circle-answers/0"
        path.write_text(json.dumps(document))
    elif damage == "symlink":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(data.replace("not approved", "approved"))
        path.unlink()
        path.symlink_to(elsewhere)
    elif damage == "huge":
        path.write_bytes(b" " * (answers.MAX_BYTES + 1))
    assert ask("verify") == fresh


def test_errors_and_answers_made_while_the_refs_moved_are_not_kept(
    ask: Callable[..., Result],
    sim: ChainSimulator,
    clock: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = ask("verify", "0" * 40)
    assert missing.code == 2
    assert not kept_file(sim).exists()

    judge = propose.judge
    state = sim.walk()
    assert state is not None
    pending = str(sim.repo.references["refs/heads/main"].target)

    def judge_while_bob_approves(found: propose.Proposal, now: int) -> propose.Judged:
        judged = judge(found, now)
        sim.approve(3, state.commit, pending, ["bob"])
        return judged

    monkeypatch.setattr(propose, "judge", judge_while_bob_approves)
    assert ask("verify").code == 1  # what it found when it looked
    assert not kept_file(sim).exists()
    monkeypatch.setattr(propose, "judge", judge)
    assert ask("verify").code == 0


@pytest.mark.parametrize("layout", ["shallow", "worktree", "symbolic"])
def test_a_layout_the_reader_does_not_know_is_answered_afresh(
    layout: str,
    ask: Callable[..., Result],
    circle: Callable[..., Result],
    sim: ChainSimulator,
    clock: list[int],
    tmp_path: Path,
) -> None:
    repo = Path(sim.repo.path)
    where = repo
    if layout == "shallow":
        (repo / "shallow").write_text("")
    elif layout == "worktree":
        where = tmp_path / "worktree"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(where), "main"],
                       check=True, capture_output=True)  # fmt: skip
    elif layout == "symbolic":
        (repo / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        main = sim.repo.references["refs/heads/main"].target
        sim.repo.references.create("refs/heads/real", main)
        (repo / "refs" / "heads" / "main").write_text("ref: refs/heads/real\n")
    assert answers.question(where, "verify", revision="HEAD") is None
    done = circle("verify", "--repo", str(where), "--sigstore-root", "none")
    assert done.code == 1, done.stderr
    assert not kept_file(sim).exists()
    assert approvals.head(sim.repo, approvals.REF) is not None


def test_the_window_is_the_gap_between_instants() -> None:
    held = answers.window([10, 20, 30, 20], 20)
    assert (held.start, held.end) == (20, 30)
    assert [held.holds(t) for t in (19, 20, 29, 30)] == [False, True, True, False]
    assert answers.window([], 5) == answers.Window(None, None)
    assert answers.window([10], 5) == answers.Window(None, 10)
    assert answers.window([10], 15) == answers.Window(10, None)
