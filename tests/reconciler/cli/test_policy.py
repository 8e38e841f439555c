"""`circle policy`: the owners changed end to end, on real Git repositories with real keys.

Each change is written by the command, committed with `git`, approved by the old governance
with `circle approve --key`, verified, and then the new owner set approves the next change:
the added or rotated key counts, the removed one does not. Every refusal names what is wrong
and leaves circle.yaml byte for byte as it was."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Result, copy_example, edit, git
from tests.reconciler.node.world import World, make_world

Circle = Callable[..., Result]


def ssh_keygen(path: Path, kind: str = "ed25519") -> Path:
    """A key made by the real `ssh-keygen`; its .pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path.with_name(path.name + ".pub")


@pytest.fixture
def world(tmp_path: Path, circle: Circle) -> World:
    """The example circle with fresh owner keys, its first commit approved by all three."""
    return make_world(tmp_path, circle)


def policy(circle: Circle, world: World, *args: str) -> Result:
    return circle("policy", *args, "--repo", str(world.circle))


def approve(circle: Circle, world: World, key: Path) -> Result:
    return circle("approve", "--repo", str(world.circle), "--key", str(key))


def approved_by(circle: Circle, world: World, *keys: Path) -> None:
    for key in keys:
        done = approve(circle, world, key)
        assert done.code == 0, done.stderr


def verify(circle: Circle, world: World) -> Result:
    return circle("verify", "--repo", str(world.circle))


def last_step(circle: Circle, world: World) -> dict[str, object]:
    steps = circle("log", "--repo", str(world.circle), "-o", "json").json()
    assert isinstance(steps[-1], dict)
    return steps[-1]


def approved_sha(world: World) -> str:
    return hashlib.sha256((world.circle / "circle.yaml").read_bytes()).hexdigest()


def node_follows(circle: Circle, world: World) -> dict[str, object]:
    """A node that pinned the introduction follows the circle to its approved head (a real
    `circle follow`: quarantine fetch, verification from its own state file)."""
    state = world.root / "node"
    state.mkdir(mode=0o700, exist_ok=True)
    done = circle("follow", str(world.circle), "--introduction", str(world.intro),
                  "--state", str(state), "-o", "json")  # fmt: skip
    assert done.code == 0, done.stdout
    found = done.json()["state"]
    assert isinstance(found, dict)
    return found


def commit_note(world: World, text: str) -> None:
    """A next change (the catch-all rule: weight 2 of the members)."""
    (world.circle / "NOTES.md").write_text(text)
    git(world.circle, "add", "NOTES.md")
    git(world.circle, "commit", "-q", "-m", text)


def test_add_a_member(circle: Circle, world: World, tmp_path: Path) -> None:
    sha = approved_sha(world)
    dave = ssh_keygen(tmp_path / "dave")

    done = policy(circle, world, "members", "add", "dave", "--key", str(dave))

    assert done.code == 0, done.stderr
    assert "circle.yaml written: member dave added (weight 1, key SHA256:" in done.stdout
    assert f"version 2, previous {sha} (the sha256 of circle.yaml v1" in done.stdout
    assert "approved policy v1, rule governance: weight 3 of alice, bob, carol" in done.stdout
    assert "new policy v2, rule governance: weight 3 of alice, bob, carol, dave" in done.stdout
    assert "git -C " in done.stdout
    text = (world.circle / "circle.yaml").read_text()
    assert f"version: 2\nprevious: {sha}\n" in text
    assert dave.read_text().strip() in text
    assert "# Carol may also sign keylessly" in text  # comments stay
    assert circle("validate", "--repo", str(world.circle)).code == 0

    git(world.circle, "commit", "-q", "-am", "circle.yaml v2: add member dave")
    approved_by(circle, world, world.keys / "alice", world.keys / "bob")
    assert "rule governance needs weight 3, has 2" in verify(circle, world).stdout
    approved_by(circle, world, world.keys / "carol")
    assert verify(circle, world).code == 0
    assert last_step(circle, world) == {
        "seq": 2,
        "commit": git(world.circle, "rev-parse", "HEAD"),
        "signers": ["alice", "bob", "carol"],
        "policyVersion": 2,
    }

    commit_note(world, "dave's first change")  # the new owner set decides it
    approved_by(circle, world, tmp_path / "dave")
    assert verify(circle, world).code == 1
    approved_by(circle, world, world.keys / "alice")
    assert verify(circle, world).code == 0
    assert last_step(circle, world)["signers"] == ["alice", "dave"]
    assert node_follows(circle, world)["seq"] == 3


