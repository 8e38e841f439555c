"""The node agent's Prometheus metrics, served at `/metrics` on the node's address beside its
chunk store (`builders.http_chunks.ChunkServer` pages).

Each agent has a registry of its own (never the process-wide default: a test process runs
several agents). Two kinds of metrics share it:

- measured where they happen, by instruments the agent hands out: the follow pass, the
  planner, every health check, every secret released to a replica (by workload and secret,
  never its value), every state store call (`TimedStore`), the chunks of every
  materialization by origin;
- read at scrape time from facts the agent publishes at the end of each pass (`NodeFacts`,
  frozen, replaced whole, so a scrape on the server's thread never sees half a pass) and from
  the caretaker's last scrubs.

Replicas are counted in two places. Every node exports its own: `circle_node_replicas
{workload,phase}` (its statuses, as it signed them into the store; every phase, zeros too).
Only the leader, which observes the whole circle, exports `circle_workload_replicas_desired`
and `_ready{workload}`, the planner's histogram and the volumes' share health, so a query
needs no `max()` over nodes that each saw part of it. Summed over nodes, `circle_node_replicas
{phase="Ready"}` is the leader's `circle_workload_replicas_ready` once both have seen a pass.

The `*_families` functions are pure: facts in, metric families out. docs/operations.md lists
every metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qss.reports import ShareStatus
from reconciler.desired.repository import DesiredState
from reconciler.node.caretaker import Scrubbed
from reconciler.node.leader import Observed
from reconciler.node.records import AssignmentStatus, Inventory, Phase
from reconciler.plan import Assignment, ReadyState
from reconciler.store import (
    Compare,
    DeleteResult,
    KeyValue,
    LeaseId,
    PutResult,
    RangeResult,
    StateStore,
    StoreError,
    TxnOp,
    TxnResult,
    Watch,
)

ORIGINS = ("local", "peer", "source")  # where a materialized chunk came from
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_T = TypeVar("_T")


@dataclass(frozen=True)
class NodeFacts:
    """What the agent knew at the end of its last pass."""

    node: str = ""  # empty until the agent knows which admitted node it is
    circle: str = ""
    version: str = ""
    leader: bool = False
    applied_seq: int | None = None
    inventory: Inventory | None = None  # as last registered
    accepted: tuple[Assignment, ...] = ()  # this node's accepted assignments
    reported: tuple[AssignmentStatus, ...] = ()  # the statuses it signed into the store
    workloads: tuple[str, ...] = ()  # the approved workloads


@dataclass(frozen=True)
class CircleFacts:
    """What the leader observed of the whole circle on its last plan."""

    desired: Mapping[str, int] = field(default_factory=dict)  # workload -> replicas wanted
    ready: Mapping[str, int] = field(default_factory=dict)  # workload -> replicas Ready


def circle_facts(
    desired: DesiredState, observed: Observed, decided: Mapping[str, int]
) -> CircleFacts:
    """Replicas wanted (the autoscaler's decision, else the approved count) and Ready (a
    verified Ready status of a current assignment) of every approved workload."""
    ready = dict.fromkeys(desired.workloads, 0)
    for key in observed.assignments:
        readiness = observed.readiness.get(key)
        if key.workload in ready and readiness is not None:
            ready[key.workload] += readiness.state is ReadyState.READY
    wanted = {
        name: decided.get(name, loaded.document.replicas)
        for name, loaded in desired.workloads.items()
    }
    return CircleFacts(wanted, ready)


# -- families (pure) -----------------------------------------------------------------------------


def node_families(facts: NodeFacts) -> Iterator[Metric]:
    """The metrics every agent exports about itself."""
    info = GaugeMetricFamily(
        "circle_agent_info",
        "The agent: its node, circle and version.",
        labels=["node", "circle", "version"],
    )
    info.add_metric([facts.node, facts.circle, facts.version], 1)
    yield info
    yield GaugeMetricFamily(
        "circle_agent_leader", "1 while this agent holds the leader lease.", value=facts.leader
    )
    if facts.applied_seq is not None:
        yield GaugeMetricFamily(
            "circle_chain_applied_seq",
            "The seq of the Human Chain step this node verified and applied.",
            value=facts.applied_seq,
        )
    yield from _capacity(facts)
    yield from _gpus(facts)
    yield from _replicas(facts)


def _capacity(facts: NodeFacts) -> Iterator[Metric]:
    inventory = facts.inventory
    if inventory is not None:
        for name, doc, value in (
            ("cpu_cores", "CPUs this node offers (its registration).", inventory.cpu / 1000),
            ("memory_bytes", "Memory this node offers (its registration).", inventory.memory),
            ("disk_bytes", "Disk of the node's state folder (its registration).", inventory.disk),
            ("gpus", "GPUs this node offers (its registration).", len(inventory.gpus)),
        ):
            yield GaugeMetricFamily(f"circle_node_capacity_{name}", doc, value=value)
    accepted = facts.accepted
    cpu = sum(a.cpu for a in accepted) / 1000
    memory = sum(a.memory for a in accepted)
    gpus = sum(len(a.gpus) for a in accepted)
    for name, doc, value in (
        ("cpu_cores", "CPUs requested by the accepted assignments.", cpu),
        ("memory_bytes", "Memory requested by the accepted assignments.", memory),
        ("gpus", "GPUs given to the accepted assignments.", gpus),
    ):
        yield GaugeMetricFamily(f"circle_node_allocated_{name}", doc, value=value)


def _gpus(facts: NodeFacts) -> Iterator[Metric]:
    gpus = facts.inventory.gpus if facts.inventory is not None else ()
    labels = ["uuid", "model"]
    utilization = GaugeMetricFamily(
        "circle_gpu_utilization_ratio",
        "GPU utilization, 0 to 1, as NVML reports it.",
        labels=labels,
    )
    used = GaugeMetricFamily("circle_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
    total = GaugeMetricFamily("circle_gpu_memory_total_bytes", "GPU memory.", labels=labels)
    healthy = GaugeMetricFamily(
        "circle_gpu_healthy",
        "1 when the GPU answers NVML and has no pending faults.",
        labels=labels,
    )
    allocated = GaugeMetricFamily(
        "circle_gpu_allocated", "1 when an accepted assignment holds the GPU.", labels=labels
    )
    held = {uuid for a in facts.accepted for uuid in a.gpus}
    for gpu in gpus:
        named = [gpu.uuid, gpu.model]
        if gpu.utilization is not None:
            utilization.add_metric(named, gpu.utilization / 100)
        if gpu.memory_used is not None:
            used.add_metric(named, gpu.memory_used)
        total.add_metric(named, gpu.memory)
        healthy.add_metric(named, gpu.healthy)
        allocated.add_metric(named, gpu.uuid in held)
    yield from (utilization, used, total, healthy, allocated)


def _replicas(facts: NodeFacts) -> Iterator[Metric]:
    replicas = GaugeMetricFamily(
        "circle_node_replicas",
        "This node's replicas by workload and phase, as it reported them.",
        labels=["workload", "phase"],
    )
    counts = {
        (workload, phase.value): 0
        for workload in sorted({*facts.workloads, *(s.workload for s in facts.reported)})
        for phase in Phase
    }
    for status in facts.reported:
        counts[status.workload, status.phase.value] += 1
    for labels, count in counts.items():
        replicas.add_metric(list(labels), count)
    yield replicas
    restarts = CounterMetricFamily(
        "circle_replica_restarts",
        "Restarts of the replica in a slot (its current version's; a new version starts at 0).",
        labels=["workload", "slot"],
    )
    for status in sorted(facts.reported, key=lambda s: (s.workload, s.slot, s.seq)):
        if status.phase is not Phase.REFUSED:
            restarts.add_metric([status.workload, str(status.slot)], status.restarts)
    yield restarts


def circle_families(facts: CircleFacts) -> Iterator[Metric]:
    """The leader's metrics of the whole circle."""
    desired = GaugeMetricFamily(
        "circle_workload_replicas_desired",
        "Replicas the leader plans for (the autoscaler's decision or the approved count).",
        labels=["workload"],
    )
    ready = GaugeMetricFamily(
        "circle_workload_replicas_ready",
        "Replicas with a verified Ready status, over the whole circle.",
        labels=["workload"],
    )
    for workload in sorted(facts.desired):
        desired.add_metric([workload], facts.desired[workload])
        ready.add_metric([workload], facts.ready.get(workload, 0))
    yield desired
    yield ready


