"""`volumes/<name>.yaml`: a Quantum Safe Storage volume: k-of-n shares over chosen backends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.types import Bytes, Name

ADMITTED_NODES = "admitted-nodes"  # `recipients:` of a volume shared with every admitted node
BACKEND_URL = (
    r"^(dir:\S+|redis://[^\s/]+(:[0-9]{1,5})?(/[0-9]{1,2})?|https?://[^\s/]+(:[0-9]{1,5})?(/\S*)?)$"
)


class Backend(Strict):
    name: Name
    url: str = Field(
        pattern=BACKEND_URL,
        description="dir:/path, redis://host:port/db (0-db speaks it) or http(s)://node-agent",
    )
    node: Name | None = Field(default=None, description="The node holding this backend.")
    failure_domain: Name | None = Field(
        default=None, description="What fails together; defaults to the node's failure domain."
    )


class VolumeObject(Strict):
    name: str = Field(min_length=1, max_length=255, description="Object name (never a path).")
    id: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="The stored object's QSS id."
    )
    build: Name | None = Field(default=None, description="The build whose artifact it stores.")
    prefetch: bool = Field(default=False, description="Nodes fetch it before the workload starts.")


class Volume(NamedDocument):
    kind: Literal["Volume"]
    k: int = Field(ge=1, le=256, description="Shares needed to read.")
    n: int = Field(ge=1, le=256, description="Shares written.")
    segment_size: Bytes = Field(default=4 * 1024 * 1024, description="Plaintext per segment.")
    backends: list[Backend] = Field(min_length=1)
    objects: list[VolumeObject] = Field(default_factory=list)
    recipients: list[Name] | Literal["admitted-nodes"] = Field(
        default_factory=list,
        description="The nodes its objects are shared with (their kemPublicKey opens the data "
        "key, so they read it without the storage key): node names, or admitted-nodes for "
        "every admitted node.",
    )

    def recipient_nodes(self, admitted: Iterable[str]) -> list[str]:
        """The node names the objects are shared with, given the admitted nodes' names."""
        if self.recipients == ADMITTED_NODES:
            return sorted(admitted)
        return sorted(set(self.recipients))
