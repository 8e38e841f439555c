"""Why a replica cannot be placed, in an operator's words. Pure.

`explain` walks the nodes once, narrowing them requirement by requirement in a fixed order
(pinned artifact, alive, nodeSelector, verified commit, CPU, memory, GPUs, maxReplicasPerNode);
the first requirement that leaves no node is the reason, said with what the best remaining
node offers: "needs 4 CPU, the most free on a node matching nodeSelector gpu=true is 2
(node-c)". The order is the one a fix is looked for in: a node that is down or lacks a label
is fixed before capacity is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from reconciler.desired.model.types import format_bytes, format_cpu
from reconciler.plan.actions import Reason
from reconciler.plan.inputs import GpuNeed, Labels, NodeName, NodeSpec, WorkloadSpec
from reconciler.plan.ledger import Ledger

SHOWN = 3  # names listed before "and N more"


def few(names: Iterable[str]) -> str:
    """`a, b, c and 4 more`: a list short enough for one line."""
    items = sorted(set(names))
    if len(items) <= SHOWN:
        return ", ".join(items)
    return f"{', '.join(items[:SHOWN])} and {len(items) - SHOWN} more"


def selector_words(selector: Labels) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(selector))


def gpu_words(need: GpuNeed) -> str:
    """`1 GPU with >= 8Gi`, `2 GPUs (NVIDIA L4 or NVIDIA A100) with >= 24Gi`."""
    text = f"{need.count} GPU{'s' if need.count > 1 else ''}"
    if need.models:
        text += f" ({' or '.join(sorted(need.models))})"
    if need.min_memory:
        text += f" with >= {format_bytes(need.min_memory)}"
    return text


def age(seconds: int) -> str:
    """`45s`, `2m10s`, `3h5m`, `2d4h`: two units at most."""
    seconds = max(seconds, 0)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            rest = (seconds % size) // small_size
            return f"{seconds // size}{unit}{rest}{smaller}" if rest else f"{seconds // size}{unit}"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds}s"


def explain(
    spec: WorkloadSpec,
    nodes: Sequence[NodeSpec],
    ledger: Ledger,
    counts: Mapping[NodeName, int],
) -> tuple[Reason, str]:
    """Why no node can take one more replica of `spec` now (`counts`: its replicas per node).

    Only called when none can: it reports the first requirement that no node meets.
    """
    if spec.digest is None:
        return Reason.UNPINNED, (
            "its artifact has no pinned digest, and a node starts only an artifact it can verify"
        )
    alive = [node for node in nodes if node.alive]
    if not alive:
        admitted = f" ({len(nodes)} admitted: {few(n.name for n in nodes)})" if nodes else ""
        return Reason.NO_NODE_ALIVE, f"no node is alive{admitted}"
    selector = spec.node_selector
    scope = f"node matching nodeSelector {selector_words(selector)}" if selector else "alive node"
    article = "a" if selector else "an"
    matching = [node for node in alive if selector <= node.labels]
    if not matching:
        return Reason.SELECTOR, f"no alive node matches nodeSelector {selector_words(selector)}"

    verified = [node for node in matching if node.verified_seq >= spec.seq]
    if not verified:
        furthest = max(matching, key=lambda n: (n.verified_seq, n.name))
        return Reason.NOT_VERIFIED, (
            f"no {scope} has verified commit {spec.commit[:12]} (seq {spec.seq}) yet; the "
            f"furthest, {furthest.name}, is at seq {furthest.verified_seq}"
        )

    with_cpu = [node for node in verified if ledger.cpu[node.name] >= spec.cpu]
    if not with_cpu:
        best = max(verified, key=lambda n: (ledger.cpu[n.name], n.name))
        return Reason.CPU, (
            f"needs {format_cpu(spec.cpu)} CPU, the most free on {article} {scope} is "
            f"{format_cpu(ledger.cpu[best.name])} ({best.name})"
        )
    with_memory = [node for node in with_cpu if ledger.memory[node.name] >= spec.memory]
    if not with_memory:
        best = max(with_cpu, key=lambda n: (ledger.memory[n.name], n.name))
        return Reason.MEMORY, (
            f"needs {format_bytes(spec.memory)} memory, the most free on {article} {scope} "
            f"with {format_cpu(spec.cpu)} CPU free is {format_bytes(ledger.memory[best.name])} "
            f"({best.name})"
        )

    fitting = with_memory
    need = spec.gpu
    if need is not None and not need.optional:
        fitting = [
            node
            for node in with_memory
            if node.gpus and ledger.free_gpus(node.name, spec) >= need.count
        ]
        if not fitting:
            return Reason.GPU, _gpu_shortage(spec, need, with_memory, ledger, article, scope)

    cap = spec.max_replicas_per_node
    if cap is not None and all(counts.get(node.name, 0) >= cap for node in fitting):
        return Reason.MAX_PER_NODE, (
            f"at most {cap} replica{'s' if cap > 1 else ''} per node, and every {scope} that "
            f"fits holds {cap} already ({few(node.name for node in fitting)})"
        )
    raise RuntimeError(  # the spreader and this walk test the same requirements
        f"planner inconsistency: workload {spec.name} fits {fitting[0].name} but was not placed"
    )


def _gpu_shortage(
    spec: WorkloadSpec,
    need: GpuNeed,
    candidates: Sequence[NodeSpec],
    ledger: Ledger,
    article: str,
    scope: str,
) -> str:
    free = {node.name: ledger.free_gpus(node.name, spec) for node in candidates if node.gpus}
    most = max(candidates, key=lambda n: (free.get(n.name, 0), n.name))
    if free.get(most.name):
        return (
            f"needs {gpu_words(need)}, the most free on {article} {scope} with enough CPU and "
            f"memory is {free[most.name]} ({most.name})"
        )
    accepted = [gpu for node in candidates for gpu in node.gpus if need.accepts(gpu)]
    unhealthy = sum(1 for gpu in accepted if not gpu.healthy)
    held = len(accepted) - unhealthy
    counted = [f"{held} held"] if held else []
    counted += [f"{unhealthy} unhealthy"] if unhealthy else []
    domains = few(node.failure_domain for node in candidates)
    return f"needs {gpu_words(need)}, free: none in {domains}" + (
        f" ({', '.join(counted)})" if counted else ""
    )
