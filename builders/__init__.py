"""Deterministic builds: pinned inputs in, a canonical artifact manifest and content-addressed
chunks out (DESIGN.md section 5). Imports `qss`, never `reconciler`.

Errors raised here derive from `BuildError`.
"""


class BuildError(Exception):
    """Base of every error this package raises."""
