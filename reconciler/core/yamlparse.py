"""Strict YAML: one document of the YAML 1.2 core schema, with the position of every value.

Built on ruamel.yaml's event parser rather than its constructors, so that nothing beyond plain
data is ever built: anchors and aliases are refused (no billion-laughs), tags other than the
core schema's are refused, duplicate keys are refused, mapping keys must be scalars, nesting is
bounded, and a stream must hold exactly one document. Plain scalars are resolved with the
YAML 1.2 core schema (so `yes`, `on` and `0755` stay what YAML 1.2 says, not what 1.1 said).

Every error names the line and column where it was found (1-based).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.reader import ReaderError

from reconciler.core.problems import START, DocPath, Mark

MAX_DEPTH = 64

_CORE = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_DEC = re.compile(r"[-+]?[0-9]+")
_INT_OCT = re.compile(r"0o[0-7]+")
_INT_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


class YamlError(Exception):
    """The text is not one strict YAML document; `mark` says where."""

    def __init__(self, message: str, mark: Mark) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """Plain data (dict, list, str, int, float, bool, None) and where each part of it stands."""

    value: Any
    value_marks: Mapping[DocPath, Mark]
    key_marks: Mapping[DocPath, Mark]

    def locate(self, path: DocPath, *, at_key: bool = False) -> Mark:
        """The position of `path`, or of the nearest enclosing part that exists."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if at_key and end == len(path) and prefix in self.key_marks:
                return self.key_marks[prefix]
            if prefix in self.value_marks:
                return self.value_marks[prefix]
        return START


def _mark(event: Event) -> Mark:
    return Mark(event.start_mark.line + 1, event.start_mark.column + 1)


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


def resolve_plain(text: str) -> Any:
    """Resolve an untagged plain scalar with the YAML 1.2 core schema."""
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT_DEC.fullmatch(text):
        return int(text, 10)
    if _INT_OCT.fullmatch(text):
        return int(text[2:], 8)
    if _INT_HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def _scalar(event: ScalarEvent) -> Any:
    text: str = event.value
    tag = event.tag
    plain = event.style is None and event.implicit[0]
    if tag is None or tag == "!":
        return resolve_plain(text) if plain else text
    name = _tag_name(tag)
    try:
        match tag.removeprefix(_CORE) if tag.startswith(_CORE) else None:
            case "str":
                return text
            case "null" if _NULL.fullmatch(text):
                return None
            case "bool" if text in _BOOL:
                return _BOOL[text]
            case "int" if isinstance(value := resolve_plain(text), int) and not isinstance(
                value, bool
            ):
                return value
            case "float" if isinstance(
                value := resolve_plain(text), int | float
            ) and not isinstance(value, bool):
                return float(value)
            case "null" | "bool" | "int" | "float":
                raise YamlError(f"{text!r} is not a valid {name} value", _mark(event))
    except ValueError as error:  # pragma: no cover - the regexes above only admit valid numbers
        raise YamlError(f"{text!r} is not a valid {name} value", _mark(event)) from error
    raise YamlError(_refused_tag(name), _mark(event))


def _refused_tag(name: str) -> str:
    return (
        f"YAML tag {name} is not allowed (expected plain data: the YAML 1.2 core schema's "
        "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq)"
    )


def _check_node(event: NodeEvent) -> None:
    if event.anchor is not None:
        raise YamlError(
            f"YAML anchor &{event.anchor} is not allowed (anchors and aliases are refused)",
            _mark(event),
        )
    if isinstance(event, CollectionStartEvent) and event.tag is not None:
        expected = "map" if isinstance(event, MappingStartEvent) else "seq"
        if event.tag != _CORE + expected:
            raise YamlError(_refused_tag(_tag_name(event.tag)), _mark(event))


class _Builder:
    """Folds parser events into plain values, recording positions on the way."""

    def __init__(self) -> None:
        self.value_marks: dict[DocPath, Mark] = {}
        self.key_marks: dict[DocPath, Mark] = {}

    def node(self, events: Any, first: Event, path: DocPath) -> Any:
        if isinstance(first, AliasEvent):
            raise YamlError(
                f"YAML alias *{first.anchor} is not allowed (anchors and aliases are refused)",
                _mark(first),
            )
        if not isinstance(first, NodeEvent):  # pragma: no cover - the parser guarantees this
            raise YamlError("expected a value", _mark(first))
        _check_node(first)
        self.value_marks[path] = _mark(first)
        if len(path) > MAX_DEPTH:
            raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", _mark(first))
        if isinstance(first, ScalarEvent):
            return _scalar(first)
        if isinstance(first, SequenceStartEvent):
            items: list[Any] = []
            for event in events:
                if isinstance(event, SequenceEndEvent):
                    return items
                items.append(self.node(events, event, (*path, len(items))))
        if isinstance(first, MappingStartEvent):
            mapping: dict[str, Any] = {}
            for event in events:
                if isinstance(event, MappingEndEvent):
                    return mapping
                if not isinstance(event, ScalarEvent):
                    raise YamlError("mapping keys must be plain strings", _mark(event))
                _check_node(event)
                key = str(event.value)
                if key in mapping:
                    first_mark = self.key_marks[(*path, key)]
                    raise YamlError(
                        f"duplicate key '{key}' (first defined at line {first_mark.line})",
                        _mark(event),
                    )
                self.key_marks[(*path, key)] = _mark(event)
                mapping[key] = self.node(events, next(events), (*path, key))
        raise YamlError("unexpected end of document", _mark(first))  # pragma: no cover


def parse_yaml(text: str) -> ParsedYaml:
    """Parse `text` as exactly one strict YAML document; raise `YamlError` otherwise.

    An empty stream (nothing but comments) gives the value None.
    """
    builder = _Builder()
    value: Any = None
    seen_document = False
    events = iter(YAML(typ="rt", pure=True).parse(io.StringIO(text)))
    try:
        for event in events:
            if isinstance(event, StreamStartEvent | StreamEndEvent | DocumentEndEvent):
                continue
            if isinstance(event, DocumentStartEvent):
                if seen_document:
                    raise YamlError(
                        "expected a single YAML document, found a second one", _mark(event)
                    )
                if event.version is not None or event.tags:
                    raise YamlError("YAML directives (%YAML, %TAG) are not allowed", _mark(event))
                seen_document = True
                continue
            value = builder.node(events, event, ())
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark is not None else START
        problem = error.problem or "malformed YAML"
        context = f" ({error.context})" if error.context else ""
        raise YamlError(f"invalid YAML: {problem}{context}", where) from None
    except ReaderError as error:
        code = error.character if isinstance(error.character, int) else ord(error.character)
        raise YamlError(
            f"invalid character U+{code:04X} (control characters are not allowed)",
            _offset_mark(text, error.position),
        ) from None
    except YAMLError as error:  # pragma: no cover - every parser error is one of the above
        raise YamlError(f"invalid YAML: {error}", START) from None
    return ParsedYaml(value, builder.value_marks, builder.key_marks)


def _offset_mark(text: str, offset: int) -> Mark:
    before = text[:offset]
    line = before.count("\n") + 1
    return Mark(line, offset - (before.rfind("\n") + 1) + 1)


def offset_mark(data: bytes, offset: int) -> Mark:
    """The line and column of byte `offset` in `data` (columns count bytes)."""
    before = data[:offset]
    return Mark(before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1)
