"""Quantum Safe Storage: encrypt, erasure-code, disperse and repair objects (DESIGN.md section 6).

Imports neither `builders` nor `reconciler`. Errors raised here derive from `StorageError`
(`qss.errors`). The pure core is `qss.codec` (segments, AES-256-GCM, zfec), `qss.manifest`
and `qss.recipients` (the data key wrapped for named X-Wing keys; the KEM is handed in by the
caller, since qss imports nothing of `reconciler`); `qss.backends` and `qss.store` do the I/O.
"""

from qss.errors import StorageError

__all__ = ["StorageError"]
