"""The dashboard's two pictures, as inline SVG built from plain values. Pure: no I/O, no clock.

- `chart`: one workload's replicas (desired dashed, Ready solid) and its measured load over
  the collector's history, newest at the right;
- `slot_map`: the failure domains side by side, their nodes in them, each node's slots as
  squares coloured by phase, so a spread lost or a node gone is seen at once.

Every text is escaped (markupsafe); colours are CSS classes (the page's CSP allows no inline
style), sizes SVG presentation attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

Sample = Sequence[Any]  # [unix seconds, desired, ready, load or None]


def _ago(seconds: int) -> str:
    return f"-{seconds // 60}m" if seconds >= 60 else f"-{seconds}s"


def chart(samples: Sequence[Sample], *, width: int = 360, height: int = 96) -> Markup:
    """Replicas and load over time; an empty picture says it is waiting for samples."""
    left, right, top, bottom = 26, 30, 8, 16
    inner_w, inner_h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="replicas and load over time">'
    ]
    if len(samples) < 2:
        parts.append(f'<text class="axis" x="{left}" y="{height // 2}">collecting samples…</text>')
        parts.append("</svg>")
        return Markup("".join(parts))  # noqa: S704 - every text in it was escaped
    start, end = samples[0][0], samples[-1][0]
    span = max(1, end - start)
    top_replicas = max(1, *(max(s[1], s[2]) for s in samples))
    loads = [s[3] for s in samples if s[3] is not None]
    top_load = max(loads) if loads else 0.0

    def x(at: int) -> float:
        return float(left + inner_w * (at - start) / span)

    def y(value: float, most: float) -> float:
        return top + inner_h * (1 - (value / most if most else 0))

    def line(index: int, most: float, css: str) -> str:
        points = " ".join(
            f"{x(s[0]):.1f},{y(s[index], most):.1f}" for s in samples if s[index] is not None
        )
        return f'<polyline class="{css}" fill="none" points="{points}"/>'

    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{inner_w}" height="{inner_h}"/>')
    parts.append(line(1, top_replicas, "desired"))
    parts.append(line(2, top_replicas, "ready"))
    if loads:
        parts.append(line(3, top_load, "load"))
        label = f"{top_load:.3g}"
        parts.append(f'<text class="axis load" x="{width - right + 3}" y="{top + 8}">'
                     f"{escape(label)}</text>")  # fmt: skip
    parts.append(f'<text class="axis" x="2" y="{top + 8}">{top_replicas}</text>')
    parts.append(f'<text class="axis" x="2" y="{top + inner_h}">0</text>')
    parts.append(f'<text class="axis" x="{left}" y="{height - 3}">{_ago(end - start)}</text>')
    parts.append(f'<text class="axis" x="{left + inner_w - 20}" y="{height - 3}">now</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it was escaped


_PHASES = {"Ready", "Running", "Accepted", "Pending", "Refused", "Failed"}


def slot_map(nodes: Sequence[dict[str, Any]], assignments: Sequence[dict[str, Any]]) -> Markup:
    """Failure domains as columns, nodes as boxes in them, slots as squares in the nodes."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        by_domain.setdefault(node["failureDomain"], []).append(node)
    slots: dict[str, list[dict[str, Any]]] = {}
    for row in assignments:
        slots.setdefault(row["node"], []).append(row)
    column_w, node_h, square, gap = 170, 58, 16, 4
    tallest = max((len(members) for members in by_domain.values()), default=0)
    width = max(column_w, column_w * len(by_domain))
    height = 24 + tallest * (node_h + 8)
    parts = [
        f'<svg class="slotmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="slots over failure domains">'
    ]
    for column, (domain, members) in enumerate(sorted(by_domain.items())):
        x0 = column * column_w
        parts.append(f'<text class="domain" x="{x0 + 6}" y="16">{escape(domain)}</text>')
        for index, node in enumerate(sorted(members, key=lambda n: n["name"])):
            y0 = 24 + index * (node_h + 8)
            state = "up" if node["status"] == "Ready" else "down"
            parts.append(
                f'<g class="node {state}" data-node="{escape(node["name"])}">'
                f'<rect x="{x0 + 4}" y="{y0}" width="{column_w - 8}" height="{node_h}" rx="4"/>'
                f'<text x="{x0 + 10}" y="{y0 + 15}">{escape(node["name"])}'
                f"{' ★' if node['leader'] else ''}</text>"
            )
            for k, row in enumerate(sorted(slots.get(node["name"], []),
                                           key=lambda r: (r["workload"], r["slot"]))):  # fmt: skip
                phase = row["phase"] if row["phase"] in _PHASES else "Pending"
                sx = x0 + 10 + (k % 8) * (square + gap)
                sy = y0 + 22 + (k // 8) * (square + gap)
                tip = f"{row['workload']}/{row['slot']} seq {row['seq']}: {phase}"
                parts.append(
                    f'<rect class="slot {phase.lower()}" x="{sx}" y="{sy}" width="{square}" '
                    f'height="{square}" rx="2"><title>{escape(tip)}</title></rect>'
                )
            parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it was escaped
