"""The node agent: one level-triggered loop that brings this node's part of the circle to what
its owners approved, from the desired state and what it observes, never from events alone.

Each pass, in order (a step that fails stops the pass; the status is written at the end, and the
next pass starts over from what is):

1. Follow the Human Chain (`reconciler.chain.follow`): fetch SOURCE into quarantine, verify,
   move the node state along approved steps. The desired state is the applied commit's.
2. Know itself: the admitted node whose `publicKey` is this agent's key. Not admitted: Stalled.
   Its `mldsaPublicKey` must be the key's ML-DSA half, and present only if the key has one:
   else every record the agent signs would be refused, and it stops (NodeKeyError).
3. Be there: a lease (TTL `ttl`, kept alive every `keepalive` s) and a registration under it,
   signed by the node key (inventory from psutil and NVML, the commit and seq it verified).
4. Campaign: the leader key, under the lease, if nobody holds it; its create revision is the
   leader's epoch.
5. Lead, when leader (`reconciler.node.leader`): plan, write fenced by the epoch, tell.
6. Judge its own assignments (`reconciler.plan.admission`): accept or refuse each, with an
   event saying why, and report it in a signed status.
7. Run the accepted ones (`reconciler.node.runtime`): each replica in its sandbox, supervised
   in a thread of its own; the agent signs and stores what the runtime says of them (their
   status, their events). The agent serves its chunk store at its address, so that peers
   fetch artifacts from each other, and its Prometheus metrics at /metrics there
   (`reconciler.node.prometheus`).
8. Pre-stage (`reconciler.node.prestage`): hand the pass's view to a thread of its own, which
   stages (never runs) the new artifacts of proposals a member already approved, within
   `prestage_budget`, so that the install finds them in place when the quorum lands.

A watch on the circle's prefix starts a pass at once when something changes; a pass also runs
at every keep-alive (or fetch, if sooner) whatever happens: the periodic resync; a change in a
replica's status starts one at once too. A failing
fetch or store backs off exponentially, and a newer approved commit is taken up at the next
pass, whatever failed before. SIGTERM (the
caller sets `stop`) ends the pass, revokes the lease (so leadership passes at once) and exits;
the replicas run on (the next agent adopts them) unless `stop_workloads` says otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import pygit2

from builders.chunks import ChunkError, ChunkSource, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.materialize import sweep_staging
from qss.durable import write_atomically
from qss.keys import read_key_file
from reconciler import __version__
from reconciler.chain import follow, node_state
from reconciler.chain.trees import desired_at
from reconciler.chain.values import Introduction, NodeState
from reconciler.chain.walk import Chain, Step
from reconciler.desired.model.types import ed25519_key_blob, mldsa65_key_blob
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError, ReconcilerError, Retry
from reconciler.node import leader, prestage, sandbox
from reconciler.node.artifacts import Artifacts
from reconciler.node.caretaker import Caretaker, volume_status
from reconciler.node.cgroups import Cgroups
from reconciler.node.identity import MLDSA_SUFFIX, ForgedRecord, NodeKey, NodeKeyError
from reconciler.node.inventory import Inventory, gpu_device_nodes, read_inventory
from reconciler.node.layout import Layout
from reconciler.node.metrics import Meter, Target
from reconciler.node.prestage import Budget, Prestager, Round
from reconciler.node.prometheus import AgentMetrics, NodeFacts, circle_facts
from reconciler.node.records import (
    AssignmentStatus,
    EventRecord,
    EventType,
    LeaderRecord,
    Phase,
    Registration,
    fit_message,
    open_assignment,
    open_record,
    sign_record,
)
from reconciler.node.replica import SandboxFailed
from reconciler.node.runtime import Runtime, RuntimeConfig, Work
from reconciler.node.secrets import Releaser
from reconciler.node.source_watch import SourceWatch, local_refs
from reconciler.node.uids import DEFAULT_RANGE, UidTable
from reconciler.node.volumes import Volumes
from reconciler.plan import (
    Assignment,
    CommitId,
    Move,
    NodeName,
    NoticeKind,
    Place,
    Stop,
    Version,
)
from reconciler.plan.admission import Decision, Refused, admit
from reconciler.plan.prestage import pinned
from reconciler.secrets import keys as kem_keys
from reconciler.store import (
    Compare,
    Delete,
    LeaseId,
    LeaseNotFound,
    Put,
    StateStore,
    StoreError,
    open_store,
)

STATUS_FILE = "agent.json"
_SLICE = 0.05  # seconds: how often a waiting agent looks whether a replica changed (as often
# as the SQLite watch polls, so a Ready replica is told within about one poll)
MAX_EVENTS = 1000
EVENT_AGE_MS = 3600 * 1000


@dataclass(frozen=True)
class AgentConfig:
    source: str
    introduction: Introduction
    state_dir: Path
    key_file: Path
    store_url: str
    ttl: int = 10
    keepalive: float = 3.0
    fetch_interval: float = 5.0
    address: str | None = None
    settle: float | None = None  # a circle's first leader waits this long for its nodes (ttl)
    artifact_sources: tuple[str, ...] = ()  # chunk store folders or http:// chunk servers
    storage_key: Path | None = None  # the circle's QSS storage key (volumes)
    uids: tuple[int, int] = DEFAULT_RANGE
    cgroup_parent: str = "circle"
    publish_host: str = "127.0.0.1"  # where declared ports are published
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL when a replica stops
    stop_workloads: bool = False  # stop the replicas when the agent exits
    progress_deadline: float = 600.0  # seconds a rolling update may wait before Stalled
    scrub_interval: float = 3600.0  # seconds between the leader's scrubs of every volume
    # What the artifacts of proposals on their way may take before their quorum lands
    # (`reconciler.node.prestage`); 0: none.
    prestage_budget: Budget = prestage.DEFAULT


@dataclass
class Condition:
    type: str  # Ready, Reconciling, Stalled
    status: bool
    reason: str
    message: str


@dataclass
class Backoff:
    """Exponential backoff of one failing thing: 1 s, 2 s, 4 s ... up to `cap`."""

    cap: float = 60.0
    failures: int = 0
    until: float = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> None:
        self.failures += 1
        self.until = now + min(self.cap, 2.0 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0


@dataclass
class _Chain:
    """The chain as this node verified it: its steps, the state, the desired state at it."""

    state: NodeState | None = None
    steps: list[Step] = field(default_factory=list)
    desired: DesiredState | None = None
    last_attempted: str | None = None
    refusal: str | None = None
    # The step whose desired state is in force: the applied one, or, when the documents at
    # the applied commit do not validate, the last step whose documents did (`invalid` says
    # why), as Flux keeps the last applied revision when a newer one fails to build.
    in_force: Version | None = None
    invalid: str | None = None

    @property
    def steps_in_force(self) -> list[Step]:
        seq = self.in_force.seq if self.in_force is not None else 0
        return [step for step in self.steps if step.seq <= seq]


class Agent:
    """One node agent (see the module)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: StateStore | None = None,
        nvml: object | None = None,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.key = NodeKey.load(config.key_file)
        # The X-Wing key that opens sealed secrets, when this node has one (KEY.x-wing).
        self.kem_key = kem_keys.load(config.key_file) if kem_keys.exists(config.key_file) else None
        self.metrics = AgentMetrics(lambda: self.caretaker.snapshot())  # served at /metrics
        self.store = self.metrics.timed(store or open_store(config.store_url))
        self.layout = Layout(config.introduction.circle)
        self.clock = clock
        self.nvml = nvml
        self.say = say or _log
        self.chain = _Chain()
        self.name: str | None = None
        self.lease: LeaseId | None = None
        self.kept_alive = 0.0
        self.fetched = 0.0
        self.registered: bytes | None = None
        self.started = int(clock())
        self.epoch = 0  # the newest leader epoch seen
        self.leadership: leader.Leadership | None = None
        self.decisions: dict[tuple[str, int], Decision] = {}  # by (store key, mod revision)
        self.events = 0
        self.fetch_backoff = Backoff()
        self.store_backoff = Backoff()
        self.conditions: list[Condition] = []
        self.pending: list[tuple[float, EventType, str, str, str]] = []
        # the runtime (made once the node knows its name) and what feeds it
        self.wake = threading.Event()  # set by the runtime when a replica's status changes
        self.source_changed = threading.Event()  # set by the source watch: fetch now
        self.peers: tuple[str, ...] = ()
        self._peers_seen: dict[str, tuple[int, tuple[str | None, ...], str | None]] = {}
        self._sources: dict[str, ChunkSource] = {}
        self.artifacts = Artifacts(
            config.state_dir, self._chunk_sources, say=self.say, on_chunk=self._chunk_came
        )
        self.prestager = Prestager(
            self.artifacts,
            config.state_dir,
            config.introduction,
            config.prestage_budget,
            say=self.say,
            on_bytes=self.metrics.staged_bytes.set,
        )
        storage_key = read_key_file(config.storage_key) if config.storage_key else None
        self.volumes = Volumes(
            config.state_dir,
            storage_key,
            self.artifacts,
            kem_key=self.kem_key,
            node=lambda: self.name,
        )
        self.runtime: Runtime | None = None
        self.meter = Meter(self._gpu_utilization, self.wake.set)
        self.caretaker = Caretaker(
            config.scrub_interval,
            lambda: self.chain.desired,
            lambda: self.leadership is not None,
            self.wake.set,
        )
        self.runtime_error: str | None = None
        self.chunk_server: ChunkServer | None = None
        self.reported: dict[tuple[str, int, int], AssignmentStatus] = {}
        self.reported_at: dict[tuple[str, int, int], int] = {}
        self._desired_by_commit: dict[str, DesiredState | None] = {}
        self.registration: Registration | None = None  # the last one written
        self.accepted: tuple[Assignment, ...] = ()  # this node's, as of the last pass

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Passes until `stop` is set; then revoke the lease and return 0. The node folder
        is this agent's alone while it runs (InputError if another agent holds it); what an
        earlier agent's killed installs left there is removed first."""
        with hold_alone(self.config.state_dir):
            left = sweep_staging(self.artifacts.root)
            if left:
                self.say(f"removed {len(left)} unfinished install(s) an earlier agent left")
            return self._loop(stop)

    def _loop(self, stop: threading.Event) -> int:
        revision = 0
        watch = None
        refs = local_refs(self.config.source)
        source_watch = None if refs is None else SourceWatch(refs, self._source_moved, self.say)
        if source_watch is not None:
            source_watch.start()
        self.caretaker.start()
        self.prestager.start()
        try:
            while not stop.is_set():
                self.step()
                if watch is None:
                    with contextlib.suppress(StoreError):
                        revision = self.store.revision()
                        watch = self.store.watch(self.layout.root, revision + 1)
                deadline = time.monotonic() + min(self.config.keepalive, self.config.fetch_interval)
                self.wake.clear()
                while not stop.is_set() and not self.wake.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    if watch is None:
                        self.wake.wait(min(left, _SLICE))
                        continue
                    try:
                        if watch.poll(min(left, _SLICE)):
                            break
                    except StoreError:
                        watch.close()
                        watch = None  # compacted or gone: re-list (the next pass) and re-watch
        finally:
            if watch is not None:
                watch.close()
            if source_watch is not None:
                source_watch.stop()
            self.caretaker.stop()
            self.prestager.stop()
            self.leave()
        return 0

    def _source_moved(self) -> None:
        self.source_changed.set()
        self.wake.set()

    def step(self) -> None:
        """One pass (see the module)."""
        now = self.clock()
        try:
            self._follow(now)
            if self.chain.desired is None or self.chain.state is None:
                self._condition("Stalled", "NoApprovedState", self.chain.refusal or "waiting")
                return
            name = self._identify(self.chain.desired)
            if name is None:
                return
            if not self.store_backoff.ready(now):
                return
            self._be_there(now, name)
            self._campaign(now, name)
            if self.leadership is not None:
                self._lead(now, name)
            for finding in self.caretaker.take():
                kind = EventType.WARNING if finding.warning else EventType.NORMAL
                self._event(now, kind, finding.reason, f"volume/{finding.volume}", finding.message)
            for scrubbed in self.caretaker.take_scrubbed():
                record = volume_status(name, scrubbed)
                where = self.layout.volume(scrubbed.volume, scrubbed.object_id)
                self.store.put(where, sign_record(self.key, name, record))
            self._run(now, name, self._judge(now, name))
            self._prestage(now)
            self.store_backoff.succeeded()
            if self.chain.invalid is not None:
                self._condition("Stalled", "InvalidDesiredState", self.chain.invalid)
            else:
                self._condition("Ready", "Reconciled", self._summary())
        except StoreError as error:
            self.store_backoff.failed(now)
            self._condition("Reconciling", "StoreUnavailable", str(error))
            self.say(f"store: {error}")
        finally:
            self._write_status(now)
            self.metrics.node = self._node_facts()

    def leave(self) -> None:
        """Let the replicas be (or stop them, as configured), stop serving chunks, and revoke
        the lease: registration, statuses and the leader key go with it."""
        self.meter.stop()
        if self.runtime is not None:
            self.runtime.close()
        if self.chunk_server is not None:
            self.chunk_server.stop()
        for source in self._sources.values():  # peers' kept-alive connections
            if isinstance(source, HttpChunkSource):
                source.close()
        self._sources = {}
        if self.lease is not None:
            with contextlib.suppress(StoreError):
                self.store.revoke(self.lease)
            self.lease = None
        self.store.close()

    # -- 1. the chain -----------------------------------------------------------------------

    def _follow(self, now: float) -> None:
        due = now - self.fetched >= self.config.fetch_interval or self.source_changed.is_set()
        if not due and self.chain.desired is not None:
            return
        if not self.fetch_backoff.ready(now):
            return
        self.fetched = now
        self.source_changed.clear()
        try:
            with self.metrics.follow.time():
                done = follow.follow_once(
                    self.config.source, self.config.introduction, self.config.state_dir, int(now)
                )
        except ReconcilerError as error:
            self.metrics.follow_failures.inc()
            self.chain.refusal = str(error)
            if error.retry is Retry.TRANSIENT:
                self.fetch_backoff.failed(now)
            self.say(f"follow: {error}")
            return
        self.fetch_backoff.succeeded()
        self.chain.last_attempted = done.target
        self.chain.refusal = done.refusal
        if done.state is None:
            return
        if self.chain.state is None or done.applied:
            repo = pygit2.Repository(str(self.config.state_dir / follow.REPOSITORY))
            if self.chain.state is None:
                steps, _ = Chain(repo, self.config.introduction).walk(int(now))
                self.chain.steps = [s for s in steps if s.seq <= done.state.seq]
            else:
                self.chain.steps += list(done.applied)
            self._take_desired(now, repo, Version(done.state.commit, done.state.seq))  # type: ignore[arg-type]
            for step in done.applied:
                by = ", ".join(step.signers)
                subject = f"commit/{step.commit[:12]}"
                self._event(
                    now, EventType.NORMAL, "CommitApplied", subject, f"seq {step.seq}, by {by}"
                )
        self.chain.state = done.state

    def _take_desired(self, now: float, repo: pygit2.Repository, applied: Version) -> None:
        """Put the applied step's desired state in force, unless its documents do not
        validate: then keep (or, just started, find) the last step whose documents do."""
        report = desired_at(repo, applied.commit)
        if not report.errors:
            self.chain.desired, self.chain.in_force, self.chain.invalid = (
                report.state,
                applied,
                None,
            )
            return
        shown = "; ".join(str(problem) for problem in report.errors[:3])
        more = len(report.errors) - 3
        why = f"{shown}" + (f" (and {more} more)" if more > 0 else "")
        if self.chain.desired is None:
            for step in reversed(self.chain.steps):
                if step.seq >= applied.seq:
                    continue
                earlier = desired_at(repo, step.commit)
                if not earlier.errors:
                    self.chain.desired = earlier.state
                    self.chain.in_force = Version(CommitId(step.commit), step.seq)
                    break
            else:  # no valid step at all: run what there is
                self.chain.desired, self.chain.in_force = report.state, applied
        kept = self.chain.in_force
        outcome = (
            f"seq {kept.seq} ({kept.commit[:12]}) stays in force"
            if kept is not None and kept != applied
            else "running it as it is"
        )
        message = (
            f"seq {applied.seq} ({applied.commit[:12]}) is approved but its documents do not "
            f"validate: {why}; {outcome}"
        )
        subject = f"commit/{applied.commit[:12]}"
        if self.chain.invalid != message:
            self._event(now, EventType.WARNING, "InvalidDesiredState", subject, message)
        self.chain.invalid = message

    # -- 2. who am I ------------------------------------------------------------------------

    def _identify(self, desired: DesiredState) -> str | None:
        mine = ed25519_key_blob(self.key.public_key_line)
        for name, loaded in sorted(desired.nodes.items()):
            if ed25519_key_blob(loaded.document.public_key) == mine:
                self._check_mldsa_half(name, loaded.document.mldsa_public_key)
                self.name = name
                return name
        self.name = None
        self._condition(
            "Stalled",
            "NodeNotAdmitted",
            f"no nodes/*.yaml at {self.chain.state.commit[:12] if self.chain.state else '?'} "
            f"has this agent's key ({self.key.fingerprint}): admit it, or give the node's key",
        )
        return None

    def _check_mldsa_half(self, name: str, declared: str | None) -> None:
        """Refuse to run as `name` unless the key's ML-DSA half is the one its document
        declares (or neither has one): the other nodes would refuse every record it signs."""
        have = self.key.mldsa_public_key_line
        if (None if have is None else mldsa65_key_blob(have)) == (
            None if declared is None else mldsa65_key_blob(declared)
        ):
            return
        half = self.config.key_file.with_name(self.config.key_file.name + MLDSA_SUFFIX)
        if have is None:
            why = f"nodes/{name}.yaml declares an mldsaPublicKey, and this key has no {half}"
        elif declared is None:
            why = (
                f"this key has an ML-DSA half ({half}), and nodes/{name}.yaml declares no "
                "mldsaPublicKey"
            )
        else:
            why = f"the ML-DSA half {half} is not the mldsaPublicKey of nodes/{name}.yaml"
        message = (
            f"{why}: every record this agent signed would be refused as a forgery; give the "
            f"key that nodes/{name}.yaml names (or have its mldsaPublicKey changed)"
        )
        self.name = None
        self._condition("Stalled", "NodeKeyMismatch", message)
        raise NodeKeyError(f"{self.config.key_file}: {message}")

    def _keys(self) -> tuple[dict[str, str], dict[str, str]]:
        """The admitted nodes' keys at the applied commit: publicKey, and mldsaPublicKey of
        the hybrid ones (both halves needed)."""
        assert self.chain.desired is not None
        return leader.node_keys(self.chain.desired)

    # -- 3. registration and lease ----------------------------------------------------------

    def _be_there(self, now: float, name: str) -> None:
        if self.lease is not None and now - self.kept_alive >= self.config.keepalive:
            try:
                self.store.keep_alive(self.lease)
                self.kept_alive = now
            except LeaseNotFound:
                self.say("lease lost: registering again")
                self.lease, self.registered, self.leadership = None, None, None
        if self.lease is None:
            self.lease = self.store.grant(self.config.ttl)
            self.kept_alive = now
            self.registered = None
            self.reported = {}  # the statuses went with the old lease
        assert self.chain.state is not None
        assert self.chain.desired is not None
        node = self.chain.desired.nodes[name].document
        record = Registration(
            node=NodeName(name),
            circle=self.config.introduction.circle,
            failure_domain=node.failure_domain,
            address=self._serve_chunks(self.config.address or node.address),
            inventory=self._inventory(),
            commit=CommitId(self.chain.state.commit),
            seq=self.chain.state.seq,
            started_at=self.started,
            heartbeat_at=self.started,  # the lease is the heartbeat: no write per keep-alive
            agent=__version__,
        )
        if self.registered is None or record != self.registration:
            # Compared as records: an ML-DSA signature is randomized, the value differs each time.
            value = sign_record(self.key, name, record)
            first = self.registered is None
            self.store.put(self.layout.node(name), value, lease=self.lease)
            self.registered, self.registration = value, record
            if first:
                where = f"at seq {self.chain.state.seq} in {node.failure_domain}"
                self._event(
                    now, EventType.NORMAL, "NodeRegistered", f"node/{name}", f"registered {where}"
                )
                pending, self.pending = self.pending, []
                for event in pending:
                    self._event(*event)

    def _inventory(self) -> Inventory:
        return read_inventory(self.config.state_dir, self.nvml)

    def _gpu_utilization(self) -> dict[str, int]:
        return {g.uuid: g.utilization for g in self._inventory().gpus if g.utilization is not None}

    # -- 4. leadership ----------------------------------------------------------------------

    def _campaign(self, now: float, name: str) -> None:
        assert self.lease is not None
        current = self.store.get(self.layout.leader)
        if current is None:
            value = sign_record(self.key, name, LeaderRecord(NodeName(name), int(now)))
            done = self.store.txn(
                [Compare.absent(self.layout.leader)],
                [Put(self.layout.leader, value, lease=self.lease)],
            )
            if done.succeeded:
                self.epoch = max(self.epoch, done.revision)
                self.leadership = leader.Leadership(done.revision, since=now)
                self._event(
                    now,
                    EventType.NORMAL,
                    "LeaderElected",
                    f"node/{name}",
                    f"{name} leads, epoch {done.revision}",
                )
                return
            current = self.store.get(self.layout.leader)
            if current is None:
                return
        try:
            record_of = open_record(current.value, LeaderRecord, *self._keys())
        except ForgedRecord as error:
            self.say(f"leader key: {error}")
            self.leadership = None
            return
        self.epoch = max(self.epoch, current.create_revision)
        mine = record_of.signer == name and current.lease == self.lease
        if not mine:
            self.leadership = None
        elif self.leadership is None or self.leadership.epoch != current.create_revision:
            self.leadership = leader.Leadership(current.create_revision, since=now)

    def _leaders(self) -> dict[int, str]:
        current = self.store.get(self.layout.leader)
        if current is None:
            return {}
        try:
            opened = open_record(current.value, LeaderRecord, *self._keys())
        except ForgedRecord:
            return {}
        return {current.create_revision: opened.signer}

    # -- 5. leading -------------------------------------------------------------------------

    def _lead(self, now: float, name: str) -> None:
        assert self.leadership is not None
        assert self.chain.state is not None
        assert self.chain.desired is not None
        term = self.leadership
        seen = leader.observe(self.store, self.layout, *self._keys())
        for key in seen.forged:
            if key not in term.said_forged:
                term.said_forged.add(key)
                self._event(
                    now,
                    EventType.WARNING,
                    "ForgedRecord",
                    self.layout.subject_of(key),
                    "a record that no admitted node signed was ignored",
                )
        present = set(seen.registrations)
        joined = present - term.known_nodes
        # Lost: a node this term saw go, or one still holding slots without a lease (a leader
        # that took over from a frozen or killed one never saw that node's registration).
        holding = {key.node for key in seen.assignments}
        lost = (term.known_nodes | holding) - present - term.said_lost
        for node in sorted(joined):
            self._event(
                now,
                EventType.NORMAL,
                "NodeJoined",
                f"node/{node}",
                f"{node} joined ({seen.registrations[node].failure_domain})",
            )
        for node in sorted(lost):
            self._event(
                now,
                EventType.WARNING,
                "NodeLost",
                f"node/{node}",
                f"{node}'s lease expired: its replicas are rescheduled",
            )
        term.known_nodes = present
        term.said_lost = (term.said_lost | lost) - present
        if self._catching_up(now, term, seen):
            return
        everyone = set(self.chain.desired.nodes) <= set(seen.registrations)
        settle = self.config.ttl if self.config.settle is None else self.config.settle
        if not seen.assignments and not everyone and now - term.since < settle:
            return  # the first leader of a circle lets its nodes register first
        replicas, decisions = leader.autoscale(term, self.chain.desired, seen, int(now))
        self.metrics.circle = circle_facts(self.chain.desired, seen, replicas)
        for workload, message in decisions:
            self._event(now, EventType.NORMAL, "Scaled", f"workload/{workload}", message)
        repo = pygit2.Repository(str(self.config.state_dir / follow.REPOSITORY))
        head = self.chain.in_force
        assert head is not None
        versions = leader.workload_versions(repo, self.chain.steps_in_force, self.chain.desired)
        with self.metrics.planner.time():
            found = leader.plan_pass(
                self.chain.desired,
                seen,
                head=head,
                versions=versions,
                epoch=term.epoch,
                now=int(now),
                ttl=self.config.ttl,
                replicas=replicas,
            )
        ops = leader.operations(found, seen, self.key, name, self.layout, term.epoch)
        if ops and not leader.write(self.store, self.layout, term.epoch, ops):
            self.say(f"epoch {term.epoch} is over: another agent leads")
            self.leadership = None
            return
        for action in found.actions:
            said = {"place": "Scheduled", "move": "Rescheduled", "stop": "Stopped"}[action.kind]
            where = _where(action)
            self._event(
                now,
                EventType.NORMAL,
                said,
                f"assignment/{action.workload}/{action.slot}",
                f"{where}: {action.detail}",
            )
        news = leader.rollout_news(
            term, found, seen, versions, head, now, self.config.progress_deadline
        )
        for warning, reason, workload, message in news:
            kind = EventType.WARNING if warning else EventType.NORMAL
            self._event(now, kind, reason, f"workload/{workload}", message)
        for notice in found.notices:
            if notice.kind is NoticeKind.ROLLOUT_WAITING:
                continue  # watched above: said once it stalls
            told = (str(notice.workload), str(notice.kind))
            if term.said_notices.get(told) != notice.message:
                term.said_notices[told] = notice.message
                blocked = notice.kind is NoticeKind.ROLLOUT_BLOCKED
                self._event(
                    now,
                    EventType.WARNING,
                    "RolloutBlocked" if blocked else "SpreadShort",
                    f"workload/{notice.workload}",
                    notice.message,
                )
        for item in found.unschedulable:
            slot = (str(item.workload), item.slot)
            if term.said_unschedulable.get(slot) != item.message:
                term.said_unschedulable[slot] = item.message
                self._event(
                    now,
                    EventType.WARNING,
                    "Unschedulable",
                    f"assignment/{item.workload}/{item.slot}",
                    item.message,
                )
        self._bound_events(now)

    def _catching_up(self, now: float, term: leader.Leadership, seen: leader.Observed) -> bool:
        """A newly approved seq is planned once every live node has verified it too (or
        after a fetch interval and a keep-alive): a node still on the previous seq cannot
        take the new version's replicas, and a plan made without it would pile them onto
        the nodes that were quicker, against the workload's spread."""
        assert self.chain.state is not None
        head = self.chain.state.seq
        first = term.head_seen.setdefault(head, now)
        lagging = [node for node, r in seen.registrations.items() if r.seq < head]
        return bool(lagging) and now - first < self.config.fetch_interval + self.config.keepalive

    def _bound_events(self, now: float) -> None:
        """Keep the newest MAX_EVENTS events of the last hour."""
        assert self.leadership is not None
        events = self.store.range(self.layout.events).kvs
        cutoff = self.layout.event(int(now * 1000) - EVENT_AGE_MS, "", 0)
        old = [kv.key for kv in events if kv.key < cutoff]
        extra = [kv.key for kv in events[: max(0, len(events) - MAX_EVENTS)]]
        doomed = sorted(set(old) | set(extra))
        if doomed:
            ops = [Delete(key) for key in doomed]
            leader.write(self.store, self.layout, self.leadership.epoch, ops)

    # -- 6. this node's assignments ---------------------------------------------------------

    def _judge(self, now: float, name: str) -> dict[tuple[str, int], Work]:
        """Judge each new assignment of this node once; the accepted ones, as work to run (the
        newest seq of each slot)."""
        assert self.chain.desired is not None
        assert self.chain.state is not None
        keys, mldsa_keys = self._keys()
        chain = {step.commit: step.seq for step in self.chain.steps}
        leaders = self._leaders()
        repo = pygit2.Repository(str(self.config.state_dir / follow.REPOSITORY))
        my_gpus = {gpu.uuid for gpu in self._inventory().gpus}
        wanted: dict[tuple[str, int], Work] = {}
        listed = self.store.range(self.layout.assignments).kvs
        for kv in listed:
            if self.layout.assignment_of(kv.key) is None:
                continue
            seen = (kv.key, kv.mod_revision)
            try:
                opened = open_assignment(kv.value, keys, mldsa_keys)
            except ForgedRecord as error:
                if seen not in self.decisions:
                    self.decisions[seen] = Decision(Refused.UNSIGNED, str(error))  # said once
                    self._event(
                        now,
                        EventType.WARNING,
                        "AssignmentRefused",
                        self.layout.subject_of(kv.key),
                        f"not signed by an admitted node: {error}",
                    )
                continue
            assignment = opened.record
            if assignment.node != name:
                continue
            at = self._desired_at(repo, assignment.commit, chain)
            decision = self.decisions.get(seen)
            if decision is None:
                decision = admit(
                    assignment,
                    signer=opened.signer,
                    me=name,
                    chain=chain,
                    desired=at or self.chain.desired,
                    leaders=leaders,
                    newest_epoch=self.epoch,
                    my_gpus=my_gpus,
                )
                self.decisions[seen] = decision
                self._told(now, name, assignment, decision)
            if not decision.accepted or at is None:
                continue
            loaded = at.workloads.get(assignment.workload)
            slot = (str(assignment.workload), assignment.slot)
            if loaded is not None and (
                slot not in wanted or wanted[slot].assignment.seq < assignment.seq
            ):
                wanted[slot] = Work(assignment, loaded.document, at)
        live = {kv.key for kv in listed}
        self.decisions = {seen: d for seen, d in self.decisions.items() if seen[0] in live}
        return wanted

    def _desired_at(
        self, repo: pygit2.Repository, commit: str, chain: dict[str, int]
    ) -> DesiredState | None:
        if commit not in self._desired_by_commit:
            if len(self._desired_by_commit) > 64:
                self._desired_by_commit.clear()
            self._desired_by_commit[commit] = _desired_or_none(repo, commit, chain)
        return self._desired_by_commit[commit]

    def _told(self, now: float, name: str, assignment: Assignment, decision: Decision) -> None:
        subject = f"assignment/{assignment.workload}/{assignment.slot}"
        if decision.accepted:
            self._event(
                now,
                EventType.NORMAL,
                "AssignmentAccepted",
                subject,
                f"seq {assignment.seq}, artifact {assignment.digest[:19]}",
            )
            return
        self._event(
            now,
            EventType.WARNING,
            "AssignmentRefused",
            subject,
            f"{decision.refused}: {decision.message}; nothing runs",
        )
        self._report(
            now,
            name,
            assignment,
            phase=Phase.REFUSED,
            reason=str(decision.refused),
            message=decision.message,
        )

    # -- 7. running them --------------------------------------------------------------------

    def _run(self, now: float, name: str, wanted: dict[tuple[str, int], Work]) -> None:
        self.accepted = tuple(work.assignment for work in wanted.values())
        runtime = self._runtime(name)
        if runtime is None:
            for work in wanted.values():
                self._report(
                    now,
                    name,
                    work.assignment,
                    phase=Phase.PENDING,
                    reason="SandboxFailed",
                    message=f"this node cannot run workloads: {self.runtime_error}",
                )
            return
        if wanted:
            self.peers = self._peer_addresses(name)
        runtime.sync(wanted)
        for event in runtime.take_events():
            self._event(now, event.type, event.reason, event.subject, event.message)
        current = {(s.workload, s.slot, s.seq): s for s in runtime.statuses()}
        measured: list[Target] = []
        for key, status in current.items():
            a = wanted.get((status.workload, status.slot))
            if a is None or a.assignment.seq != status.seq:
                continue
            autoscale = a.workload.autoscale
            load = self.meter.load(key) if autoscale is not None else None
            if autoscale is not None and status.phase is Phase.READY:
                measured.append(_target(runtime, a, key))
            self._report(
                now,
                name,
                a.assignment,
                phase=status.phase,
                reason=status.reason,
                message=status.message,
                restarts=status.restarts,
                endpoints=status.endpoints,
                load=None if load is None else round(load * 1000),
            )
        self.meter.watch(measured)
        for gone in set(self.reported) - set(current):
            if self.reported[gone].phase is Phase.REFUSED:
                continue  # told once; it stays while the node's lease lives, as before
            if any(
                (w.assignment.workload, w.assignment.slot, w.assignment.seq) == gone
                for w in wanted.values()
            ):
                continue
            workload, slot, seq = gone
            self.store.delete(self.layout.status(name, workload, slot, seq))
            del self.reported[gone]
            self.reported_at.pop(gone, None)

    def _runtime(self, name: str) -> Runtime | None:
        if self.runtime is not None or self.runtime_error is not None:
            return self.runtime
        config = self.config
        try:
            if not os.access(sandbox.BWRAP, os.X_OK):
                raise SandboxFailed(f"{sandbox.BWRAP} is missing: install bubblewrap")
            cgroups = Cgroups.detect(config.cgroup_parent)
            self.runtime = Runtime(
                RuntimeConfig(
                    config.state_dir,
                    name,
                    publish_host=config.publish_host,
                    grace=config.grace,
                    stop_on_exit=config.stop_workloads,
                ),
                artifacts=self.artifacts,
                volumes=self.volumes,
                cgroups=cgroups,
                uids=UidTable(config.state_dir / "uids.json", config.uids),
                gpu_devices=lambda uuids: gpu_device_nodes(self.nvml, uuids),
                on_change=self.wake.set,
                clock=self.clock,
                on_check=self.metrics.health_checked,
                secrets=Releaser(name, self.kem_key),
                on_release=self.metrics.secret_released,
            )
        except ReconcilerError as error:
            self.runtime_error = str(error)
            self.say(f"runtime: {error}")
            return None
        adopted = self.runtime.adopt()
        if adopted:
            self.say(f"adopted {adopted} running replica(s)")
        return self.runtime

    def _peer_addresses(self, name: str) -> tuple[str, ...]:
        """Where the other registered nodes serve their chunk stores (a registration is
        verified once per revision of it and of the node's approved key)."""
        keys, mldsa_keys = self._keys()
        known: dict[str, tuple[int, tuple[str | None, ...], str | None]] = {}
        for kv in self.store.range(self.layout.nodes).kvs:
            node = self.layout.node_of(kv.key)
            if node is None or node == name:
                continue
            seen = self._peers_seen.get(kv.key)
            approved = (keys.get(node), mldsa_keys.get(node))
            if seen is None or seen[:2] != (kv.mod_revision, approved):
                try:
                    opened = open_record(kv.value, Registration, keys, mldsa_keys)
                    address = opened.record.address
                except ForgedRecord:
                    address = None
                seen = (kv.mod_revision, approved, address)
            known[kv.key] = seen
        self._peers_seen = known
        return tuple(sorted(address for *_, address in known.values() if address))

    def _chunk_sources(self) -> list[ChunkSource]:
        """Peers first, then the configured sources (materialize asks the local store first)."""
        sources: list[ChunkSource] = []
        for where in (*self.peers, *self.config.artifact_sources):
            source = self._sources.get(where)
            if source is None:
                try:
                    source = (
                        HttpChunkSource(where, timeout=30.0)
                        if where.startswith(("http://", "https://"))
                        else ChunkStore(Path(where), create=False)
                    )
                except ChunkError as error:
                    self.say(f"artifact source {where}: {error}")
                    continue
                self._sources[where] = source
            sources.append(source)
        return sources

    def _chunk_came(self, source: ChunkSource, size: int) -> None:
        """A chunk of a materialization, verified: count its bytes by where it came from."""
        peers = [self._sources.get(where) for where in self.peers]
        origin = (
            "local"
            if source is self.artifacts.store
            else "peer"
            if any(source is peer for peer in peers)
            else "source"
        )
        self.metrics.chunk_came(origin, size)

    def _serve_chunks(self, address: str | None) -> str | None:
        """Serve the chunk store at `address` (port 0: any); the address peers reach it at."""
        if self.chunk_server is not None:
            return self.chunk_server.url
        if address is None:
            return None
        parts = urlsplit(address)
        try:
            port = 80 if parts.port is None else parts.port  # 0: any free port
            host = parts.hostname or "127.0.0.1"
            pages = {"/metrics": self.metrics.page}
            server = ChunkServer(
                self.artifacts.store, host, port, pages=pages, trees=self.artifacts.trees
            )
            server.start()
        except (ChunkError, OSError) as error:
            self.say(f"cannot serve the chunk store at {address}: {error}")
            return address
        self.chunk_server = server
        return server.url

    def _report(
        self,
        now: float,
        name: str,
        assignment: Assignment,
        *,
        phase: Phase,
        reason: str,
        message: str,
        restarts: int = 0,
        endpoints: tuple[str, ...] = (),
        load: int | None = None,
    ) -> None:
        status = AssignmentStatus(
            node=NodeName(name),
            workload=assignment.workload,
            slot=assignment.slot,
            seq=assignment.seq,
            phase=phase,
            reason=reason,
            message=fit_message(message),
            commit=assignment.commit,
            observed_at=0,
            restarts=restarts,
            endpoints=endpoints,
            load=load,
        )
        said = (assignment.workload, assignment.slot, assignment.seq)
        before = self.reported.get(said)
        if before == status:
            return  # said already: a status is written when it changes
        since = int(now)
        if before is not None and replace(before, load=load) == status:
            since = self.reported_at.get(said, since)  # only the load moved: same since
        self.reported_at[said] = since
        value = sign_record(self.key, name, replace(status, observed_at=since))
        where = self.layout.status(name, assignment.workload, assignment.slot, assignment.seq)
        self.store.put(where, value, lease=self.lease)
        self.reported[said] = status

    def _prestage(self, now: float) -> None:
        """Hand this pass's view to the pre-staging thread (it runs a round only when
        something moved), and tell what it did since."""
        assert self.chain.state is not None
        assert self.chain.desired is not None
        running = {(str(a.workload), str(a.digest)) for a in self.accepted}
        keep = pinned(self.chain.desired) | {digest for _, digest in running}
        self.prestager.offer(Round(self.chain.state, tuple(sorted(running)), keep, int(now)))
        for kind, reason, subject, message in self.prestager.take_events():
            self._event(now, kind, reason, subject, message)

    # -- events and status ------------------------------------------------------------------

    def _event(self, now: float, kind: EventType, reason: str, subject: str, message: str) -> None:
        if self.name is None or self.lease is None:
            self.pending.append((now, kind, reason, subject, message))  # told once registered
            return
        self.events += 1
        record = EventRecord(
            time_ms=int(now * 1000),
            type=kind,
            reason=reason,
            object=fit_message(subject),
            node=NodeName(self.name),
            commit=CommitId(self.chain.state.commit) if self.chain.state else None,
            message=fit_message(message),
        )
        value = sign_record(self.key, self.name, record)
        with contextlib.suppress(StoreError):
            self.store.put(self.layout.event(int(now * 1000), self.name, self.events), value)
        self.say(f"{kind.value} {reason} {subject}: {message}")

    def _condition(self, kind: str, reason: str, message: str) -> None:
        self.conditions = [Condition(kind, True, reason, message)]

    def _summary(self) -> str:
        role = f"leader (epoch {self.leadership.epoch})" if self.leadership else "follower"
        accepted = sum(1 for decision in self.decisions.values() if decision.accepted)
        if self.runtime is None:
            said = f"cannot run workloads: {self.runtime_error}" if self.runtime_error else ""
            return f"{self.name}: {role}, {accepted} assignment(s) accepted" + (
                f"; {said}" if said else ""
            )
        statuses = self.runtime.statuses()
        ready = sum(1 for status in statuses if status.phase is Phase.READY)
        return (
            f"{self.name}: {role}, {accepted} assignment(s) accepted, {ready}/{len(statuses)} ready"
        )

    def _write_status(self, now: float) -> None:
        state = self.chain.state
        document = {
            "node": self.name,
            "circle": self.config.introduction.circle,
            "store": self.store.url,
            "leader": self.leadership is not None,
            "epoch": self.epoch,
            "lastApplied": None if state is None else {"commit": state.commit, "seq": state.seq},
            "lastAttempted": self.chain.last_attempted,
            "refusal": self.chain.refusal,
            "conditions": [vars(c) for c in self.conditions],
            "updatedAt": int(now),
        }
        with contextlib.suppress(OSError):
            write_atomically(
                self.config.state_dir / STATUS_FILE,
                json.dumps(document, indent=2) + "\n",
                mode=0o600,
            )

    def _node_facts(self) -> NodeFacts:
        """What /metrics says of this node until the next pass (`reconciler.node.prometheus`)."""
        desired = self.chain.desired
        return NodeFacts(
            node=self.name or "",
            circle=self.config.introduction.circle,
            version=__version__,
            leader=self.leadership is not None,
            applied_seq=None if self.chain.state is None else self.chain.state.seq,
            inventory=None if self.registration is None else self.registration.inventory,
            accepted=self.accepted,
            reported=tuple(self.reported.values()),
            workloads=() if desired is None else tuple(sorted(desired.workloads)),
        )


