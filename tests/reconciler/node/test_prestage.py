"""Pre-staging (ADR 0008, issue 15 part 3): the pure planner, the pending proposals as the
chain verifies their approvals (a real circle, real signatures, a real follow), the staged
trees on a real chunk store (staged, taken without a fetch, a flipped bit refused, evicted),
one round of the node's pre-stager, and the rule that nothing runs at an unapproved commit."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pygit2
import pytest

from builders.chunks import ChunkSource, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.materialize import verify_tree
from reconciler.chain import approvals, follow, propose, signing
from reconciler.chain.values import NodeState
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError
from reconciler.node import prestage as prestage_module
from reconciler.node.artifacts import Artifacts
from reconciler.node.prestage import (
    Budget,
    Prestager,
    Round,
    parse_budget,
    pending,
    subject_of,
)
from reconciler.node.prometheus import AgentMetrics
from reconciler.node.records import EventRecord, EventType, fit_message
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName
from reconciler.plan.admission import Refused, admit
from reconciler.plan.prestage import Proposal, Skipped, Staged, Want, pinned, plan, wants
from tests.builders.test_rapid_start import fill, flip_bit, v1, v2
from tests.conftest import EXAMPLE, Result, git
from tests.reconciler.node.world import World, make_world

A, B, C, D = (f"sha256:{letter * 64}" for letter in "abcd")
NOW = 1_900_000_000


def now() -> int:
    """The real time: `circle approve` signs at it."""
    return int(time.time())


# -- the planner ----------------------------------------------------------------------------


def desired(**digests: str) -> DesiredState:
    """The example's desired state, with one workload per keyword at that digest."""
    state = check_circle_dir(EXAMPLE).state
    model = state.workloads["langid"]
    workloads = {}
    for name, digest in digests.items():
        artifact = model.document.artifact.model_copy(update={"digest": digest})
        document = model.document.model_copy(update={"name": name, "artifact": artifact})
        workloads[name] = dataclasses.replace(model, document=document)
    return dataclasses.replace(state, workloads=workloads)


def proposal(commit: str, *signers: str, seq: int = 2, **digests: str) -> Proposal:
    return Proposal(commit * 40, seq, frozenset(signers), desired(**digests))


def test_one_approval_stages_the_next_digest_of_a_workload_this_node_runs() -> None:
    found, skipped = wants({"web": A}, [proposal("1", "alice", web=B)])
    assert found == [Want(B, "web", "1" * 40, 2, ("alice",))]
    assert skipped == []
    done = plan(found, {}, {B: 100}, 1000, frozenset({A}))
    assert [w.digest for w in done.stage] == [B]
    assert done.evict == ()


def test_a_proposal_without_signers_or_whose_documents_do_not_parse_is_skipped() -> None:
    broken = Proposal("2" * 40, 2, frozenset({"alice"}), None, "workloads/web.yaml: bad")
    found, skipped = wants({"web": A}, [proposal("1", web=B), broken])
    assert found == []
    assert skipped == [
        Skipped("2" * 40, "workloads/web.yaml: bad"),
        Skipped("1" * 40, "no approval by a member verifies"),
    ]


def test_what_this_node_does_not_run_or_that_does_not_change_is_not_staged() -> None:
    found, _ = wants({"web": A}, [proposal("1", "alice", web=A, api=C)])
    assert found == []  # web unchanged; api added (placement is the leader's, later)
    removed = Proposal("3" * 40, 2, frozenset({"alice"}), desired(api=C))
    assert wants({"web": A}, [removed])[0] == []


def test_the_budget_is_respected_the_most_approved_first() -> None:
    found, _ = wants(
        {"web": A},
        [proposal("1", "alice", web=B), proposal("2", "alice", "bob", web=C)],
    )
    assert [w.digest for w in found] == [C, B]
    done = plan(found, {}, {B: 600, C: 600}, 1000, frozenset({A}))
    assert [w.digest for w in done.stage] == [C]
    assert done.skipped == (Skipped(B, "600 bytes do not fit in the budget (400 of 1000 left)"),)
    both = plan(found, {}, {B: 400, C: 600}, 1000, frozenset({A}))
    assert [w.digest for w in both.stage] == [C, B]


