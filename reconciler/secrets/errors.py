"""The refusals of sealed secrets (the tree is drawn in `reconciler.secrets`)."""

from __future__ import annotations

from reconciler.errors import CheckFailed, InputError


class SecretError(CheckFailed):
    """A sealed secret, or a key, that was refused."""


class KemError(SecretError):
    """A key line, key or encapsulation that is not X-Wing's."""


class NotARecipient(SecretError):
    """The secret holds no sealed copy of its data key for this node."""


class WrongRecipient(SecretError):
    """The node's sealed copy was made for another of its KEM keys (the key was rotated)."""


class SealBroken(SecretError):
    """A ciphertext, binding or wrapped key that does not authenticate: tampered or mixed."""


class NotReleased(SecretError):
    """The secret may not be released here: its workload or artifact digest is not bound."""


class KemKeyError(InputError):
    """A node's KEM key file that cannot be made or read."""
