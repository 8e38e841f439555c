"""The base of every circle document model: strict, frozen, camelCase in YAML.

Strict means what a user of a security tool expects: unknown fields, wrong types and coercions
("2" for 2, 1 for true) are errors, never guesses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.desired.model.types import Name

API_VERSION = "circle/v1"


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=False,
        use_enum_values=False,
        hide_input_in_errors=False,
        # A model's validator is built when it first validates, not at import: a command pays
        # only for the kinds it reads (`circle verify` reads circle.yaml alone).
        defer_build=True,
    )


class Document(Strict):
    """Fields every document has. Subclasses narrow `kind` to their own literal."""

    api_version: Literal["circle/v1"] = Field(
        alias="apiVersion", description="Document format version; always circle/v1."
    )
    kind: str = Field(description="What this document describes.")


class NamedDocument(Document):
    """A document that lives in `<kind folder>/<name>.yaml`."""

    name: Name = Field(description="Unique name within its kind; equals the file name.")
    description: str | None = Field(default=None, description="Free text for humans.")
