"""The autoscaler's rule (the Kubernetes HPA's) with a fake clock: ceil(n x load / target),
10% tolerance, approved bounds, immediate scale-up, stabilized scale-down."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.plan.autoscale import Envelope, Recommendation, decide

LANGID = Envelope("langid", min=2, max=6, unit="rps", target=200, window=300)
T0 = 1_000_000
LONG_AGO = T0 - 10_000  # a leader that has watched for longer than the window


@pytest.mark.parametrize(
    ("current", "loads", "expected", "words"),
    [
        (2, [310, 310], 4, "langid 2 -> 4: 310 rps per replica > target 200"),
        (2, [210, 190], 2, "within 10% of target 200"),
        (2, [219, 219], 2, "within 10% of target 200"),
        (2, [221, 221], 3, "langid 2 -> 3: 221 rps per replica > target 200"),
        (3, [900, 900, 900], 6, "(wants 14, bounds [2, 6])"),
        (4, [10, 10, 10, 10], 2, "(wants 1, bounds [2, 6])"),
        (3, [100, 100, 100], 2, "langid 3 -> 2: 100 rps per replica < target 200"),
        (3, [], 3, "no Ready replica reports a load; 3 replicas"),
        (9, [], 6, "9 is outside the approved [2, 6]"),
    ],
    ids=[
        "up",
        "tolerance",
        "edge-of-tolerance",
        "just-past",
        "max",
        "min",
        "down",
        "no-load",
        "outside-bounds",
    ],
)
def test_the_hpa_rule(current: int, loads: list[float], expected: int, words: str) -> None:
    scaled = decide(LANGID, current, loads, [], T0, LONG_AGO)
    assert scaled.replicas == expected
    assert scaled.changed is (expected != current)
    assert words in scaled.message


def test_scale_down_waits_for_the_highest_recommendation_of_the_window() -> None:
    history = [Recommendation(T0 - 200, 4), Recommendation(T0 - 100, 3)]
    held = decide(LANGID, 4, [50, 50, 50, 50], history, T0, LONG_AGO)
    assert held.replicas == 4  # the recommendation of 200 s ago is still in the window
    assert "held at 4, the highest of the last 300 s" in held.message
    later = decide(LANGID, 4, [50, 50, 50, 50], held.history, T0 + 101, LONG_AGO)
    assert later.replicas == 3  # the 4 left the window; the 3 of T0 - 100 is the highest
    last = decide(LANGID, 3, [50, 50, 50], later.history, T0 + 400, LONG_AGO)
    assert last.replicas == 2
    assert all(T0 + 400 - r.at < 300 for r in last.history)


def test_scale_up_is_immediate_whatever_the_window_holds() -> None:
    history = [Recommendation(T0 - 10, 2)]
    assert decide(LANGID, 2, [400, 400], history, T0, T0).replicas == 4


def test_a_new_leader_does_not_scale_down_before_it_watched_a_window() -> None:
    fresh = decide(LANGID, 4, [10, 10, 10, 10], [], T0, since=T0 - 60)
    assert fresh.replicas == 4
    assert "no scale-down before this leader watched 300 s" in fresh.message
    assert decide(LANGID, 4, [10, 10, 10, 10], fresh.history, T0 + 300, T0 - 60).replicas == 2


@given(
    current=st.integers(0, 20),
    loads=st.lists(st.floats(0, 1e6, allow_nan=False), max_size=20),
    at=st.integers(0, 10_000),
)
def test_never_outside_the_approved_bounds(current: int, loads: list[float], at: int) -> None:
    scaled = decide(LANGID, current, loads, [], T0 + at, T0)
    assert LANGID.min <= scaled.replicas <= LANGID.max
    assert scaled.message
