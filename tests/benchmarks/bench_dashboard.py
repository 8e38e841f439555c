"""Benchmark: what the dashboard and the agents' metrics cost, beside baselines from the same
run, on a real local circle (`circle up`: 3 nodes, `langid` with 2 replicas).

- one reading of the circle as `circle get` does it (every record verified: `view.read` and
  `view.events`, then the tables), in-process: the baseline, what a dashboard that read the
  store per request would pay per request;
- the collector's pass (the same reading, plus the chain when a ref moved, plus history) at
  its steady state, and its CPU share at the default 1 s interval, measured over `--idle` s on
  the dashboard process;
- `/api/nodes`, `/workloads` and its live fragment (`?partial=1`), served from the snapshot:
  latency p50/p99 for one client, and requests per second for `--clients` clients polling at
  once;
- an agent's `/metrics` scrape (p50/p99), beside a HEAD of a missing chunk on the same server
  (the same bounded HTTP handler doing nothing): the cost of the page itself.

Needs root, bubblewrap and writable cgroups, as `circle up` does. About 40 s.

    .venv/bin/python tests/benchmarks/bench_dashboard.py [--requests 300] [--clients 8]
        [--idle 10]

Not a test: it prints figures and asserts nothing. The circle is removed (`circle down
--purge`) whatever happens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reconciler.node import tables, view  # noqa: E402
from reconciler.store import open_store  # noqa: E402


def circle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, timeout=300, check=False, cwd=ROOT)  # fmt: skip


def timed(work: Callable[[], object], rounds: int) -> list[float]:
    found = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        found.append(time.perf_counter() - start)
    return found


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms"


def getter(url: str, *, method: str = "GET") -> Callable[[], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    path = parts.path + (f"?{parts.query}" if parts.query else "")

    def get() -> bytes:
        connection.request(method, path)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status not in (200, 404):
            raise RuntimeError(f"{url}: {answer.status}")
        return body

    return get


def throughput(url: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(index: int) -> None:
        get = getter(url)
        while time.monotonic() < stop:
            get()
            done[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        site = Path(scratch) / "up"
        dashboard = None
        try:
            made = circle("up", "--dir", str(site), "--ttl", "10", "-o", "json")
            if made.returncode != 0:
                print(made.stderr, file=sys.stderr)
                return 1
            print(f"circle up: {site} (3 nodes, langid 2/2 Ready)\n")

            # The baseline: one reading as `circle get` does it, in-process.
            circle_ = view.circle_from(site / "circle", None)
            with open_store(f"sqlite:{site / 'state.db'}") as store:

                def reading() -> object:
                    seen = view.read(store, circle_)
                    found, _ = view.events(store, circle_)
                    return (tables.nodes(seen), tables.workloads(seen), tables.assignments(seen),
                            tables.volumes(seen), tables.events(found, limit=500))  # fmt: skip

                base = timed(reading, 50)
            print(f"{'baseline: one verified reading (view.read + events + tables)':<64}"
                  f"{quantiles(base)}")  # fmt: skip

            from reconciler.dashboard.collect import Collector, Sources

            collector = Collector(Sources(f"sqlite:{site / 'state.db'}", site / "circle"))
            collector.refresh()  # the chain, once
            passes = timed(collector.refresh, 50)
            collector.stop()
            print(f"{'collector pass, steady (refs unchanged)':<64}{quantiles(passes)}")

            dashboard = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "dashboard", "--dir", str(site),
                 "--port", "0", "-o", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            )  # fmt: skip
            assert dashboard.stdout is not None
            ready, _, _ = select.select([dashboard.stdout], [], [], 60)
            if not ready:
                print("the dashboard did not start", file=sys.stderr)
                return 1
            url = json.loads(dashboard.stdout.readline())["url"]
            time.sleep(2)
            process = psutil.Process(dashboard.pid)
            cpu_before = process.cpu_times()
            time.sleep(args.idle)
            cpu_after = process.cpu_times()
            used = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            print(f"{'dashboard idle, 1 s interval, no browser: CPU':<64}"
                  f"{100 * used / args.idle:7.2f} % of one core")  # fmt: skip
            print()
            for path in ("api/nodes", "workloads", "workloads?partial=1"):
                samples = timed(getter(url + path), args.requests)
                print(f"{'served from the snapshot: GET /' + path:<64}{quantiles(samples)}")
            for path in ("api/workloads", "workloads?partial=1"):
                rate = throughput(url + path, args.clients, 3.0)
                print(f"{f'{args.clients} clients at once: GET /{path}':<64}{rate:7.0f} requests/s")
            print()

            nodes = json.loads(
                circle(
                    "get",
                    "nodes",
                    "--repo",
                    str(site / "circle"),
                    "--store",
                    f"sqlite:{site / 'state.db'}",
                    "-o",
                    "json",
                ).stdout
            )
            address = next(n["address"] for n in nodes["nodes"] if n["address"])
            missing = f"{address.rstrip('/')}/chunks/{'0' * 64}"
            head = timed(getter(missing, method="HEAD"), args.requests)
            scrape = timed(getter(f"{address.rstrip('/')}/metrics"), args.requests)
            size = len(getter(f"{address.rstrip('/')}/metrics")())
            print(f"{'baseline: HEAD of a missing chunk (same agent server)':<64}{quantiles(head)}")
            print(f"{f'agent /metrics scrape ({size} bytes)':<64}{quantiles(scrape)}")
        finally:
            if dashboard is not None:
                dashboard.terminate()
                dashboard.wait(timeout=15)
                if dashboard.stdout is not None:
                    dashboard.stdout.close()
            circle("down", "--dir", str(site), "--purge")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
