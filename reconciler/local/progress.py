"""What a local circle does now, read from its state store and checked as `circle get` checks
it (records that do not verify are counted, never shown): which nodes registered, who leads,
and per workload of the approved head its replicas wanted, placed and Ready, with the
endpoints Ready replicas publish and, when a replica is not Ready, why."""

from __future__ import annotations

from dataclasses import dataclass

import pygit2

from reconciler.chain.trees import desired_at
from reconciler.node import view
from reconciler.node.records import Phase
from reconciler.store import StateStore


@dataclass(frozen=True)
class WorkloadProgress:
    name: str
    wanted: int
    placed: int
    ready: int
    endpoints: tuple[str, ...]  # of Ready replicas: "NAME=HOST:PORT"
    problem: str | None  # the first not-Ready replica's reason and message
    description: str = ""
    health_path: str | None = None  # of its HTTP health check


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[str, ...]  # registered
    expected: tuple[str, ...]  # admitted at the approved head
    leader: str | None
    epoch: int | None
    seq: int | None  # the newest seq a registered node verified
    commit: str | None
    workloads: tuple[WorkloadProgress, ...]
    forged: int

    @property
    def converged(self) -> bool:
        return (
            set(self.expected) <= set(self.nodes)
            and self.leader is not None
            and all(w.ready >= w.wanted for w in self.workloads)
        )


def snapshot(store: StateStore, repo: pygit2.Repository, circle: view.Circle) -> Snapshot:
    seen = view.read(store, circle)
    newest = max(seen.nodes, key=lambda n: n.registration.seq, default=None)
    commit = str(newest.registration.commit) if newest is not None else None
    desired = desired_at(repo, commit).state if commit is not None else None
    workloads = []
    for name, loaded in sorted((desired.workloads if desired else {}).items()):
        health = loaded.document.health
        mine = [p for p in seen.assignments if p.assignment.workload == name]
        current = [p for p in mine if p.assignment.commit == commit] or mine
        ready = [p for p in current if p.status is not None and p.status.phase is Phase.READY]
        problem = None
        for placed in current:
            status = placed.status
            if status is not None and status.phase is not Phase.READY and status.reason:
                where = f"{placed.assignment.node} slot {placed.assignment.slot}"
                problem = f"{where}: {status.phase.value} {status.reason}: {status.message}"
                break
        workloads.append(
            WorkloadProgress(
                name=name,
                wanted=view.desired_count(loaded.document, {p.assignment.slot for p in current}),
                placed=len({p.assignment.slot for p in current}),
                ready=len({p.assignment.slot for p in ready}),
                endpoints=tuple(e for p in ready for e in p.status.endpoints),  # type: ignore[union-attr]
                problem=problem,
                description=loaded.document.description or "",
                health_path=health.http.path if health and health.http else None,
            )
        )
    return Snapshot(
        nodes=tuple(sorted(n.registration.node for n in seen.nodes)),
        expected=tuple(sorted(desired.nodes if desired else circle.desired.nodes)),
        leader=seen.leader,
        epoch=seen.epoch,
        seq=newest.registration.seq if newest is not None else None,
        commit=commit,
        workloads=tuple(workloads),
        forged=seen.forged,
    )
