"""Pydantic models of every document kind of a circle repository (DESIGN.md section 3).

Pure data: no I/O. `KINDS` maps each `kind:` to its model and the folder it lives in.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.desired.model.admission import AdmissionPolicy, AdmissionRules
from reconciler.desired.model.base import API_VERSION, Document, NamedDocument
from reconciler.desired.model.build import Build, BuilderKind
from reconciler.desired.model.circle import Circle, Member, Rule
from reconciler.desired.model.node import Node
from reconciler.desired.model.presets import ConsensusTemplate
from reconciler.desired.model.secret import Secret
from reconciler.desired.model.volume import Volume
from reconciler.desired.model.workload import Workload


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    model: type[Document]
    folder: str | None  # None: circle.yaml at the top, or a shipped preset
    schema: str  # file name under schemas/


REPOSITORY_KINDS: tuple[Kind, ...] = (
    Kind("Circle", Circle, None, "circle.json"),
    Kind("Node", Node, "nodes", "node.json"),
    Kind("Workload", Workload, "workloads", "workload.json"),
    Kind("Build", Build, "builds", "build.json"),
    Kind("Volume", Volume, "volumes", "volume.json"),
    Kind("Secret", Secret, "secrets", "secret.json"),
)
PRESET_KINDS: tuple[Kind, ...] = (
    Kind("ConsensusTemplate", ConsensusTemplate, "consensus", "consensus-template.json"),
    Kind("AdmissionPolicy", AdmissionPolicy, "admission", "admission-policy.json"),
)
KINDS: dict[str, Kind] = {kind.name: kind for kind in REPOSITORY_KINDS + PRESET_KINDS}

__all__ = [
    "API_VERSION",
    "KINDS",
    "PRESET_KINDS",
    "REPOSITORY_KINDS",
    "AdmissionPolicy",
    "AdmissionRules",
    "Build",
    "BuilderKind",
    "Circle",
    "ConsensusTemplate",
    "Document",
    "Kind",
    "Member",
    "NamedDocument",
    "Node",
    "Rule",
    "Secret",
    "Volume",
    "Workload",
]
