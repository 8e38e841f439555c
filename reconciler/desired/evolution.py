"""The Human Chain's policy evolution rule, checked on a working tree before anyone signs. Pure.

A circle.yaml whose bytes differ from the approved head's must keep the circle id, carry
`version` = the approved version + 1 and name the sha256 of the approved bytes as `previous`
(`reconciler.chain.verify`, rule 5, refuses anything else once it is signed). Here the same rule
becomes located problems that say the expected value: `circle validate` reports them and the
`circle policy` commands refuse to write a circle.yaml that has any.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from reconciler.desired.documents import decode
from reconciler.desired.problems import DocPath, DocumentError, Problem, Severity, Stage
from reconciler.desired.yamlparse import ParsedYaml, YamlError, parse_yaml


@dataclass(frozen=True, slots=True)
class ApprovedPolicy:
    """circle.yaml at the approved head of a circle: what its next version must follow."""

    circle_id: str
    version: int
    sha256: str  # of the exact bytes: the `previous` the next version names
    seq: int  # the approved head's place on the chain
    commit: str

    @property
    def next_version(self) -> int:
        return self.version + 1

    def where(self) -> str:
        """`the approved head (seq 5, 1a2b3c4d5e6f)`, for messages."""
        return f"the approved head (seq {self.seq}, {self.commit[:12]})"

    def previous_text(self) -> str:
        """What `previous` must be, and why."""
        return (
            f"{self.sha256} (the sha256 of circle.yaml v{self.version} at the approved head, "
            f"seq {self.seq})"
        )


def evolution_problems(data: bytes, file: str, approved: ApprovedPolicy) -> list[Problem]:
    """What keeps `data` (a working tree's circle.yaml, named `file` in problems) from being
    the approved policy's next version; nothing when it is that version or the approved bytes
    themselves. A file that cannot be read as YAML gives nothing here: its own problems say
    why."""
    if hashlib.sha256(data).hexdigest() == approved.sha256:
        return []
    try:
        source = parse_yaml(decode(data, file))
    except (DocumentError, YamlError):
        return []
    value = source.value
    if not isinstance(value, dict):
        return []
    return list(_problems(value, source, file, approved))


def _problems(
    value: dict[str, Any], source: ParsedYaml, file: str, approved: ApprovedPolicy
) -> list[Problem]:
    def problem(path: DocPath, message: str, code: str) -> Problem:
        return Problem(file, source.locate(path), message, code, Severity.ERROR, Stage.REPOSITORY)

    found = []
    if "id" in value and value["id"] != approved.circle_id:
        found.append(
            problem(
                ("id",),
                f"id must stay {approved.circle_id}, the approved head's: a circle's id never "
                "changes",
                "policy.evolution.id",
            )
        )
    if value.get("version") != approved.next_version:
        found.append(
            problem(
                ("version",),
                f"version must be {approved.next_version} (the approved head has "
                f"{approved.version})",
                "policy.evolution.version",
            )
        )
    previous = value.get("previous")
    if previous != approved.sha256:
        missing = previous is None
        found.append(
            problem(
                ("version",) if missing else ("previous",),
                f"previous must be {approved.previous_text()}"
                + ("; add it after version" if missing else ""),
                "policy.evolution.previous",
            )
        )
    return found
