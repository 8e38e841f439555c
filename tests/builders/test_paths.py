"""Repository path patterns, as consensus rules and builds use them: `*` and `?` stay inside one
component, `**` spans whole components, and everything else is matched literally and exactly.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builders.paths import matches, matches_any
from tests.strategies import PATH_CHARACTERS, path_components, path_patterns, relative_paths

# (pattern, path, whether it matches, what the case shows)
TABLE = [
    ("*.yaml", "circle.yaml", True, "star within a component"),
    ("*.yaml", "nodes/a.yaml", False, "star never crosses a slash"),
    ("nodes/*", "nodes/a.yaml", True, "star as a whole component"),
    ("nodes/*", "nodes/x/a.yaml", False, "star component is one component"),
    ("*", "a/b", False, "lone star is one component"),
    ("*/*", "a/b", True, "two stars two components"),
    ("*/*", "a/b/c", False, "two stars not three components"),
    ("*", ".hidden", True, "star matches a leading dot"),
    ("a*", "a", True, "star matches nothing"),
    ("?.yaml", "a.yaml", True, "question mark one character"),
    ("?.yaml", "ab.yaml", False, "question mark not two characters"),
    ("?.yaml", ".yaml", False, "question mark not zero characters"),
    ("a?b", "a/b", False, "question mark never a slash"),
    ("**", "a", True, "double star one component"),
    ("**", "a/b/c", True, "double star many components"),
    ("**/c.yaml", "c.yaml", True, "leading double star zero components"),
    ("**/c.yaml", "a/b/c.yaml", True, "leading double star many components"),
    ("**/c.yaml", "a/bc.yaml", False, "leading double star whole components only"),
    ("**/*.py", "x.py", True, "leading double star then star"),
    ("**/*.py", "a/b/x.pyc", False, "suffix still anchored"),
    ("a/**/z", "a/z", True, "middle double star zero components"),
    ("a/**/z", "a/b/c/z", True, "middle double star many components"),
    ("a/**/z", "a/b/c/zz", False, "middle double star last component exact"),
    ("a/**/z", "b/a/z", False, "anchored at the start"),
    ("a/**/**/z", "a/z", True, "two double stars zero components"),
    ("src/**", "src/a", True, "trailing double star one component"),
    ("src/**", "src/a/b/c", True, "trailing double star many components"),
    ("src/**", "srcx/a", False, "trailing double star after a whole component"),
    ("src/**", "src", False, "trailing double star needs a component as in gitignore"),
    ("circle.yaml", "circle.yaml", True, "literal"),
    ("circle.yaml", "circleXyaml", False, "dot is literal"),
    ("v1.2/*", "v1x2/a", False, "dot in a folder is literal"),
    ("a+b", "aab", False, "plus is literal"),
    ("a+b", "a+b", True, "plus matches itself"),
    ("a=b@c-d_e", "a=b@c-d_e", True, "other punctuation matches itself"),
    ("*.yaml", "a.YAML", False, "no case folding in a star pattern"),
    ("Circle.yaml", "circle.yaml", False, "no case folding in a literal"),
    ("circle.yaml", "./circle.yaml", False, "no normalization"),
    ("circle.yaml", "circle.yaml/x", False, "anchored at the end"),
]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [case[:3] for case in TABLE],
    ids=[case[3] for case in TABLE],
)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_matches_any() -> None:
    assert not matches_any([], "circle.yaml")
    assert not matches_any(["nodes/*", "*.yml"], "circle.yaml")
    assert matches_any(["nodes/*", "*.yaml"], "circle.yaml")
    assert matches_any(iter(["nodes/*", "**"]), "circle.yaml")  # any iterable, read once


# -- properties ----------------------------------------------------------------------------------


def reference_match(pattern: list[str], path: list[str]) -> bool:
    """Component by component: `**` takes any number of components (at least one when it ends
    the pattern, as in gitignore); other components match one component like `fnmatchcase`."""
    if not pattern:
        return not path
    head, *rest = pattern
    if head == "**":
        least = 1 if not rest else 0
        return any(reference_match(rest, path[skip:]) for skip in range(least, len(path) + 1))
    return bool(path) and fnmatchcase(path[0], head) and reference_match(rest, path[1:])


@st.composite
def instances(draw: st.DrawFn, pattern: str) -> str:
    """A path the pattern should match: each wildcard replaced by something it stands for."""
    stands_for = {
        "*": st.text(PATH_CHARACTERS, max_size=3),
        "?": st.sampled_from(PATH_CHARACTERS),
    }
    parts: list[str] = []
    for component in pattern.split("/"):
        if component == "**":
            parts.extend(draw(st.lists(path_components, min_size=1, max_size=2)))
        else:
            parts.append("".join(draw(stands_for[c]) if c in stands_for else c for c in component))
    return "/".join(parts)


star_patterns = path_patterns.filter(lambda pattern: "**" not in pattern.split("/"))


@given(st.data(), star_patterns)
def test_instance_of_a_star_pattern_matches_it(data: st.DataObject, pattern: str) -> None:
    path = data.draw(instances(pattern))
    assert path.count("/") == pattern.count("/")
    assert matches(pattern, path)


@given(star_patterns, relative_paths)
def test_star_pattern_never_matches_a_deeper_path(pattern: str, path: str) -> None:
    if path.count("/") > pattern.count("/"):
        assert not matches(pattern, path)


@given(st.data(), star_patterns, path_components)
def test_star_pattern_does_not_match_one_more_component(
    data: st.DataObject, pattern: str, extra: str
) -> None:
    path = data.draw(instances(pattern))
    assert not matches(pattern, f"{path}/{extra}")
    assert not matches(pattern, f"{extra}/{path}")


@given(relative_paths)
def test_double_star_matches_every_path(path: str) -> None:
    assert matches("**", path)


@given(relative_paths, relative_paths)
def test_literal_pattern_matches_exactly_itself(pattern: str, other: str) -> None:
    assert matches(pattern, pattern)
    assert matches(pattern, other) is (pattern == other)
    for variant in {
        pattern.upper(),
        pattern.lower(),
        pattern + "x",
        pattern + "/x",
        "x/" + pattern,
    }:
        assert matches(pattern, variant) is (variant == pattern)


@given(st.data(), path_patterns)
def test_matches_like_a_component_by_component_reference(data: st.DataObject, pattern: str) -> None:
    path = data.draw(instances(pattern) | relative_paths)
    assert matches(pattern, path) is reference_match(pattern.split("/"), path.split("/"))


@given(st.data(), path_patterns)
def test_instance_of_any_pattern_matches_it(data: st.DataObject, pattern: str) -> None:
    assert matches(pattern, data.draw(instances(pattern)))