AGENT_LOCK = "agent.lock"  # STATE/agent.lock: held (flock) by the one agent running there


@contextlib.contextmanager
def hold_alone(state_dir: Path) -> Iterator[None]:
    """Hold the node folder for one agent's whole run: two agents on one folder would adopt,
    stop and clean up each other's replicas, secrets and installs. The lock goes with the
    process (a killed agent's is free at once); the file names the holder's pid."""
    node_state.check_folder(state_dir)
    descriptor = node_state.open_private(state_dir / AGENT_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "unknown"
            raise InputError(
                f"{state_dir}: another agent runs on this node folder (pid {holder}): stop "
                "it first, or give this one its own --state"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        os.close(descriptor)


def _log(line: str) -> None:
    """One line of the agent's log on stderr, stamped with the UTC time (as the kubelet's)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    print(f"{stamp} {line}", file=sys.stderr, flush=True)


def _target(runtime: Runtime, work: Work, key: tuple[str, int, int]) -> Target:
    """What the meter measures of one Ready replica of an autoscaled workload."""
    autoscale = work.workload.autoscale
    assert autoscale is not None
    source = autoscale.source
    a = work.assignment
    return Target(
        key=key,
        metric=str(autoscale.metric),
        cpu=a.cpu,
        memory=a.memory,
        gpus=tuple(a.gpus),
        group=runtime.group(a.workload, a.slot),
        sandbox_pid=runtime.sandbox_pid(a.workload, a.slot),
        port=source.port if source else None,
        path=source.path if source else "/metrics",
        series=source.series if source else "",
    )


def _where(action: Place | Move | Stop) -> str:
    if isinstance(action, Move):
        return f"{action.old.node} -> {action.new.node}"
    return f"on {action.assignment.node}"


def _desired_or_none(
    repo: pygit2.Repository, commit: str, chain: dict[str, int]
) -> DesiredState | None:
    """The desired state at an approved commit of the chain; None for any other commit."""
    if commit not in chain:
        return None
    with contextlib.suppress(ReconcilerError):
        return desired_at(repo, commit).state
    return None
