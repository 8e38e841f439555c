"""Errors of the state store. Every message names the store (its URL) and what went wrong.

StoreError              (a ReconcilerError: the CLI prints its one line, exits 1)
├── BadStoreUrl         the store URL is not one `open_store` knows (also an InputError:
│                       exit 2)
├── StoreUnavailable    the store cannot be reached or opened, or gave no complete answer
│                       within the call's deadline; a write that ends so may or may not
│                       have been applied (as with any etcd client)
├── BadRequest          refused before or by the store: empty or oversized key or value,
│                       a key twice in one transaction branch, too many operations, a
│                       TTL below one second
├── InvalidReply        the store answered something that cannot be a valid answer:
│                       malformed, over the size cap, or (sqlite) a file that is not a
│                       store of this schema. Stores are untrusted (DESIGN.md section 1)
├── Compacted           the revision asked for was compacted away; carries
│                       `compact_revision`: re-list at a current revision R, then watch
│                       from R + 1
├── FutureRevision      the revision asked for is ahead of the store
└── LeaseNotFound       no such lease: never granted, expired or revoked (etcd cannot
                        tell these apart, so neither does the protocol)
"""

from __future__ import annotations

from reconciler.errors import InputError, ReconcilerError


class StoreError(ReconcilerError):
    """Base of every error of `reconciler.store`."""


class BadStoreUrl(StoreError, InputError):
    pass


class StoreUnavailable(StoreError):
    pass


class BadRequest(StoreError):
    pass


class InvalidReply(StoreError):
    pass


class Compacted(StoreError):
    """History before `compact_revision` is gone: a read at an older revision, or a watch
    from `compact_revision` or earlier, cannot be served completely."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class FutureRevision(StoreError):
    pass


class LeaseNotFound(StoreError):
    pass
