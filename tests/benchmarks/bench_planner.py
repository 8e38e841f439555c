"""Benchmark: plan 10,000 replicas over 1,000 nodes in 20 failure domains, then replan after
one node is lost.

The cluster (made once from a fixed seed): 1,000 nodes of 16 to 64 cores and 64 to 256 GiB, in
20 failure domains; one node in ten has 4 GPUs (NVIDIA L4 24 GiB or NVIDIA A100 80 GiB), half
the nodes carry `tier=fast`. 500 workloads of 20 replicas each: 250m to 2 cores, 256 MiB to
4 GiB, minFailureDomains 3; some need a GPU (by model and memory), some take one if free, some
select `tier=fast`, some allow at most 2 replicas per node. Printed, from one run:

- baseline: a greedy first-fit loop over the same data (each replica on the first node, in
  name order, with room for it: no spread, no rolling updates, no reasons);
- full plan: `plan` from no assignments;
- replan: `plan` from the applied result, with the node holding the most replicas lost.
  Its baseline: first-fit of that node's replicas, after summing what every node holds.

Targets (issue 11): full plan <= 1 s; replan <= 50 ms.

    .venv/bin/python tests/benchmarks/bench_planner.py [--nodes 1000] [--workloads 500]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reconciler.plan import (
    ArtifactDigest,
    Assignment,
    CommitId,
    GpuDevice,
    GpuNeed,
    GpuUuid,
    NodeName,
    NodeSpec,
    Plan,
    WorkloadName,
    WorkloadSpec,
    apply,
    label_set,
    plan,
)

GIB = 2**30
MIB = 2**20
DOMAINS = 20
COMMIT = CommitId("c0ffee" + "0" * 34)
DIGEST = ArtifactDigest("sha256:" + "ab" * 32)


def cluster(count: int, rng: random.Random) -> list[NodeSpec]:
    nodes = []
    for index in range(count):
        gpus: tuple[GpuDevice, ...] = ()
        if index % 10 == 3:
            model, memory = rng.choice([("NVIDIA L4", 24 * GIB), ("NVIDIA A100", 80 * GIB)])
            gpus = tuple(
                GpuDevice(GpuUuid(f"GPU-{index:08x}-{slot:04x}"), model, memory)
                for slot in range(4)
            )
        nodes.append(
            NodeSpec(
                name=NodeName(f"node-{index:04d}"),
                failure_domain=f"site-{index % DOMAINS:02d}",
                cpu=rng.choice([16, 32, 64]) * 1000,
                memory=rng.choice([64, 128, 256]) * GIB,
                labels=label_set({"tier": "fast"} if index % 2 else {}),
                gpus=gpus,
                verified_seq=10,
            )
        )
    return nodes


def workloads(count: int, rng: random.Random) -> list[WorkloadSpec]:
    specs = []
    for index in range(count):
        gpu = None
        if index % 25 == 0:
            gpu = GpuNeed(1, 16 * GIB, frozenset({"NVIDIA L4", "NVIDIA A100"}))
        elif index % 25 == 1:
            gpu = GpuNeed(1, 8 * GIB, optional=True)
        specs.append(
            WorkloadSpec(
                name=WorkloadName(f"app-{index:04d}"),
                commit=COMMIT,
                seq=10,
                digest=DIGEST,
                replicas=20,
                cpu=rng.choice([250, 500, 1000, 2000]),
                memory=rng.choice([256, 512, 1024, 4096]) * MIB,
                gpu=gpu,
                node_selector=label_set({"tier": "fast"} if index % 7 == 0 else {}),
                min_failure_domains=3,
                max_replicas_per_node=2 if index % 5 == 0 else None,
            )
        )
    return specs


def first_fit(
    specs: Sequence[WorkloadSpec],
    nodes: Sequence[NodeSpec],
    held: Sequence[Assignment],
    wanted: Callable[[WorkloadSpec], range],
) -> int:
    """The baseline: each replica on the first node with room; returns how many were placed."""
    cpu = {node.name: node.cpu for node in nodes if node.alive}
    memory = {node.name: node.memory for node in nodes if node.alive}
    free_gpus = {node.name: [g for g in node.gpus if g.healthy] for node in nodes if node.alive}
    taken: set[str] = set()
    for assignment in held:
        if assignment.node in cpu:
            cpu[assignment.node] -= assignment.cpu
            memory[assignment.node] -= assignment.memory
            taken.update(assignment.gpus)
    placed = 0
    for spec in specs:
        need = spec.gpu
        for _ in wanted(spec):
            for node in nodes:
                name = node.name
                if (
                    name not in cpu
                    or cpu[name] < spec.cpu
                    or memory[name] < spec.memory
                    or not spec.node_selector <= node.labels
                ):
                    continue
                gpus: list[GpuUuid] = []
                if need is not None:
                    gpus = [
                        g.uuid for g in free_gpus[name] if g.uuid not in taken and need.accepts(g)
                    ][: need.count]
                    if len(gpus) < need.count and not need.optional:
                        continue
                    if len(gpus) < need.count:
                        gpus = []
                cpu[name] -= spec.cpu
                memory[name] -= spec.memory
                taken.update(gpus)
                placed += 1
                break
    return placed


def timed(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(11)  # noqa: S311 - repeatable data, not secrets
    nodes = cluster(args.nodes, rng)
    specs = workloads(args.workloads, rng)
    replicas = sum(spec.replicas for spec in specs)
    print(
        f"{replicas} replicas of {len(specs)} workloads over {len(nodes)} nodes in "
        f"{DOMAINS} failure domains ({sum(1 for n in nodes if n.gpus)} with GPUs)"
    )

    baseline_full, placed_baseline = timed(
        lambda: first_fit(specs, nodes, [], lambda spec: range(spec.replicas)), args.repeat
    )
    full_time, full = timed(lambda: plan(specs, nodes, [], 0, epoch=1), args.repeat)
    assert isinstance(full, Plan)
    assignments = apply([], full)

    per_node: dict[str, int] = {}
    for assignment in assignments:
        per_node[assignment.node] = per_node.get(assignment.node, 0) + 1
    lost = max(sorted(per_node), key=lambda name: per_node[name])
    after = [dataclasses.replace(n, alive=False) if n.name == lost else n for n in nodes]
    on_lost = [a for a in assignments if a.node == lost]
    lost_counts: dict[str, int] = {}
    for assignment in on_lost:
        lost_counts[assignment.workload] = lost_counts.get(assignment.workload, 0) + 1
    survivors = [a for a in assignments if a.node != lost]
    baseline_replan, _ = timed(
        lambda: first_fit(
            specs, after, survivors, lambda spec: range(lost_counts.get(spec.name, 0))
        ),
        args.repeat,
    )
    replan_time, replan = timed(lambda: plan(specs, after, assignments, 0, epoch=2), args.repeat)
    assert isinstance(replan, Plan)

    domains = {node.name: node.failure_domain for node in nodes}
    spread: dict[str, set[str]] = {}
    for assignment in assignments:
        spread.setdefault(assignment.workload, set()).add(domains[assignment.node])
    spans = sorted(len(d) for d in spread.values())
    print(
        f"  full plan: {len(full.actions)} actions, {len(full.unschedulable)} unschedulable; "
        f"failure domains per workload: median {statistics.median(spans):g}, least {spans[0]} "
        f"(GPU nodes are in 2 domains); first-fit placed {placed_baseline}"
    )
    print(
        f"  replan: {lost} lost with {len(on_lost)} replicas -> {len(replan.actions)} actions "
        f"({sum(1 for a in replan.actions if a.kind == 'move')} moves), "
        f"{len(replan.unschedulable)} unschedulable"
    )
    print(f"{'':>28}{'planner':>12}{'first-fit':>12}{'target':>10}")
    print(
        f"{'full plan':>28}{full_time * 1000:>10.1f}ms{baseline_full * 1000:>10.1f}ms{'1000ms':>10}"
    )
    print(
        f"{'replan after one node lost':>28}{replan_time * 1000:>10.1f}ms"
        f"{baseline_replan * 1000:>10.1f}ms{'50ms':>10}"
    )


if __name__ == "__main__":
    main()
