"""The errors of materialization, in a module of their own so that the fetching
(`builders.swarm`), reuse and writing modules can all raise them; `builders.materialize`
re-exports them, and callers import them from there.

    MaterializeError        materialization failed; the previous `current` is untouched
     ├── ChunkUnavailable   no source has a chunk that hashes to its name (or not in time)
     └── TreeMismatch       a tree on disk differs from its manifest
"""

from __future__ import annotations

from builders import BuildError


class MaterializeError(BuildError):
    """An artifact could not be materialized; nothing outside `.staging-*` was changed."""


class ChunkUnavailable(MaterializeError):
    """No source could supply a chunk whose bytes hash to its name."""


class TreeMismatch(MaterializeError):
    """A materialized tree differs from its manifest (content, mode, type or extra entries)."""
