"""What an operator sees of a circle in the state store (`circle get`, `circle events`): the
registrations, the leader, the assignments, their statuses and the events, each record
verified against the admitted nodes' keys (both halves of a hybrid node's) before it is shown.

The store is untrusted, so the keys come from the circle itself: an owner's clone (`--repo`,
its main) or a node's folder (`--state`, the commit it applied). A record that does not verify
is counted, never shown as if it were true.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from reconciler.chain import follow, headcache
from reconciler.chain.node_state import load as load_state
from reconciler.chain.trees import desired_at
from reconciler.chain.walk import MAIN, Chain, tip_commit
from reconciler.desired.model.workload import Workload
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError
from reconciler.files import read_bounded
from reconciler.node.identity import ForgedRecord, RecordKind, open_signed
from reconciler.node.layout import Layout
from reconciler.node.leader import node_keys
from reconciler.node.records import (
    AssignmentStatus,
    EventRecord,
    LeaderRecord,
    Registration,
    VolumeStatus,
)
from reconciler.plan import Assignment, AssignmentFormatError
from reconciler.store import KeyValue, StateStore


@dataclass(frozen=True)
class Circle:
    """The circle whose records are read: its id, and the desired state that admits nodes."""

    id: str
    desired: DesiredState
    commit: str


def circle_from(repo_dir: Path | None, state_dir: Path | None) -> Circle:
    """The circle of an owner's clone (its approved head, verified from the introduction as a
    node verifies it: a commit on main that no quorum approved admits no node and sets no
    replica count; main's tip before any approval) or of a node's folder (its applied commit)."""
    if state_dir is not None:
        state = load_state(state_dir / follow.STATE_FILE)
        if state is None:
            raise InputError(f"{state_dir}: this node has applied no commit yet")
        repo = _open(state_dir / follow.REPOSITORY)
        commit = state.commit
    else:
        repo = _open(repo_dir or Path("."))
        now = int(time.time())
        walker = Chain(repo, headcache.introduction(repo, now).intro, MAIN)
        _, head = headcache.walk(repo, walker, now)
        commit = head.commit if head is not None else str(tip_commit(repo, MAIN).id)
    report = desired_at(repo, commit)
    if report.state.circle is None:
        raise InputError(f"{commit[:12]} holds no valid circle.yaml")
    return Circle(report.state.circle.document.id, report.state, commit)


def circle_at(repo_dir: Path, commit: str) -> Circle:
    """The circle as `commit` of the clone at `repo_dir` has it (the approved head, say)."""
    report = desired_at(_open(repo_dir), commit)
    if report.state.circle is None:
        raise InputError(f"{commit[:12]} holds no valid circle.yaml")
    return Circle(report.state.circle.document.id, report.state, commit)


def _open(path: Path) -> pygit2.Repository:
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError:
        raise InputError(
            f"{path}: not a circle repository; give --repo (a clone of the circle) or --state "
            "(a node's folder), whose nodes/ the records' signatures are checked against"
        ) from None


@dataclass(frozen=True)
class Node:
    registration: Registration
    kv: KeyValue


@dataclass(frozen=True)
class Placed:
    assignment: Assignment
    signer: str
    status: AssignmentStatus | None
    kv: KeyValue


@dataclass(frozen=True)
class View:
    circle: Circle
    revision: int
    nodes: list[Node]
    leader: str | None
    epoch: int | None
    assignments: list[Placed]
    forged: int  # records that did not verify
    volumes: list[VolumeStatus] = field(default_factory=list)  # the last scrub of each object


def read(store: StateStore, circle: Circle) -> View:
    layout = Layout(circle.id)
    keys, mldsa_keys = node_keys(circle.desired)
    forged = 0
    listed = store.range(layout.root)
    by_key = {kv.key: kv for kv in listed.kvs}
    nodes: list[Node] = []
    statuses: dict[tuple[str, str, int, int], AssignmentStatus] = {}
    placed: list[tuple[KeyValue, Assignment, str]] = []
    leader: str | None = None
    epoch: int | None = None
    volumes: list[VolumeStatus] = []
    for key, kv in sorted(by_key.items()):
        try:
            if (name := layout.node_of(key)) is not None:
                record = open_signed(kv.value, RecordKind.REGISTRATION, keys, mldsa_keys)
                registration = Registration.from_body(record.body)
                if record.signer == name == registration.node:
                    nodes.append(Node(registration, kv))
                else:
                    forged += 1
            elif key == layout.leader:
                record = open_signed(kv.value, RecordKind.LEADER, keys, mldsa_keys)
                leader = LeaderRecord.from_body(record.body).node
                if leader != record.signer:
                    forged, leader = forged + 1, None
                else:
                    epoch = kv.create_revision
            elif layout.assignment_of(key) is not None:
                record = open_signed(kv.value, RecordKind.ASSIGNMENT, keys, mldsa_keys)
                placed.append((kv, Assignment.from_dict(record.body), record.signer))
            elif (about := layout.volume_of(key)) is not None:
                record = open_signed(kv.value, RecordKind.VOLUME, keys, mldsa_keys)
                scrub = VolumeStatus.from_body(record.body)
                if record.signer == scrub.node and about == (scrub.volume, scrub.object):
                    volumes.append(scrub)
                else:
                    forged += 1
            elif (where := layout.status_of(key)) is not None:
                record = open_signed(kv.value, RecordKind.STATUS, keys, mldsa_keys)
                status = AssignmentStatus.from_body(record.body)
                if record.signer == status.node == where[0]:
                    statuses[where] = status
                else:
                    forged += 1
        except (ForgedRecord, AssignmentFormatError):
            forged += 1
    assignments = [
        Placed(
            assignment,
            signer,
            statuses.get((assignment.node, assignment.workload, assignment.slot, assignment.seq)),
            kv,
        )
        for kv, assignment, signer in placed
    ]
    return View(circle, listed.revision, nodes, leader, epoch, assignments, forged, volumes)


def events(store: StateStore, circle: Circle) -> tuple[list[EventRecord], int]:
    """The circle's events, oldest first, and how many records did not verify."""
    layout = Layout(circle.id)
    keys, mldsa_keys = node_keys(circle.desired)
    found: list[EventRecord] = []
    forged = 0
    for kv in store.range(layout.events).kvs:
        try:
            record = open_signed(kv.value, RecordKind.EVENT, keys, mldsa_keys)
            event = EventRecord.from_body(record.body)
        except ForgedRecord:
            forged += 1
            continue
        if event.node == record.signer:
            found.append(event)
        else:
            forged += 1
    found.sort(key=lambda event: event.time_ms)
    return found, forged


def status_file(state_dir: Path) -> dict[str, object]:
    """The status the agent of `state_dir` last wrote (`circle node status`)."""
    path = state_dir / "agent.json"
    data = read_bounded(path, 1 << 20)
    try:
        found = json.loads(data)
    except ValueError:
        raise InputError(f"{path}: not an agent status file") from None
    if not isinstance(found, dict):
        raise InputError(f"{path}: not an agent status file")
    return found


def desired_count(workload: Workload, slots: set[int]) -> int:
    """The replicas a workload is to run now: its approved count, or, autoscaled, the slots
    the leader placed (its decision), within the approved bounds."""
    bounds = workload.autoscale
    if bounds is None:
        return workload.replicas
    return min(max(len(slots) if slots else workload.replicas, bounds.min), bounds.max)
