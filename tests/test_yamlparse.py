"""Strict YAML: the YAML 1.2 core schema, positions, and the refusals that keep parsing safe."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from reconciler.core.problems import Mark
from reconciler.core.yamlparse import YamlError, parse_yaml


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: yes", "yes"),
        ("a: on", "on"),
        ("a: true", True),
        ("a: FALSE", False),
        ("a: ~", None),
        ("a:", None),
        ("a: null", None),
        ("a: 0755", 755),
        ("a: 0o17", 15),
        ("a: 0x1F", 31),
        ("a: -12", -12),
        ("a: 1.5", 1.5),
        ("a: 1e3", 1000.0),
        ("a: .inf", math.inf),
        ("a: -.Inf", -math.inf),
        ("a: 1_000", "1_000"),
        ("a: 12:30", "12:30"),
        ("a: '1'", "1"),
        ('a: "true"', "true"),
        ("a: !!str 12", "12"),
        ("a: !!float 1", 1.0),
        ("a: !!int '7'", 7),
        ("a: |\n  x\n  y\n", "x\ny\n"),
    ],
)
def test_core_schema_resolution(text: str, value: Any) -> None:
    assert parse_yaml(text).value == {"a": value}


def test_nan_resolves() -> None:
    assert math.isnan(parse_yaml("a: .nan").value["a"])


def test_positions_of_values_and_keys() -> None:
    parsed = parse_yaml("top:\n  list:\n    - first\n    - {k: v}\n")

    assert parsed.value_marks[("top", "list", 1, "k")] == Mark(4, 11)
    assert parsed.key_marks[("top", "list")] == Mark(2, 3)
    assert parsed.locate(("top", "list", 0)) == Mark(3, 7)
    # A path that does not exist is placed at its nearest existing parent.
    assert parsed.locate(("top", "list", 5, "x")) == Mark(3, 5)
    assert parsed.locate(("top", "list"), at_key=True) == Mark(2, 3)


@pytest.mark.parametrize(
    ("text", "mark", "message"),
    [
        ("a: &x 1\n", Mark(1, 4), "YAML anchor &x is not allowed"),
        ("a: [1]\nb: *x\n", Mark(2, 4), "YAML alias *x is not allowed"),
        ("a: 1\nb:\n  c: 1\n  c: 2\n", Mark(4, 3), "duplicate key 'c' (first defined at line 3)"),
        ("? [a]\n: 1\n", Mark(1, 3), "mapping keys must be plain strings"),
        ("a: !!int x\n", Mark(1, 4), "'x' is not a valid !!int value"),
        ("a: !!bool maybe\n", Mark(1, 4), "'maybe' is not a valid !!bool value"),
        ("a: !local 1\n", Mark(1, 4), "YAML tag !local is not allowed"),
        ("a: !!set {x}\n", Mark(1, 4), "YAML tag !!set is not allowed"),
        ("%TAG !e! tag:e.com:\n---\na: !e!x 1\n", Mark(2, 1), "YAML directives"),
        ("a: 1\n---\nb: 2\n", Mark(2, 1), "expected a single YAML document"),
        ("a: 'open\n", Mark(2, 1), "invalid YAML: found unexpected end of stream"),
    ],
    ids=[
        "anchor",
        "alias",
        "duplicate-nested-key",
        "complex-key",
        "bad-int",
        "bad-bool",
        "local-tag",
        "set-tag",
        "tag-directive",
        "second-document",
        "unterminated-quote",
    ],
)
def test_refusals_name_the_place(text: str, mark: Mark, message: str) -> None:
    with pytest.raises(YamlError) as refused:
        parse_yaml(text)
    assert refused.value.mark == mark
    assert message in refused.value.message


def test_billion_laughs_is_refused_at_the_first_anchor_without_expanding() -> None:
    lol = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lol.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    started = time.perf_counter()
    with pytest.raises(YamlError, match="YAML anchor &a is not allowed") as refused:
        parse_yaml("\n".join(lol))
    assert refused.value.mark == Mark(1, 4)
    # Refusal happens while scanning, long before any expansion could cost anything.
    assert time.perf_counter() - started < 5


def test_deep_nesting_is_bounded() -> None:
    with pytest.raises(YamlError, match="nesting deeper than 64 levels"):
        parse_yaml("a: " + "[" * 100 + "]" * 100)


def test_empty_stream_is_none() -> None:
    assert parse_yaml("# only a comment\n").value is None
