"""Admission rules: limits a circle puts on its own desired state, checked by `circle validate`.

Rules come from shipped presets (`policies/admission/<name>.yaml`, kind `AdmissionPolicy`) that
`circle.yaml` names, and from the circle's own `admission.rules`. Every rule set applies on its
own; a desired state is admitted only if it passes all of them. An absent limit is no limit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.build import Builder


class AdmissionRules(Strict):
    require_pinned_artifacts: bool = Field(
        default=False, description="Every workload pins its artifact by sha256 digest."
    )
    require_locked_builds: bool = Field(
        default=False, description="Every build records the digest it must produce."
    )
    require_health_checks: bool = Field(
        default=False, description="Every workload that serves ports has a health check."
    )
    max_replicas: int | None = Field(
        default=None, ge=0, description="Most replicas one workload may run (autoscale max too)."
    )
    max_gpus_per_replica: int | None = Field(default=None, ge=0)
    max_total_gpus: int | None = Field(
        default=None, ge=0, description="Most GPUs all workloads together may claim at full scale."
    )
    min_failure_domains: int | None = Field(
        default=None,
        ge=1,
        description="Workloads with two or more replicas spread over at least this many domains.",
    )
    allowed_builders: list[Builder] | None = Field(default=None)
    min_port: int | None = Field(
        default=None, ge=1, le=65535, description="Lowest port a workload may listen on."
    )
    min_volume_redundancy: int | None = Field(
        default=None,
        ge=0,
        description="Every volume tolerates the loss of this many shares (n - k).",
    )


class AdmissionPolicy(NamedDocument):
    """A shipped admission preset."""

    kind: Literal["AdmissionPolicy"]
    rules: AdmissionRules
