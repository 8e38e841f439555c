"""What the leader does on each pass: observe the nodes and the assignments through their
signed records, plan within the approved state, and write the plan as signed assignments in
transactions fenced by its epoch.

Every write of the leader is a transaction that also compares the leader key's create revision
with its epoch: once another agent has taken the leader key (this one's lease expired, it was
frozen, the store lost it), every write of this one fails and it steps down. Records that do not
verify (a store writer speaking for a node, a key that is no admitted node's) are left out of
the plan, and reported once as a Warning event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pygit2

from reconciler.chain.walk import Step
from reconciler.desired.repository import DesiredState
from reconciler.desired.yamlparse import YamlError, parse_yaml
from reconciler.node.identity import ForgedRecord, NodeKey
from reconciler.node.layout import Layout
from reconciler.node.records import (
    AssignmentStatus,
    Phase,
    Registration,
    open_assignment,
    open_record,
    sign_assignment,
)
from reconciler.plan import (
    Assignment,
    AssignmentKey,
    CommitId,
    Move,
    NodeName,
    NoticeKind,
    ObservedGpu,
    ObservedNode,
    Place,
    Plan,
    Readiness,
    ReadyState,
    Stop,
    Version,
    plan,
    planning_inputs,
)
from reconciler.plan.autoscale import Envelope, Recommendation, decide
from reconciler.store import Compare, Delete, Put, StateStore, TxnOp

MAX_OPS = 100  # per transaction, under etcd's 128, with room for the fence


@dataclass(frozen=True, slots=True)
class Observed:
    """What the leader read from the store on one pass, verified."""

    registrations: dict[str, Registration]
    assignments: dict[AssignmentKey, tuple[str, Assignment]]  # by key: (store key, value)
    readiness: dict[AssignmentKey, Readiness]
    forged: tuple[str, ...]  # store keys of records that did not verify
    loads: dict[AssignmentKey, float] = field(default_factory=dict)  # of autoscale metrics
    troubles: dict[AssignmentKey, str] = field(default_factory=dict)  # not Ready: why


def node_keys(desired: DesiredState) -> tuple[dict[str, str], dict[str, str]]:
    """What opens the records of the nodes `desired` admits: name -> `publicKey` of each, and
    name -> `mldsaPublicKey` of those that sign hybrid (both halves needed, for every kind)."""
    nodes = desired.nodes.items()
    return (
        {name: loaded.document.public_key for name, loaded in nodes},
        {
            name: loaded.document.mldsa_public_key
            for name, loaded in nodes
            if loaded.document.mldsa_public_key is not None
        },
    )


def observe(
    store: StateStore,
    layout: Layout,
    keys: Mapping[str, str],
    mldsa_keys: Mapping[str, str] | None = None,
) -> Observed:
    """Read registrations, assignments and statuses, keeping what verifies: signed by an
    admitted node (`keys`, and `mldsa_keys` for the nodes that sign hybrid), about the node
    that signed it, under the key its content names."""
    forged: list[str] = []
    registrations: dict[str, Registration] = {}
    for kv in store.range(layout.nodes).kvs:
        try:
            opened = open_record(kv.value, Registration, keys, mldsa_keys)
        except ForgedRecord:
            forged.append(kv.key)
            continue
        if layout.node_of(kv.key) != opened.record.node:
            forged.append(kv.key)
            continue
        registrations[opened.record.node] = opened.record
    assignments: dict[AssignmentKey, tuple[str, Assignment]] = {}
    for kv in store.range(layout.assignments).kvs:
        try:
            assignment = open_assignment(kv.value, keys, mldsa_keys).record
        except ForgedRecord:
            forged.append(kv.key)
            continue
        if layout.assignment_of(kv.key) != (assignment.workload, assignment.slot, assignment.seq):
            forged.append(kv.key)
            continue
        assignments[assignment.key] = (kv.key, assignment)
    readiness: dict[AssignmentKey, Readiness] = {}
    loads: dict[AssignmentKey, float] = {}
    troubles: dict[AssignmentKey, str] = {}
    for kv in store.range(layout.statuses).kvs:
        try:
            status = open_record(kv.value, AssignmentStatus, keys, mldsa_keys).record
        except ForgedRecord:
            forged.append(kv.key)
            continue
        if layout.status_of(kv.key) != (status.node, status.workload, status.slot, status.seq):
            forged.append(kv.key)
            continue
        readiness[status.key] = Readiness(_READINESS[status.phase], status.observed_at)
        if status.load is not None and status.phase is Phase.READY:
            loads[status.key] = status.load / 1000
        if status.phase is not Phase.READY:
            # A crash loop is Running between its crashes: its restarts say so at any moment.
            restarts = f" (restarted {status.restarts} times)" if status.restarts else ""
            troubles[status.key] = (
                f"{status.phase.value} {status.reason}: {status.message}{restarts}"
            )
    return Observed(registrations, assignments, readiness, tuple(forged), loads, troubles)


# Accepted is not running: until a replica is reported Ready, it is not proven ready.
_READINESS = {
    Phase.READY: ReadyState.READY,
    Phase.ACCEPTED: ReadyState.UNKNOWN,
    Phase.PENDING: ReadyState.UNKNOWN,
    Phase.RUNNING: ReadyState.UNKNOWN,
    Phase.REFUSED: ReadyState.NOT_READY,
    Phase.FAILED: ReadyState.NOT_READY,
}


def observed_nodes(
    registrations: Mapping[str, Registration], now: int, ttl: int
) -> list[ObservedNode]:
    """The planner's view of the registered nodes: a registration exists while its lease
    runs, so a registered node is alive for now."""
    return [
        ObservedNode(
            NodeName(name),
            registration.inventory.cpu,
            registration.inventory.memory,
            tuple(
                ObservedGpu(gpu.uuid, gpu.model, gpu.memory, gpu.healthy)
                for gpu in registration.inventory.gpus
            ),
            lease_expires_at=now + ttl,
            verified_seq=registration.seq,
        )
        for name, registration in sorted(registrations.items())
    ]


def workload_versions(
    repo: pygit2.Repository, steps: Sequence[Step], desired: DesiredState
) -> dict[str, Version]:
    """Per workload, the approved step at which its definition last changed: its document, or
    the build whose lock it takes when it pins no digest. A step that changes something else
    is no new version of it (no rolling update for an unrelated change), and neither is one
    that only scales it (`replicas`, `autoscale`) or redescribes it: as a Deployment's pod
    template hash, the version is what its replicas run, not how many of them there are."""
    versions: dict[str, Version] = {}
    previous: str | None = None
    for step in steps:
        changed = _changed(repo, previous, step.commit)
        for name, loaded in desired.workloads.items():
            build = loaded.document.artifact.build
            document = f"workloads/{name}.yaml"
            if (
                document in changed and _template_changed(repo, previous, step.commit, document)
            ) or f"builds/{build}.yaml" in changed:
                versions[name] = Version(CommitId(step.commit), step.seq)
        previous = step.commit
    return versions


SCALE_ONLY = ("replicas", "autoscale", "description")


def _template_changed(repo: pygit2.Repository, start: str | None, end: str, path: str) -> bool:
    """Whether `path` differs between the commits in more than SCALE_ONLY (or is new)."""
    if start is None:
        return True
    before, after = _template(repo, start, path), _template(repo, end, path)
    return before is None or after is None or before != after


_TEMPLATES: dict[tuple[str, str], dict[str, Any] | None] = {}  # commits never change
_TEMPLATES_KEPT = 4096


def _template(repo: pygit2.Repository, commit: str, path: str) -> dict[str, Any] | None:
    if (commit, path) not in _TEMPLATES:
        if len(_TEMPLATES) >= _TEMPLATES_KEPT:
            _TEMPLATES.clear()
        _TEMPLATES[commit, path] = _read_template(repo, commit, path)
    return _TEMPLATES[commit, path]


def _read_template(repo: pygit2.Repository, commit: str, path: str) -> dict[str, Any] | None:
    try:
        blob: Any = repo.get(commit).peel(pygit2.Commit).tree[path]  # type: ignore[union-attr]
        value = parse_yaml(bytes(blob.data).decode("utf-8")).value
    except (KeyError, UnicodeDecodeError, YamlError):
        return None
    if not isinstance(value, dict):
        return None
    return {key: item for key, item in value.items() if key not in SCALE_ONLY}


def _changed(repo: pygit2.Repository, start: str | None, end: str) -> set[str]:
    new: Any = repo.get(end)
    if start is None:
        return set(_paths(repo, new.tree))
    old: Any = repo.get(start)
    diff = repo.diff(old, new)
    found: set[str] = set()
    for delta in diff.deltas:
        found.add(delta.old_file.path)
        found.add(delta.new_file.path)
    return found


def _paths(repo: pygit2.Repository, tree: Any) -> Iterable[str]:
    pending = [("", tree)]
    while pending:
        prefix, current = pending.pop()
        for entry in current:
            if entry.type_str == "tree":
                pending.append((f"{prefix}{entry.name}/", repo.get(entry.id)))
            else:
                yield f"{prefix}{entry.name}"


@dataclass
class Leadership:
    """One agent's term as leader: its epoch, and what it has told already (events once)."""

    epoch: int
    since: float = 0.0  # when this agent took the leader key
    said_unschedulable: dict[tuple[str, int], str] = field(default_factory=dict)
    said_forged: set[str] = field(default_factory=set)
    said_notices: dict[tuple[str, str], str] = field(default_factory=dict)
    known_nodes: set[str] = field(default_factory=set)
    said_lost: set[str] = field(default_factory=set)  # NodeLost told, until the node is back
    head_seen: dict[int, float] = field(default_factory=dict)  # seq -> when this leader had it
    scaling: dict[str, Scale] = field(default_factory=dict)  # by workload
    rollouts: dict[str, Rollout] = field(default_factory=dict)  # updates under way, by workload


