"""`workloads/<name>.yaml`: what runs (the AI circuit), how much, where, and how it is checked.

Replicas are fixed at `replicas` unless `autoscale` is given; then the leader moves the count
within `[autoscale.min, autoscale.max]`, bounds the owners approved, never outside them.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.types import (
    Bytes,
    Cpu,
    Digest,
    Duration,
    EnvName,
    LabelKey,
    LabelValue,
    Name,
    RelPath,
)


class ArtifactRef(Strict):
    build: Name = Field(description="The build (builds/<name>.yaml) that makes the artifact.")
    digest: Digest | None = Field(
        default=None, description="The artifact id the node must verify before starting."
    )


class Port(Strict):
    name: Name
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class Metric(enum.StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    GPU = "gpu"
    REQUESTS_PER_SECOND = "requests-per-second"
    GAUGE = "gauge"


class MetricSource(Strict):
    """Where a replica's own Prometheus metrics are (for requests-per-second and gauge)."""

    port: int = Field(ge=1, le=65535, description="One of the workload's `ports`.")
    path: str = Field(default="/metrics", pattern=r"^/\S*$")
    series: str = Field(
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="requests-per-second: a counter of requests (its rate is taken); "
        "gauge: the gauge itself. Summed over its label sets.",
    )


class Autoscale(Strict):
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    metric: Annotated[Metric, Field(strict=False)]
    target: float = Field(
        gt=0,
        description="Per replica: percent for cpu/memory/gpu, requests per second, or "
        "the gauge's value.",
    )
    source: MetricSource | None = Field(
        default=None, description="The replicas' Prometheus endpoint (requests-per-second, gauge)."
    )
    cooldown: Duration = Field(
        default=300,
        description="Scale-down stabilization window: replicas go down only to the highest "
        "count recommended over this long (scaling up is immediate).",
    )


class GpuRequest(Strict):
    count: int = Field(ge=1, le=64, description="Whole GPUs per replica.")
    min_memory: Bytes | None = Field(default=None, description="Least memory of each GPU.")
    models: list[str] = Field(
        default_factory=list, description="Accepted GPU models; any if empty."
    )
    optional: bool = Field(
        default=False, description="Run on CPU where no fitting GPU is free, instead of waiting."
    )


class Resources(Strict):
    cpu: Cpu
    memory: Bytes
    gpu: GpuRequest | None = None


class Placement(Strict):
    min_failure_domains: int = Field(
        default=1, ge=1, description="Spread replicas over at least this many failure domains."
    )
    max_replicas_per_node: int | None = Field(default=None, ge=1)
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Run only on nodes that carry all these labels."
    )


class HttpCheck(Strict):
    path: str = Field(pattern=r"^/\S*$")
    port: int = Field(ge=1, le=65535, description="One of the workload's `ports`.")


class HealthCheck(Strict):
    http: HttpCheck | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    initial_delay: Duration = 0
    interval: Duration = 10
    timeout: Duration = 2
    failure_threshold: int = Field(default=3, ge=1)


class VolumeMount(Strict):
    volume: Name
    path: RelPath = Field(description="Where the volume's objects appear, inside the workdir.")
    read_only: bool = True


class SecretRef(Strict):
    secret: Name = Field(description="The circle secret: secrets/NAME.yaml, sealed to the nodes.")
    env: EnvName | None = Field(
        default=None,
        description="Environment variable that receives the path of the secret's file "
        "(/run/secrets/NAME, mode 0400); never the value itself.",
    )


class Workload(NamedDocument):
    kind: Literal["Workload"]
    artifact: ArtifactRef
    command: list[str] = Field(
        min_length=1, description="Program and arguments, run in the artifact."
    )
    args: list[str] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    ports: list[Port] = Field(default_factory=list)
    replicas: int = Field(ge=0, le=10_000)
    autoscale: Autoscale | None = None
    resources: Resources
    placement: Placement = Field(default_factory=Placement)
    health: HealthCheck | None = None
    volumes: list[VolumeMount] = Field(default_factory=list)
    secrets: list[SecretRef] = Field(default_factory=list)

    @property
    def max_replicas(self) -> int:
        return max(self.replicas, self.autoscale.max) if self.autoscale else self.replicas