def test_rotate_a_key(circle: Circle, world: World, tmp_path: Path) -> None:
    new_key = ssh_keygen(tmp_path / "bob-new")
    old_line = (world.keys / "bob.pub").read_text().strip()

    done = policy(circle, world, "members", "rotate-key", "bob", "--key", str(new_key))

    assert done.code == 0, done.stderr
    assert "member bob: key SHA256:" in done.stdout
    assert "bob's old key counts for the approved policy, the new key for the new one" in (
        done.stdout
    )
    text = (world.circle / "circle.yaml").read_text()
    assert old_line not in text
    assert new_key.read_text().strip() in text

    git(world.circle, "commit", "-q", "-am", "circle.yaml v2: rotate the key of bob")
    keys = world.keys
    approved_by(circle, world, keys / "alice", keys / "bob", keys / "carol")
    missing = verify(circle, world)
    assert missing.code == 1  # the old governance is met, the new one misses bob's new key
    assert "proposed policy: rule governance needs weight 3, has 2 (alice, carol)" in (
        missing.stdout
    )
    approved_by(circle, world, tmp_path / "bob-new")
    assert verify(circle, world).code == 0
    assert last_step(circle, world)["seq"] == 2

    commit_note(world, "after the rotation")
    old = approve(circle, world, keys / "bob")
    assert old.code == 2
    assert "this key belongs to no member" in old.stderr
    approved_by(circle, world, tmp_path / "bob-new", keys / "carol")
    assert verify(circle, world).code == 0
    assert last_step(circle, world)["signers"] == ["bob", "carol"]
    assert node_follows(circle, world)["seq"] == 3


def test_ml_dsa_keys_and_a_hybrid_rule_in_three_commands(
    circle: Circle, world: World, tmp_path: Path
) -> None:
    """Owners add ML-DSA-65 keys beside their Ed25519 ones, then make `workloads` hybrid:
    each a policy version approved by the governance in force; a hybrid rule their keys
    cannot meet is refused, naming why, circle.yaml untouched."""
    keys = world.keys
    for name in ("alice", "bob"):
        made = circle("keygen", str(tmp_path / f"{name}-pq"), "--type", "ml-dsa-65")
        assert made.code == 0, made.stderr
    early = policy(circle, world, "rules", "set", "workloads", "--signatures", "hybrid")
    assert early.code == 2
    assert (
        "rule workloads counts hybrid signatures and needs weight 2, but its members with a "
        "classic and an ML-DSA key hold only 0 (none): it could never be satisfied" in early.stderr
    )
    assert git(world.circle, "status", "--porcelain") == ""

    for name in ("alice", "bob"):
        pq = tmp_path / f"{name}-pq.pub"
        added = policy(circle, world, "members", "rotate-key", name, "--key", str(pq),
                       "--keep-old")  # fmt: skip
        assert added.code == 0, added.stderr
        assert f"member {name}: key SHA256:" in added.stdout
        text = (world.circle / "circle.yaml").read_text()
        assert f"- type: ml-dsa-65\n        key: {pq.read_text().strip()}\n" in text
        git(world.circle, "commit", "-q", "-am", f"{name}'s ML-DSA key")
        approved_by(circle, world, keys / "alice", keys / "bob", keys / "carol")
        assert verify(circle, world).code == 0

    hybrid = policy(circle, world, "rules", "set", "workloads", "--signatures", "hybrid",
                    "-o", "json")  # fmt: skip
    assert hybrid.code == 0, hybrid.stderr
    assert hybrid.json()["done"] == ["rule workloads: signatures classic -> hybrid"]
    assert "signatures: hybrid" in (world.circle / "circle.yaml").read_text()
    git(world.circle, "commit", "-q", "-am", "workloads: hybrid")
    approved_by(circle, world, keys / "alice", keys / "bob", keys / "carol")
    assert verify(circle, world).code == 0

    workload = world.circle / "workloads" / "langid.yaml"
    edit(workload, "replicas: 2", "replicas: 3")
    git(world.circle, "commit", "-q", "-am", "three replicas")
    approved_by(circle, world, keys / "alice", keys / "bob")
    classic_only = verify(circle, world)
    assert classic_only.code == 1
    assert "weight 2 of hybrid signatures" in classic_only.stdout
    # A hybrid pair is two signatures of one statement: an owner's later ML-DSA approval
    # signs the statement their classic one filed (not a new one, with another issuedAt).
    for name in ("alice", "bob"):
        later = approve(circle, world, tmp_path / f"{name}-pq")
        assert later.code == 0, later.stderr
        assert "signing the statement you filed for this transition earlier" in later.stderr
    assert verify(circle, world).code == 0
    assert node_follows(circle, world)["seq"] == 5  # a node verifies the hybrid quorum too

    edit(workload, "replicas: 3", "replicas: 2")
    git(world.circle, "commit", "-q", "-am", "two replicas")
    for name in ("alice", "bob"):  # or both keys in one call
        both = circle("approve", "--repo", str(world.circle), "--key", str(keys / name),
                      "--key", str(tmp_path / f"{name}-pq"))  # fmt: skip
        assert both.code == 0, both.stderr
        assert "earlier" not in both.stderr
    assert verify(circle, world).code == 0
    assert node_follows(circle, world)["seq"] == 6


