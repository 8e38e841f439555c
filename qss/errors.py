"""Errors of the qss package.

StorageError
├── InvalidParameters     k, n, block numbers or lengths that zfec must never see
├── ManifestError         a manifest that is malformed, or does not match its object id
├── IntegrityError        a share or segment that fails its hash or authentication
│   └── DecryptionError   AES-GCM refused: wrong key, or tampered ciphertext
├── NotEnoughShares       fewer than k healthy shares of a segment can be had
├── PlacementError        the configured spread over backends cannot be reached
└── BackendError          a backend failed or holds no such blob
    ├── BlobNotFound      the key is not there
    └── BackendUnavailable   the backend cannot be reached
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error this package raises."""


class InvalidParameters(StorageError):
    pass


class ManifestError(StorageError):
    pass


class IntegrityError(StorageError):
    pass


class DecryptionError(IntegrityError):
    pass


class NotEnoughShares(StorageError):
    pass


class ObjectNotFound(StorageError):
    pass


class PlacementError(StorageError):
    pass


class BackendError(StorageError):
    pass


class BlobNotFound(BackendError):
    pass


class BackendUnavailable(BackendError):
    pass