def test_an_artifact_of_unknown_size_is_skipped_and_nothing_is_staged_when_off() -> None:
    found, _ = wants({"web": A}, [proposal("1", "alice", web=B)])
    assert plan(found, {}, {}, 1000, frozenset()).skipped == (
        Skipped(B, "its manifest is not available yet"),
    )
    off = plan(found, {C: Staged(C, 10, 1)}, {B: 10}, 0, frozenset())
    assert off.stage == ()
    assert off.evict == (C,)
    assert off.skipped == (Skipped(B, "pre-staging is off (a budget of 0)"),)


def test_eviction_takes_the_unwanted_oldest_first_then_the_least_approved() -> None:
    found, _ = wants(
        {"web": A, "api": A},
        [proposal("1", "alice", web=B), proposal("2", "alice", "bob", api=C)],
    )
    staged = {
        B: Staged(B, 600, order=5),
        C: Staged(C, 600, order=9),
        D: Staged(D, 10, order=7),
        "sha256:" + "e" * 64: Staged("sha256:" + "e" * 64, 10, order=3),
    }
    done = plan(found, staged, {}, 1000, frozenset({A}))
    assert done.kept == (C,)
    assert done.evict == ("sha256:" + "e" * 64, D, B)  # unwanted, oldest first; then B
    assert done.stage == ()


def test_a_tree_in_use_or_pinned_by_the_approved_head_is_never_evicted() -> None:
    staged = {B: Staged(B, 600, 1), C: Staged(C, 600, 2)}
    done = plan([], staged, {}, 0, frozenset({B, C}))
    assert done.evict == ()
    found, _ = wants({"web": A}, [proposal("1", "alice", web=B)])
    assert plan(found, {}, {B: 1}, 1000, frozenset({B})).stage == ()  # installed anyway
    assert pinned(desired(web=A, api=C)) == {A, C}


def test_the_budget_option_takes_a_size_a_share_or_zero() -> None:
    assert parse_budget("20Gi") == Budget(size=20 * 2**30)
    assert parse_budget("512M") == Budget(size=512 * 10**6)
    assert parse_budget("10%") == Budget(share=0.10)
    assert parse_budget("0").off
    assert parse_budget("0%").off
    assert parse_budget("10%").bytes(free=900, staged=100) == 100
    for wrong in ("", "-1", "10 %", "150%", "1.5G", "lots"):
        with pytest.raises(InputError, match="expected a size such as 20Gi"):
            parse_budget(wrong)


# -- the pending proposals, as the chain verifies them ---------------------------------------


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    return make_world(tmp_path, circle)


def propose_digest(world: World, digest: str) -> str:
    """Commit langid at `digest` (its build's lock too) on main, approved by nobody yet; its
    id."""
    for path in ("workloads/langid.yaml", "builds/langid-service.yaml"):
        document = world.circle / path
        found = r"digest: sha256:[0-9a-f]{64}"
        document.write_text(re.sub(found, f"digest: {digest}", document.read_text(), count=1))
    git(world.circle, "commit", "-q", "-am", f"langid at {digest[:19]}")
    return git(world.circle, "rev-parse", "HEAD")


def approve(world: World, circle: Callable[..., Result], who: str) -> None:
    done = circle("approve", "--repo", str(world.circle), "--key", str(world.keys / who))
    assert done.code == 0, done.stderr


def followed(world: World, folder: Path) -> tuple[NodeState, list[Proposal], list[Skipped]]:
    folder.mkdir(mode=0o700, exist_ok=True)
    intro = follow.load_introduction(world.intro)
    done = follow.follow_once(str(world.circle), intro, folder, now())
    assert done.state is not None
    repo = pygit2.Repository(str(folder / follow.REPOSITORY))
    found, skipped = pending(repo, intro, done.state, now())
    return done.state, found, skipped


def statement_for(world: World, ago: int = 0) -> bytes:
    at = now() - ago
    repo = pygit2.Repository(str(world.circle))
    intro = follow.load_introduction(world.intro)
    return propose.statement(propose.propose(repo, "HEAD", at, None, intro), at)


