"""Quorum over the example circle's policy: who must sign which change (DESIGN.md section 4)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.chain.quorum import QuorumNotMet, enforce, evaluate
from reconciler.desired.documents import parse_document
from reconciler.desired.model import KINDS, Circle
from reconciler.desired.yamlparse import parse_yaml
from tests.conftest import EXAMPLE

SOURCE = (EXAMPLE / "circle.yaml").read_text()


def policy(change: Any = None) -> Circle:
    document = parse_yaml(SOURCE).value
    if change is not None:
        document = copy.deepcopy(document)
        change(document)
    loaded = parse_document(json.dumps(document).encode(), "circle.yaml", [KINDS["Circle"]])
    assert isinstance(loaded.document, Circle)
    return loaded.document


CURRENT = policy()


@pytest.mark.parametrize(
    ("changed", "signers", "unmet"),
    [
        (["workloads/langid.yaml"], ["alice", "bob"], []),
        (
            ["workloads/langid.yaml"],
            ["alice"],
            [
                "rule workloads needs weight 2, has 1 (alice); missing one of: bob, carol",
                # The catch-all covers every path too: all rules that match must be met.
                "rule default needs weight 2, has 1 (alice); missing one of: bob, carol",
            ],
        ),
        (
            ["workloads/langid.yaml", "nodes/node-d.yaml"],
            ["carol"],
            [
                "rule workloads needs weight 2, has 1 (carol); missing one of: alice, bob",
                "rule default needs weight 2, has 1 (carol); missing one of: alice, bob",
            ],
        ),
        (
            ["workloads/langid.yaml"],
            ["alice", "mallory", "alice"],
            [
                "rule workloads needs weight 2, has 1 (alice); missing one of: bob, carol",
                "rule default needs weight 2, has 1 (alice); missing one of: bob, carol",
            ],
        ),
        (
            ["circle.yaml"],
            ["alice", "bob"],
            [
                "rule governance needs weight 3, has 2 (alice, bob); missing one of: carol",
                # circle.yaml changes answer to the new policy's governance as well.
                "proposed policy: rule governance needs weight 3, has 2 (alice, bob); "
                "missing one of: carol",
            ],
        ),
        (["src/inference/langid_service/server.py"], ["bob", "carol"], []),
    ],
    ids=["two-sign", "one-short", "two-rules", "stranger-and-repeat", "governance", "sources"],
)
def test_rules_triggered_by_the_change_must_all_be_met(
    changed: list[str], signers: list[str], unmet: list[str]
) -> None:
    result = evaluate(CURRENT, changed, signers, proposed=CURRENT)
    assert [rule.explain() for rule in result.unmet] == unmet
    assert result.satisfied is (not unmet)
    if unmet:
        with pytest.raises(
            QuorumNotMet, match="; ".join(unmet).replace("(", r"\(").replace(")", r"\)")
        ):
            enforce(CURRENT, changed, signers, proposed=CURRENT)
    else:
        enforce(CURRENT, changed, signers, proposed=CURRENT)


def test_a_star_never_crosses_a_slash() -> None:
    narrow = policy(lambda d: d["consensus"]["rules"][1].update(paths=["workloads/*"]))
    triggered = {r.rule for r in evaluate(narrow, ["workloads/team/x.yaml"], []).rules}
    assert triggered == {"default"}


def test_weights_and_required_members() -> None:
    weighted = policy(lambda d: d["members"][0].update(weight=2))
    assert evaluate(weighted, ["workloads/a.yaml"], ["alice"]).satisfied

    def require_carol(document: dict[str, Any]) -> None:
        document["consensus"]["rules"][1]["required"] = ["carol"]

    strict = policy(require_carol)
    missing = evaluate(strict, ["workloads/a.yaml"], ["alice", "bob"])
    assert [r.explain() for r in missing.unmet] == [
        "rule workloads needs weight 2, has 2 (alice, bob); required: carol"
    ]
    # The required member present, an optional one absent, weight met: accepted.
    assert evaluate(strict, ["workloads/a.yaml"], ["alice", "carol"]).satisfied


def test_a_policy_change_needs_the_old_and_the_new_governance() -> None:
    def add_dave(document: dict[str, Any]) -> None:
        dave = copy.deepcopy(document["members"][0])
        dave["id"] = "dave"
        dave["keys"] = [
            {
                "type": "ssh-ed25519",
                "key": "ssh-ed25519 "
                "AAAAC3NzaC1lZDI1NTE5AAAAIGi0RQHzMCfSsw4uaDDjmnuoFTJ02FaXVJJxVxEa5+V8",
            }
        ]
        document["members"].append(dave)
        document["consensus"]["rules"][0]["threshold"] = 4
        document["version"] = 2
        document["previous"] = "0" * 64

    proposed = policy(add_dave)
    result = evaluate(CURRENT, ["circle.yaml"], ["alice", "bob", "carol"], proposed=proposed)
    assert [r.explain() for r in result.unmet] == [
        "proposed policy: rule governance needs weight 4, has 3 (alice, bob, carol); "
        "missing one of: dave"
    ]
    assert evaluate(
        CURRENT, ["circle.yaml"], ["alice", "bob", "carol", "dave"], proposed=proposed
    ).satisfied
    with pytest.raises(QuorumNotMet, match="the proposed policy must be evaluated too"):
        enforce(CURRENT, ["circle.yaml"], ["alice", "bob", "carol"])


PATHS = st.sampled_from(
    ["circle.yaml", "workloads/a.yaml", "nodes/n.yaml", "builds/b.yaml", "src/x/y.py", "README.md"]
)
MEMBERS = st.sampled_from(["alice", "bob", "carol", "mallory"])


@settings(max_examples=200, deadline=None)
@given(changed=st.lists(PATHS, min_size=1), signers=st.sets(MEMBERS), extra=MEMBERS)
def test_property_quorum_is_monotone(changed: list[str], signers: set[str], extra: str) -> None:
    """One more signature can never turn an approved change into an unapproved one."""
    before = evaluate(CURRENT, changed, signers, proposed=CURRENT)
    after = evaluate(CURRENT, changed, signers | {extra}, proposed=CURRENT)
    assert not before.satisfied or after.satisfied
    assert all(a.weight >= b.weight for a, b in zip(after.rules, before.rules, strict=True))
