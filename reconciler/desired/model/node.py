"""`nodes/<name>.yaml`: a 3Node admitted to the circle, with what it declares it can offer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.secret import XWingPublicKey
from reconciler.desired.model.types import (
    Bytes,
    Cpu,
    LabelKey,
    LabelValue,
    MlDsa65PublicKey,
    Name,
    SshPublicKey,
)


class Gpu(Strict):
    model: str = Field(
        min_length=1, max_length=128, description="As NVML names it, e.g. NVIDIA L4."
    )
    memory: Bytes = Field(description="GPU memory, e.g. 24Gi.")
    uuid: str | None = Field(
        default=None, pattern=r"^GPU-[0-9a-fA-F-]{8,64}$", description="NVML UUID, when pinned."
    )


class Capacity(Strict):
    cpu: Cpu
    memory: Bytes
    disk: Bytes | None = Field(default=None, description="Disk for artifacts and QSS shares.")
    gpus: list[Gpu] = Field(default_factory=list)


class Node(NamedDocument):
    kind: Literal["Node"]
    public_key: SshPublicKey = Field(description="The node agent's identity key.")
    mldsa_public_key: MlDsa65PublicKey | None = Field(
        default=None,
        description="The ML-DSA-65 half of the identity key (circle node keygen --hybrid): "
        "then every record the node signs needs both signatures.",
    )
    kem_public_key: XWingPublicKey | None = Field(
        default=None,
        description="The node's X-Wing (X25519 + ML-KEM-768) key that secrets are sealed to.",
    )
    failure_domain: Name = Field(description="What fails together: a site, rack or power feed.")
    address: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(:[0-9]{1,5})?/?$",
        description="Where the node agent listens, e.g. http://10.0.0.5:7400.",
    )
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    capacity: Capacity
