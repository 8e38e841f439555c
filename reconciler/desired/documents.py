"""From bytes to a validated circle document, or to every problem found on the way.

    bytes --size, UTF-8--> text --strict YAML--> plain data + positions
          --apiVersion, kind--> model --field checks--> Loaded document

Each step names the file, line and column of what it refuses and what it expected. Model
validation reports all field errors at once; the semantic checks of `reconciler.desired.checks`
run on the model and are located the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from reconciler.desired import checks
from reconciler.desired.model import API_VERSION, KINDS, Document, Kind
from reconciler.desired.model.types import describe, quote
from reconciler.desired.problems import (
    START,
    DocumentError,
    Finding,
    Mark,
    Problem,
    Severity,
    Stage,
)
from reconciler.desired.yamlparse import ParsedYaml, YamlError, offset_mark, parse_yaml

MAX_DOCUMENT_BYTES = 1024 * 1024

D = TypeVar("D", bound=Document)


@dataclass(frozen=True, slots=True)
class Loaded(Generic[D]):
    """A valid document, the file it came from and where each of its values stands."""

    file: str
    document: D
    source: ParsedYaml
    sha256: str  # of the exact bytes read: what the Human Chain pins for circle.yaml
    warnings: tuple[Problem, ...] = ()  # of the per-document checks

    def problem(self, finding: Finding, stage: Stage = Stage.REPOSITORY) -> Problem:
        mark = self.source.locate(finding.path, at_key=finding.at_key)
        return Problem(self.file, mark, finding.message, finding.code, finding.severity, stage)


def _error(file: str, mark: Mark, message: str, code: str) -> DocumentError:
    return DocumentError([Problem(file, mark, message, code)])


def decode(data: bytes, file: str) -> str:
    """Check size and encoding; the text without a UTF-8 byte-order mark."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _error(
            file,
            START,
            f"document is larger than the limit of {MAX_DOCUMENT_BYTES} bytes (1 MiB)",
            "document.too-large",
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise _error(
            file,
            offset_mark(data, error.start),
            f"invalid UTF-8 (byte 0x{data[error.start]:02x}); documents are UTF-8 text",
            "document.encoding",
        ) from None


def parse_document(data: bytes, file: str, expected: Sequence[Kind]) -> Loaded[Document]:
    """Parse and validate one document whose kind must be one of `expected`.

    Raises DocumentError listing every problem found (at least one).
    """
    try:
        source = parse_yaml(decode(data, file))
    except YamlError as error:
        raise _error(file, error.mark, error.message, "yaml") from None
    kind = _kind_of(source, file, expected)
    try:
        document = kind.model.model_validate(source.value)
    except ValidationError as error:
        raise DocumentError(_validation_problems(error, source, file, kind.model)) from None
    loaded = Loaded(file, document, source, hashlib.sha256(data).hexdigest())
    problems = [loaded.problem(f, Stage.DOCUMENT) for f in checks.check_document(document)]
    errors = [problem for problem in problems if problem.severity is Severity.ERROR]
    if errors:
        raise DocumentError(errors)
    return dataclasses.replace(loaded, warnings=tuple(problems))


def _kind_of(source: ParsedYaml, file: str, expected: Sequence[Kind]) -> Kind:
    value = source.value
    names = ", ".join(sorted(kind.name for kind in expected))
    if not isinstance(value, dict):
        found = "an empty document" if value is None else describe(value)
        raise _error(
            file,
            source.locate(()),
            f"expected a mapping with apiVersion and kind ({names}), found {found}",
            "document.not-a-mapping",
        )
    if "apiVersion" not in value:
        raise _error(
            file,
            source.locate(()),
            f"missing required field 'apiVersion' (expected {API_VERSION})",
            "document.api-version",
        )
    if value["apiVersion"] != API_VERSION:
        raise _error(
            file,
            source.locate(("apiVersion",)),
            f"unsupported apiVersion {quote(value['apiVersion'])}; expected {API_VERSION}",
            "document.api-version",
        )
    if "kind" not in value:
        raise _error(
            file,
            source.locate(()),
            f"missing required field 'kind' (expected {names})",
            "document.kind",
        )
    name = value["kind"]
    kind = next((kind for kind in expected if kind.name == name), None)
    if kind is None:
        where = source.locate(("kind",))
        if isinstance(name, str) and name in KINDS:
            other = KINDS[name]
            folder = f"{other.folder}/" if other.folder else "the top of the repository"
            raise _error(
                file,
                where,
                f"kind {name} belongs in {folder}; expected {names} here",
                "document.kind",
            )
        raise _error(file, where, f"unknown kind {quote(name)}; expected {names}", "document.kind")
    return kind


