"""Quantum Safe Storage: encrypt, erasure-code, disperse and repair objects (DESIGN.md section 6).

Imports neither `builders` nor `reconciler`. Errors raised here derive from `StorageError`
(`qss.errors`). The pure core is `qss.codec` (segments, AES-256-GCM, zfec) and
`qss.manifest`; `qss.backends` and `qss.store` do the I/O.
"""

from qss.errors import StorageError

__all__ = ["StorageError"]
