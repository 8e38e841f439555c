"""Errors of the qss package.

StorageError
├── InvalidParameters     k, n, block numbers or lengths that zfec must never see
├── ManifestError         a manifest that is malformed, or does not match its object id
├── IntegrityError        a share or segment that fails its hash or authentication
│   └── DecryptionError   AES-GCM refused: wrong key, or tampered ciphertext
│       └── KeyMismatch   a key opened (by storage key or entry) that is not the one the
│                         content's keyCommitment names: forged
├── RecipientError        the data key cannot be opened by a recipient (`qss.recipients`)
│   ├── NotARecipient     the manifest holds no entry for this recipient's name
│   ├── WrongRecipientKey the entry of this name was made for another KEM key (rotated)
│   └── EntryBroken       the entry does not authenticate: tampered, or moved from another
│                         object or recipient
├── NotEnoughShares       fewer than k healthy shares of a segment can be had
├── ObjectNotFound        no backend holds a valid manifest of the object
├── PlacementError        the configured spread over backends cannot be reached
├── BackendError          a backend failed or holds no such blob
│   ├── BlobNotFound      the key is not there
│   ├── InvalidBlob       what the key holds cannot be the blob: over the size it may have, or
│   │                     not a regular file; refused unread
│   └── BackendUnavailable   the backend cannot be reached, or did not answer in time
└── TransferError         a network exchange failed (`qss.http_client`, `qss.backends.resp`);
    │                     their callers turn it into their own errors
    ├── ReplyTooLarge     the peer announced or sent more than the limit; refused unread
    ├── ErrorReply        a Redis-protocol server answered a command with an error
    └── TransferUnavailable   refused, reset or closed connection
        └── TransferTimedOut  no complete answer before the exchange's deadline
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


class KeyMismatch(DecryptionError):
    pass


class RecipientError(StorageError):
    pass


class NotARecipient(RecipientError):
    pass


class WrongRecipientKey(RecipientError):
    pass


class EntryBroken(RecipientError):
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


class InvalidBlob(BackendError):
    pass


class BackendUnavailable(BackendError):
    pass


class TransferError(StorageError):
    pass


class ReplyTooLarge(TransferError):
    pass


class ErrorReply(TransferError):
    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command
        self.message = message


class TransferUnavailable(TransferError):
    pass


class TransferTimedOut(TransferUnavailable):
    pass
