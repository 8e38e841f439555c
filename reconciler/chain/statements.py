"""Approval statements: what one owner signs to approve one transition of the chain. Pure.

    {"type": "circle-approval/1", "circle": ID, "introduction": FIRST COMMIT, "ref": REF,
     "seq": N, "from": COMMIT | null, "to": COMMIT, "toTree": TREE,
     "treeSha256": sha256 manifest of the `to` tree, "policySha256": sha256 of circle.yaml at
     `from` (at `to` for seq 1), "issuedAt": UNIX SECONDS, "expiresAt": UNIX SECONDS}

The bytes are RFC 8785 canonical JSON and are stored and verified exactly as signed (SSHSIG,
namespace `circle-approval-v1`). Every field binds the signature to one transition of one
circle: a statement cannot be replayed for another circle, ref, sequence number, parent, tree
or policy, or after it expires.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

from reconciler.errors import CheckFailed

TYPE = "circle-approval/1"
NAMESPACE = "circle-approval-v1"
MAX_STATEMENT_BYTES = 4096
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REF = re.compile(r"refs/[A-Za-z0-9._/-]{1,200}")
_CIRCLE = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_FIELDS = {
    "type", "circle", "introduction", "ref", "seq", "from", "to", "toTree",
    "treeSha256", "policySha256", "issuedAt", "expiresAt",
}  # fmt: skip


class StatementError(CheckFailed):
    """A statement that is malformed, or does not approve what it is offered for."""


@dataclass(frozen=True, slots=True)
class Approval:
    circle: str
    introduction: str
    ref: str
    seq: int
    from_commit: str | None
    to_commit: str
    to_tree: str
    tree_sha256: str
    policy_sha256: str
    issued_at: int
    expires_at: int

    def encode(self) -> bytes:
        return rfc8785.dumps(
            {
                "type": TYPE,
                "circle": self.circle,
                "introduction": self.introduction,
                "ref": self.ref,
                "seq": self.seq,
                "from": self.from_commit,
                "to": self.to_commit,
                "toTree": self.to_tree,
                "treeSha256": self.tree_sha256,
                "policySha256": self.policy_sha256,
                "issuedAt": self.issued_at,
                "expiresAt": self.expires_at,
            }
        )

    def check_current(self, now: int) -> None:
        """Refuse an approval that is not yet valid or has expired at `now` (unix seconds)."""
        if now < self.issued_at:
            raise StatementError(
                f"approval of seq {self.seq} is issued in the future ({self.issued_at} > {now})"
            )
        if now >= self.expires_at:
            raise StatementError(
                f"approval of seq {self.seq} ({self.to_commit[:12]}) expired at {self.expires_at}"
            )


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise StatementError(f"invalid approval statement: {message}")


def _text(value: Any, pattern: re.Pattern[str], what: str) -> str:
    _need(isinstance(value, str) and bool(pattern.fullmatch(value)), f"bad {what}")
    return str(value)


def _seconds(value: Any, what: str) -> int:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40, f"bad {what}"
    )
    return int(value)


_HEX40, _HEX64, _NUMBER = rb'"([0-9a-f]{40})"', rb'"([0-9a-f]{64})"', rb"(0|[1-9][0-9]{0,15})"
# The one text a valid statement can have: RFC 8785 fixes key order, spacing and number form, and
# the field formats leave nothing to escape. A match needs no JSON parsing (a walk decodes every
# statement); anything else goes through the slow path, which says what is wrong.
_CANONICAL = re.compile(
    rb'\{"circle":"([a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)","expiresAt":' + _NUMBER
    + rb',"from":(?:null|' + _HEX40 + rb'),"introduction":' + _HEX40
    + rb',"issuedAt":' + _NUMBER + rb',"policySha256":' + _HEX64
    + rb',"ref":"(refs/[A-Za-z0-9._/-]{1,200})","seq":' + _NUMBER + rb',"to":' + _HEX40
    + rb',"toTree":' + _HEX40 + rb',"treeSha256":' + _HEX64
    + rb',"type":"circle-approval/1"\}'
)  # fmt: skip


def decode(data: bytes) -> Approval:
    """Parse statement bytes strictly: canonical only, so what was signed is what is read."""
    if len(data) <= MAX_STATEMENT_BYTES and (fast := _CANONICAL.fullmatch(data)):
        text = [b"" if group is None else group for group in fast.groups()]
        circle, expires, start, intro, issued, policy, ref, seq, to, tree, manifest = (
            value.decode() for value in text
        )
        approval = Approval(
            circle, intro, ref, int(seq), start or None, to, tree, manifest, policy,
            int(issued), int(expires),
        )  # fmt: skip
        if (
            (approval.from_commit is None) == (approval.seq == 1)
            and 1 <= approval.seq < 2**53
            and approval.issued_at < approval.expires_at < 2**40
        ):
            return approval
    return _decode_slowly(data)


def _decode_slowly(data: bytes) -> Approval:
    _need(len(data) <= MAX_STATEMENT_BYTES, f"over {MAX_STATEMENT_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise StatementError("invalid approval statement: not JSON") from None
    _need(
        isinstance(document, dict) and set(document) == _FIELDS,
        f"expected the fields {sorted(_FIELDS)}",
    )
    _need(document["type"] == TYPE, f"type must be {TYPE}")
    seq = document["seq"]
    _need(isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**53, "bad seq")
    previous = document["from"]
    _need((previous is None) == (seq == 1), "only seq 1 has no `from` commit")
    approval = Approval(
        circle=_text(document["circle"], _CIRCLE, "circle id"),
        introduction=_text(document["introduction"], _SHA1, "introduction commit"),
        ref=_text(document["ref"], _REF, "ref"),
        seq=int(seq),
        from_commit=None if previous is None else _text(previous, _SHA1, "from commit"),
        to_commit=_text(document["to"], _SHA1, "to commit"),
        to_tree=_text(document["toTree"], _SHA1, "to tree"),
        tree_sha256=_text(document["treeSha256"], _SHA256, "tree sha256"),
        policy_sha256=_text(document["policySha256"], _SHA256, "policy sha256"),
        issued_at=_seconds(document["issuedAt"], "issuedAt"),
        expires_at=_seconds(document["expiresAt"], "expiresAt"),
    )
    _need(approval.issued_at < approval.expires_at, "expiresAt must come after issuedAt")
    # Every string is ASCII without quotes, backslashes or control characters and every number
    # an integer below 2**53, so RFC 8785 is exactly sorted keys and no spaces: checked at C
    # speed (a chain walk decodes every statement; `encode` stays on the rfc8785 library).
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    _need(canonical.encode() == data, "not in canonical form (RFC 8785)")
    return approval
