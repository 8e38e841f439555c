"""Nothing in a repository can halt a node: whatever a candidate, its approvals or SOURCE's main
hold, the node and the owners' commands refuse it with the package's own error, and a valid
approved step beside junk is still applied.

The first attacks are one person with push rights: a commit whose circle.yaml the YAML library
cannot read, filed beside unsigned junk under the next seq (before, every node stopped there for
good: the approvals ref is a union and never shrinks), `main` pointing at a tag, a tree or a
blob, and an unrelated root merged into `main`. The Hypothesis properties then feed mutated
policies, statements, signatures and trees through `follow` and `verify`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import sshsig
from reconciler.chain import approvals, follow
from reconciler.chain.changes import tree_sha256
from reconciler.chain.statements import NAMESPACE, Approval
from reconciler.chain.verify import NotVouched, Policies, PolicyError, parse_policy
from reconciler.chain.walk import MAIN, Chain
from reconciler.errors import ReconcilerError
from tests.chainsim import NOW
from tests.conftest import Result, git
from tests.reconciler.chain.test_chain_attacks import (
    OWNERS,
    POLICY,
    Node,
    file_by_hand,
    make_node,
    next_policy,
)

UNREADABLE_POLICIES = {
    "yaml-1.3-directive": b"%YAML 1.3\n---\napiVersion: circle/v1\nkind: Circle\n",
    "comment-in-plain-scalar": b"apiVersion: circle/v1\nkind: Circle\nid: one\n  # c\n  two\n",
    "not-utf8": b"apiVersion: circle/v1\nkind: \xff\xfe\n",
    "deeply-nested": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "binary": bytes(range(256)),
}


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


def junk_pair(node: Node, to: str, name: str = "ffffffffffffffff") -> None:
    """One unsigned pair filed for `to` under the next seq: anyone with push rights can."""
    file_by_hand(node.sim.repo, node.state().seq + 1, to, name, b"{}", "not a signature")


@pytest.mark.parametrize("policy", UNREADABLE_POLICIES.values(), ids=UNREADABLE_POLICIES)
def test_junk_beside_the_approved_step_never_blocks_it(node: Node, policy: bytes) -> None:
    junk = node.sim.commit({POLICY: policy}, "junk", parents=[node.second], ref=None)
    junk_pair(node, junk)
    signed_junk = node.sim.commit({POLICY: policy}, "more junk", parents=[node.second], ref=None)
    node.approve(signed_junk, "alice")  # one member's word is no quorum: still junk
    third = node.sim.scale(4)
    node.approve(third, "alice", "bob")

    done = node.advance()

    assert done.refusal is None
    assert [step.commit for step in done.applied] == [third]
    assert node.state().commit == third


@pytest.mark.parametrize("policy", UNREADABLE_POLICIES.values(), ids=UNREADABLE_POLICIES)
def test_junk_on_main_is_one_refusal_and_the_state_stays(node: Node, policy: bytes) -> None:
    node.sim.commit({POLICY: policy}, "junk")
    junk_pair(node, str(node.sim.repo.references[MAIN].target))
    before = node.state_file.read_bytes()

    done = node.advance()

    assert done.applied == ()
    assert done.refusal is not None
    assert "no valid approval by a member of the policy in force" in done.refusal
    assert node.state_file.read_bytes() == before


def test_an_unvouched_candidate_is_never_parsed(node: Node) -> None:
    """Only the commit object of a candidate nobody in the circle signed is read: its
    circle.yaml never reaches the parser."""
    junk_policy = b"%YAML 1.3\n---\n"
    junk = node.sim.commit({POLICY: junk_policy}, "junk", parents=[node.second], ref=None)
    junk_pair(node, junk)
    seen: list[bytes] = []

    def parse(data: bytes) -> Any:
        seen.append(data)
        return parse_policy(data)

    chain = Chain(node.sim.repo, node.sim.intro)
    chain.policies = Policies(parse)
    assert chain.next(node.state(), NOW) is None
    assert junk_policy not in seen
    with pytest.raises(NotVouched, match="excluded: #1: invalid approval statement"):
        chain.check(node.state(), junk, chain.candidates(3)[junk], NOW)


def test_a_quorum_signed_unreadable_policy_is_a_policy_error(node: Node) -> None:
    """Signed by everyone, the proposed circle.yaml is parsed, and refused as a policy."""
    text = next_policy(node.sim.read(POLICY)) + b"  # c\n  more\n"
    node.propose({POLICY: b"%YAML 1.3\n---\n" + text}, *OWNERS)
    before = node.state_file.read_bytes()
    done = node.advance()
    assert done.applied == ()
    assert done.refusal is not None
    assert "circle.yaml is not a valid policy" in done.refusal
    with pytest.raises(PolicyError, match=r"circle\.yaml is not a valid policy"):
        node.check()
    assert node.state_file.read_bytes() == before


def sign_anything(node: Node, to: str, *names: str) -> None:
    """File approvals of the node's next step to `to` by `names`, made from the tree alone
    (whatever its circle.yaml is, unlike `Node.approve`)."""
    tree = node.sim.repo.get(to).tree
    state = node.state()
    statement = Approval(
        node.sim.intro.circle, node.sim.intro.commit, MAIN, state.seq + 1, state.commit, to,
        str(tree.id), tree_sha256(node.sim.trees.listing(tree)), state.policy_sha256,
        NOW - 60, NOW + 3600,
    ).encode()  # fmt: skip
    approvals.add_many(node.sim.repo, node.sim.sign(statement, *names))


def test_a_circle_yaml_over_the_document_limit_is_refused_unread(node: Node) -> None:
    huge = next_policy(node.sim.read(POLICY)) + b"#" * (2 << 20)
    to = node.sim.commit({POLICY: huge})
    sign_anything(node, to, *OWNERS)
    before = node.state_file.read_bytes()
    with pytest.raises(PolicyError, match=r"circle\.yaml is \d+ bytes, over the 1048576"):
        node.check()
    done = node.advance()
    assert done.refusal is not None
    assert "over the 1048576 a document may have" in done.refusal
    assert node.state_file.read_bytes() == before


# --- SOURCE's main as anyone with push rights can set it -----------------------------------------


def test_main_pointing_at_a_tag_tree_or_blob_is_one_refusal(node: Node) -> None:
    repo = node.sim.repo
    head = repo.references[MAIN].target
    commit = repo.get(head)
    tag = repo.create_tag("v1", head, pygit2.enums.ObjectType.COMMIT, commit.author, "a tag")
    blob = repo.create_blob(b"not a commit")
    before = node.state_file.read_bytes()
    for target, kind in ((tag, "tag"), (commit.tree_id, "tree"), (blob, "blob")):
        repo.references.create(follow.MAIN, target, force=True)
        shape = rf"the source's main \([0-9a-f]{{12}}\) is a {kind}, not a commit"
        with pytest.raises(ReconcilerError, match=shape):
            follow.advance(repo, node.sim.intro, node.state_file, NOW)
        assert node.state_file.read_bytes() == before


def test_a_source_without_commits_is_one_refusal(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path]
) -> None:
    empty = tmp_path / "empty.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(empty))
    done = circle(
        "follow", str(empty), "--introduction", str(served["intro"]), "--state",
        str(tmp_path / "node"),
    )  # fmt: skip
    assert done.code == 1
    assert done.stderr.strip().splitlines() == [
        f"circle: error: {empty} has no main branch (no commits yet)"
    ]


def test_a_merged_second_root_does_not_lock_the_owners_out(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path]
) -> None:
    """Someone merges an unrelated root into main. The owners' commands still find the circle's
    introduction (the one root whose first step is approved), name the junk, and work."""
    owner, keys = served["owner"], served["keys"]
    approved_head = git(owner, "rev-parse", "HEAD")
    junk = tmp_path / "junk"
    git(tmp_path, "init", "-q", "-b", "main", str(junk))
    (junk / "notes").mkdir()
    (junk / "notes/junk.txt").write_text("another history\n")
    git(junk, "add", "-A")
    git(junk, "commit", "-q", "-m", "another root")
    junk_root = git(junk, "rev-parse", "HEAD")
    git(owner, "pull", "-q", "--no-rebase", "--allow-unrelated-histories", str(junk), "main")
    merge = git(owner, "rev-parse", "HEAD")

    intro = circle("introduction", "--repo", str(owner))
    assert intro.code == 0, intro.stderr
    assert intro.stdout == served["intro"].read_text()
    assert f"root commit(s) of another history ({junk_root[:12]})" in intro.stderr

    log = circle("log", "--repo", str(owner), "-o", "json")
    assert log.code == 0, log.stderr
    assert [step["commit"] for step in log.json()] == [approved_head]

    verify = circle("verify", "--repo", str(owner))
    assert verify.code == 1
    assert verify.stdout.startswith(f"{merge[:12]} (HEAD, branch main): not approved: seq 2 ")

    review = circle("review", "--repo", str(owner), "-o", "json")
    assert review.code == 0, review.stderr
    assert review.json()["seq"] == 2

    approved = circle("approve", "--repo", str(owner), "--key", str(keys / "alice"))
    assert approved.code == 0, approved.stderr
    assert approved.stdout.strip() == f"approved seq 2 {merge[:12]} (HEAD, branch main) as alice"


def test_two_approved_roots_need_the_introduction_given(
    tmp_path: Path, circle: Callable[..., Result], served: dict[str, Path]
) -> None:
    """A second root whose own first step its own (anyone's) keys approved: which history is
    the circle's cannot be read from main, so the owners give the introduction they pinned."""
    owner = served["owner"]
    other = tmp_path / "other"
    assert circle("keygen", str(tmp_path / "eve")).code == 0
    made = circle(
        "init", str(other), "--name", "demo", "--member", f"eve={tmp_path / 'eve'}.pub",
        "--threshold", "1",
    )  # fmt: skip
    assert made.code == 0, made.stderr
    assert circle("approve", "--repo", str(other), "--key", str(tmp_path / "eve")).code == 0
    git(owner, "fetch", "-q", str(other), "main:refs/heads/other", "refs/circle/approvals:refs/eve")
    eve = git(owner, "rev-parse", "refs/eve")
    approvals.merge(pygit2.Repository(str(owner)), pygit2.Oid(hex=eve))
    git(owner, "merge", "-q", "-s", "ours", "--allow-unrelated-histories", "-m", "both", "other")

    refused = circle("log", "--repo", str(owner))
    assert refused.code == 1
    assert "2 have an approved first transition: give the circle's introduction" in refused.stderr
    given_intro = circle("log", "--repo", str(owner), "--introduction", str(served["intro"]))
    assert given_intro.code == 0, given_intro.stderr
    assert "signed by alice, bob, carol" in given_intro.stdout


# --- properties: mutated content in, only the package's own errors out --------------------------

MUTATIONS = st.lists(
    st.tuples(
        st.integers(min_value=0), st.sampled_from(["flip", "drop", "insert"]), st.binary(max_size=8)
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    out = bytearray(data)
    for position, how, extra in edits:
        at = position % (len(out) + 1)
        if how == "flip" and out:
            out[at % len(out)] ^= 1 << (position % 8)
        elif how == "drop":
            del out[at : at + 1 + position % 16]
        else:
            out[at:at] = extra
    return bytes(out)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("hostile"))


def outcome(node: Node) -> None:
    """One follow round and an owner's `verify` of main; ReconcilerError is fine, anything else
    is a bug; the state moves only to a commit main holds."""
    before = node.state()
    try:
        done = node.advance()
    except ReconcilerError:
        done = None
    if done is not None and done.state != before:
        assert done.state is not None
        assert node.sim.repo.descendant_of(done.target, done.state.commit) or (
            done.target == done.state.commit
        )
    chain = Chain(node.sim.repo, node.sim.intro)
    state = node.state()
    target = str(node.sim.repo.references[MAIN].target)
    with contextlib.suppress(ReconcilerError):
        chain.check(state, target, chain.candidates(state.seq + 1).get(target, []), NOW)


PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(edits=MUTATIONS, signers=st.sets(st.sampled_from(OWNERS)))
def test_mutated_policies_signed_or_not_are_refused_cleanly(
    shared: Node, edits: list[tuple[int, str, bytes]], signers: set[str]
) -> None:
    old = shared.sim.read(POLICY, shared.state().commit)
    base = shared.state().commit
    to = shared.sim.commit({POLICY: mutate(next_policy(old), edits)}, parents=[base])
    if signers:
        sign_anything(shared, to, *sorted(signers))
    outcome(shared)
    shared.sim.reset(shared.state().commit)


@PROPERTY
@given(statement_edits=MUTATIONS, signature_edits=MUTATIONS, sign_mutated=st.booleans())
def test_mutated_statements_and_signatures_are_refused_cleanly(
    shared: Node,
    statement_edits: list[tuple[int, str, bytes]],
    signature_edits: list[tuple[int, str, bytes]],
    sign_mutated: bool,
) -> None:
    to = shared.sim.scale(len(statement_edits) + 10, parents=[shared.state().commit])
    statement = mutate(shared.statement(to), statement_edits)
    key = shared.sim.keys["alice"]
    signature = sshsig.sign(statement if sign_mutated else shared.statement(to), key, NAMESPACE)
    armored = mutate(signature.encode(), signature_edits).decode("utf-8", "replace")
    file_by_hand(
        shared.sim.repo, shared.state().seq + 1, to, "aaaaaaaaaaaaaaaa", statement, armored
    )
    outcome(shared)
    shared.sim.reset(shared.state().commit)


TREE_ENTRIES = st.sampled_from(
    [
        ("circle.yaml", pygit2.enums.FileMode.LINK, b"workloads/langid.yaml"),
        ("circle.yaml", pygit2.enums.FileMode.BLOB_EXECUTABLE, None),
        ("workloads/langid.yaml", pygit2.enums.FileMode.LINK, b"../circle.yaml"),
        ("vendor/lib", pygit2.enums.FileMode.COMMIT, None),
        ("a/" * 40 + "deep.yaml", pygit2.enums.FileMode.BLOB, b"x: 1\n"),
        ("workloads/\u00e9.yaml", pygit2.enums.FileMode.BLOB, b"\xff"),
        ("circle.yaml/inner", pygit2.enums.FileMode.BLOB, b"a folder where a file was\n"),
    ]
)


@PROPERTY
@given(
    entries=st.lists(TREE_ENTRIES, min_size=1, max_size=3), signers=st.sets(st.sampled_from(OWNERS))
)
def test_odd_trees_are_refused_cleanly(
    shared: Node, entries: list[tuple[str, int, bytes | None]], signers: set[str]
) -> None:
    repo = shared.sim.repo
    base = shared.state().commit
    index = pygit2.Index()
    index.read_tree(repo.get(base).tree)
    for path, mode, data in entries:
        for existing in [e.path for e in index if e.path == path or e.path.startswith(path + "/")]:
            index.remove(existing)
        parent = path.rpartition("/")[0]
        while parent:
            if parent in index:
                index.remove(parent)
            parent = parent.rpartition("/")[0]
        if mode == pygit2.enums.FileMode.COMMIT:
            oid = pygit2.Oid(hex=base)
        elif data is None:
            oid = (
                repo.get(base).tree[path].id
                if path in repo.get(base).tree
                else repo.create_blob(b"")
            )
        else:
            oid = repo.create_blob(data)
        index.add(pygit2.IndexEntry(path, oid, mode))
    tree = index.write_tree(repo)
    author = pygit2.Signature("t", "t@t", 1_700_000_000, 0)
    to = str(repo.create_commit(None, author, author, "odd", tree, [pygit2.Oid(hex=base)]))
    shared.sim.reset(to)
    if signers:
        sign_anything(shared, to, *sorted(signers))
    outcome(shared)
    shared.sim.reset(shared.state().commit)
