"""The circle as tables of plain JSON values: what `circle get ... -o json` prints and what the
dashboard's `/api/` serves, built once from a verified `view.View` so the two never differ.

Pure: given the view and the events, no I/O and no clock. Keys are
camelCase; times are unix seconds (events: milliseconds, as recorded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reconciler.node.records import EventRecord, Phase, Registration, VolumeStatus
from reconciler.node.view import Placed, View, desired_count

Row = dict[str, Any]


def nodes(seen: View) -> Row:
    """Every admitted node: registered or not, the leader, capacity against what is assigned."""
    registered: dict[str, Registration] = {n.registration.node: n.registration for n in seen.nodes}
    rows: list[Row] = []
    for name, loaded in sorted(seen.circle.desired.nodes.items()):
        found = registered.get(name)
        document = loaded.document
        mine = [p.assignment for p in seen.assignments if p.assignment.node == name]
        rows.append(
            {
                "name": name,
                "status": "Ready" if found else "NotReady",
                "leader": name == seen.leader,
                "failureDomain": document.failure_domain,
                "labels": dict(sorted(document.labels.items())),
                "seq": found.seq if found else None,
                "commit": found.commit if found else None,
                "cpu": found.inventory.cpu if found else None,
                "memory": found.inventory.memory if found else None,
                "allocated": {
                    "cpu": sum(a.cpu for a in mine),
                    "memory": sum(a.memory for a in mine),
                    "gpus": sum(len(a.gpus) for a in mine),
                    "replicas": len(mine),
                },
                "gpus": [
                    {
                        "uuid": g.uuid,
                        "model": g.model,
                        "memory": g.memory,
                        "memoryUsed": g.memory_used,
                        "utilization": g.utilization,
                        "healthy": g.healthy,
                    }
                    for g in (found.inventory.gpus if found else ())
                ],
                "address": found.address if found else document.address,
                "startedAt": found.started_at if found else None,
                "heartbeatAt": found.heartbeat_at if found else None,
                "agent": found.agent if found else None,
            }
        )
    return {
        "circle": seen.circle.id,
        "leader": seen.leader,
        "epoch": seen.epoch,
        "nodes": rows,
        "unverified": seen.forged,
    }


def _sorted(placed: Iterable[Placed]) -> list[Placed]:
    return sorted(
        placed, key=lambda p: (p.assignment.workload, p.assignment.slot, p.assignment.seq)
    )


def assignments(seen: View) -> Row:
    """Every assignment: where, which seq, and what its node said of it."""
    rows = [
        {
            **placed.assignment.to_dict(),
            "signer": placed.signer,
            "phase": placed.status.phase.value if placed.status else None,
            "reason": placed.status.reason if placed.status else None,
            "message": placed.status.message if placed.status else None,
            "restarts": placed.status.restarts if placed.status else 0,
            "endpoints": list(placed.status.endpoints) if placed.status else [],
            "observedAt": placed.status.observed_at if placed.status else None,
        }
        for placed in _sorted(seen.assignments)
    ]
    return {"circle": seen.circle.id, "assignments": rows, "unverified": seen.forged}


def workloads(seen: View) -> Row:
    """Every approved workload: replicas wanted and ready per node, its rollout, its scale."""
    rows: list[Row] = []
    for name, loaded in sorted(seen.circle.desired.workloads.items()):
        workload = loaded.document
        mine = _sorted(p for p in seen.assignments if p.assignment.workload == name)
        phases = [p.status.phase for p in mine if p.status]
        bounds = workload.autoscale
        loads = [p.status.load / 1000 for p in mine if p.status and p.status.load is not None]
        desired = desired_count(workload, {p.assignment.slot for p in mine})
        ready = sum(1 for phase in phases if phase is Phase.READY)
        per_node: dict[str, Row] = {}
        for placed in mine:
            row = per_node.setdefault(placed.assignment.node, {"placed": 0, "ready": 0})
            row["placed"] += 1
            row["ready"] += bool(placed.status and placed.status.phase is Phase.READY)
        rows.append(
            {
                "name": name,
                "description": workload.description,
                "replicas": workload.replicas,
                # what the leader decided: the slots it placed (the autoscaler's count)
                "desired": desired,
                "autoscale": None
                if bounds is None
                else {
                    "min": bounds.min,
                    "max": bounds.max,
                    "metric": str(bounds.metric),
                    "target": bounds.target,
                },
                "load": round(sum(loads) / len(loads), 3) if loads else None,
                "placed": len(mine),
                "accepted": sum(1 for phase in phases if phase is not Phase.REFUSED),
                "ready": ready,
                "restarts": sum(p.status.restarts for p in mine if p.status),
                "nodes": sorted(per_node),
                "perNode": per_node,
                "digest": workload.artifact.digest,
                "rollout": _rollout(mine, desired),
                "conditions": _conditions(mine, desired, ready),
            }
        )
    return {"circle": seen.circle.id, "workloads": rows, "unverified": seen.forged}


def _rollout(mine: list[Placed], desired: int) -> Row | None:
    """The newest seq placed and how many slots run it; the newest seq Ready everywhere."""
    if not mine:
        return None
    newest = max(mine, key=lambda p: p.assignment.seq).assignment
    at_newest = [p for p in mine if p.assignment.seq == newest.seq]
    ready_newest = sum(1 for p in at_newest if p.status and p.status.phase is Phase.READY)
    applied: Row | None = None
    for seq in sorted({p.assignment.seq for p in mine}, reverse=True):
        of_seq = [p for p in mine if p.assignment.seq == seq]
        if all(p.status and p.status.phase is Phase.READY for p in of_seq):
            applied = {"seq": seq, "commit": of_seq[0].assignment.commit}
            break
    return {
        "lastAttempted": {"seq": newest.seq, "commit": newest.commit},
        "lastApplied": applied,
        "updated": ready_newest,
        "total": desired,
        "done": ready_newest >= desired and len(at_newest) == len(mine),
    }


def _conditions(mine: list[Placed], desired: int, ready: int) -> list[Row]:
    """Kubernetes-style conditions: Available, Progressing, Degraded."""
    troubled = [p for p in mine if p.status and p.status.phase in (Phase.FAILED, Phase.REFUSED)]
    seqs = {p.assignment.seq for p in mine}
    found = [
        {
            "type": "Available",
            "status": ready >= desired,
            "reason": "MinimumReplicasAvailable" if ready >= desired else "ReplicasUnavailable",
            "message": f"{ready}/{desired} replicas Ready",
        },
        {
            "type": "Progressing",
            "status": len(seqs) > 1 or ready < desired,
            "reason": "RollingUpdate" if len(seqs) > 1 else "Placed",
            "message": f"{len(mine)} slot(s) placed over seq {', '.join(map(str, sorted(seqs)))}"
            if seqs
            else "nothing placed yet",
        },
    ]
    if troubled:
        first = troubled[0]
        assert first.status is not None
        found.append(
            {
                "type": "Degraded",
                "status": True,
                "reason": first.status.reason,
                "message": f"{first.assignment.workload}/{first.assignment.slot} on "
                f"{first.assignment.node}: {first.status.message}",
            }
        )
    return found


def volumes(seen: View) -> Row:
    """Every volume object's last scrub: shares healthy, its margin, and per failure domain
    what is left if that whole domain is lost."""
    rows: list[Row] = []
    scrubbed = {(v.volume, v.object): v for v in seen.volumes}
    for name in sorted(seen.circle.desired.volumes):
        objects = sorted((v for (volume, _), v in scrubbed.items() if volume == name),
                         key=lambda v: (v.name, v.object))  # fmt: skip
        rows.append({"name": name, "objects": [_object(v) for v in objects]})
    return {"circle": seen.circle.id, "volumes": rows, "unverified": seen.forged}


def _object(status: VolumeStatus) -> Row:
    domains: dict[str, Row] = {}
    for share in status.shares:
        row = domains.setdefault(share.failure_domain, {"shares": 0, "healthy": 0})
        row["shares"] += 1
        row["healthy"] += share.status == "healthy"
    for domain, row in domains.items():
        outside = sum(d["healthy"] for other, d in domains.items() if other != domain)
        row["marginIfLost"] = outside - status.k  # below 0: that domain's loss loses the object
    return {
        "object": status.object,
        "name": status.name,
        "k": status.k,
        "n": status.n,
        "healthy": status.healthy,
        "margin": status.margin,
        "status": _health(status),
        "shares": [share.to_body() for share in status.shares],
        "failureDomains": dict(sorted(domains.items())),
        "scrubbedAt": status.scrubbed_at,
        "scrubbedBy": status.node,
        "repairs": status.repairs,
        "repairedAt": status.repaired_at,
    }


def _health(status: VolumeStatus) -> str:
    if status.healthy == status.n:
        return "Healthy"
    return "Degraded" if status.margin >= 0 else "Unreadable"


def object_matches(found: str, wanted: str | None) -> bool:
    """An event's object against a filter: no filter, the same object, or a prefix ending in
    `/` (`node/`, `workload/`)."""
    if wanted is None or found == wanted:
        return True
    return wanted.endswith("/") and found.startswith(wanted)


def events(
    found: Iterable[EventRecord],
    *,
    type_: str | None = None,
    object_: str | None = None,
    node: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Events newest first, filtered by type, object (or a prefix ending in `/`, such as
    `node/`) and node."""
    kept = [
        event.to_body()
        for event in sorted(found, key=lambda event: event.time_ms, reverse=True)
        if (type_ is None or event.type.value == type_)
        and object_matches(event.object, object_)
        and (node is None or event.node == node)
    ]
    return kept if limit is None else kept[:limit]
