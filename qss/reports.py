"""What the store reports: share health, problems met on the way, results of its operations.

Plain values (no I/O): the CLI and the reconciler read them, tests compare them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from qss.manifest import Manifest
from qss.placement import Site


class ShareStatus(enum.StrEnum):
    HEALTHY = "healthy"
    MISSING = "missing"
    CORRUPT = "corrupt"
    UNREACHABLE = "unreachable"


# When a share has several problems, the worst one names it.
SEVERITY = [ShareStatus.HEALTHY, ShareStatus.MISSING, ShareStatus.CORRUPT, ShareStatus.UNREACHABLE]


@dataclass(frozen=True, slots=True)
class ShareProblem:
    share: int
    backend: str
    segment: int
    status: ShareStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ShareHealth:
    share: int
    backend: str
    failure_domain: str
    status: ShareStatus
    bad_segments: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectHealth:
    manifest: Manifest
    shares: tuple[ShareHealth, ...]

    @property
    def healthy(self) -> int:
        return sum(1 for share in self.shares if share.status is ShareStatus.HEALTHY)

    def weakest_segment(self) -> tuple[int, int]:
        """The segment with the fewest good blocks, and how many it has."""
        counts = [
            sum(
                1
                for share in self.shares
                if share.status is not ShareStatus.UNREACHABLE and index not in share.bad_segments
            )
            for index in range(self.manifest.content.layout.segment_count)
        ]
        weakest = min(range(len(counts)), key=lambda index: (counts[index], index))
        return weakest, counts[weakest]

    @property
    def margin(self) -> int:
        """Blocks beyond the k needed in the weakest segment: how many more may be lost."""
        return self.weakest_segment()[1] - self.manifest.content.k

    @property
    def lost(self) -> list[int]:
        return [s.share for s in self.shares if s.status is not ShareStatus.HEALTHY]


@dataclass(frozen=True, slots=True)
class BackendFailure:
    """A backend that failed an operation over every backend, and why."""

    backend: str
    reason: str


@dataclass(frozen=True)
class Inventory:
    """The objects the backends hold a manifest of, and the backends that could not say."""

    ids: frozenset[str]
    failed: tuple[BackendFailure, ...]


@dataclass(frozen=True)
class Listing:
    """The newest valid manifest of every object found; the backends that could not be
    listed; the objects listed whose manifest could not be read (id, why)."""

    manifests: tuple[Manifest, ...]
    failed: tuple[BackendFailure, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RemoveResult:
    manifest: Manifest
    failed: tuple[BackendFailure, ...]  # backends that may still hold some of the object


@dataclass(frozen=True)
class ShareResult:
    manifest: Manifest  # the new version
    failed: tuple[BackendFailure, ...] = ()  # backends that may still hold an older version


@dataclass(frozen=True)
class PutResult:
    manifest: Manifest
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class GetResult:
    manifest: Manifest
    problems: tuple[ShareProblem, ...]  # shares that failed on the way: candidates for repair


@dataclass(frozen=True)
class RepairResult:
    before: ObjectHealth
    manifest: Manifest
    repaired: dict[int, Site] = field(default_factory=dict)