def file_pair(world: World, statement: bytes, signature: str) -> None:
    approvals.add(pygit2.Repository(str(world.circle)), statement, signature)


def test_an_approval_by_a_non_member_or_with_a_bad_signature_does_not_count(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    target = propose_digest(world, B)
    statement = statement_for(world)
    assert circle("keygen", str(tmp_path / "mallory"), "-C", "mallory").code == 0
    signature, _ = signing.with_key_file(statement, tmp_path / "mallory", None)
    file_pair(world, statement, signature)  # valid, by no member
    other = statement_for(world, ago=60)  # alice's signature, of other bytes
    signature, _ = signing.with_key_file(other, world.keys / "alice", None)
    file_pair(world, statement, signature)

    state, found, skipped = followed(world, tmp_path / "node")
    assert state.seq == 1
    assert found == []
    assert [s.subject for s in skipped] == [target]
    assert "no valid approval by a member" in skipped[0].reason

    approve(world, circle, "alice")
    _, found, skipped = followed(world, tmp_path / "node")
    assert [(p.commit, p.seq, p.signers) for p in found] == [(target, 2, frozenset({"alice"}))]
    assert p_digest(found[0]) == B
    assert skipped == []


def p_digest(found: Proposal) -> str | None:
    assert found.desired is not None
    return found.desired.workloads["langid"].document.artifact.digest


def test_an_approval_of_another_commit_is_not_counted_for_the_tip(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    first = propose_digest(world, B)
    approve(world, circle, "alice")
    tip = propose_digest(world, C)  # main moves on: nobody approved this one
    _, found, _ = followed(world, tmp_path / "node")
    assert [(p.commit, p.signers) for p in found] == [(first, frozenset({"alice"}))]
    assert tip not in {p.commit for p in found}
    staged, _ = wants({"langid": A}, found)
    assert [w.digest for w in staged] == [B]  # never C


def test_a_landed_proposal_is_no_longer_pending(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    propose_digest(world, B)
    approve(world, circle, "alice")
    approve(world, circle, "bob")  # the quorum of the workloads rule (2)
    state, found, _ = followed(world, tmp_path / "node")
    assert state.seq == 2
    assert found == []


def test_a_proposal_whose_documents_do_not_validate_is_passed_over_with_why(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    document = world.circle / "workloads" / "langid.yaml"
    document.write_text(document.read_text().replace("replicas: 2", "replicas: lots"))
    git(world.circle, "commit", "-q", "-am", "broken")
    statement = statement_for(world)
    signature, _ = signing.with_key_file(statement, world.keys / "alice", None)
    file_pair(world, statement, signature)
    _, found, _ = followed(world, tmp_path / "node")
    assert [p.desired for p in found] == [None]
    assert "workloads/langid.yaml" in str(found[0].problem)
    assert "expected an integer" in str(found[0].problem)
    assert wants({"langid": A}, found)[0] == []


# -- staged trees on the node ----------------------------------------------------------------


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[ChunkServer]:
    with ChunkServer(fill(ChunkStore(tmp_path / "peer"), v1(), v2())) as server:
        yield server


def node_artifacts(tmp_path: Path, source: ChunkSource, came: list[int]) -> Artifacts:
    return Artifacts(
        tmp_path / "state",
        lambda: [source],
        on_chunk=lambda where, size: came.append(size),
        boot_id=lambda: "boot-a",
    )


def test_a_staged_tree_is_taken_by_the_install_without_a_fetch(
    tmp_path: Path, peer: ChunkServer
) -> None:
    came: list[int] = []
    taken: list[str] = []
    with HttpChunkSource(peer.url) as source:
        artifacts = node_artifacts(tmp_path, source, came)
        artifacts.on_taken = lambda record: taken.append(record.artifact_id)
        artifacts.ensure(v1().id)
        record = artifacts.stage(v2().id, now=NOW)
    assert record is not None
    assert record.size == sum(e.size for e in v2().manifest.files())
    assert set(artifacts.staged()) == {v2().id}
    verify_tree(artifacts.root / v2().id.removeprefix("sha256:"), v2().manifest)
    peer.stop()  # nothing can be fetched from now on

    came.clear()
    installed = artifacts.ensure(v2().id)
    assert installed.tampered is None
    assert came == []
    assert taken == [v2().id]
    assert artifacts.staged() == {}  # not speculation any more: never evicted
    assert artifacts.evict(v2().id) is None
    verify_tree(installed.path, v2().manifest)


def test_a_flipped_bit_in_a_staged_tree_refuses_the_start_and_it_is_rebuilt(
    tmp_path: Path, peer: ChunkServer
) -> None:
    came: list[int] = []
    taken: list[str] = []
    with HttpChunkSource(peer.url) as source:
        artifacts = node_artifacts(tmp_path, source, came)
        artifacts.on_taken = lambda record: taken.append(record.artifact_id)
        artifacts.stage(v2().id, now=NOW)
        weights = artifacts.root / v2().id.removeprefix("sha256:") / "model" / "weights.bin"
        flip_bit(weights, 7 * 4096 + 5)  # what a crash before the switch could leave

        installed = artifacts.ensure(v2().id)
    assert "weights.bin" in str(installed.tampered)
    assert taken == []  # refused: not started as staged
    verify_tree(installed.path, v2().manifest)
    assert artifacts.staged() == {}


def test_eviction_removes_the_tree_its_seal_and_its_record(
    tmp_path: Path, peer: ChunkServer
) -> None:
    came: list[int] = []
    with HttpChunkSource(peer.url) as source:
        artifacts = node_artifacts(tmp_path, source, came)
        installed = artifacts.ensure(v1().id)
        assert artifacts.stage(v1().id, now=NOW) is None  # installed for real: no record
        artifacts.stage(v2().id, now=NOW)
    gone = artifacts.evict(v2().id)
    assert gone is not None
    assert gone.artifact_id == v2().id
    assert not (artifacts.root / v2().id.removeprefix("sha256:")).exists()
    assert not (artifacts.seals / f"{v2().id.removeprefix('sha256:')}.json").exists()
    assert artifacts.staged() == {}
    assert artifacts.evict(v2().id) is None
    verify_tree(installed.path, v1().manifest)  # the tree in use is untouched
    assert sorted(p.name for p in artifacts.root.iterdir() if p.name.startswith(".st")) == [
        ".staged"
    ]


def test_a_record_whose_tree_a_crash_never_installed_is_dropped(tmp_path: Path) -> None:
    artifacts = Artifacts(tmp_path / "state", boot_id=lambda: "boot-a")
    artifacts.staged_records.mkdir(parents=True)
    hex_id = v2().id.removeprefix("sha256:")
    (artifacts.staged_records / f"{hex_id}.json").write_text(
        f'{{"artifact": "{v2().id}", "size": 1, "stagedAt": 1}}'
    )
    (artifacts.staged_records / f"{'f' * 64}.json").write_text("not json")
    assert artifacts.staged() == {}
    assert list(artifacts.staged_records.iterdir()) == []


# -- one round of the node's pre-stager ------------------------------------------------------


def test_one_round_stages_the_approved_proposal_and_a_zero_budget_evicts_it(
    world: World, circle: Callable[..., Result], tmp_path: Path, peer: ChunkServer
) -> None:
    running = (("langid", v1().id),)
    propose_digest(world, v2().id)
    approve(world, circle, "alice")
    state, _, _ = followed(world, tmp_path / "node")
    intro = follow.load_introduction(world.intro)
    came: list[int] = []
    said: list[str] = []
    staged_bytes: list[int] = []
    with HttpChunkSource(peer.url) as source:
        artifacts = Artifacts(tmp_path / "node", lambda: [source], boot_id=lambda: "boot-a",
                              on_chunk=lambda where, size: came.append(
                                  size if where is source else 0))  # fmt: skip
        artifacts.ensure(v1().id)
        came.clear()
        stager = Prestager(artifacts, tmp_path / "node", intro, Budget(size=1 << 20),
                           say=said.append, on_bytes=staged_bytes.append)  # fmt: skip
        round_ = Round(state, running, frozenset({v1().id}), now())
        stager.run_round(round_)
        events = stager.take_events()
        assert [(kind, reason, subject) for kind, reason, subject, _ in events] == [
            (EventType.NORMAL, "ArtifactStaged", subject_of(v2().id))
        ]
        assert "approved so far by alice" in events[0][3]
        for kind, reason, subject, message in events:  # each one a record readers accept
            record = EventRecord(NOW * 1000, kind, reason, subject, NodeName("node-a"), None,
                                 fit_message(message))  # fmt: skip
            assert EventRecord.from_body(record.to_body()) == record
        assert set(artifacts.staged()) == {v2().id}
        assert sum(came) == 4096  # fetched: v2's one new chunk; the rest from v1, in the kernel
        assert staged_bytes[-1] == artifacts.staged()[v2().id].size

        stager.run_round(round_)  # nothing moved: nothing done
        assert stager.take_events() == []

        off = Prestager(artifacts, tmp_path / "node", intro, Budget(size=0))
        off.run_round(round_)
        assert [reason for _, reason, _, _ in off.take_events()] == ["ArtifactStageEvicted"]
        assert artifacts.staged() == {}
        verify_tree(artifacts.root / v1().id.removeprefix("sha256:"), v1().manifest)


def test_nothing_runs_at_a_commit_the_chain_did_not_approve() -> None:
    """The runtime starts only accepted assignments, and an assignment names a commit of the
    node's verified chain: a leader's assignment of a staged digest at a proposal's commit is
    refused (CommitNotOnChain), whatever it signs."""
    proposal_commit = "9" * 40
    state = desired(langid=B)
    assignment = Assignment(
        WorkloadName("langid"), 0, NodeName("node-a"), CommitId(proposal_commit), 2,
        ArtifactDigest(B), 500, 256 * 2**20, (), 1,
    )  # fmt: skip
    decision = admit(
        assignment,
        signer="node-b",
        me="node-a",
        chain={"1" * 40: 1},
        desired=state,
        leaders={1: "node-b"},
        newest_epoch=1,
        my_gpus=set(),
    )
    assert decision.refused is Refused.NOT_ON_CHAIN


def test_a_budget_that_is_no_size_is_refused_before_anything_starts(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    state = tmp_path / "node"
    done = circle(
        "node", "run", "--source", str(world.circle), "--introduction", str(world.intro),
        "--state", str(state), "--key", str(world.node_key("node-a")),
        "--store", f"sqlite:{tmp_path / 'store.db'}", "--prestage-budget", "lots",
    )  # fmt: skip
    assert done.code == 2
    assert "--prestage-budget 'lots': expected a size such as 20Gi" in done.stderr
    assert "Traceback" not in done.stderr
    assert not state.exists()
    assert not (tmp_path / "store.db").exists()


def test_an_artifact_no_source_has_is_tried_again_only_after_a_backoff(
    world: World, circle: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    propose_digest(world, B)  # approved by one member; no source has its manifest
    approve(world, circle, "alice")
    state, _, _ = followed(world, tmp_path / "node")
    intro = follow.load_introduction(world.intro)
    said: list[str] = []
    artifacts = Artifacts(tmp_path / "node", boot_id=lambda: "boot-a")
    stager = Prestager(artifacts, tmp_path / "node", intro, Budget(size=1 << 20), say=said.append)
    round_ = Round(state, (("langid", A),), frozenset({A}), now())
    stager.run_round(round_)
    assert [line for line in said if "no source has the manifest" in line] != []
    tried = len(said)
    stager.run_round(round_)  # the same inputs, within the backoff: not tried again
    assert len(said) == tried
    assert stager.take_events() == []
    assert artifacts.staged() == {}

    monkeypatch.setattr(prestage_module, "RETRY", 0.0)
    stager.run_round(round_)  # a failed round doubled its backoff: still waiting
    assert len(said) == tried
    fresh = Prestager(artifacts, tmp_path / "node", intro, Budget(size=1 << 20), say=said.append)
    fresh.run_round(round_)
    fresh.run_round(round_)  # no backoff: each round tries again
    assert len(said) == 3 * tried


def test_the_staged_bytes_are_exported() -> None:
    metrics = AgentMetrics()
    metrics.staged_bytes.set(4096)
    _, page = metrics.page()
    assert b"\ncircle_artifact_staged_bytes 4096.0\n" in page
