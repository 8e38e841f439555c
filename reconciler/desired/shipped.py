"""The data this software ships: policy presets and JSON Schemas.

Inside an installed wheel they live in `reconciler/_shipped/`; in a source checkout they are
the top-level `policies/` and `schemas/` folders. Either way they are read only from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from reconciler.desired.documents import MAX_DOCUMENT_BYTES, Loaded, parse_document
from reconciler.desired.model import PRESET_KINDS, AdmissionPolicy, ConsensusTemplate, NamedDocument
from reconciler.errors import InputError
from reconciler.files import read_bounded

_PACKAGE = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path:
    """The folder of shipped data `name` (`policies`, `schemas`, `example-circle-repo`)."""
    for candidate in (_PACKAGE / "_shipped" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise InputError(f"shipped data folder {name!r} not found next to {_PACKAGE}; reinstall")


@dataclass(frozen=True)
class Presets:
    consensus: dict[str, Loaded[ConsensusTemplate]]
    admission: dict[str, Loaded[AdmissionPolicy]]


@cache
def load_presets() -> Presets:
    """Every shipped preset, validated like any circle document."""
    root = shipped_dir("policies")
    found: dict[str, dict[str, Loaded[Any]]] = {}
    for kind in PRESET_KINDS:
        assert kind.folder is not None
        presets: dict[str, Loaded[Any]] = {}
        for path in sorted((root / kind.folder).glob("*.yaml")):
            shown = f"policies/{kind.folder}/{path.name}"
            data = read_bounded(path, MAX_DOCUMENT_BYTES)
            loaded = cast(Loaded[NamedDocument], parse_document(data, shown, [kind]))
            name = loaded.document.name
            if name != path.stem:
                raise InputError(f"{shown}: preset name {name!r} does not match its file name")
            presets[name] = cast(Loaded[Any], loaded)
        found[kind.name] = presets
    return Presets(
        consensus=cast(dict[str, Loaded[ConsensusTemplate]], found["ConsensusTemplate"]),
        admission=cast(dict[str, Loaded[AdmissionPolicy]], found["AdmissionPolicy"]),
    )
