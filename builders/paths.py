"""Repository path patterns, as consensus rules and builds use them.

`*` matches any characters except `/`, `?` one character except `/`, and a whole component
`**` matches any number of components: `workloads/**` matches `workloads/a.yaml` and
`workloads/x/y.yaml` (everything inside, not a file named `workloads`), `src/**/x.py` matches
`src/x.py` too (zero components), and `*.yaml` matches `circle.yaml` but not `nodes/a.yaml`.
Unlike `fnmatch`, `*` never crosses `/`, and matching is exact (no case folding, no
normalization): the paths compared are Git tree paths.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    components = pattern.split("/")
    for index, component in enumerate(components):
        last = index == len(components) - 1
        if component == "**":
            # Zero or more whole components, with their separators.
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        piece = "".join(
            "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
            for char in component
        )
        parts.append(piece if last else piece + "/")
    return re.compile("".join(parts))


def matches(pattern: str, path: str) -> bool:
    """Whether the repository path `path` matches `pattern`."""
    return compile_pattern(pattern).fullmatch(path) is not None


def matches_any(patterns: Iterable[str], path: str) -> bool:
    return any(matches(pattern, path) for pattern in patterns)