def volume_families(scrubbed: Sequence[Scrubbed]) -> Iterator[Metric]:
    """The share health of each volume object, as the leader's caretaker last scrubbed it."""
    labels = ["volume", "object"]
    info = GaugeMetricFamily(
        "circle_volume_object_info", "A volume object and its name.", labels=[*labels, "name"]
    )
    shares = GaugeMetricFamily(
        "circle_volume_object_shares",
        "Shares of the object by status at the last scrub.",
        labels=[*labels, "status"],
    )
    needed = GaugeMetricFamily(
        "circle_volume_object_needed_shares", "Shares needed to read the object (k).", labels=labels
    )
    margin = GaugeMetricFamily(
        "circle_volume_object_margin",
        "Blocks beyond k in the weakest segment: how many more may be lost.",
        labels=labels,
    )
    scrubbed_at = GaugeMetricFamily(
        "circle_volume_object_scrub_timestamp_seconds", "When it was last scrubbed.", labels=labels
    )
    repairs = CounterMetricFamily(
        "circle_volume_object_repairs",
        "Shares rebuilt by this leader's caretaker.",
        labels=labels,
    )
    for item in sorted(scrubbed, key=lambda s: (s.volume, s.object_id)):
        named = [item.volume, item.object_id]
        content = item.health.manifest.content
        info.add_metric([*named, content.name], 1)
        for status in ShareStatus:
            count = sum(1 for share in item.health.shares if share.status is status)
            shares.add_metric([*named, status.value], count)
        needed.add_metric(named, content.k)
        margin.add_metric(named, item.health.margin)
        scrubbed_at.add_metric(named, item.at)
        repairs.add_metric(named, item.repairs)
    yield from (info, shares, needed, margin, scrubbed_at, repairs)


