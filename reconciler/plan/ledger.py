"""Free capacity per node while a plan is made: CPU, memory and whole GPUs by UUID.

The ledger starts from each alive node's capacity, takes what kept assignments hold, and then
what each placement takes (or a stop releases), so a fit is one comparison per resource and
a node is never overcommitted. GPUs of a replica are the smallest free ones that fit, by
(memory, uuid): larger GPUs stay free for replicas that need them.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.plan.assignment import Assignment
from reconciler.plan.inputs import GpuDevice, GpuUuid, NodeName, NodeSpec, WorkloadSpec


class Ledger:
    def __init__(self, nodes: Iterable[NodeSpec]) -> None:
        self.cpu: dict[NodeName, int] = {}
        self.memory: dict[NodeName, int] = {}
        # Healthy GPUs not held by anything, by (memory, uuid); only nodes that have GPUs.
        self.gpus: dict[NodeName, list[GpuDevice]] = {}
        self._devices: dict[GpuUuid, GpuDevice] = {}
        for node in nodes:
            if not node.alive:
                continue
            self.cpu[node.name] = node.cpu
            self.memory[node.name] = node.memory
            if node.gpus:
                healthy = sorted((g for g in node.gpus if g.healthy), key=_smallest_first)
                self.gpus[node.name] = healthy
                for gpu in healthy:
                    self._devices[gpu.uuid] = gpu

    def fit(self, node: NodeName, spec: WorkloadSpec) -> tuple[GpuUuid, ...] | None:
        """The GPUs one replica of `spec` would take on `node` (maybe none), or None: no fit."""
        if self.cpu.get(node, -1) < spec.cpu or self.memory[node] < spec.memory:
            return None
        need = spec.gpu
        if need is None:
            return ()
        picked: list[GpuUuid] = []
        for gpu in self.gpus.get(node, ()):
            if need.accepts(gpu):
                picked.append(gpu.uuid)
                if len(picked) == need.count:
                    return tuple(sorted(picked))
        return () if need.optional else None

    def free_gpus(self, node: NodeName, spec: WorkloadSpec) -> int:
        """How many free GPUs on `node` could be GPUs of a replica of `spec`."""
        need = spec.gpu
        if need is None:
            return 0
        return sum(1 for gpu in self.gpus.get(node, ()) if need.accepts(gpu))

    def take(self, node: NodeName, cpu: int, memory: int, gpus: tuple[GpuUuid, ...]) -> None:
        self.cpu[node] -= cpu
        self.memory[node] -= memory
        if gpus:
            held = set(gpus)
            self.gpus[node] = [gpu for gpu in self.gpus[node] if gpu.uuid not in held]

    def take_assignment(self, assignment: Assignment) -> None:
        self.take(assignment.node, assignment.cpu, assignment.memory, assignment.gpus)

    def release(self, assignment: Assignment) -> None:
        """Give back what `assignment` held (its node is alive; its GPUs healthy there)."""
        node = assignment.node
        self.cpu[node] += assignment.cpu
        self.memory[node] += assignment.memory
        if assignment.gpus:
            free = self.gpus.setdefault(node, [])
            free.extend(self._devices[uuid] for uuid in assignment.gpus)
            free.sort(key=_smallest_first)


def _smallest_first(gpu: GpuDevice) -> tuple[int, str]:
    return (gpu.memory, gpu.uuid)
