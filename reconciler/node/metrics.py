"""The load each autoscaled replica carries, measured on its node for the leader's autoscaler
(`reconciler.plan.autoscale`), and reported in the replica's signed status.

Per replica, by the workload's approved `autoscale.metric`:

    cpu                  CPU time of its control group, in percent of its CPU request
    memory               memory of its control group, in percent of its memory request
    gpu                  NVML utilization of its GPUs, in percent (their mean)
    requests-per-second  the rate of a counter on its own Prometheus endpoint
    gauge                the value of a gauge there

A rate needs two samples: the first sample of a replica gives nothing. The endpoint is read
inside the replica's network namespace (as health checks are), at most MAX_SCRAPE bytes within
SCRAPE_TIMEOUT, from a thread of its own, so a replica that answers slowly or floods costs its
own measurement and nothing else. A replica can report any load it likes about itself: the
autoscaler keeps every count within the bounds the owners approved.

`parse_series` is pure: Prometheus text in, the sum of one series' samples out.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.node import netns
from reconciler.node.cgroups import Cgroup

MAX_SCRAPE = 1 << 20
SCRAPE_TIMEOUT = 2.0
INTERVAL = 5.0  # seconds between two measurements of a replica

Key = tuple[str, int, int]  # workload, slot, seq


@dataclass(frozen=True)
class Target:
    """One Ready replica to measure."""

    key: Key
    metric: str  # the approved autoscale.metric
    cpu: int  # its CPU request, millicores
    memory: int  # its memory request, bytes
    gpus: tuple[str, ...]
    group: Cgroup
    sandbox_pid: int | None
    port: int | None = None  # of its metric source
    path: str = "/metrics"
    series: str = ""


def parse_series(text: str, name: str) -> float | None:
    """The sum of every sample of series `name` (any labels) in Prometheus text; None when it
    has none. Comments, other series and malformed lines are skipped; NaN samples too."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):
            end = rest.find("}")
            if end < 0:
                continue
            rest = rest[end + 1 :]
        elif not rest[:1].isspace():
            continue  # another series whose name begins with `name`
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        total, found = total + value, True
    return total if found else None


class Meter:
    """Measures its targets every INTERVAL from a thread of its own; `load` gives the latest
    figure of a replica. `on_change` is called when a figure changed."""

    def __init__(
        self,
        gpu_utilization: Callable[[], Mapping[str, int]],
        on_change: Callable[[], None],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gpu_utilization = gpu_utilization
        self._on_change = on_change
        self._interval = interval
        self._clock = clock
        self._targets: dict[Key, Target] = {}
        self._samples: dict[Key, tuple[float, float]] = {}  # counter or CPU ns, and when
        self._loads: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, targets: Sequence[Target]) -> None:
        """Measure exactly these replicas from now on."""
        with self._lock:
            self._targets = {t.key: t for t in targets}
            for key in set(self._loads) - set(self._targets):
                del self._loads[key]
            for key in set(self._samples) - set(self._targets):
                del self._samples[key]
        if targets and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="meter", daemon=True)
            self._thread.start()

    def load(self, key: Key) -> float | None:
        with self._lock:
            return self._loads.get(key)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SCRAPE_TIMEOUT + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.measure_all()

    def measure_all(self) -> None:
        """One round: each target measured once."""
        with self._lock:
            targets = list(self._targets.values())
        gpus = self._gpu_utilization() if any(t.metric == "gpu" for t in targets) else {}
        changed = False
        for target in targets:
            value = self._measure(target, gpus)
            with self._lock:
                if target.key not in self._targets:
                    continue
                if value is None:
                    changed |= self._loads.pop(target.key, None) is not None
                elif self._loads.get(target.key) != value:
                    self._loads[target.key] = value
                    changed = True
        if changed:
            self._on_change()

    def _measure(self, target: Target, gpus: Mapping[str, int]) -> float | None:
        if target.metric == "cpu":
            used = target.group.cpu_usage()
            rate = None if used is None else self._rate(target.key, float(used))
            return None if rate is None else rate / 1e9 / (target.cpu / 1000) * 100
        if target.metric == "memory":
            return target.group.memory_usage() / target.memory * 100
        if target.metric == "gpu":
            seen = [gpus[uuid] for uuid in target.gpus if uuid in gpus]
            return sum(seen) / len(seen) if seen else None
        value = self._scrape(target)
        if value is None or target.metric == "gauge":
            return value
        return self._rate(target.key, value)

    def _rate(self, key: Key, value: float) -> float | None:
        """Per second since the previous sample of `key` (a reset counts from zero)."""
        now = self._clock()
        with self._lock:
            before = self._samples.get(key)
            self._samples[key] = (value, now)
        if before is None or now <= before[1]:
            return None
        grown = value - before[0] if value >= before[0] else value
        return grown / (now - before[1])

    def _scrape(self, target: Target) -> float | None:
        if target.sandbox_pid is None or target.port is None:
            return None
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        received = bytearray()
        try:
            with netns.connect(target.sandbox_pid, target.port, SCRAPE_TIMEOUT) as sock:
                request = (
                    f"GET {target.path} HTTP/1.0\r\nHost: localhost:{target.port}\r\n"
                    "Connection: close\r\nUser-Agent: circle-meter\r\n\r\n"
                )
                sock.sendall(request.encode("ascii"))
                while len(received) <= MAX_SCRAPE:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        except (OSError, netns.NamespaceError):
            return None
        if len(received) > MAX_SCRAPE:
            return None
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            return None
        with contextlib.suppress(UnicodeDecodeError):
            return parse_series(body.decode("utf-8"), target.series)
        return None
