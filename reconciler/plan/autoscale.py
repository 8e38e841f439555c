"""The autoscaler's decision for one workload, inside the envelope its owners approved. Pure.

    decide(envelope, current, loads, history, now, since)  ->  Scaling

The rule is the Kubernetes HPA's:

1. The load is the mean of what the Ready replicas report (per replica: CPU or memory in
   percent of the request, GPU utilization in percent, requests per second, or a named gauge).
   No Ready replica reporting: no decision, the count stays.
2. desired = ceil(reporting x mean / target), unless mean / target is within the tolerance
   (10%) of 1: then the count stays.
3. Never outside the approved [min, max].
4. Scaling up is immediate. Scaling down is stabilized: the count goes down only to the highest
   recommendation of the last `window` seconds (the approved `cooldown`, default 5 min), so a
   dip in load never sheds replicas that the next minute needs again. A leader that has not
   yet watched a whole window (it was just elected, the history is lost with its predecessor)
   does not scale down at all until it has.

Every change comes with its inputs in words, as an event says them:
"langid 2 -> 3: 310 rps per replica > target 200".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the owners approved: bounds, the metric (its unit in words), the target, the
    scale-down stabilization window."""

    workload: str
    min: int
    max: int
    unit: str  # "rps", "% CPU", "% memory", "% GPU", or a gauge's name
    target: float
    window: int  # seconds


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: int  # unix seconds
    replicas: int


@dataclass(frozen=True, slots=True)
class Scaling:
    replicas: int  # what to run now
    changed: bool  # differs from `current`
    message: str  # the decision and its inputs
    history: tuple[Recommendation, ...]  # the recommendations still inside the window


def decide(
    envelope: Envelope,
    current: int,
    loads: Sequence[float],
    history: Sequence[Recommendation],
    now: int,
    since: int,
) -> Scaling:
    """The count to run, from `current` (the replicas the workload has now), the loads its
    Ready replicas report, the earlier recommendations and when this leader began (`since`)."""
    bounded = min(max(current, envelope.min), envelope.max)
    kept = tuple(r for r in history if now - r.at < envelope.window)
    name = envelope.workload
    if not loads:
        reason = "no Ready replica reports a load"
        if bounded != current:
            reason = f"{current} is outside the approved [{envelope.min}, {envelope.max}]"
        return _result(envelope, current, bounded, f"{reason}; {bounded} replicas", kept)
    mean = sum(loads) / len(loads)
    ratio = mean / envelope.target
    why = f"{_number(mean)} {envelope.unit} per replica"
    if abs(ratio - 1) <= TOLERANCE:
        raw = bounded
        why += f", within {TOLERANCE:.0%} of target {_number(envelope.target)}"
    else:
        raw = math.ceil(len(loads) * ratio - 1e-9)
        why += f" {'>' if ratio > 1 else '<'} target {_number(envelope.target)}"
    wanted = min(max(raw, envelope.min), envelope.max)
    if wanted != raw:
        why += f" (wants {raw}, bounds [{envelope.min}, {envelope.max}])"
    kept += (Recommendation(now, wanted),)
    chosen = wanted
    if wanted < bounded:
        if now - since < envelope.window:
            chosen = bounded
            why += f"; no scale-down before this leader watched {envelope.window} s"
        else:
            chosen = min(bounded, max(r.replicas for r in kept))
            if chosen > wanted:
                why += f"; held at {chosen}, the highest of the last {envelope.window} s"
    return _result(envelope, current, chosen, f"{name} {current} -> {chosen}: {why}", kept)


def _result(
    envelope: Envelope, current: int, chosen: int, message: str, kept: tuple[Recommendation, ...]
) -> Scaling:
    return Scaling(chosen, chosen != current, message, kept)


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"