# -- the agent's metrics ------------------------------------------------------------------------


class _Collected(Collector):
    """A collector that yields what `collect` gives at scrape time."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return list(self._collect())


class AgentMetrics:
    """One agent's registry and instruments (see the module)."""

    def __init__(self, scrubbed: Callable[[], Sequence[Scrubbed]] = list) -> None:
        self.registry = CollectorRegistry()
        self.node = NodeFacts()
        self.circle = CircleFacts()
        self._scrubbed = scrubbed
        registry = self.registry
        self.follow = Histogram(
            "circle_chain_follow_duration_seconds",
            "One follow pass of the Human Chain: fetch into quarantine and verify.",
            buckets=_PASS_BUCKETS,
            registry=registry,
        )
        self.follow_failures = Counter(
            "circle_chain_follow_failures_total",
            "Follow passes that failed with an error (the agent retries or stalls).",
            registry=registry,
        )
        # The leader's alone: kept out of the registry, exported while this agent leads.
        self.planner = Histogram(
            "circle_planner_duration_seconds",
            "One plan of the leader: placement within the approved state.",
            registry=None,
        )
        self.health_checks = Histogram(
            "circle_health_check_duration_seconds",
            "One health check of a replica, by workload.",
            ["workload"],
            registry=registry,
        )
        self.health_failures = Counter(
            "circle_health_check_failures_total",
            "Health checks that failed, by workload.",
            ["workload"],
            registry=registry,
        )
        self.chunk_bytes = Counter(
            "circle_artifact_chunk_bytes_total",
            "Bytes of the chunks of materialized artifacts, by where they came from.",
            ["origin"],
            registry=registry,
        )
        for origin in ORIGINS:
            self.chunk_bytes.labels(origin)
        self.staged_bytes = Gauge(
            "circle_artifact_staged_bytes",
            "Bytes of pre-staged artifacts: proposals' trees staged before their quorum landed.",
            registry=registry,
        )
        self.secret_releases = Counter(
            "circle_secret_releases_total",
            "Secrets released to a replica as it started, by workload and secret.",
            ["workload", "secret"],
            registry=registry,
        )
        self.store_seconds = Histogram(
            "circle_store_request_duration_seconds",
            "One call to the state store, by operation.",
            ["operation"],
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "circle_store_errors_total",
            "State store calls that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        registry.register(_Collected(lambda: node_families(self.node)))
        registry.register(_Collected(self._leader_families))
        ProcessCollector(registry=registry)

    def _leader_families(self) -> Iterator[Metric]:
        if not self.node.leader:
            return
        yield from self.planner.collect()
        yield from circle_families(self.circle)
        yield from volume_families(self._scrubbed())

    def health_checked(self, workload: str, seconds: float, passed: bool) -> None:
        self.health_checks.labels(workload).observe(seconds)
        if not passed:
            self.health_failures.labels(workload).inc()

    def secret_released(self, workload: str, secret: str) -> None:
        self.secret_releases.labels(workload, secret).inc()

    def chunk_came(self, origin: str, size: int) -> None:
        self.chunk_bytes.labels(origin).inc(size)

    def timed(self, store: StateStore) -> StateStore:
        return TimedStore(store, self.store_seconds, self.store_errors)

    def page(self) -> tuple[str, bytes]:
        """The `/metrics` page: (content type, the text exposition)."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


# -- the state store, timed ---------------------------------------------------------------------


class TimedStore:
    """A StateStore that times every call of `store` (by operation) and counts those that
    raise StoreError. A watch's polls wait by design: only opening one is timed."""

    def __init__(self, store: StateStore, seconds: Histogram, errors: Counter) -> None:
        self.inner = store
        self.url = store.url
        self._seconds = seconds
        self._errors = errors

    def _timed(self, operation: str, call: Callable[[], _T]) -> _T:
        began = time.perf_counter()
        try:
            return call()
        except StoreError:
            self._errors.labels(operation).inc()
            raise
        finally:
            self._seconds.labels(operation).observe(time.perf_counter() - began)

    def revision(self) -> int:
        return self._timed("revision", self.inner.revision)

    def get(self, key: str, *, revision: int | None = None) -> KeyValue | None:
        return self._timed("get", lambda: self.inner.get(key, revision=revision))

    def range(self, prefix: str, *, revision: int | None = None, limit: int = 0) -> RangeResult:
        return self._timed(
            "range", lambda: self.inner.range(prefix, revision=revision, limit=limit)
        )

    def put(self, key: str, value: bytes, *, lease: LeaseId | None = None) -> PutResult:
        return self._timed("put", lambda: self.inner.put(key, value, lease=lease))

    def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        return self._timed("delete", lambda: self.inner.delete(key, prefix=prefix))

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        return self._timed("txn", lambda: self.inner.txn(compares, success, failure))

    def grant(self, ttl: int) -> LeaseId:
        return self._timed("grant", lambda: self.inner.grant(ttl))

    def keep_alive(self, lease: LeaseId) -> int:
        return self._timed("keep_alive", lambda: self.inner.keep_alive(lease))

    def revoke(self, lease: LeaseId) -> None:
        self._timed("revoke", lambda: self.inner.revoke(lease))

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return self._timed("watch", lambda: self.inner.watch(prefix, start_revision))

    def compact(self, revision: int) -> None:
        self._timed("compact", lambda: self.inner.compact(revision))

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
