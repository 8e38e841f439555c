"""Attacks on the Human Chain, each mounted on a real circle repository (`ChainSimulator`) against
a node whose state file stands at an approved seq 2.

Every attack ends the same way: the node refuses (a specific error, or a refusal naming why the
evidence does not count), and its state file is byte-identical afterwards. Most attacks go
through `follow.advance`, the node's own gate, with the quarantine refs pointed at the
simulated circle's main and approvals; a few that the gate cannot express (a statement whose
seq skips one, a transition that starts elsewhere) go to `chain.verify` directly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import sshsig
from reconciler.chain import approvals, follow, node_state, quorum
from reconciler.chain.changes import TreeRefused
from reconciler.chain.node_state import StateFileError
from reconciler.chain.quorum import QuorumNotMet
from reconciler.chain.statements import NAMESPACE
from reconciler.chain.trees import commit_of
from reconciler.chain.values import Evidence, NodeState, sha256
from reconciler.chain.verify import (
    ChainError,
    Equivocation,
    ForkError,
    NotVouched,
    PolicyError,
    RollbackError,
    SequenceGap,
    Verifier,
    parse_policy,
)
from reconciler.chain.walk import MAIN, Chain
from tests.chainsim import NOW, ChainSimulator

OWNERS = ("alice", "bob", "carol")
POLICY = "circle.yaml"
WORKLOAD = "workloads/langid.yaml"
_FORGER = pygit2.Signature("forger", "forger@example.org", 1_700_000_000, 0)

Edit = Callable[[str], str]


# --- the node under attack ---------------------------------------------------------------------


@dataclass
class Node:
    """A node following `sim`, its state file at seq 2 (`second`, a workload change)."""

    sim: ChainSimulator
    state_file: Path
    first: str
    second: str

    def state(self) -> NodeState:
        loaded = node_state.load(self.state_file)
        assert loaded is not None
        return loaded

    def sync(self) -> None:
        """What `follow.fetch` does: the circle's main and approvals into quarantine."""
        refs = self.sim.repo.references
        refs.create(follow.MAIN, refs[MAIN].target, force=True)
        refs.create(follow.APPROVALS, refs[approvals.REF].target, force=True)

    def advance(self, now: int = NOW) -> follow.Followed:
        self.sync()
        return follow.advance(self.sim.repo, self.sim.intro, self.state_file, now)

    def settle(self) -> None:
        """Let the node apply what is approved (setup, before the attack itself)."""
        done = self.advance()
        assert done.refusal is None, done.refusal
        assert done.applied

    def check(self, now: int = NOW) -> None:
        """`Chain.check` of the node's next step to main, with the evidence filed for it: what
        the node's refusal message comes from, raised as its own error class."""
        self.sync()
        chain = Chain(self.sim.repo, self.sim.intro, approvals_ref=follow.APPROVALS)
        state = self.state()
        target = str(self.sim.repo.references[follow.MAIN].target)
        chain.check(state, target, chain.candidates(state.seq + 1).get(target, []), now)

    def statement(self, to: str, **overrides: Any) -> bytes:
        """The statement for the node's next step, `state -> to`."""
        state = self.state()
        return self.sim.statement(state.seq + 1, state.commit, to, **overrides)

    def approve(self, to: str, *names: str, **overrides: Any) -> None:
        approvals.add_many(self.sim.repo, self.sim.sign(self.statement(to, **overrides), *names))

    def propose(self, files: dict[str, bytes | None], *names: str, **commit: Any) -> str:
        """Commit `files` on main and file approvals of it by `names` for the next seq."""
        to = self.sim.commit(files, **commit)
        self.approve(to, *names)
        return to

    def adopt(self, *edits: Edit) -> None:
        """A proper policy change (version + 1, `previous`), signed by every owner, applied."""
        self.propose({POLICY: next_policy(self.sim.read(POLICY), *edits)}, *OWNERS)
        self.settle()

    def changed(self, to: str) -> tuple[str, ...]:
        state = self.state()
        step = self.sim.trees.transition(
            ref=MAIN, seq=state.seq + 1, from_commit=state.commit, to_commit=to
        )
        return step.changed


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


def make_node(tmp_path: Path) -> Node:
    """A circle at seq 2 and a node (its state file in tmp_path/node) that applied it."""
    sim = ChainSimulator(tmp_path / "circle.git")
    sim.approve(1, None, sim.first, OWNERS)
    second = sim.scale(3)
    sim.approve(2, sim.first, second, ["alice", "bob"])
    state = sim.walk()
    assert state == NodeState(second, 2, sha256(sim.read(POLICY)))
    (tmp_path / "node").mkdir()
    state_file = tmp_path / "node" / "state.json"
    node_state.save(state_file, state)
    assert state_file.stat().st_mode & 0o777 == 0o600
    return Node(sim, state_file, sim.first, second)


