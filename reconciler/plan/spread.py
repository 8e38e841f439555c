"""Where the next replica of a workload goes: spread over failure domains, then over nodes.

For each new replica the `Spreader` takes the failure domain holding the fewest replicas of
the workload, and in it the node holding the fewest, among the nodes that fit (selector,
verified commit, free CPU, memory and GPUs, maxReplicasPerNode). Filling the emptiest domain
first puts replicas in min(replicas, domains that fit) domains, so `minFailureDomains` is met
whenever it can be, and evenly beyond it. Ties go by a rotation of the sorted names that
starts at a point fixed by the workload's name (crc32): deterministic, independent of input
order, and different workloads start on different nodes instead of all piling onto the first.

Cost: the domains are a heap by (count, rank); inside a domain the nodes not yet used are
taken in rank order from a cursor and the used ones from a heap, so a choice is O(log n) and
nothing is done for nodes a workload never reaches. A node that does not fit is dropped for
the rest of the workload: within one workload's turn free capacity only shrinks.
"""

from __future__ import annotations

import bisect
import heapq
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.plan.inputs import GpuNeed, GpuUuid, Labels, NodeName, NodeSpec, WorkloadSpec
from reconciler.plan.ledger import Ledger

_PoolKey = tuple[Labels, GpuNeed | None]


@dataclass(frozen=True, slots=True)
class Pool:
    """The alive nodes a workload could ever use in this plan, by failure domain.

    Nodes appear as their index in the sorted list of alive nodes; the lists are sorted.
    """

    domains: dict[str, list[int]]
    members: frozenset[int]


