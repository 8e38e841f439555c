"""The values the Human Chain's verification takes and gives: the trust anchor, a node's state,
a proposed step's facts and the approvals filed for it. Pure data, read by the Git shell and
judged by `reconciler.chain.verify`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from builders import sshsig
from reconciler.chain.mldsa import MlDsaSignature


@dataclass(frozen=True, slots=True)
class Introduction:
    """A node's trust anchor: the circle id, its first commit and the sha256 of its policy."""

    circle: str
    commit: str
    policy_sha256: str


@dataclass(frozen=True, slots=True)
class NodeState:
    """Where a node stands on the chain: the applied commit, its seq and policy's sha256."""

    commit: str
    seq: int
    policy_sha256: str


@dataclass(frozen=True, slots=True)
class Header:
    """What one proposed step is, from its commit objects alone (no tree read, no ancestry
    walked): enough to place it on the chain and to check who vouches for it (rules 1 to 3)."""

    ref: str
    seq: int
    from_commit: str | None
    to_commit: str
    to_tree: str
    policy_in_force: bytes  # circle.yaml at `from` (at `to` for seq 1)


@dataclass(frozen=True, slots=True)
class Transition:
    """The facts of one proposed step, trees included, as the Git shell reads them."""

    ref: str
    seq: int
    from_commit: str | None
    to_commit: str
    to_tree: str
    tree_sha256: str
    changed: tuple[str, ...]
    descends: bool  # `to` descends from `from` (or, for seq 1, is the introduction's commit)
    policy_from: bytes | None  # circle.yaml at `from` (None for seq 1)
    policy_to: bytes  # circle.yaml at `to`
    links: tuple[str, ...] = ()  # symbolic links in the `to` tree
    submodules: tuple[str, ...] = ()  # submodules in the `to` tree

    @property
    def header(self) -> Header:
        return Header(
            self.ref, self.seq, self.from_commit, self.to_commit, self.to_tree,
            self.policy_to if self.policy_from is None else self.policy_from,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MainFacts:
    """Where a source's main stands against a node's trust anchor and state (ancestry, as Git
    reads it), for the direction rule of `verify`."""

    target: str  # the commit main names
    from_introduction: bool  # main is, or descends from, the introduction's commit
    behind: bool  # the applied commit descends from main (main was rolled back)
    ahead: bool  # main descends from the applied commit


@dataclass(frozen=True, slots=True)
class Evidence:
    """One approval filed for a candidate: the exact statement bytes and their signature."""

    statement: bytes
    signature: str
    parsed: sshsig.SshSignature | None = None  # `sshsig.parse(signature)`, when already done
    envelope: MlDsaSignature | None = None  # `mldsa.parse(signature)`, when already done


SshCheck = Callable[[bytes, sshsig.SshSignature], None]
"""Raises SignatureError unless the parsed SSHSIG signs the statement bytes (for the approval
namespace) with the key it carries. The default checks at once; a walk may check ahead."""

MlDsaCheck = Callable[[bytes, MlDsaSignature], None]
"""Raises MlDsaError unless the parsed ML-DSA envelope signs the statement bytes (the approval
namespace as its context) with the key it carries; as `SshCheck`, a walk may check ahead."""


class IdentityVerifier(Protocol):
    """Verifies a keyless (sigstore) signature over `message` offline, against a pinned trust
    root, and returns the certificate's (identity, issuer); raises CheckFailed otherwise."""

    def identify(self, message: bytes, bundle: str) -> tuple[str, str]: ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
