"""Expanding a consensus template into the rules of a new `circle.yaml`.

`circle init --preset NAME` calls `expand`; the result is written out in full, so the policy
in force never depends on a template that a later release might change.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.desired.model import ConsensusTemplate, Member
from reconciler.desired.model.circle import Consensus, Rule


class PresetError(ValueError):
    """A template cannot be applied to the given members."""


def quota_threshold(quota: int | str, total_weight: int) -> int:
    """The weight a threshold of `quota` needs out of `total_weight`."""
    match quota:
        case int():
            return quota
        case "all":
            return total_weight
        case "majority":
            return total_weight // 2 + 1
        case "two-thirds":
            return -(-2 * total_weight // 3)
    raise PresetError(f"unknown threshold {quota!r}")  # pragma: no cover - the model forbids it


def expand(template: ConsensusTemplate, members: Sequence[Member]) -> Consensus:
    """The consensus rules `template` gives `members` (every rule counts every member)."""
    count = len(members)
    bounds = template.members
    if count < bounds.min or (bounds.max is not None and count > bounds.max):
        wanted = f"{bounds.min}" if bounds.max == bounds.min else f"{bounds.min} or more"
        if bounds.max is not None and bounds.max != bounds.min:
            wanted = f"{bounds.min} to {bounds.max}"
        raise PresetError(f"preset {template.name} is for {wanted} members; {count} given")
    total = sum(member.weight for member in members)
    rules = []
    for rule in template.rules:
        threshold = quota_threshold(rule.threshold, total)
        if threshold > total:
            raise PresetError(
                f"preset {template.name}: rule {rule.name} needs weight {threshold}, "
                f"but the members hold only {total}"
            )
        rules.append(Rule(name=rule.name, paths=list(rule.paths), threshold=threshold))
    return Consensus(rules=rules, approval_lifetime=template.approval_lifetime)
