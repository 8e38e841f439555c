"""`policy_edit` and `evolution`: circle.yaml edited into its next version, text in and text out.

Each edit is checked line by line against the text it started from (only the lines meant to
change do, comments and layout stay), and the evolution rule is checked to agree with the one the
Human Chain applies (`reconciler.chain.verify`)."""

from __future__ import annotations

import base64
import difflib
import hashlib

import pytest

from reconciler.chain import verify
from reconciler.desired.evolution import ApprovedPolicy, evolution_problems
from reconciler.desired.model.types import ssh_fingerprint
from reconciler.desired.policy_edit import (
    AddMember,
    Change,
    PolicyEditError,
    RemoveMember,
    RotateKey,
    SetRule,
    edit_policy,
)
from tests.conftest import EXAMPLE

TEXT = (EXAMPLE / "circle.yaml").read_text(encoding="utf-8")
SHA = hashlib.sha256(TEXT.encode()).hexdigest()


def ssh_key(fill: int, comment: str) -> str:
    """A well-formed Ed25519 public key line (32 bytes of `fill`); nobody holds its private key."""
    blob = b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + bytes([fill]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


DAVE = ssh_key(7, "dave@laptop")
ALICE = next(line.split("key: ")[1] for line in TEXT.splitlines() if "alice@example" in line)


def edit(change: Change, text: str = TEXT) -> str:
    return edit_policy(text, change, version=2, previous=SHA).text


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines removed and the lines added, in order."""
    lines = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [x[2:] for x in lines if x[0] == "-"], [x[2:] for x in lines if x[0] == "+"]


BUMP = ["version: 1"], ["version: 2", f"previous: {SHA}"]


def test_adding_a_member_changes_only_its_lines_and_the_version() -> None:
    result = edit_policy(TEXT, AddMember("dave", DAVE, weight=2), version=2, previous=SHA)
    assert result.done == (f"member dave added (weight 2, key {ssh_fingerprint(DAVE)})",)
    removed, added = diff(TEXT, result.text)
    assert removed == BUMP[0]
    assert added == [
        *BUMP[1],
        "  - id: dave",
        "    weight: 2",
        "    keys:",
        "      - type: ssh-ed25519",
        f"        key: {DAVE}",
    ]
    assert result.loaded is not None
    assert [m.id for m in result.loaded.document.members] == ["alice", "bob", "carol", "dave"]
    assert result.text.index("  - id: dave") > result.text.index("issuer: https://github.com")


def test_the_default_weight_is_not_written() -> None:
    _, added = diff(TEXT, edit(AddMember("dave", DAVE)))
    assert "    weight: 1" not in added


def test_a_second_edit_keeps_the_same_next_version() -> None:
    once = edit(AddMember("dave", DAVE))
    twice = edit(SetRule("governance", threshold=4), once)
    removed, added = diff(once, twice)
    assert (removed, added) == (["      threshold: 3"], ["      threshold: 4"])


def test_removing_a_member_takes_its_comments_and_leaves_the_rest() -> None:
    lowered = edit(SetRule("governance", threshold=2))
    removed, _ = diff(lowered, edit(RemoveMember("carol"), lowered))
    assert removed == [
        "  - id: carol",
        "    keys:",
        "      - type: ssh-ed25519",
        next(line for line in TEXT.splitlines() if "carol@example-circle" in line),
        "      # Carol may also sign keylessly, verified offline against the pinned sigstore "
        "trust root.",
        "      - type: sigstore",
        "        identity: carol@example.org",
        "        issuer: https://github.com/login/oauth",
    ]


COMMENTED = """\
apiVersion: circle/v1
kind: Circle
id: demo
version: 3  # the policy version
previous: 1111111111111111111111111111111111111111111111111111111111111111
members:
# Founders.
- id: alice
  keys:
  - type: ssh-ed25519
    key: {alice}
# Bob joined in 2024.
- id: bob
  keys:
  - type: ssh-ed25519
    key: {bob}   # his laptop
# Carol runs the nodes.
- id: carol
  keys:
  - type: ssh-ed25519
    key: {carol}

# How they decide.
consensus:
  rules:
  - name: governance
    paths: ['circle.yaml']
    threshold: 2
  # Everything else.
  - name: default
    paths: ['**']
    members: [alice, bob, carol]
    threshold: 1
""".format(alice=ssh_key(1, "a"), bob=ssh_key(2, "b"), carol=ssh_key(3, "c"))


def test_round_trip_keeps_a_file_in_another_layout() -> None:
    result = edit(SetRule("default", threshold=2), COMMENTED)
    removed, added = diff(COMMENTED, result)
    assert removed == [
        "version: 3  # the policy version",
        "previous: 1111111111111111111111111111111111111111111111111111111111111111",
        "    threshold: 1",
    ]
    assert added == ["version: 2  # the policy version", f"previous: {SHA}", "    threshold: 2"]


def test_removing_a_member_in_the_middle_keeps_the_next_ones_comment() -> None:
    result = edit(RemoveMember("bob"), COMMENTED)
    removed, _ = diff(COMMENTED, result)
    assert removed[2:] == [
        "# Bob joined in 2024.",
        "- id: bob",
        "  keys:",
        "  - type: ssh-ed25519",
        f"    key: {ssh_key(2, 'b')}   # his laptop",
        "    members: [alice, bob, carol]",
    ]
    assert "# Carol runs the nodes.\n- id: carol" in result
    assert "    members: [alice, carol]" in result


def test_removing_the_last_member_of_a_list_keeps_what_follows_it() -> None:
    result = edit(RemoveMember("carol"), COMMENTED)
    assert "# Carol runs the nodes." not in result
    assert f"    key: {ssh_key(2, 'b')}   # his laptop\n\n# How they decide.\nconsensus:" in result


def test_removing_the_first_member_keeps_the_next_ones_comment() -> None:
    result = edit(RemoveMember("alice"), COMMENTED)
    assert "- id: alice" not in result
    assert "# Bob joined in 2024.\n- id: bob" in result


def test_appending_keeps_a_comment_after_the_list_at_its_end() -> None:
    result = edit(AddMember("dave", DAVE), COMMENTED)
    assert f"- id: dave\n  keys:\n  - type: ssh-ed25519\n    key: {DAVE}\n\n# How they decide." in (
        result
    )


def test_a_new_key_after_a_commented_entry_comes_before_the_comment() -> None:
    result = edit(SetRule("governance", required=("alice",)), COMMENTED)
    assert "    threshold: 2\n    required: [alice]\n  # Everything else." in result


def test_windows_line_endings_stay() -> None:
    crlf = COMMENTED.replace("\n", "\r\n")
    result = edit(SetRule("default", threshold=2), crlf)
    assert result.count("\r\n") == result.count("\n")
    assert "    threshold: 2\r\n" in result


def test_rotating_a_key_replaces_it_in_place() -> None:
    result = edit_policy(TEXT, RotateKey("alice", DAVE), version=2, previous=SHA)
    assert result.done == (
        f"member alice: key {ssh_fingerprint(ALICE)} replaced by {ssh_fingerprint(DAVE)}",
    )
    removed, added = diff(TEXT, result.text)
    assert removed == [BUMP[0][0], f"        key: {ALICE}"]
    assert added == [*BUMP[1], f"        key: {DAVE}"]


def test_rotating_with_keep_old_adds_the_key_after_the_ssh_keys() -> None:
    result = edit(RotateKey("carol", DAVE, keep_old=True))
    _, added = diff(TEXT, result)
    assert added[2:] == ["      - type: ssh-ed25519", f"        key: {DAVE}"]
    assert result.index(DAVE) < result.index("# Carol may also sign keylessly")


def test_rotating_a_member_with_two_keys_names_the_old_one() -> None:
    two = edit(RotateKey("carol", DAVE, keep_old=True))
    with pytest.raises(PolicyEditError, match=r"carol has 2 SSH keys .*--old"):
        edit(RotateKey("carol", ssh_key(8, "new")), two)
    result = edit(RotateKey("carol", ssh_key(8, "new"), old=ssh_fingerprint(DAVE)), two)
    assert DAVE not in result
    assert "carol@example-circle" in result


def test_setting_a_rule_keeps_its_list_style_and_quotes() -> None:
    result = edit(SetRule("workloads", paths=("workloads/**", "src/**"), members=("alice", "bob")))
    removed, added = diff(TEXT, result)
    assert removed[1:] == ['      paths: ["workloads/**", "builds/**", "src/**"]']
    assert added[2:] == [
        '      paths: ["workloads/**", "src/**"]',
        "      members: [alice, bob]",
    ]


def test_all_members_and_no_required() -> None:
    narrowed = edit(SetRule("default", members=("alice", "bob"), required=("alice",)))
    assert "required: [alice]" in narrowed
    result = edit_policy(
        narrowed, SetRule("default", all_members=True, required=()), version=2, previous=SHA
    )
    assert result.done == (
        "rule default: members [alice, bob] -> all members",
        "rule default: required [alice] -> []",
    )
    assert diff(TEXT, result.text) == BUMP


def test_adding_a_rule() -> None:
    result = edit(SetRule("docs", threshold=1, paths=("docs/**",), members=("alice",)))
    _, added = diff(TEXT, result)
    assert added[2:] == [
        "    - name: docs",
        "      paths: [docs/**]",
        "      members: [alice]",
        "      threshold: 1",
    ]


def test_nothing_to_change_returns_the_text_itself() -> None:
    result = edit_policy(TEXT, SetRule("governance", threshold=3), version=2, previous=SHA)
    assert (result.text, result.done, result.loaded) == (TEXT, (), None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (RemoveMember("zed"), "unknown member 'zed' (members: alice, bob, carol)"),
        (
            RemoveMember("carol"),
            "removing carol leaves rule governance unsatisfiable: it needs weight 3 and its "
            "other members hold 2 (alice, bob); change the rule first: rules set governance "
            "--threshold 2",
        ),
        (AddMember("alice", DAVE), "member alice exists already"),
        (AddMember("dave", ALICE), "belongs to member alice already"),
        (AddMember("Dave", DAVE), "invalid name 'Dave'"),
        (AddMember("dave", "ssh-rsa AAAAB3Nza dave"), "expected an OpenSSH line"),
        (RotateKey("alice", ALICE), "member alice already has key"),
        (RotateKey("bob", ALICE), "belongs to member alice already"),
        (RotateKey("bob", DAVE, old=ssh_fingerprint(ALICE)), "bob has no key SHA256:"),
        (RotateKey("bob", DAVE, old=ALICE, keep_old=True), "cannot go with --keep-old"),
        (
            SetRule("docs", threshold=1),
            "no rule docs (rules: governance, workloads, secrets, default)",
        ),
        (SetRule("default", members=("zed",)), "--members: unknown member 'zed'"),
        (
            SetRule("governance", threshold=9),
            "would be invalid: line 38: rule governance needs weight 9 but its members hold "
            "only 3: it could never be satisfied",
        ),
        (SetRule("default", paths=("/etc/**",)), "the new circle.yaml would be invalid"),
    ],
    ids=[
        "unknown-member",
        "below-threshold",
        "member-exists",
        "key-of-another",
        "bad-id",
        "not-ed25519",
        "same-key",
        "rotate-to-anothers-key",
        "unknown-old-key",
        "old-and-keep-old",
        "unknown-rule",
        "rule-unknown-member",
        "unreachable-threshold",
        "bad-path",
    ],
)
def test_refusals_say_what_and_what_is_expected(change: Change, message: str) -> None:
    with pytest.raises(PolicyEditError) as refused:
        edit(change)
    assert message in str(refused.value)


def test_a_required_member_cannot_be_removed_before_the_rule_changes() -> None:
    required = edit(SetRule("default", required=("bob",)), edit(SetRule("governance", threshold=2)))
    with pytest.raises(PolicyEditError, match="rule default requires bob: first drop bob"):
        edit(RemoveMember("bob"), required)


def test_the_last_member_cannot_go() -> None:
    text = edit(SetRule("governance", threshold=1), COMMENTED)
    for member in ("alice", "bob"):
        text = edit(RemoveMember(member), edit(SetRule("default", threshold=1), text))
    with pytest.raises(PolicyEditError, match="carol is the last member"):
        edit(RemoveMember("carol"), text)


# -- the evolution rule, as the chain applies it --------------------------------------------------

APPROVED = ApprovedPolicy("example-ai-circle", 1, SHA, 4, "a" * 40)
NEXT = edit(AddMember("dave", DAVE))


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        (TEXT, []),
        (NEXT, []),
        (
            TEXT.replace("threshold: 3", "threshold: 2"),
            [
                "13:10: version must be 2 (the approved head has 1)",
                f"13:10: previous must be {SHA} (the sha256 of circle.yaml v1 at the approved "
                "head, seq 4); add it after version",
            ],
        ),
        (
            NEXT.replace(f"previous: {SHA}", "previous: " + "0" * 64),
            [f"14:11: previous must be {SHA} (the sha256 of circle.yaml v1 at the approved head"],
        ),
        (NEXT.replace("version: 2", "version: 3"), ["13:10: version must be 2 (the approved"]),
        (
            NEXT.replace("id: example-ai-circle", "id: another"),
            ["9:5: id must stay example-ai-circle, the approved head's"],
        ),
    ],
    ids=["approved-bytes", "next-version", "no-bump", "wrong-previous", "skips-one", "new-id"],
)
def test_evolution_problems_name_the_expected_values(text: str, messages: list[str]) -> None:
    found = [str(p) for p in evolution_problems(text.encode(), "circle.yaml", APPROVED)]
    assert len(found) == len(messages)
    for problem, message in zip(found, messages, strict=True):
        assert problem.startswith(f"circle.yaml:{message}")


@pytest.mark.parametrize(
    "text",
    [
        NEXT,
        NEXT.replace("version: 2", "version: 3"),
        NEXT.replace("version: 2", "version: 1"),
        NEXT.replace(f"previous: {SHA}", "previous: " + "0" * 64),
        NEXT.replace("id: example-ai-circle", "id: another"),
        TEXT.replace("threshold: 3", "threshold: 2"),
    ],
    ids=["next", "skips", "same-version", "wrong-previous", "new-id", "no-bump"],
)
def test_evolution_agrees_with_the_chain(text: str) -> None:
    in_force = verify.Policies()(TEXT.encode())
    try:
        verify.check_evolution(in_force, verify.parse_policy(text.encode()))
    except verify.PolicyError:
        chain_refuses = True
    else:
        chain_refuses = False
    mine = evolution_problems(text.encode(), "circle.yaml", APPROVED)
    assert bool(mine) == chain_refuses