class Candidates:
    """The alive nodes of one plan, and the pools of workloads that share requirements."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        alive = sorted((node for node in nodes if node.alive), key=lambda node: node.name)
        self.nodes = alive
        self.index = {node.name: position for position, node in enumerate(alive)}
        self._pools: dict[_PoolKey, Pool] = {}

    def pool(self, spec: WorkloadSpec) -> Pool:
        need = spec.gpu if spec.gpu is not None and not spec.gpu.optional else None
        key = (spec.node_selector, need)
        found = self._pools.get(key)
        if found is None:
            found = self._pools[key] = self._make_pool(*key)
        return found

    def _make_pool(self, selector: Labels, need: GpuNeed | None) -> Pool:
        domains: dict[str, list[int]] = {}
        for position, node in enumerate(self.nodes):
            if not selector <= node.labels:
                continue
            if need is not None:
                usable = sum(1 for gpu in node.gpus if gpu.healthy and need.accepts(gpu))
                if usable < need.count:
                    continue
            domains.setdefault(node.failure_domain, []).append(position)
        return Pool(domains, frozenset(p for positions in domains.values() for p in positions))


def _start(name: str, size: int) -> int:
    return zlib.crc32(name.encode()) % size if size else 0


@dataclass(slots=True)
class _Domain:
    order: list[int]  # unused nodes come from here, in rank order
    cursor: int = 0
    used: list[tuple[int, int, int]] = field(default_factory=list)  # heap (count, rank, node)


class Spreader:
    """Chooses nodes for new replicas of one workload, one at a time.

    `node_counts` and `domain_counts` are the workload's replicas per node and per domain;
    the spreader keeps them up to date through `add` and `remove`.
    """

    def __init__(
        self,
        spec: WorkloadSpec,
        candidates: Candidates,
        ledger: Ledger,
        node_counts: dict[NodeName, int],
        domain_counts: dict[str, int],
    ) -> None:
        self.spec = spec
        self._nodes = candidates.nodes
        self._index = candidates.index
        self._ledger = ledger
        self.node_counts = node_counts
        self.domain_counts = domain_counts
        self._pool = candidates.pool(spec)
        self._offset = _start(spec.name, len(self._nodes))
        self._size = max(len(self._nodes), 1)
        names = sorted(self._pool.domains)
        first = _start("domain/" + spec.name, len(names))
        self._domain_rank = {d: (i - first) % len(names) for i, d in enumerate(names)}
        self._heap = [(domain_counts.get(d, 0), self._domain_rank[d], d) for d in names]
        heapq.heapify(self._heap)
        self._domains: dict[str, _Domain] = {}
        self._touched: set[int] = set()  # left the cursor: used, dropped or at the cap
        # Nodes the workload uses already start in their domain's heap, not at its cursor.
        self._initial: dict[str, list[int]] = {}
        for name in node_counts:
            position = self._index.get(name)
            if position is not None and position in self._pool.members:
                self._touched.add(position)
                domain_of = self._nodes[position].failure_domain
                self._initial.setdefault(domain_of, []).append(position)
        self._dropped: set[int] = set()  # does not fit for the rest of this workload's turn
        self._capped: set[int] = set()
        self._exhausted: set[str] = set()
        self._avoid: int | None = None  # a node one choice must not pick (`choose_besides`)
        self._avoided = False

    def choose(self) -> tuple[NodeName, tuple[GpuUuid, ...]] | None:
        """The node and GPUs for one more replica, or None: no node fits."""
        heap = self._heap
        while heap:
            count, _, domain = heap[0]
            if domain in self._exhausted or count != self.domain_counts.get(domain, 0):
                heapq.heappop(heap)  # stale: a fresher entry for this domain is in the heap
                continue
            picked = self._choose_in(domain)
            if picked is not None:
                return picked
            self._exhausted.add(domain)
            heapq.heappop(heap)
        return None

    def choose_besides(self, node: NodeName) -> tuple[NodeName, tuple[GpuUuid, ...]] | None:
        """As `choose`, on any node but `node` (which stays a candidate for later choices)."""
        position = self._index.get(node)
        if position is None:
            return self.choose()
        self._avoid, self._avoided = position, False
        try:
            return self.choose()
        finally:
            self._avoid = None
            if self._avoided:
                self._capped.discard(position)
                self._readmit(position)

    def _readmit(self, position: int) -> None:
        """Put `position` back among its domain's candidates, at its current count."""
        node = self._nodes[position]
        domain = node.failure_domain
        self._exhausted.discard(domain)
        state = self._domain(domain)
        count = self.node_counts.get(node.name, 0)
        heapq.heappush(state.used, (count, self._rank(position), position))
        entry = (self.domain_counts.get(domain, 0), self._domain_rank[domain], domain)
        heapq.heappush(self._heap, entry)

    def add(self, node: NodeName) -> None:
        """One more replica on `node` (just placed, or a slot coming back to it)."""
        self._count(node, +1)

    def remove(self, node: NodeName) -> None:
        """One replica fewer on `node` (a slot about to be replaced elsewhere)."""
        self._count(node, -1)

    def revive(self, node: NodeName) -> None:
        """`node` has more room than when it was dropped (a replica there stopped)."""
        position = self._index.get(node)
        if position is None or position not in self._dropped:
            return
        self._dropped.discard(position)
        domain = self._nodes[position].failure_domain
        self._exhausted.discard(domain)
        state = self._domain(domain)
        heapq.heappush(state.used, (self.node_counts.get(node, 0), self._rank(position), position))
        entry = (self.domain_counts.get(domain, 0), self._domain_rank[domain], domain)
        heapq.heappush(self._heap, entry)

    def _count(self, node: NodeName, step: int) -> None:
        spec_node = self._nodes[self._index[node]] if node in self._index else None
        self.node_counts[node] = self.node_counts.get(node, 0) + step
        if spec_node is None:
            return
        domain = spec_node.failure_domain
        self.domain_counts[domain] = self.domain_counts.get(domain, 0) + step
        position = self._index[node]
        if step < 0:
            self._capped.discard(position)
            self._exhausted.discard(domain)
        if position in self._pool.members and position not in self._dropped:
            state = self._domain(domain)
            self._touched.add(position)
            heapq.heappush(state.used, (self.node_counts[node], self._rank(position), position))
        if domain in self._domain_rank:
            entry = (self.domain_counts[domain], self._domain_rank[domain], domain)
            heapq.heappush(self._heap, entry)

    def _rank(self, position: int) -> int:
        return (position - self._offset) % self._size

    def _domain(self, domain: str) -> _Domain:
        state = self._domains.get(domain)
        if state is None:
            positions = self._pool.domains[domain]
            split = bisect.bisect_left(positions, self._offset)
            state = self._domains[domain] = _Domain(positions[split:] + positions[:split])
            for position in self._initial.get(domain, ()):
                count = self.node_counts.get(self._nodes[position].name, 0)
                heapq.heappush(state.used, (count, self._rank(position), position))
        return state

    def _choose_in(self, domain: str) -> tuple[NodeName, tuple[GpuUuid, ...]] | None:
        state = self._domain(domain)
        order, used = state.order, state.used
        spec, ledger, nodes = self.spec, self._ledger, self._nodes
        cap = spec.max_replicas_per_node
        while True:
            while state.cursor < len(order) and order[state.cursor] in self._touched:
                state.cursor += 1
            while used:
                count, _, position = used[0]
                if (
                    position in self._dropped
                    or position in self._capped
                    or count != self.node_counts.get(nodes[position].name, 0)
                ):
                    heapq.heappop(used)
                    continue
                break
            fresh = order[state.cursor] if state.cursor < len(order) else None
            if used and (fresh is None or (used[0][0], used[0][1]) < (0, self._rank(fresh))):
                position = used[0][2]
            elif fresh is not None:
                position = fresh
            else:
                return None
            node = nodes[position]
            if position == self._avoid:
                self._avoided = True
                self._capped.add(position)  # for this choice only: `choose_besides` undoes it
                self._touched.add(position)
                continue
            if cap is not None and self.node_counts.get(node.name, 0) >= cap:
                self._capped.add(position)
                self._touched.add(position)
                continue
            gpus = ledger.fit(node.name, spec) if node.verified_seq >= spec.seq else None
            if gpus is None:
                self._dropped.add(position)
                self._touched.add(position)
                continue
            return node.name, gpus
