"""Benchmark: from the last approval to the artifact switch, with and without pre-staging
(issue 15 part 3, ADR 0008; target: the switch within 100 ms of the last approval).

A real circle (real keys, a real Git repository, the chain verified as a node verifies it)
whose workload runs v1 of a model-like artifact (`--size-mib`, 256 MiB by default; v2 changes
its header and 1% of its weights), its chunks served by one chunk server on loopback
throttled to `--rate-mbps` (100 MB/s). A proposal moving the workload to v2 needs two
approvals. For each node below, the first approval is filed and the node follows; then the
second (the last) is filed at t0, and the node does what its agent does when it lands:

    follow    fetch the source into quarantine, verify the chain, save the state (seq 2)
    desired   read and validate the desired state at the new commit: the workload's digest
    switch    `Artifacts.ensure(v2)`: the tree the runtime starts

Nodes: one that pre-staged v2 after the first approval (`Prestager.run_round`, the agent's
round; its time is printed, spent while the quorum was pending); one that holds v1 only (the
v2-on-v1 path of part 1); one that holds nothing (a cold download). The figures stop at the
tree the runtime would start: the agent's pass adds the leader's plan, the store's round
trips and the sandbox start (measured by bench_agents.py and bench_runtime.py), the same with
and without pre-staging.

    .venv/bin/python tests/benchmarks/bench_prestage.py [--size-mib 256] [--rate-mbps 100]
        [--dir SCRATCH]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builders.chunks import ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.tree import MODEL_CHUNKING, TreeBuild, build_tree
from reconciler.chain import follow, propose, signing
from reconciler.chain.trees import desired_at
from reconciler.node.artifacts import Artifacts
from reconciler.node.prestage import Budget, Prestager, Round
from tests.benchmarks.bench_rapid_start import change_weights, write_model
from tests.conftest import git, run_circle_process
from tests.reconciler.node.world import World, make_world, pin_sleeper

MiB = 1024 * 1024


def approve(world: World, who: str) -> None:
    """`circle approve` of main's tip as `who`, in this process: signed, filed in the source."""
    repo = pygit2.Repository(str(world.circle))
    intro = follow.load_introduction(world.intro)
    now = int(time.time())
    proposal = propose.propose(repo, "HEAD", now, None, intro)
    data = propose.statement(proposal, now)
    key = world.keys / who
    propose.approve(repo, proposal, data, lambda d: signing.with_key_file(d, key, None), str(key))


def landing(world: World, folder: Path, artifacts: Artifacts) -> tuple[float, float, float]:
    """What a node does when the last approval lands: (follow, desired, switch) seconds."""
    intro = follow.load_introduction(world.intro)
    started = time.perf_counter()
    done = follow.follow_once(str(world.circle), intro, folder, int(time.time()))
    followed = time.perf_counter()
    assert done.state is not None, done.refusal
    assert done.state.seq == 2, done.refusal
    repo = pygit2.Repository(str(folder / follow.REPOSITORY))
    state = desired_at(repo, done.state.commit).state
    digest = state.workloads["langid"].document.artifact.digest
    assert digest is not None
    parsed = time.perf_counter()
    artifacts.ensure(digest)
    switched = time.perf_counter()
    return followed - started, parsed - followed, switched - parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rate-mbps", type=float, default=100.0, help="MB/s (10^6 bytes)")
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: temp).")
    args = parser.parse_args()
    size = args.size_mib * MiB
    scratch = Path(tempfile.mkdtemp(prefix="bench-prestage-", dir=args.dir))
    try:
        store = ChunkStore(scratch / "server-store")
        ids = {}
        for version in ("v1", "v2"):
            (scratch / version).mkdir()
            header = {"model": "bench", "version": int(version[1])}
            write_model(scratch / version / "model.bin", size, header, seed=1)
        change_weights(scratch / "v2" / "model.bin", 0.01, seed=2)
        for version in ("v1", "v2"):
            spec = TreeBuild(scratch / version, chunking=MODEL_CHUNKING, prefetch=("model.bin",))
            manifest = build_tree(spec, store)
            store.put_manifest(manifest.artifact_id, manifest.encode())
            ids[version] = manifest.artifact_id
        v1, v2 = ids["v1"], ids["v2"]

        def minimal(repo: Path) -> None:
            for folder in ("volumes", "secrets"):
                shutil.rmtree(repo / folder, ignore_errors=True)
            pin_sleeper(repo, v1)

        print(
            f"model: {args.size_mib} MiB, v2 changes its header and 1% of its weights; one "
            f"chunk server on loopback throttled to {args.rate_mbps:g} MB/s\n"
        )
        print(f"{'':44}{'follow':>9}{'desired':>9}{'switch':>9}{'total':>9}  (each after t0)")
        world = make_world(scratch / "circle", run_circle_process, minimal)
        intro = follow.load_introduction(world.intro)
        nodes = (
            ("pre-staged after the first approval", True, True),
            ("holding v1 only (v2 on v1)", True, False),
            ("holding nothing (cold)", False, False),
        )
        with ChunkServer(store, rate_limit=args.rate_mbps * 1e6) as server:
            sources = [HttpChunkSource(server.url) for _ in nodes]
            folders = [scratch / f"node-{index}" for index in range(len(nodes))]
            every = []
            for folder, source, (_, holds, _) in zip(folders, sources, nodes, strict=True):
                folder.mkdir(mode=0o700)
                artifacts = Artifacts(folder, functools.partial(list, [source]))
                if holds:
                    artifacts.ensure(v1)
                every.append(artifacts)
            pin_sleeper(world.circle, v2)
            git(world.circle, "commit", "-q", "-am", "langid: v2")
            approve(world, "alice")
            notes = []
            for folder, artifacts, (_, _, stages) in zip(folders, every, nodes, strict=True):
                done = follow.follow_once(str(world.circle), intro, folder, int(time.time()))
                assert done.state is not None
                # A running agent holds the applied commit's desired state (and its schemas).
                desired_at(pygit2.Repository(str(folder / follow.REPOSITORY)), done.state.commit)
                notes.append("")
                if stages:
                    stager = Prestager(artifacts, folder, intro, Budget(size=4 * size))
                    started = time.perf_counter()
                    at = int(time.time())
                    stager.run_round(Round(done.state, (("langid", v1),), frozenset({v1}), at))
                    assert v2 in artifacts.staged()
                    took = time.perf_counter() - started
                    notes[-1] = f"  (staging took {took:.2f} s, while the quorum was pending)"
            approve(world, "bob")  # t0: the last approval is in the source
            for folder, artifacts, (label, _, _), note in zip(
                folders, every, nodes, notes, strict=True
            ):
                parts = landing(world, folder, artifacts)
                cells = "".join(f"{1000 * part:7.0f}ms" for part in parts)
                print(f"  {label:42}{cells}{1000 * sum(parts):7.0f}ms{note}")
            for source in sources:
                source.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