@dataclass
class Rollout:
    """A rolling update the leader watches: to which version, since when it waits."""

    commit: str
    seq: int
    since: float
    stalled: bool = False


def rollout_news(
    term: Leadership,
    found: Plan,
    observed: Observed,
    versions: Mapping[str, Version],
    head: Version,
    now: float,
    deadline: float,
) -> list[tuple[bool, str, str, str]]:
    """What changed in the rolling updates this pass, as (warning, reason, workload, message):
    `RolloutStalled` once an update waited `deadline` seconds for a replacement to be Ready
    (the old replicas keep serving; a newer approved commit takes over from it), and
    `RolledOut` when an update that was watched ends. Pure: `term` keeps the state."""
    news: list[tuple[bool, str, str, str]] = []
    waiting = {str(n.workload): n for n in found.notices if n.kind is NoticeKind.ROLLOUT_WAITING}
    for name, notice in sorted(waiting.items()):
        version = versions.get(name, head)
        watched = term.rollouts.get(name)
        if watched is None or (watched.commit, watched.seq) != (version.commit, version.seq):
            watched = term.rollouts[name] = Rollout(version.commit, version.seq, now)
        if not watched.stalled and now - watched.since >= deadline:
            watched.stalled = True
            why = [
                f"{a.node} slot {a.slot}: {observed.troubles[key]}"
                for key, (_, a) in sorted(observed.assignments.items())
                if a.workload == name and a.commit == version.commit and key in observed.troubles
            ]
            news.append((True, "RolloutStalled", name,
                         f"{notice.message} for {deadline:g} s; the old replicas keep serving"
                         + (f"; {'; '.join(why)}" if why else "")))  # fmt: skip
    for name in sorted(set(term.rollouts) - set(waiting)):
        done = term.rollouts.pop(name)
        news.append((False, "RolledOut", name,
                     f"workload {name} runs commit {done.commit[:12]} (seq {done.seq}) in "
                     f"every slot, {now - done.since:.1f} s after its update began"))  # fmt: skip
    return news


