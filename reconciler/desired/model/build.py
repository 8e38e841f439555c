"""`builds/<name>.yaml`: how an artifact is built from pinned inputs, and its locked digest."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field

from reconciler.desired.model.base import NamedDocument, Strict
from reconciler.desired.model.types import Bytes, Digest, PathPattern, RelPath, Sha256Hex


class BuilderKind(enum.StrEnum):
    ARCHIVE = "archive"
    PYTHON_APP = "python-app"
    MODEL = "model"


# Enums arrive as their YAML strings; strict mode would only take enum instances.
Builder = Annotated[BuilderKind, Field(strict=False)]


class PinnedInput(Strict):
    """A file the build reads besides its source, pinned by content."""

    path: RelPath
    sha256: Sha256Hex


class PythonApp(Strict):
    requirements: RelPath = Field(description="Hash-locked requirements (pip --require-hashes).")
    wheelhouse: RelPath | None = Field(default=None, description="Local folder of wheels.")
    entrypoint: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$", description="module[:func]"
    )


class Chunking(Strict):
    """Content-defined chunking (FastCDC) sizes for large files."""

    min: Bytes = 256 * 1024
    avg: Bytes = 1024 * 1024
    max: Bytes = 4 * 1024 * 1024


class Build(NamedDocument):
    kind: Literal["Build"]
    builder: Builder
    source: RelPath = Field(description="Folder in this repository the build reads.")
    include: list[PathPattern] = Field(default_factory=lambda: ["**"])
    exclude: list[PathPattern] = Field(default_factory=list)
    inputs: list[PinnedInput] = Field(default_factory=list)
    python: PythonApp | None = Field(default=None, description="Options of the python-app builder.")
    chunking: Chunking | None = Field(default=None, description="Options of the model builder.")
    prefetch: list[PathPattern] = Field(
        default_factory=list, description="Files a node fetches first, to start sooner."
    )
    allow_symlinks: bool = False
    digest: Digest | None = Field(
        default=None, description="The artifact id this build must produce (the lock)."
    )
