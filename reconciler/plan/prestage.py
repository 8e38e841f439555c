"""Pre-staging: which artifacts of proposals on their way a node stages before their quorum
lands, and which staged trees it evicts (ADR 0008, issue 15 part 3). Pure.

    wants(running, proposals)                      ->  Want[] (best first), Skipped[]
    plan(wants, staged, sizes, budget, keep)       ->  StagePlan

A proposal is the next transition of the chain (`seq: head -> commit`) that at least one
member of the policy in force approved with a signature that verifies as the chain verifies
it (the caller checks: `reconciler.node.prestage.pending`), with the desired state at its
commit parsed by the same strict parser as an approved one. What is staged: the new artifact
digest of each workload this node runs now (a rolling update); a workload it does not run, or
that the proposal adds, is not staged (the node cannot know where the leader will place it).

Staging is speculation: it never takes a tree in use or one the approved head pins (`keep`);
those are never evicted either. Within `budget` bytes, the proposals with the most approvals
go first (then the lower seq, then the commit id: the same inputs give the same plan). A
staged tree no proposal wants any more is evicted first, oldest first; then those that no
longer fit, the least approved first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.desired.repository import DesiredState
from reconciler.plan.from_desired import _locked_digest


@dataclass(frozen=True)
class Proposal:
    """A pending transition: its commit, seq, the members whose approvals verify, and the
    desired state at its commit (None, with `problem`, when it does not parse)."""

    commit: str
    seq: int
    signers: frozenset[str]
    desired: DesiredState | None
    problem: str | None = None


@dataclass(frozen=True)
class Want:
    """One artifact worth staging: a workload's next digest in a proposal."""

    digest: str
    workload: str
    commit: str
    seq: int
    signers: tuple[str, ...]


@dataclass(frozen=True)
class Staged:
    """A staged tree: its size in bytes and when it was staged (`order`: lower is older)."""

    digest: str
    size: int
    order: int


@dataclass(frozen=True)
class Skipped:
    subject: str  # a commit or an artifact digest
    reason: str


@dataclass(frozen=True)
class StagePlan:
    stage: tuple[Want, ...]  # in this order, after the evictions
    evict: tuple[str, ...]  # first to last
    kept: tuple[str, ...]  # staged already, still wanted and within the budget
    skipped: tuple[Skipped, ...]


def pinned(approved: DesiredState) -> frozenset[str]:
    """The artifact digests the approved head pins (every workload's): never evicted."""
    found = (_locked_digest(approved, loaded.document) for loaded in approved.workloads.values())
    return frozenset(digest for digest in found if digest is not None)


def wants(
    running: Mapping[str, str], proposals: Sequence[Proposal]
) -> tuple[list[Want], list[Skipped]]:
    """What the proposals would change of the workloads this node runs (`running`: workload
    -> the digest it runs now), best first; and the proposals passed over, with why."""
    found: list[Want] = []
    skipped: list[Skipped] = []
    for proposal in sorted(proposals, key=_rank_of_proposal):
        if not proposal.signers:
            skipped.append(Skipped(proposal.commit, "no approval by a member verifies"))
            continue
        if proposal.desired is None:
            why = proposal.problem or "its desired state does not parse"
            skipped.append(Skipped(proposal.commit, why))
            continue
        for workload, now in sorted(running.items()):
            loaded = proposal.desired.workloads.get(workload)
            if loaded is None:
                continue  # removed by the proposal: nothing to stage
            digest = _locked_digest(proposal.desired, loaded.document)
            if digest is None or digest == now:
                continue
            signers = tuple(sorted(proposal.signers))
            found.append(Want(digest, workload, proposal.commit, proposal.seq, signers))
    return found, skipped


def plan(
    wanted: Sequence[Want],
    staged: Mapping[str, Staged],
    sizes: Mapping[str, int],
    budget: int,
    keep: frozenset[str],
) -> StagePlan:
    """What to stage and evict (see the module). `sizes`: the bytes of each wanted artifact
    not staged yet whose manifest is known (one without a size is skipped); `keep`: the
    digests in use on this node or pinned by the approved head."""
    best: dict[str, Want] = {}
    for want in sorted(wanted, key=lambda w: _rank_of_want(w, staged)):
        if want.digest not in keep:
            best.setdefault(want.digest, want)  # installed anyway when it is kept
    chosen: list[Want] = []
    skipped: list[Skipped] = []
    total = 0
    for want in best.values():
        size = staged[want.digest].size if want.digest in staged else sizes.get(want.digest)
        if size is None:
            skipped.append(Skipped(want.digest, "its manifest is not available yet"))
            continue
        if budget <= 0:
            skipped.append(Skipped(want.digest, "pre-staging is off (a budget of 0)"))
            continue
        if total + size > budget:
            skipped.append(
                Skipped(
                    want.digest,
                    f"{size} bytes do not fit in the budget ({budget - total} of {budget} left)",
                )
            )
            continue
        total += size
        chosen.append(want)
    chosen_digests = {want.digest for want in chosen}
    doomed = [s for d, s in staged.items() if d not in chosen_digests and d not in keep]

    def eviction_order(item: Staged) -> tuple[int, int, str]:
        want = best.get(item.digest)
        return (0 if want is None else len(want.signers), item.order, item.digest)

    doomed.sort(key=eviction_order)
    return StagePlan(
        stage=tuple(want for want in chosen if want.digest not in staged),
        evict=tuple(item.digest for item in doomed),
        kept=tuple(want.digest for want in chosen if want.digest in staged),
        skipped=tuple(skipped),
    )


def _rank_of_proposal(proposal: Proposal) -> tuple[int, int, str]:
    return (-len(proposal.signers), proposal.seq, proposal.commit)


def _rank_of_want(want: Want, staged: Mapping[str, Staged]) -> tuple[int, int, int, str, str]:
    # Among equals, what is staged already goes first: no churn for a tie.
    return (-len(want.signers), want.seq, want.digest not in staged, want.commit, want.workload)