@dataclass
class Scale:
    """The autoscaler's state of one workload during a term."""

    replicas: int  # the count decided
    approved: int  # the document's `replicas` it started from (a new one starts it over)
    history: tuple[Recommendation, ...] = ()


def autoscale(
    term: Leadership, desired: DesiredState, observed: Observed, now: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The replica count of every autoscaled workload, and the decisions that changed one
    as (workload, the decision in words); pure, `term` keeps the state. A workload starts
    from the slots its replicas hold (a new leader carries on from its predecessor's
    decision), or from the approved `replicas` when the owners changed it; then the HPA
    rule (`reconciler.plan.autoscale`) moves it within the approved bounds."""
    decided: dict[str, int] = {}
    said: list[tuple[str, str]] = []
    for name, loaded in sorted(desired.workloads.items()):
        workload = loaded.document
        bounds = workload.autoscale
        if bounds is None:
            term.scaling.pop(name, None)
            continue
        mine = [(key, a) for key, (_, a) in observed.assignments.items() if a.workload == name]
        state = term.scaling.get(name)
        if state is None or state.approved != workload.replicas:
            slots = {a.slot for _, a in mine}
            start = len(slots) if state is None and slots else workload.replicas
            state = Scale(start, workload.replicas)
        loads = [observed.loads[key] for key, _ in mine if key in observed.loads]
        unit = UNITS.get(str(bounds.metric)) or (bounds.source.series if bounds.source else "")
        envelope = Envelope(name, bounds.min, bounds.max, unit, bounds.target, int(bounds.cooldown))
        scaled = decide(envelope, state.replicas, loads, state.history, now, int(term.since))
        term.scaling[name] = Scale(scaled.replicas, workload.replicas, scaled.history)
        decided[name] = scaled.replicas
        if scaled.changed:
            said.append((name, scaled.message))
    return decided, said


UNITS = {"cpu": "% CPU", "memory": "% memory", "gpu": "% GPU", "requests-per-second": "rps"}


def fence(layout: Layout, epoch: int) -> Compare:
    """The compare every leader write carries: the leader key is still the one of `epoch`."""
    return Compare.create_revision(layout.leader, "=", epoch)


def write(store: StateStore, layout: Layout, epoch: int, ops: Sequence[TxnOp]) -> bool:
    """Apply `ops` in fenced transactions of at most MAX_OPS; False once the fence fails (this
    agent is no longer the leader: nothing more is written)."""
    for start in range(0, len(ops), MAX_OPS):
        done = store.txn([fence(layout, epoch)], ops[start : start + MAX_OPS])
        if not done.succeeded:
            return False
    return True


def plan_pass(
    desired: DesiredState,
    observed: Observed,
    *,
    head: Version,
    versions: Mapping[str, Version],
    epoch: int,
    now: int,
    ttl: int,
    replicas: Mapping[str, int] | None = None,
) -> Plan:
    """The plan of one pass, from what was observed (pure); `replicas` are the autoscaler's
    decisions."""
    inputs = planning_inputs(
        desired,
        observed_nodes(observed.registrations, now, ttl),
        now,
        head=head,
        versions=versions,
        replicas=replicas,
    )
    current = [assignment for _, assignment in observed.assignments.values()]
    return plan(
        inputs.workloads, inputs.nodes, current, now, epoch=epoch, readiness=observed.readiness
    )


def operations(
    found: Plan,
    observed: Observed,
    key: NodeKey,
    me: str,
    layout: Layout,
    epoch: int,
) -> list[TxnOp]:
    """The store writes of a plan, and the re-signing under this epoch of every assignment
    kept from an older one (nodes refuse a deposed leader's epoch). One operation per key: a
    move that stays under its key (same workload, slot and seq, another node) is one put."""
    ops: dict[str, TxnOp] = {}
    touched: set[AssignmentKey] = set()

    def put(assignment: Assignment) -> None:
        where = layout.assignment(assignment.workload, assignment.slot, assignment.seq)
        ops[where] = Put(where, sign_assignment(key, me, assignment))

    def delete(assignment: Assignment) -> None:
        where = _store_key(observed, assignment, layout)
        ops.setdefault(where, Delete(where))

    for action in found.actions:
        if isinstance(action, Place):
            put(action.assignment)
            touched.add(action.assignment.key)
        elif isinstance(action, Move):
            delete(action.old)
            put(action.new)
            touched |= {action.old.key, action.new.key}
        elif isinstance(action, Stop):
            delete(action.assignment)
            touched.add(action.assignment.key)
    for assignment_key, (_, assignment) in sorted(observed.assignments.items()):
        if assignment_key not in touched and assignment.epoch < epoch:
            put(dataclasses.replace(assignment, epoch=epoch))
    return list(ops.values())


def _store_key(observed: Observed, assignment: Assignment, layout: Layout) -> str:
    found = observed.assignments.get(assignment.key)
    if found is not None:
        return found[0]
    return layout.assignment(assignment.workload, assignment.slot, assignment.seq)
