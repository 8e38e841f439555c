"""Benchmark: what three idle node agents cost, beside a baseline measured in the same run.

Three real `circle node run` processes follow one real circle (the example, fresh keys) on one
SQLite store, with the defaults an operator gets (10 s lease, 3 s keep-alive, 5 s fetch). Once
they have converged (three nodes registered, the replicas placed and accepted), each agent's
resident memory and CPU are sampled over an idle window. The baseline is a Python process that
only sleeps (the interpreter's own floor), sampled the same way.

Targets (issue 11): <= 100 MiB RSS and <= 1% of a core idle per agent.

    .venv/bin/python tests/benchmarks/bench_agents.py [--idle 30]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reconciler.cli.main import main as circle_main
from reconciler.node import view
from reconciler.store import open_store
from tests.conftest import Result
from tests.reconciler.node.world import NODES, World, make_world


def circle(*args: str) -> Result:
    """`circle ARGS` in this process, its output captured (as the tests' fixture does)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            circle_main(list(args))
        except SystemExit as done:
            code = int(done.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def start(world: World, name: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "reconciler", "node", "run", "--source", str(world.circle),
        "--introduction", str(world.intro), "--state", str(world.root / name),
        "--key", str(world.node_key(name)), "--store", world.store(),
    ]  # fmt: skip
    with (world.root / f"{name}.log").open("w") as log:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)


def sample(pids: list[int], seconds: float) -> list[tuple[float, float]]:
    """(RSS MiB at the end, % of one core over the window) per process."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [p.cpu_times() for p in processes]
    time.sleep(seconds)
    found = []
    for process, start_times in zip(processes, before, strict=True):
        now = process.cpu_times()
        used = (now.user - start_times.user) + (now.system - start_times.system)
        found.append((process.memory_info().rss / 2**20, 100 * used / seconds))
    return found


def converged(world: World) -> bool:
    with open_store(world.store()) as store:
        seen = view.read(store, view.circle_from(world.circle, None))
    # accepted: the node reports it (here Pending ArtifactUnavailable: no source is given, so
    # the agents idle with their replicas' retries backing off)
    accepted = [p for p in seen.assignments if p.status and p.status.phase.value != "Refused"]
    return len(seen.nodes) == 3 and len(accepted) == len(seen.assignments) >= 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle sampling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="circle-bench-agents-") as folder:
        world = make_world(Path(folder), circle)
        agents = [start(world, name) for name in NODES]
        floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        try:
            started = time.monotonic()
            while not converged(world):
                if time.monotonic() - started > 120:
                    raise SystemExit("the agents did not converge in 120 s")
                time.sleep(0.5)
            took = time.monotonic() - started
            time.sleep(5)  # let the first passes settle
            figures = sample([a.pid for a in agents] + [floor.pid], args.idle)
        finally:
            for process in [*agents, floor]:
                process.terminate()
                process.wait(timeout=30)
    print(f"three agents on one SQLite store converged in {took:.1f} s; idle over {args.idle:g} s")
    print(f"{'':36}{'RSS':>10}{'CPU (% of a core)':>20}")
    for name, (rss, cpu) in zip([*NODES, "baseline: python sleeping"], figures, strict=True):
        print(f"  {name:34}{rss:>7.1f} MiB{cpu:>17.2f}")
    print("  targets: <= 100 MiB RSS, <= 1% of a core, per agent")


if __name__ == "__main__":
    main()