# -- pydantic errors, in words -------------------------------------------------------------------

_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "none_required": "expected null",
}


def _message(error: Any, field: str, allowed: list[str] | None) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    match kind:
        case "missing":
            return f"missing required field '{field}'"
        case "extra_forbidden":
            hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            return f"unknown field '{field}'{hint}"
        case "value_error" | "assertion_error":
            return str(ctx.get("error", error["msg"]))
        case "literal_error" | "enum":
            return f"expected {ctx['expected']}, found {describe(value)}"
        case "union_tag_invalid":
            return (
                f"unknown {ctx['discriminator'].strip(chr(39))} {quote(ctx['tag'])}; "
                f"expected {ctx['expected_tags']}"
            )
        case "union_tag_not_found":
            return f"missing required field {ctx['discriminator']}"
        case "string_pattern_mismatch":
            return f"{describe(value)} does not match the expected form {ctx['pattern']}"
        case "string_too_short":
            return f"expected at least {ctx['min_length']} characters, found {describe(value)}"
        case "string_too_long":
            return f"expected at most {ctx['max_length']} characters"
        case "too_short":
            return f"expected at least {ctx['min_length']} item(s), found {ctx['actual_length']}"
        case "too_long":
            return f"expected at most {ctx['max_length']} item(s), found {ctx['actual_length']}"
        case "greater_than_equal":
            return f"expected a value >= {ctx['ge']}, found {describe(value)}"
        case "greater_than":
            return f"expected a value > {ctx['gt']}, found {describe(value)}"
        case "less_than_equal":
            return f"expected a value <= {ctx['le']}, found {describe(value)}"
        case "less_than":
            return f"expected a value < {ctx['lt']}, found {describe(value)}"
    if kind in _EXPECTED:
        return f"{_EXPECTED[kind]}, found {describe(value)}"
    return f"{str(error['msg'])[0].lower()}{str(error['msg'])[1:]}"


def _data_path(value: Any, loc: Iterable[int | str]) -> tuple[tuple[str | int, ...], bool]:
    """Follow a pydantic `loc` through the data; drop the segments pydantic adds itself
    (discriminator tags, union branches). The flag says whether the last segment was found."""
    path: list[str | int] = []
    current = value
    found = True
    for segment in loc:
        found = (isinstance(current, dict) and segment in current) or (
            isinstance(current, list) and isinstance(segment, int) and 0 <= segment < len(current)
        )
        if found:
            path.append(segment)
            current = current[segment]
    return tuple(path), found


def _validation_problems(
    error: ValidationError, source: ParsedYaml, file: str, model: type[BaseModel]
) -> list[Problem]:
    by_place: dict[tuple[Mark, str], Problem] = {}
    for item in error.errors():
        loc = item["loc"]
        path, found = _data_path(source.value, loc)
        field = str(loc[-1]) if loc else ""
        at_key = item["type"] == "extra_forbidden" and found
        mark = source.locate(path, at_key=at_key)
        allowed = _fields_at(model, loc[:-1]) if item["type"] == "extra_forbidden" else None
        message = _message(item, field, allowed)
        if item["type"] == "missing" or (not found and item["type"] != "extra_forbidden"):
            message = _in_context(path, message)
        problem = Problem(file, mark, message, f"schema.{item['type']}")
        by_place.setdefault((mark, message), problem)
    return sorted(by_place.values(), key=lambda p: (p.mark.line, p.mark.column, p.message))


def _in_context(path: tuple[str | int, ...], message: str) -> str:
    """Name the enclosing field when the problem is pinned to its start (missing fields)."""
    names = [str(part) if isinstance(part, str) else f"[{part}]" for part in path]
    where = ".".join(names).replace(".[", "[")
    return f"{message} in {where}" if where else message


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str] | None:
    """The field names (as spelled in YAML) of the model found at `loc`, for "unknown field"."""
    current: Any = model
    for segment in loc:
        current = _step(current, segment)
        if current is None:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or name for name, field in current.model_fields.items()]
    return None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return _unwrap(options[0])
    return annotation


def _step(annotation: Any, segment: int | str) -> Any:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if segment in (name, field.alias):
                return field.annotation
        return None
    if origin is list and isinstance(segment, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin in (typing.Union, types.UnionType):
        # A discriminated union: pydantic puts the tag in `loc`; pick the branch it names.
        for option in typing.get_args(annotation):
            option = _unwrap(option)
            if isinstance(option, type) and issubclass(option, BaseModel):
                tag = option.model_fields.get("type")
                if tag is not None and segment in typing.get_args(tag.annotation):
                    return option
    return None