def test_remove_a_member(circle: Circle, world: World) -> None:
    sha = approved_sha(world)
    lowered = policy(circle, world, "rules", "set", "governance", "--threshold", "2")
    assert lowered.code == 0, lowered.stderr

    done = policy(circle, world, "members", "remove", "carol", "-o", "json")

    assert done.code == 0, done.stderr
    report = done.json()
    assert report["version"] == 2  # both edits make one next version
    assert report["previous"] == sha
    assert report["written"] is True
    assert report["approvedHead"]["seq"] == 1
    assert report["done"] == ["member carol removed"]
    assert [c["line"] for c in report["changes"]][1:] == [
        "member carol removed",
        "rule governance: threshold 3 -> 2",
    ]
    assert [(a["policy"], a["rule"], a["threshold"]) for a in report["approvals"]] == [
        ("approved", "governance", 3),
        ("approved", "default", 2),
        ("new", "governance", 2),
    ]
    assert report["next"][0].startswith("git -C ")
    text = (world.circle / "circle.yaml").read_text()
    assert text.count("previous:") == 1
    assert "id: carol" not in text

    git(world.circle, "commit", "-q", "-am", "circle.yaml v2: remove member carol")
    keys = world.keys
    approved_by(circle, world, keys / "alice", keys / "bob")
    assert verify(circle, world).code == 1  # carol still counts for the approved policy
    approved_by(circle, world, keys / "carol")
    assert verify(circle, world).code == 0

    commit_note(world, "without carol")
    gone = approve(circle, world, keys / "carol")
    assert gone.code == 2
    assert "this key belongs to no member" in gone.stderr
    approved_by(circle, world, keys / "alice", keys / "bob")
    assert verify(circle, world).code == 0
    assert last_step(circle, world) == {
        "seq": 3,
        "commit": git(world.circle, "rev-parse", "HEAD"),
        "signers": ["alice", "bob"],
        "policyVersion": 2,
    }
    followed = node_follows(circle, world)
    assert (followed["seq"], followed["commit"]) == (3, git(world.circle, "rev-parse", "HEAD"))


def _private(world: World, tmp: Path) -> list[str]:
    ssh_keygen(tmp / "dave")
    return ["members", "add", "dave", "--key", str(tmp / "dave")]


REFUSALS: list[tuple[str, Callable[[World, Path], list[str]], str]] = [
    (
        "unknown-member",
        lambda w, t: ["members", "remove", "zed"],
        "unknown member 'zed' (members: alice, bob, carol)",
    ),
    (
        "below-threshold",
        lambda w, t: ["members", "remove", "carol"],
        "removing carol leaves rule governance unsatisfiable: it needs weight 3 and its other "
        "members hold 2 (alice, bob); change the rule first: rules set governance --threshold 2",
    ),
    (
        "not-ed25519",
        lambda w, t: ["members", "add", "dave", "--key", str(ssh_keygen(t / "dave", "ecdsa"))],
        "dave.pub: not an Ed25519 or ML-DSA-65 public key (it starts 'ecdsa-sha2-nistp256'): "
        "give a .pub line 'ssh-ed25519 AAAA... [comment]'",
    ),
    ("private-key", _private, "/dave: this is a private key; give "),
    (
        "private-key-rotation",
        lambda w, t: ["members", "rotate-key", "bob", "--key", str(w.keys / "carol")],
        "/carol: this is a private key; give ",
    ),
    (
        "another-members-key",
        lambda w, t: ["members", "add", "dave", "--key", str(w.keys / "alice.pub")],
        "belongs to member alice already: a key may belong to one member only",
    ),
    (
        "a-node-key",
        lambda w, t: ["members", "add", "dave", "--key", str(w.keys / "node-a.pub")],
        "the change would make the circle invalid: ",
    ),
    (
        "unreachable-threshold",
        lambda w, t: ["rules", "set", "governance", "--threshold", "4"],
        "rule governance needs weight 4 but its members hold only 3: it could never be satisfied",
    ),
    (
        "unknown-rule",
        lambda w, t: ["rules", "set", "docs", "--threshold", "1"],
        "no rule docs (rules: governance, workloads, secrets, default): to add it, give "
        "--paths and --threshold",
    ),
]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [(make, message) for _, make, message in REFUSALS],
    ids=[name for name, _, _ in REFUSALS],
)
def test_refusals_name_the_problem_and_change_nothing(
    circle: Circle,
    world: World,
    tmp_path: Path,
    make_args: Callable[[World, Path], list[str]],
    message: str,
) -> None:
    before = (world.circle / "circle.yaml").read_bytes()
    done = policy(circle, world, *make_args(world, tmp_path))
    assert done.code == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert (world.circle / "circle.yaml").read_bytes() == before


