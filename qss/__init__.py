"""Quantum Safe Storage: encrypt, erasure-code, disperse and repair objects (DESIGN.md section 6).

Imports neither `builders` nor `reconciler`. Errors raised here derive from `StorageError`.
"""


class StorageError(Exception):
    """Base of every error this package raises."""
