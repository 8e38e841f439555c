"""What the planner is given: workloads and nodes reduced to what placement needs. Pure values.

A `WorkloadSpec` is one workload of the approved desired state at the commit its definition
comes from, with the replica count to run now (fixed, or the autoscaler's decision within the
approved bounds). A `NodeSpec` is one admitted node as it is now: capacity is the smaller of
what its document declares and what its agent measured, GPUs are named by UUID with their
health, `alive` says its lease is current and `verified_seq` how far along the Human Chain it
has verified (a node refuses an assignment from a commit it has not verified, so new replicas
of a workload go only to nodes at or past the workload's `seq`). `Readiness` is what the
agents last reported about each running assignment.

`reconciler.plan.from_desired` builds these from a `DesiredState` and the observed inventory.
"""

from __future__ import annotations

import enum
from dataclasses import KW_ONLY, dataclass
from typing import NewType

from reconciler.plan.errors import PlanInputError

WorkloadName = NewType("WorkloadName", str)
NodeName = NewType("NodeName", str)
GpuUuid = NewType("GpuUuid", str)
CommitId = NewType("CommitId", str)
"""A Git commit id: 40 lowercase hexadecimal digits."""
ArtifactDigest = NewType("ArtifactDigest", str)
"""`sha256:` and 64 lowercase hexadecimal digits: the artifact a node verifies before start."""

Labels = frozenset[tuple[str, str]]
"""Labels or a node selector as (key, value) pairs: a selector matches where it is a subset."""


def label_set(mapping: dict[str, str]) -> Labels:
    """`{"gpu": "true"}` as `Labels`."""
    return frozenset(mapping.items())


@dataclass(frozen=True, slots=True)
class GpuNeed:
    """Whole GPUs per replica. `optional`: take them where free, else run without."""

    count: int
    min_memory: int = 0  # bytes each GPU must have; 0: any
    models: frozenset[str] = frozenset()  # accepted models; empty: any
    optional: bool = False

    def __post_init__(self) -> None:
        if self.count < 1 or self.min_memory < 0:
            raise PlanInputError(
                f"a GPU need is 1 or more GPUs of 0 or more bytes; found {self.count} GPU(s) "
                f"of {self.min_memory} bytes"
            )

    def accepts(self, gpu: GpuDevice) -> bool:
        """Whether `gpu` may be one of the GPUs of a replica (health aside)."""
        return gpu.memory >= self.min_memory and (not self.models or gpu.model in self.models)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One approved workload as placement needs it."""

    name: WorkloadName
    commit: CommitId  # the approved commit its current definition comes from
    seq: int  # that commit's position on the Human Chain
    digest: ArtifactDigest | None  # None: nothing pins it, so no node would start it
    replicas: int  # to run now
    cpu: int  # millicores per replica
    memory: int  # bytes per replica
    gpu: GpuNeed | None = None
    node_selector: Labels = frozenset()
    min_failure_domains: int = 1
    max_replicas_per_node: int | None = None
    min_ready: int | None = None  # ready replicas a rolling update keeps; None: all of them

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.cpu < 0 or self.memory < 0 or self.seq < 1:
            raise PlanInputError(
                f"workload {self.name}: replicas, cpu and memory must be 0 or more and seq 1 or "
                f"more; found {self.replicas}, {self.cpu}, {self.memory} and {self.seq}"
            )
        if self.min_failure_domains < 1 or (self.max_replicas_per_node or 1) < 1:
            raise PlanInputError(
                f"workload {self.name}: minFailureDomains and maxReplicasPerNode must be 1 or more"
            )
        _unique_keys(self.node_selector, f"workload {self.name}: nodeSelector")

    @property
    def ready_needed(self) -> int:
        """How many ready replicas a rolling update may not go below."""
        return self.replicas if self.min_ready is None else min(self.min_ready, self.replicas)


@dataclass(frozen=True, slots=True)
class GpuDevice:
    uuid: GpuUuid
    model: str
    memory: int  # bytes
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One admitted node as it is now."""

    name: NodeName
    failure_domain: str
    cpu: int  # millicores: min(declared, observed)
    memory: int  # bytes: min(declared, observed)
    _: KW_ONLY
    verified_seq: int  # the highest approved seq it has verified: no default, a 0 would hide
    labels: Labels = frozenset()
    gpus: tuple[GpuDevice, ...] = ()
    alive: bool = True  # its lease is current

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.memory < 0:
            raise PlanInputError(
                f"node {self.name}: capacity must be 0 or more; found cpu {self.cpu}, "
                f"memory {self.memory}"
            )
        _unique_keys(self.labels, f"node {self.name}: labels")


def _unique_keys(pairs: Labels, what: str) -> None:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise PlanInputError(f"{what} give one key two values: {sorted(pairs)}")


class ReadyState(enum.StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"
    UNKNOWN = "unknown"  # nothing reported yet, or the report is too old to trust


@dataclass(frozen=True, slots=True)
class Readiness:
    """What an agent last reported about one assignment, and since when (unix seconds)."""

    state: ReadyState
    since: int


UNKNOWN = Readiness(ReadyState.UNKNOWN, 0)
