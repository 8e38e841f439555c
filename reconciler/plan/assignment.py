"""An assignment: one replica of one workload on one node, what the leader signs and stores.

Canonical form `circle-assignment/1`, RFC 8785 JSON with exactly these fields and JSON types:

    {"format": "circle-assignment/1", "workload": NAME, "slot": INT, "node": NAME,
     "commit": 40 HEX, "seq": INT, "digest": "sha256:" 64 HEX, "cpu": MILLICORES,
     "memory": BYTES, "gpus": [UUID, ...], "epoch": INT}

`gpus` is sorted and without repeats. A node checks the signature over these bytes, then that
the commit is on the chain it verified and that workload, digest and resources match that
commit; `from_json` refuses anything but the canonical bytes (other key order, spacing, a
float, `true` for a number, a duplicate or unknown key), so what was signed is what is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import rfc8785

from reconciler.plan.errors import AssignmentFormatError
from reconciler.plan.inputs import ArtifactDigest, CommitId, GpuUuid, NodeName, WorkloadName

FORMAT = "circle-assignment/1"
MAX_ASSIGNMENT_BYTES = 16 * 1024
MAX_GPUS = 64
_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_GPU_UUID = re.compile(r"GPU-[0-9a-fA-F-]{8,64}")
_FIELDS = ("format", "workload", "slot", "node", "commit", "seq", "digest", "cpu", "memory",
           "gpus", "epoch")  # fmt: skip
_INT_LIMIT = 2**53  # JSON integers every reader agrees on


class AssignmentKey(NamedTuple):
    """Names one assignment among those of a cluster; readiness is reported by it."""

    workload: WorkloadName
    slot: int
    seq: int
    node: NodeName


@dataclass(frozen=True, slots=True)
class Assignment:
    workload: WorkloadName
    slot: int  # 0 .. replicas-1: a rolling update replaces a slot, it never renumbers it
    node: NodeName
    commit: CommitId
    seq: int
    digest: ArtifactDigest
    cpu: int  # millicores
    memory: int  # bytes
    gpus: tuple[GpuUuid, ...]  # sorted
    epoch: int  # the leader epoch it was signed under

    @property
    def key(self) -> AssignmentKey:
        return AssignmentKey(self.workload, self.slot, self.seq, self.node)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "workload": self.workload,
            "slot": self.slot,
            "node": self.node,
            "commit": self.commit,
            "seq": self.seq,
            "digest": self.digest,
            "cpu": self.cpu,
            "memory": self.memory,
            "gpus": list(self.gpus),
            "epoch": self.epoch,
        }

    def to_json(self) -> bytes:
        """The canonical bytes (RFC 8785) the leader signs."""
        return rfc8785.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, document: object) -> Assignment:
        """Read the canonical dict: exactly its fields, each of exactly its JSON type."""
        if not isinstance(document, dict):
            raise _refused("expected a JSON object")
        _need(
            sorted(document) == sorted(_FIELDS),
            f"expected exactly the fields {', '.join(_FIELDS)}; "
            f"found {', '.join(map(str, document))}",
        )
        _need(document["format"] == FORMAT, f"format must be {FORMAT!r}")
        gpus = document["gpus"]
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise _refused(f"gpus must be a list of at most {MAX_GPUS} GPU UUIDs")
        uuids = tuple(GpuUuid(_text(uuid, _GPU_UUID, "GPU UUID")) for uuid in gpus)
        _need(list(uuids) == sorted(set(uuids)), "gpus must be sorted and without repeats")
        return cls(
            workload=WorkloadName(_text(document["workload"], _NAME, "workload name")),
            slot=_whole(document["slot"], "slot", least=0),
            node=NodeName(_text(document["node"], _NAME, "node name")),
            commit=CommitId(_text(document["commit"], _COMMIT, "commit (40 hex digits)")),
            seq=_whole(document["seq"], "seq", least=1),
            digest=ArtifactDigest(_text(document["digest"], _DIGEST, "digest (sha256:...)")),
            cpu=_whole(document["cpu"], "cpu", least=0),
            memory=_whole(document["memory"], "memory", least=0),
            gpus=uuids,
            epoch=_whole(document["epoch"], "epoch", least=0),
        )

    @classmethod
    def from_json(cls, data: bytes) -> Assignment:
        """Read canonical bytes; refuse any other spelling of the same value."""
        _need(len(data) <= MAX_ASSIGNMENT_BYTES, f"over {MAX_ASSIGNMENT_BYTES} bytes")
        try:
            document = json.loads(data, object_pairs_hook=_refuse_duplicates)
        except (ValueError, RecursionError) as error:
            raise _refused(f"not JSON ({error})") from None
        assignment = cls.from_dict(document)
        _need(assignment.to_json() == data, "not in canonical form (RFC 8785)")
        return assignment


def _refused(message: str) -> AssignmentFormatError:
    return AssignmentFormatError(f"invalid assignment: {message}")


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise _refused(message)


def _text(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise _refused(f"bad {what}: {value!r}")
    return value


def _whole(value: object, what: str, *, least: int) -> int:
    # `type(...) is int`: a JSON `true` is a Python bool, which is an int subclass.
    if type(value) is not int or not least <= value < _INT_LIMIT:
        raise _refused(f"{what} must be a whole number from {least}; found {value!r}")
    return value


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _refused(f"duplicate key {key!r}")
        document[key] = value
    return document