def test_the_private_key_hint_names_the_pub(circle: Circle, world: World, tmp_path: Path) -> None:
    done = policy(circle, world, *_private(world, tmp_path))
    assert f"this is a private key; give {tmp_path / 'dave.pub'}, its public half" in done.stderr


def test_a_node_key_is_refused_with_the_node_named(circle: Circle, world: World) -> None:
    done = policy(circle, world, "members", "add", "dave", "--key", str(world.keys / "node-a.pub"))
    assert "nodes/node-a.yaml:" in done.stderr
    assert "node key is also the key of member dave" in done.stderr


@pytest.mark.parametrize("git_repo", [False, True], ids=["plain-folder", "git-no-approvals"])
def test_a_folder_that_is_no_approved_circle_is_refused(
    circle: Circle, tmp_path: Path, git_repo: bool
) -> None:
    folder = copy_example(tmp_path / "circle")
    if git_repo:
        git(tmp_path, "init", "-q", "-b", "main", str(folder))
        git(folder, "add", "-A")
        git(folder, "commit", "-q", "-m", "not approved")
    before = (folder / "circle.yaml").read_bytes()
    done = circle("policy", "rules", "set", "governance", "--threshold", "2", "--repo", str(folder))
    assert done.code == 2
    expected = "has no approved step yet" if git_repo else "not a circle repository"
    assert expected in done.stderr
    assert (folder / "circle.yaml").read_bytes() == before


def test_an_empty_folder_is_no_circle(circle: Circle, tmp_path: Path) -> None:
    done = circle("policy", "members", "remove", "bob", "--repo", str(tmp_path))
    assert done.code == 2
    assert "no circle.yaml: not a circle repository" in done.stderr


def test_dry_run_and_nothing_to_change_write_nothing(circle: Circle, world: World) -> None:
    before = (world.circle / "circle.yaml").read_bytes()
    dry = policy(circle, world, "rules", "set", "default", "--threshold", "3", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "circle.yaml not written (--dry-run): rule default: threshold 2 -> 3" in dry.stdout
    same = policy(circle, world, "rules", "set", "governance", "--threshold", "3")
    assert same.code == 0
    assert "nothing to change" in same.stdout
    assert (world.circle / "circle.yaml").read_bytes() == before


def test_validate_names_the_expected_version_and_previous(circle: Circle, world: World) -> None:
    sha = approved_sha(world)
    edit(world.circle / "circle.yaml", "threshold: 3", "threshold: 2")  # no version bump
    shown = f"{world.circle}/circle.yaml"

    for args in (["--repo", str(world.circle)], [str(world.circle)]):
        checked = circle("validate", *args)
        assert checked.code == 1
        assert f"{shown}:13:10: version must be 2 (the approved head has 1)" in checked.stdout
        assert (
            f"{shown}:13:10: previous must be {sha} (the sha256 of circle.yaml v1 at the "
            "approved head, seq 1); add it after version"
        ) in checked.stdout

    report = circle("validate", "--repo", str(world.circle), "-o", "json").json()
    assert report["exitCode"] == 1
    assert report["approvedHead"]["policySha256"] == sha
    assert {p["code"] for p in report["problems"]} == {
        "policy.evolution.version",
        "policy.evolution.previous",
    }
    described = circle("describe", "--repo", str(world.circle))
    assert described.code == 1
    assert "Approved head: seq 1 (" in described.stdout

    fixed = policy(circle, world, "rules", "set", "default", "--threshold", "2")  # a no-op
    assert "nothing to change" in fixed.stdout
    bumped = policy(circle, world, "rules", "set", "workloads", "--threshold", "3")
    assert bumped.code == 0, bumped.stderr
    assert circle("validate", "--repo", str(world.circle)).code == 0


def test_validate_outside_a_circle_repository_is_as_before(circle: Circle, tmp_path: Path) -> None:
    folder = shutil.copytree(EXAMPLE, tmp_path / "circle")
    report = circle("validate", "--repo", str(folder), "-o", "json").json()
    assert (report["exitCode"], report["approvedHead"]) == (0, None)
    assert circle("describe", str(folder), "-o", "json").json()["approvedHead"] is None
    both = circle("validate", str(folder), "--repo", str(tmp_path))
    assert both.code == 2
    assert "give DIR or --repo, not both" in both.stderr
