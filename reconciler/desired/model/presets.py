"""Consensus templates: ready-made rule sets that `circle init --preset` expands into
`circle.yaml` for a given list of members.

A template is only ever used to *write* a policy. The policy in force is always the expanded
rules in `circle.yaml`, never a reference to a template, so that upgrading this software can
never change what a circle's owners agreed to (docs/adr/0002-presets.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.types import Duration, Name, PathPattern

Quota = Literal["all", "majority", "two-thirds"]


class TemplateRule(Strict):
    name: Name
    paths: list[PathPattern] = Field(min_length=1)
    threshold: int | Quota = Field(
        description="A weight, or a share of the total weight: all, majority, two-thirds."
    )


class MemberCount(Strict):
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1)


class ConsensusTemplate(NamedDocument):
    kind: Literal["ConsensusTemplate"]
    members: MemberCount = Field(default_factory=MemberCount)
    approval_lifetime: Duration = 7 * 86400
    rules: list[TemplateRule] = Field(min_length=1)
