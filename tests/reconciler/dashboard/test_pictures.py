"""The dashboard's pure parts: the pictures escape every text and draw what the numbers say; a
volume object's margin per failure domain; env values never shown in a proposal's changes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

from reconciler.dashboard.chain import _redacted
from reconciler.dashboard.svg import chart, slot_map
from reconciler.node.records import ShareState, VolumeStatus
from reconciler.node.tables import _object
from reconciler.plan.inputs import NodeName

NODES = [
    {"name": "node-a", "failureDomain": "site-<b>ghent</b>", "status": "Ready", "leader": True},
    {"name": "node-b", "failureDomain": "site-cairo", "status": "NotReady", "leader": False},
]
SLOTS = [
    {"workload": "langid", "slot": 0, "seq": 3, "node": "node-a", "phase": "Ready"},
    {"workload": "langid", "slot": 1, "seq": 3, "node": "node-a", "phase": "<img onerror=x>"},
]


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)  # noqa: S314 - our own output, checked to be well formed


def test_the_slot_map_escapes_and_draws_each_slot_in_its_domain() -> None:
    drawn = str(slot_map(NODES, SLOTS))
    tree = parse(drawn)  # well formed: nothing the circle wrote broke out of its text
    assert "<b>" not in drawn
    assert "site-&lt;b&gt;ghent&lt;/b&gt;" in drawn
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    groups = tree.findall(".//g", namespace) or tree.findall(".//g")
    assert {g.get("data-node"): g.get("class") for g in groups} == {
        "node-a": "node up",
        "node-b": "node down",
    }
    slots = [r for r in tree.iter("rect") if "slot" in (r.get("class") or "")]
    # An unknown phase is drawn as Pending, never as a class the page did not expect.
    assert [r.get("class") for r in slots] == ["slot ready", "slot pending"]
    assert [r.find("title").text for r in slots] == [  # type: ignore[union-attr]
        "langid/0 seq 3: Ready",
        "langid/1 seq 3: Pending",
    ]


def test_the_chart_follows_the_samples() -> None:
    samples: list[list[Any]] = [[100, 2, 1, None], [110, 2, 2, 50.0], [130, 3, 2, 150.0]]
    tree = parse(str(chart(samples, width=360, height=96)))
    lines = {p.get("class"): p.get("points") for p in tree.iter("polyline")}
    assert set(lines) == {"desired", "ready", "load"}
    ready = [tuple(map(float, point.split(","))) for point in lines["ready"].split()]  # type: ignore[union-attr]
    assert ready[0][0] == 26  # the left edge: the oldest sample
    assert ready[-1][0] == 360 - 30  # the right edge: now
    assert ready[0][1] > ready[1][1]  # one Ready, then two: higher on the page
    assert len(lines["load"].split()) == 2  # type: ignore[union-attr]  # no load measured at first
    texts = [t.text for t in tree.iter("text")]
    assert "-30s" in texts
    assert "150" in texts  # the load axis's top


def test_a_chart_without_samples_says_so() -> None:
    assert "collecting samples" in str(chart([]))


def test_the_margin_if_a_failure_domain_is_lost() -> None:
    status = VolumeStatus(
        node=NodeName("node-c"), volume="models", object="ab" * 32, name="m.bin", k=4, n=6,
        shares=(ShareState(0, "a1", "ghent", "healthy"), ShareState(1, "a2", "ghent", "missing"),
                ShareState(2, "b1", "cairo", "healthy"), ShareState(3, "b2", "cairo", "healthy"),
                ShareState(4, "c1", "dubai", "healthy"), ShareState(5, "c2", "dubai", "healthy")),
        margin=1, scrubbed_at=1_700_000_000,
    )  # fmt: skip
    row = _object(status)
    assert row["status"] == "Degraded"
    assert row["healthy"] == 5
    assert row["failureDomains"] == {
        "cairo": {"shares": 2, "healthy": 2, "marginIfLost": -1},  # 3 left of the 4 needed
        "dubai": {"shares": 2, "healthy": 2, "marginIfLost": -1},
        "ghent": {"shares": 2, "healthy": 1, "marginIfLost": 0},
    }


def test_env_values_never_reach_the_page() -> None:
    assert _redacted("env.API_TOKEN added (hunter2)") == "env.API_TOKEN added (value not shown)"
    assert _redacted("env.API_TOKEN hunter2 -> s3cret") == "env.API_TOKEN changed (value not shown)"
    assert _redacted("env.API_TOKEN removed (hunter2)") == "env.API_TOKEN removed (value not shown)"
    assert _redacted("replicas 2 -> 3") == "replicas 2 -> 3"
    assert not re.search("hunter2|s3cret", _redacted("env.X hunter2 -> s3cret"))
