"""Shipped presets: every one is valid, consensus templates expand correctly for any members,
and admission presets are what circles can name."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.desired import checks
from reconciler.desired.model import Circle, Member
from reconciler.desired.presets import PresetError, expand, quota_threshold
from reconciler.desired.shipped import load_presets
from tests.conftest import Result


def member(name: str, weight: int = 1) -> Member:
    key = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return Member.model_validate(
        {"id": name, "weight": weight, "keys": [{"type": "ssh-ed25519", "key": key.decode()}]}
    )


def test_shipped_presets_are_all_present() -> None:
    presets = load_presets()
    assert sorted(presets.consensus) == [
        "majority-with-unanimous-governance",
        "solo",
        "two-of-three",
        "two-thirds",
    ]
    assert sorted(presets.admission) == ["baseline", "gpu-small", "production"]


@pytest.mark.parametrize(
    ("quota", "total", "expected"),
    [
        ("all", 5, 5),
        ("majority", 4, 3),
        ("majority", 5, 3),
        ("two-thirds", 3, 2),
        ("two-thirds", 4, 3),
        ("two-thirds", 6, 4),
        (2, 9, 2),
    ],
)
def test_quota_thresholds(quota: int | str, total: int, expected: int) -> None:
    assert quota_threshold(quota, total) == expected


def test_two_of_three_expands_to_a_valid_policy() -> None:
    template = load_presets().consensus["two-of-three"].document
    members = [member("alice"), member("bob"), member("carol")]

    consensus = expand(template, members)

    assert [(rule.name, rule.paths, rule.threshold) for rule in consensus.rules] == [
        ("governance", ["circle.yaml"], 2),
        ("default", ["**"], 2),
    ]
    circle = Circle.model_validate(
        {
            "apiVersion": "circle/v1",
            "kind": "Circle",
            "id": "test",
            "version": 1,
            "members": [m.model_dump(by_alias=True) for m in members],
            "consensus": consensus.model_dump(by_alias=True),
        }
    )
    assert list(checks.check_document(circle)) == []


def test_template_refuses_the_wrong_number_of_members() -> None:
    template = load_presets().consensus["two-of-three"].document
    with pytest.raises(PresetError, match="preset two-of-three is for 3 members; 2 given"):
        expand(template, [member("alice"), member("bob")])


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=7))
def test_majority_with_unanimous_governance_for_any_weights(weights: list[int]) -> None:
    template = load_presets().consensus["majority-with-unanimous-governance"].document
    members = [member(f"m{index}", weight) for index, weight in enumerate(weights)]
    total = sum(weights)

    rules = {rule.name: rule.threshold for rule in expand(template, members).rules}

    assert rules["governance"] == total
    # A majority: more than half the weight, and no more than needed.
    assert 2 * rules["default"] > total
    assert 2 * (rules["default"] - 1) <= total


def test_presets_list_and_show(circle: Callable[..., Result]) -> None:
    listed = circle("presets", "list", "-o", "json").json()
    assert {"type": "admission", "name": "baseline"} in [
        {"type": item["type"], "name": item["name"]} for item in listed
    ]

    shown = circle("presets", "show", "baseline")
    assert shown.code == 0
    assert "requirePinnedArtifacts: true" in shown.stdout

    missing = circle("presets", "show", "strictest")
    assert missing.code == 2
    assert missing.stderr.strip() == (
        "circle: error: no preset named 'strictest' (shipped: baseline, gpu-small, "
        "majority-with-unanimous-governance, production, solo, two-of-three, two-thirds)"
    )
