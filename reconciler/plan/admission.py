"""Whether a node may run an assignment it found in the (untrusted) state store. Pure.

A node runs an assignment only when every rule below holds; otherwise it refuses, records an
event saying why, and runs nothing. The signature itself (by the leader's node key, over the
assignment's canonical bytes) is checked by the reader (`reconciler.node.identity`); these
rules take the verified assignment and its signer's name:

1. It is for this node.
2. Its commit is an approved step of the chain this node verified itself, with that seq.
3. Its signer is a node admitted at that commit (`nodes/` of the commit).
4. Its epoch is not older than the newest this node has seen (a deposed leader's
   assignments are refused once a newer leader has spoken), and its signer is the leader of
   that epoch: the leader record of that epoch names the signer.
5. Its workload exists at that commit, and its digest and resources are exactly that
   commit's: the artifact the workload pins (or its build locks), its CPU and memory, and
   as many GPUs as it asks for (none, for an optional GPU that was not free), each one of
   this node's own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass

from reconciler.desired.repository import DesiredState
from reconciler.plan.assignment import Assignment


class Refused(enum.StrEnum):
    """Why a node refuses an assignment (the reason of its event and status)."""

    UNSIGNED = "NotSignedByAdmittedNode"  # decided by the reader, before these rules
    OTHER_NODE = "NotForThisNode"
    NOT_ON_CHAIN = "CommitNotOnChain"
    SIGNER_NOT_ADMITTED = "SignerNotAdmitted"
    NOT_LEADER = "SignerNotLeader"
    STALE_EPOCH = "StaleEpoch"
    UNKNOWN_WORKLOAD = "WorkloadNotAtCommit"
    DIGEST = "DigestMismatch"
    RESOURCES = "ResourcesMismatch"
    GPUS = "GpusMismatch"


@dataclass(frozen=True, slots=True)
class Decision:
    """Accepted, or refused with a reason and a sentence."""

    refused: Refused | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.refused is None


ACCEPTED = Decision()


def admit(
    assignment: Assignment,
    *,
    signer: str,
    me: str,
    chain: Mapping[str, int],
    desired: DesiredState,
    leaders: Mapping[int, str],
    newest_epoch: int,
    my_gpus: Set[str],
) -> Decision:
    """The decision on `assignment`, signed by `signer` (verified), found by node `me`.

    `chain` maps the commits of this node's verified chain to their seq; `desired` is the
    desired state at the assignment's commit; `leaders` maps epochs to the node their leader
    record names; `my_gpus` are the UUIDs of this node's GPUs."""
    found = assignment
    where = f"assignment {found.workload}/{found.slot} (seq {found.seq})"
    if found.node != me:
        return Decision(Refused.OTHER_NODE, f"{where} is for node {found.node}, not {me}")
    if chain.get(found.commit) != found.seq:
        return Decision(
            Refused.NOT_ON_CHAIN,
            f"{where}: commit {found.commit[:12]} is not seq {found.seq} of the chain this node "
            "verified",
        )
    if signer not in desired.nodes:
        return Decision(
            Refused.SIGNER_NOT_ADMITTED,
            f"{where} is signed by {signer}, a node not admitted at {found.commit[:12]}",
        )
    if found.epoch < newest_epoch:
        return Decision(
            Refused.STALE_EPOCH,
            f"{where} comes from epoch {found.epoch}; this node has seen epoch {newest_epoch}",
        )
    if leaders.get(found.epoch) != signer:
        return Decision(
            Refused.NOT_LEADER,
            f"{where} is signed by {signer}, not by the leader of epoch {found.epoch}",
        )
    return _matches_commit(found, where, desired, my_gpus)


def _matches_commit(
    found: Assignment, where: str, desired: DesiredState, my_gpus: Set[str]
) -> Decision:
    loaded = desired.workloads.get(found.workload)
    if loaded is None:
        return Decision(
            Refused.UNKNOWN_WORKLOAD,
            f"{where}: workload {found.workload} does not exist at {found.commit[:12]}",
        )
    workload = loaded.document
    digest = workload.artifact.digest
    if digest is None:
        build = desired.builds.get(workload.artifact.build)
        digest = build.document.digest if build is not None else None
    if found.digest != digest:
        return Decision(
            Refused.DIGEST,
            f"{where}: artifact {found.digest} is not the one the commit pins ({digest})",
        )
    resources = workload.resources
    if (found.cpu, found.memory) != (resources.cpu, resources.memory):
        return Decision(
            Refused.RESOURCES,
            f"{where}: cpu {found.cpu}m and memory {found.memory} differ from the commit's "
            f"cpu {resources.cpu}m and memory {resources.memory}",
        )
    wanted = resources.gpu.count if resources.gpu is not None else 0
    allowed = {wanted, 0} if resources.gpu is not None and resources.gpu.optional else {wanted}
    if len(found.gpus) not in allowed or not set(found.gpus) <= my_gpus:
        return Decision(
            Refused.GPUS,
            f"{where}: GPUs {', '.join(found.gpus) or 'none'} are not {wanted} of this node's own",
        )
    return ACCEPTED