# --- small tools for attackers -------------------------------------------------------------------


def next_policy(old: bytes, *edits: Edit, skip: int = 0, previous: str | None = None) -> bytes:
    """`old` as the next policy version (naming `old` as previous), with `edits` applied."""
    text = old.decode()
    found = re.search(r"^version: (\d+)\n(?:previous: \S+\n)?", text, re.MULTILINE)
    assert found is not None
    version = int(found.group(1)) + 1 + skip
    head = f"version: {version}\nprevious: {previous or sha256(old)}\n"
    text = text.replace(found.group(0), head, 1)
    for edit in edits:
        text = edit(text)
    return text.encode()


def replace(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


GOVERNANCE_RULE = "paths: [circle.yaml]\n      threshold: 3"
WORKLOADS_RULE = 'paths: ["workloads/**", "builds/**", "src/**"]\n      threshold: 2'
GOVERNANCE_2 = replace(GOVERNANCE_RULE, "paths: [circle.yaml]\n      threshold: 2")


def drop_carol(text: str) -> str:
    dropped = re.sub(r"  - id: carol\n.*?(?=^consensus:)", "", text, flags=re.S | re.M)
    assert dropped != text
    return dropped


def add_key(name: str, key: Ed25519PrivateKey) -> Edit:
    def edit(text: str) -> str:
        line = next(line for line in text.splitlines() if line.endswith(f" {name}@test"))
        entry = f"      - type: ssh-ed25519\n        key: {sshsig.public_key_line(key, 'second')}"
        return text.replace(line, f"{line}\n{entry}", 1)

    return edit


def add_dave(text: str) -> str:
    key = sshsig.public_key_line(Ed25519PrivateKey.generate(), "dave@test")
    member = f"  - id: dave\n    keys:\n      - type: ssh-ed25519\n        key: {key}\n"
    return replace("consensus:\n", f"{member}consensus:\n")(text)


def key_name(key: Ed25519PrivateKey) -> str:
    """How the approvals store names a signer (16 hex digits of the sha256 of its key blob)."""
    blob = sshsig.parse(sshsig.sign(b"", key, NAMESPACE)).public_key
    return hashlib.sha256(blob).hexdigest()[:16]


def file_by_hand(
    repo: Any,
    seq: int,
    to: str,
    name: str,
    statement: bytes,
    signature: str,
    *,
    exact: bool = False,
) -> None:
    """File an approval pair under a signer name of the forger's choosing (not `circle
    approve`), with the content digest the store checks on reading (unless `exact`)."""
    head = repo.references[approvals.REF].peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(head.tree)
    if not exact:
        name = f"{name}-{approvals._pair_digest(statement, signature.encode())}"
    base = f"{seq:010d}/{to}/{name}"
    for path, data in ((f"{base}.statement", statement), (f"{base}.sig", signature.encode())):
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    forged = repo.create_commit(None, _FORGER, _FORGER, "forged", tree, [head.id])
    repo.references.create(approvals.REF, forged, force=True)


def count_filed(node: Node, to: str) -> int:
    return len(node.sim.chain().candidates(node.state().seq + 1).get(to, []))


# --- attacks the node refuses to apply (the state stays; the refusal says why) ---------------


def under_quorum(node: Node) -> None:
    node.propose({WORKLOAD: b"replicas: 9\n"}, "alice")


def two_keys_of_one_member(node: Node) -> None:
    second_key = Ed25519PrivateKey.generate()
    node.adopt(add_key("alice", second_key))
    to = node.sim.scale(4)
    data = node.statement(to)
    approvals.add_many(
        node.sim.repo,
        [
            (data, sshsig.sign(data, node.sim.keys["alice"], NAMESPACE)),
            (data, sshsig.sign(data, second_key, NAMESPACE)),
        ],
    )
    assert count_filed(node, to) == 2


def one_pair_filed_twice(node: Node) -> None:
    to = node.sim.scale(4)
    [(data, signature)] = node.sim.sign(node.statement(to), "alice")
    approvals.add(node.sim.repo, data, signature)
    file_by_hand(node.sim.repo, 3, to, "alice-again", data, signature)
    assert count_filed(node, to) == 2


def filed_under_another_members_name(node: Node) -> None:
    """Alice's signature filed under bob's file name: the name is not trusted."""
    to = node.sim.scale(4)
    [(data, signature)] = node.sim.sign(node.statement(to), "alice")
    approvals.add(node.sim.repo, data, signature)
    file_by_hand(node.sim.repo, 3, to, key_name(node.sim.keys["bob"]), data, signature)
    assert count_filed(node, to) == 2


def mallory_signs(node: Node) -> None:
    node.approve(node.sim.scale(4), "alice", "mallory")


def mallory_alone(node: Node) -> None:
    node.approve(node.sim.scale(4), "mallory")


def replay_across_refs(node: Node) -> None:
    node.approve(node.sim.scale(4), "alice", "bob", ref="refs/heads/other")


def replay_across_circles(node: Node) -> None:
    """The same owners run a fork with another circle id (another introduction); what they
    signed there is copied into this circle's approvals ref."""
    fork = ChainSimulator(Path(node.sim.repo.path).parent / "fork.git")
    fork.keys = node.sim.keys
    renamed = node.sim.read(POLICY).replace(b"id: example-ai-circle", b"id: forked-circle")
    fork.commit({POLICY: renamed}, "the fork", parents=[])  # the fork's own root
    assert fork.intro.circle == "forked-circle"
    to = node.sim.scale(4)
    data = node.statement(to, circle=fork.intro.circle, introduction=fork.intro.commit)
    approvals.add_many(fork.repo, fork.sign(data, "alice", "bob"))
    for stored in approvals.read(fork.repo):
        approvals.add(node.sim.repo, stored.statement, stored.signature)
    assert count_filed(node, to) == 2


def commit_signature_as_approval(node: Node) -> None:
    """The commit's own `git`-namespace signatures (as `git commit -S` makes), paired with a
    statement."""
    to = node.sim.scale(4)
    raw = commit_of(node.sim.repo, to).read_raw()
    data = node.statement(to)
    approvals.add_many(
        node.sim.repo, [(data, sshsig.sign(raw, node.sim.keys[n], "git")) for n in OWNERS]
    )


def file_namespace_signature(node: Node) -> None:
    to = node.sim.scale(4)
    approvals.add_many(node.sim.repo, node.sim.sign(node.statement(to), *OWNERS, namespace="file"))


def expired(node: Node) -> None:
    """Alice's approval expired before bob gave his: they were never current together."""
    to = node.sim.scale(4)
    node.approve(to, "alice", issued_at=NOW - 90_000, expires_at=NOW - 80_000)
    node.approve(to, "bob")


def not_yet_valid(node: Node) -> None:
    node.approve(node.sim.scale(4), "alice", "bob", issued_at=NOW + 3600, expires_at=NOW + 7200)


def approves_another_policy(node: Node) -> None:
    later = next_policy(node.sim.read(POLICY), GOVERNANCE_2)
    node.approve(node.sim.scale(4), *OWNERS, policy_sha256=sha256(later))


def approvals_two_seqs_ahead(node: Node) -> None:
    third = node.sim.scale(4)
    fourth = node.sim.scale(5)
    node.sim.approve(4, third, fourth, ["alice", "bob"])  # nothing filed for seq 3


def policy_takeover_below_governance(node: Node) -> None:
    """Two owners drop the third and lower governance to 2: the new policy's governance is
    met, the one in force is not."""
    node.propose(
        {POLICY: next_policy(node.sim.read(POLICY), drop_carol, GOVERNANCE_2)}, "alice", "bob"
    )


def policy_without_new_governance(node: Node) -> None:
    """Every owner signs a policy that adds dave and needs all four for governance."""
    edits = (add_dave, replace(GOVERNANCE_RULE, "paths: [circle.yaml]\n      threshold: 4"))
    node.propose({POLICY: next_policy(node.sim.read(POLICY), *edits)}, *OWNERS)


def policy_deleted(node: Node) -> None:
    node.sim.commit({POLICY: None}, "no more rules")  # nothing can even be signed for it


def policy_corrupted(node: Node) -> None:
    node.propose({POLICY: b"apiVersion: circle/v1\nkind: Circle\nid: [unclosed\n"}, *OWNERS)


def policy_changes_circle_id(node: Node) -> None:
    edit = replace("id: example-ai-circle", "id: other-circle")
    node.propose({POLICY: next_policy(node.sim.read(POLICY), edit)}, *OWNERS)


def policy_skips_a_version(node: Node) -> None:
    node.propose({POLICY: next_policy(node.sim.read(POLICY), skip=1)}, *OWNERS)


def policy_names_wrong_previous(node: Node) -> None:
    data = next_policy(node.sim.read(POLICY), previous=sha256(b"another policy"))
    node.propose({POLICY: data}, *OWNERS)


def rename_into_policy(node: Node) -> None:
    """A draft policy lands under the default rule (two owners), then is renamed into
    circle.yaml's place: the rename is a delete plus an add, so governance applies."""
    draft = next_policy(node.sim.read(POLICY), drop_carol, GOVERNANCE_2)
    node.propose({"drafts/circle.yaml": draft}, "alice", "bob")
    node.settle()
    to = node.sim.commit({"drafts/circle.yaml": None, POLICY: draft}, "tidy up drafts")
    assert node.changed(to) == (POLICY, "drafts/circle.yaml")
    node.approve(to, "alice", "bob")


def rename_into_workloads(node: Node) -> None:
    """Under a policy where workloads require alice, a node file is moved into workloads/:
    the new name's rule applies (and the old one's: a delete plus an add)."""
    node.adopt(replace(WORKLOADS_RULE, f"{WORKLOADS_RULE}\n      required: [alice]"))
    data = node.sim.read("nodes/node-a.yaml")
    to = node.sim.commit({"nodes/node-a.yaml": None, "workloads/node-a.yaml": data})
    assert node.changed(to) == ("nodes/node-a.yaml", "workloads/node-a.yaml")
    node.approve(to, "bob", "carol")


STAR_RULE = 'paths: ["workloads/*"]\n      threshold: 3'


def star_matches_one_level(node: Node) -> None:
    node.adopt(replace(WORKLOADS_RULE, STAR_RULE))
    node.propose({"workloads/extra.yaml": b"kind: Workload\n"}, "alice", "bob")


def symlink(node: Node) -> None:
    to = node.sim.commit(
        {"workloads/x.yaml": b"../circle.yaml"}, modes={"workloads/x.yaml": 0o120000}
    )
    node.approve(to, *OWNERS)


def submodule(node: Node) -> None:
    to = node.sim.commit({"vendor/lib": b"not a commit"}, modes={"vendor/lib": 0o160000})
    node.approve(to, *OWNERS)


def merge_smuggles_policy(node: Node) -> None:
    """A side branch rewrites circle.yaml; the merge into main is signed by two owners as if it
    were routine. Changed paths come from the trees, so governance applies."""
    proposal = next_policy(node.sim.read(POLICY), drop_carol, GOVERNANCE_2)
    side = node.sim.commit({POLICY: proposal}, "side", parents=[node.second], ref=None)
    to = node.sim.commit({POLICY: proposal}, "Merge branch 'docs'", parents=[node.second, side])
    assert node.changed(to) == (POLICY,)
    node.approve(to, "alice", "bob")


def revoked_member(node: Node) -> None:
    node.adopt(drop_carol, GOVERNANCE_2)
    node.approve(node.sim.scale(4), "alice", "carol")


WEIGHTED = (
    replace("  - id: carol\n", "  - id: carol\n    weight: 2\n"),
    replace(WORKLOADS_RULE, WORKLOADS_RULE.replace("2", "3") + "\n      required: [alice]"),
)


def weight_without_required_member(node: Node) -> None:
    node.adopt(*WEIGHTED)
    node.approve(node.sim.scale(4), "bob", "carol")  # weight 3, but alice is required


def refused(
    attack: Callable[[Node], None], error: type[Exception], *fragments: str, now: int = NOW
) -> Any:
    return pytest.param(attack, error, fragments, now, id=attack.__name__.replace("_", "-"))


NEEDS_TWO = "rule workloads needs weight 2, has 1 (alice); missing one of: bob, carol"
NO_ONE = "no valid approval by a member of the policy in force"
GOVERNANCE_UNMET = "rule governance needs weight 3, has 2 (alice, bob); missing one of: carol"


@pytest.mark.parametrize(
    ("attack", "error", "fragments", "now"),
    [
        refused(under_quorum, QuorumNotMet, NEEDS_TWO),
        refused(two_keys_of_one_member, QuorumNotMet, NEEDS_TWO),
        refused(one_pair_filed_twice, QuorumNotMet, NEEDS_TWO),
        refused(filed_under_another_members_name, QuorumNotMet, NEEDS_TWO),
        refused(mallory_signs, QuorumNotMet, NEEDS_TWO, "signed by a key of no member"),
        refused(mallory_alone, NotVouched, NO_ONE, "#1: signed by a key of no member"),
        refused(replay_across_refs, NotVouched, NO_ONE, "#1: approves another ref;"),
        refused(replay_across_circles, NotVouched, NO_ONE, "approves another circle, introduction"),
        refused(
            commit_signature_as_approval,
            NotVouched,
            NO_ONE,
            "signed for namespace 'git', expected 'circle-approval-v1'",
        ),
        refused(
            file_namespace_signature,
            NotVouched,
            NO_ONE,
            "signed for namespace 'file', expected 'circle-approval-v1'",
        ),
        refused(
            expired,
            QuorumNotMet,
            "rule workloads needs weight 2, has 1 (bob); missing one of: alice, carol",
            f"expired at {NOW - 80_000}",
        ),
        refused(not_yet_valid, NotVouched, NO_ONE, f"issued in the future ({NOW + 3600} > {NOW})"),
        refused(approves_another_policy, NotVouched, NO_ONE, "approves another policy sha256"),
        refused(approvals_two_seqs_ahead, NotVouched, "seq 3 (", NO_ONE),
        refused(policy_takeover_below_governance, QuorumNotMet, GOVERNANCE_UNMET),
        refused(
            policy_without_new_governance,
            QuorumNotMet,
            "proposed policy: rule governance needs weight 4, has 3 (alice, bob, carol); "
            "missing one of: dave",
        ),
        refused(policy_deleted, NotVouched, NO_ONE),  # nothing can even be signed for it
        refused(policy_corrupted, PolicyError, "circle.yaml is not a valid policy"),
        refused(
            policy_changes_circle_id,
            PolicyError,
            "circle.yaml changes the circle id from example-ai-circle to other-circle",
        ),
        refused(policy_skips_a_version, PolicyError, "goes from version 1 to 3; expected 2"),
        refused(
            policy_names_wrong_previous,
            PolicyError,
            "circle.yaml does not name the sha256 of the previous policy",
        ),
        refused(rename_into_policy, QuorumNotMet, GOVERNANCE_UNMET),
        refused(
            rename_into_workloads,
            QuorumNotMet,
            "rule workloads needs weight 2, has 2 (bob, carol); required: alice",
        ),
        refused(
            star_matches_one_level,
            QuorumNotMet,
            "rule workloads needs weight 3, has 2 (alice, bob); missing one of: carol",
        ),
        refused(symlink, TreeRefused, "workloads/x.yaml is a symbolic link, and the policy"),
        refused(submodule, TreeRefused, "vendor/lib is a submodule, and the policy allows none"),
        refused(merge_smuggles_policy, QuorumNotMet, GOVERNANCE_UNMET),
        refused(
            revoked_member,
            QuorumNotMet,
            "rule workloads needs weight 2, has 1 (alice); missing one of: bob;",
            "signed by a key of no member",
        ),
        refused(
            weight_without_required_member,
            QuorumNotMet,
            "rule workloads needs weight 3, has 3 (bob, carol); required: alice",
        ),
    ],
)
def test_an_attack_is_refused_and_the_state_stays(
    node: Node,
    attack: Callable[[Node], None],
    error: type[Exception],
    fragments: tuple[str, ...],
    now: int,
) -> None:
    attack(node)
    state, before = node.state(), node.state_file.read_bytes()

    done = node.advance(now)
    assert done.applied == ()
    assert done.state == state
    assert done.refusal is not None
    for fragment in fragments:
        assert fragment in done.refusal
    assert node.state_file.read_bytes() == before

    with pytest.raises(error) as raised:
        node.check(now)
    assert raised.type is error
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert node.state_file.read_bytes() == before


# --- attacks the node's gate raises on (it does not even look for approvals) ---------------------


def rollback(node: Node) -> None:
    node.sim.reset(node.first)


def rollback_after_another_step(node: Node) -> None:
    node.propose({WORKLOAD: b"replicas: 9\n"}, "alice", "bob")
    node.settle()
    node.sim.reset(node.second)


def teleport_to_unrelated_history(node: Node) -> None:
    """main replaced by a new root commit (approved by everyone: it does not matter)."""
    to = node.sim.commit({POLICY: node.sim.read(POLICY)}, "a new beginning", parents=[])
    node.approve(to, *OWNERS)


def fork_beside_the_applied_commit(node: Node) -> None:
    to = node.sim.scale(7, parents=[node.first])
    node.approve(to, *OWNERS)


def equivocation(node: Node) -> None:
    one = node.sim.scale(4)
    other = node.sim.scale(5, parents=[node.second], ref=None)
    node.approve(one, "alice", "bob")
    node.approve(other, "bob", "carol")


def wide_state_file(node: Node) -> None:
    node.state_file.chmod(0o644)


def state_file_symlink(node: Node) -> None:
    real = node.state_file.with_name("elsewhere.json")
    node.state_file.rename(real)
    node.state_file.symlink_to(real.name)


def gate(attack: Callable[[Node], None], error: type[Exception], *fragments: str) -> Any:
    return pytest.param(attack, error, fragments, id=attack.__name__.replace("_", "-"))


@pytest.mark.parametrize(
    ("attack", "error", "fragments"),
    [
        gate(rollback, RollbackError, "is behind the applied seq 2 (", "refusing to roll back"),
        gate(rollback_after_another_step, RollbackError, "is behind the applied seq 3 ("),
        gate(teleport_to_unrelated_history, ForkError, "does not descend from the introduction"),
        gate(
            fork_beside_the_applied_commit,
            ForkError,
            "does not descend from the applied seq 2",
            "history was rewritten",
        ),
        gate(equivocation, Equivocation, "seq 3 has 2 approved commits"),
        gate(wide_state_file, StateFileError, "permissions 0644 are too open"),
        gate(state_file_symlink, StateFileError, "cannot open the node state"),
    ],
)
def test_the_gate_raises_and_the_state_stays(
    node: Node, attack: Callable[[Node], None], error: type[Exception], fragments: tuple[str, ...]
) -> None:
    attack(node)
    before = node.state_file.read_bytes()
    mode = node.state_file.lstat().st_mode
    with pytest.raises(error) as raised:
        node.advance()
    assert raised.type is error
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert node.state_file.read_bytes() == before
    assert node.state_file.lstat().st_mode == mode


# --- statements the gate never meets, refused by chain.verify -----------------------------------


def skipped_seq(node: Node) -> tuple[int, str, str]:
    return 4, node.second, node.sim.scale(4)


def replayed_seq(node: Node) -> tuple[int, str, str]:
    return 2, node.second, node.sim.scale(4)


def from_an_older_commit(node: Node) -> tuple[int, str, str]:
    return 3, node.first, node.sim.scale(4)


def to_unrelated_history(node: Node) -> tuple[int, str, str]:
    root = node.sim.commit({POLICY: node.sim.read(POLICY)}, "elsewhere", parents=[], ref=None)
    return 3, node.second, root


def back_to_an_ancestor(node: Node) -> tuple[int, str, str]:
    return 3, node.second, node.first


@pytest.mark.parametrize(
    ("placed", "error", "fragment"),
    [
        pytest.param(skipped_seq, SequenceGap, "seq 4 skips seq 3", id="seq-gap"),
        pytest.param(replayed_seq, RollbackError, "is not after the applied seq 2", id="replay"),
        pytest.param(from_an_older_commit, ForkError, "not the applied", id="wrong-from"),
        pytest.param(to_unrelated_history, ForkError, "does not descend from", id="teleport"),
        pytest.param(back_to_an_ancestor, ForkError, "does not descend from", id="backwards"),
    ],
)
def test_a_misplaced_statement_signed_by_everyone_is_refused(
    node: Node,
    placed: Callable[[Node], tuple[int, str, str]],
    error: type[Exception],
    fragment: str,
) -> None:
    seq, start, to = placed(node)
    sim, state, before = node.sim, node.state(), node.state_file.read_bytes()
    filed = sim.sign(sim.statement(seq, start, to), *OWNERS)
    approvals.add_many(sim.repo, filed)
    step = sim.trees.transition(ref=MAIN, seq=seq, from_commit=start, to_commit=to)
    assert step.policy_from is not None
    evidence = [Evidence(data, signature) for data, signature in filed]
    with pytest.raises(error) as raised:
        Verifier(sim.intro).verify(state, step, evidence, NOW)
    assert raised.type is error
    assert fragment in str(raised.value)
    assert sim.chain().walk(NOW, state) == ([], state)
    assert node.state_file.read_bytes() == before


# --- the controls: what the rules do let through -------------------------------------------------


def quorum_met(node: Node) -> tuple[str, ...]:
    node.propose({WORKLOAD: b"replicas: 9\n"}, "alice", "bob")
    return ("alice", "bob")


def optional_member_absent(node: Node) -> tuple[str, ...]:
    node.adopt(*WEIGHTED)
    node.approve(node.sim.scale(4), "alice", "carol")  # weight 3 with alice; bob not needed
    return ("alice", "carol")


def second_key_counts_for_its_member(node: Node) -> tuple[str, ...]:
    second_key = Ed25519PrivateKey.generate()
    node.adopt(add_key("alice", second_key))
    to = node.sim.scale(4)
    data = node.statement(to)
    signed = [(data, sshsig.sign(data, second_key, NAMESPACE)), *node.sim.sign(data, "bob")]
    approvals.add_many(node.sim.repo, signed)
    return ("alice", "bob")


def star_does_not_cross_slash(node: Node) -> tuple[str, ...]:
    """`workloads/*` (threshold 3) does not cover `workloads/a/b.yaml`: only the catch-all
    (threshold 2) applies, so two owners suffice. A policy author who means a folder and all
    below it must write `workloads/**`."""
    node.adopt(replace(WORKLOADS_RULE, STAR_RULE))
    node.propose({"workloads/a/b.yaml": b"kind: Workload\n"}, "alice", "bob")
    return ("alice", "bob")


@pytest.mark.parametrize(
    "allowed",
    [
        pytest.param(quorum_met, id="quorum-met"),
        pytest.param(optional_member_absent, id="optional-member-absent"),
        pytest.param(second_key_counts_for_its_member, id="second-key-counts"),
        pytest.param(star_does_not_cross_slash, id="star-does-not-cross-slash"),
    ],
)
def test_a_change_within_the_rules_is_applied(
    node: Node, allowed: Callable[[Node], tuple[str, ...]]
) -> None:
    signers = allowed(node)
    seq = node.state().seq + 1
    done = node.advance()
    assert done.refusal is None
    target = str(node.sim.repo.references[MAIN].target)
    assert [(step.seq, step.commit, step.signers) for step in done.applied] == [
        (seq, target, signers)
    ]
    assert node.state() == NodeState(target, seq, sha256(node.sim.read(POLICY)))


# --- the state file edited by hand -------------------------------------------------------------


def test_a_state_file_edited_back_by_hand_is_walked_forward_again(node: Node) -> None:
    """Current behaviour, documented: the state file is the node's only memory of how far it
    got, so a state edited back to seq 1 is trusted. Against the same source, the node walks
    the approved steps forward again, re-applying seq 2 and 3 and ending where it was; with a
    source that also serves the old main, it stays at seq 1 without a word (a rollback).

    This is the threat model node_state states ("whoever could edit it could roll the node
    back"): the defence is the file's 0600 mode, checked on every load (see
    `wide-state-file` above), not the chain. So it is not marked as a bug."""
    third = node.propose({WORKLOAD: b"replicas: 9\n"}, "alice", "bob")
    node.settle()
    policy_sha = sha256(node.sim.read(POLICY))
    assert node.state() == NodeState(third, 3, policy_sha)

    node_state.save(node.state_file, NodeState(node.first, 1, policy_sha))
    done = node.advance()
    assert [step.seq for step in done.applied] == [2, 3]
    assert node.state() == NodeState(third, 3, policy_sha)

    node_state.save(node.state_file, NodeState(node.first, 1, policy_sha))
    node.sim.reset(node.first)
    before = node.state_file.read_bytes()
    done = node.advance()
    assert (done.state, done.applied, done.refusal) == (node.state(), (), None)
    assert node.state().seq == 1
    assert node.state_file.read_bytes() == before


# --- found by these tests, fixed ---------------------------------------------------------


@pytest.mark.parametrize("spelling", ["uppercase", "abbreviated", "annotated-tag"])
def test_approvals_copied_under_another_spelling_of_a_commit_are_no_equivocation(
    node: Node, spelling: str
) -> None:
    """The owners' own approvals copied under another name of the same commit (upper case, an
    abbreviated id, an annotated tag's id) are no second candidate: only a commit's own full id
    names a candidate."""
    to = node.propose({WORKLOAD: b"replicas: 9\n"}, "alice", "bob")
    folder = {
        "uppercase": to.upper(),
        "abbreviated": to[:12],
        "annotated-tag": str(
            node.sim.repo.create_tag(
                "v9", pygit2.Oid(hex=to), pygit2.enums.ObjectType.COMMIT, _FORGER, ""
            )
        ),
    }[spelling]
    for stored in list(approvals.read(node.sim.repo)):
        if stored.path.startswith(f"0000000003/{to}/"):
            name = stored.path.rsplit("/", 1)[1].removesuffix(".statement")
            file_by_hand(
                node.sim.repo, 3, folder, name, stored.statement, stored.signature, exact=True
            )
    done = node.advance()
    assert [step.commit for step in done.applied] == [to]


def test_an_applied_step_names_the_full_commit_id(node: Node) -> None:
    """Approvals filed only under an abbreviated id are not read as approvals of the commit."""
    to = node.sim.scale(9)
    [(data, signature), (data, other)] = node.sim.sign(node.statement(to), "alice", "bob")
    file_by_hand(node.sim.repo, 3, to[:12], "a", data, signature)
    file_by_hand(node.sim.repo, 3, to[:12], "b", data, other)
    before = node.state_file.read_bytes()
    done = node.advance()
    assert done.applied == ()
    assert done.refusal is not None
    assert NO_ONE in done.refusal
    assert node.state_file.read_bytes() == before


def test_a_member_listed_twice_in_a_rule_still_counts_once(node: Node) -> None:
    """A policy listing a member twice in a rule is refused as a policy, so a change to it
    never applies; and the quorum counts a member once however the rule lists it."""
    doubled = "      members: [alice, alice, bob]\n      threshold: 2"
    text = next_policy(
        node.sim.read(POLICY),
        replace(WORKLOADS_RULE, WORKLOADS_RULE.replace("      threshold: 2", doubled)),
    )
    with pytest.raises(ChainError, match="duplicate member of rule workloads 'alice'"):
        parse_policy(text)
    before = node.state_file.read_bytes()
    node.propose({POLICY: text}, *OWNERS)
    done = node.advance()
    assert done.applied == ()
    assert done.refusal is not None
    assert "circle.yaml is not a valid policy" in done.refusal
    assert node.state_file.read_bytes() == before

    current = parse_policy(node.sim.read(POLICY, node.state().commit))
    rules = [
        rule.model_copy(update={"members": ["alice", "alice", "bob"]})
        if rule.name == "workloads"
        else rule
        for rule in current.consensus.rules
    ]
    listed_twice = current.model_copy(
        update={"consensus": current.consensus.model_copy(update={"rules": rules})}
    )
    result = quorum.evaluate(listed_twice, ["workloads/langid.yaml"], ["alice"])
    workloads = next(rule for rule in result.rules if rule.rule == "workloads")
    assert (workloads.weight, workloads.signed) == (1, ("alice",))


def test_a_new_member_co_signs_their_own_admission(node: Node) -> None:
    """Admitting dave with a governance rule of every member (weight 4): the old governance
    (alice, bob, carol) AND the new one, which counts dave's signature under the new policy
    (as TUF's root rotation needs the new root's threshold). Without dave it is refused."""
    dave = node.sim.keys["mallory"]  # a key no policy names yet
    member = (
        "  - id: dave\n    keys:\n      - type: ssh-ed25519\n"
        f"        key: {sshsig.public_key_line(dave, 'dave@test')}\nconsensus:"
    )
    text = next_policy(
        node.sim.read(POLICY),
        replace("consensus:", member),
        replace(
            "paths: [circle.yaml]\n      threshold: 3", "paths: [circle.yaml]\n      threshold: 4"
        ),
    )
    before = node.state_file.read_bytes()
    to = node.propose({POLICY: text}, *OWNERS)
    refused = node.advance()
    assert refused.applied == ()
    assert refused.refusal is not None
    assert "proposed policy: rule governance needs weight 4, has 3" in refused.refusal
    assert "missing one of: dave" in refused.refusal
    assert node.state_file.read_bytes() == before

    node.approve(to, "mallory")  # dave signs the same transition with his key
    admitted = node.advance()
    assert [step.commit for step in admitted.applied] == [to]
    assert admitted.refusal is None


def test_the_chain_stays_approved_long_after_its_approvals_expired(node: Node) -> None:
    """A node joining a circle idle for a year verifies the same chain as on the first day."""
    assert node.sim.walk(now=NOW + 365 * 86_400) == node.state()


def test_a_pair_planted_under_a_signers_name_is_skipped_and_the_real_one_counts(node: Node) -> None:
    """Names follow from content: garbage planted where a signer's pair will go is skipped
    on reading, and the signer's real pair (filed after it) still lands and counts."""
    to = node.sim.scale(4)
    statement = node.statement(to)
    [(_, alice), (_, bob)] = node.sim.sign(statement, "alice", "bob")
    real = approvals._name(statement, alice.encode())
    file_by_hand(node.sim.repo, 3, to, real, b"garbage", "garbage", exact=True)
    assert count_filed(node, to) == 0
    approvals.add_many(node.sim.repo, [(statement, alice), (statement, bob)])
    done = node.advance()
    assert [step.commit for step in done.applied] == [to]
