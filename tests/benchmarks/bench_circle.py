"""Benchmark: a whole local circle (`circle up`) end to end, beside baselines measured in the
same run and the documented defaults of other systems.

The example circle (3 nodes in 3 failure domains, workload `langid` with 2 replicas and an HTTP
health check) is brought up with `circle up` in a scratch folder, with real agents, sandboxes
and control groups, and driven from outside as an operator drives it. Its state is read
in-process from the store (`reconciler.node.view`, each record verified) every POLL seconds.

- `circle up` itself: from nothing to every replica Ready (for the record);
- idle circle: after convergence and 5 s of settling, CPU (% of one core) and memory over an
  `--idle` window of every process of the circle (the agents, their descendants and whatever
  runs in the circle's control groups), beside a Python process that only sleeps;
- approved commit -> new version Ready: an owner change that makes a new version (an env var
  under `env:`), committed and approved by two owners (the quorum for workloads/**); from the
  moment the last `circle approve` returns until every wanted slot has an assignment at the
  new commit whose status is Ready and no assignment of an older commit remains. `--rounds`
  times; median and min. Target: <= the service's own start-up + 1 s (moonshot: + 300 ms);
- node loss: the agent of a node that runs a replica and does not lead is SIGKILLed with every
  process it started and every process in its replicas' control groups; until `langid` has
  its wanted Ready replicas again, none on the lost node. Target: <= ttl + 2 s + the service's
  start-up; once on the first circle (`--ttl`, default 10), once on a second one (`--fast-ttl`,
  default 3);
- load -> autoscaled replica Ready: on a third circle made from a copy of the example whose
  langid scales at 5 requests per second per replica, three clients post without pause; until
  a third replica is Ready (no new commit). The node measures every 5 s and a rate needs two
  samples; the Kubernetes HPA's 15 s sync period and metrics-server's 60 s resolution are
  printed beside it as documented defaults.

The service's own start-up is the baseline: the same service, from the artifact a node
installed and the model a node fetched, started as a plain process outside any sandbox until
GET /healthz answers 200 (median of 3). Flux's source poll (1 min), Argo CD's refresh (3 min)
and Kubernetes' eviction of a lost node's pods (40 s node-monitor-grace-period + 300 s default
toleration) are printed beside them as documented defaults, not measured.

Needs root, bubblewrap and writable cgroups, as `circle up` does. About 100 s with the defaults.

    .venv/bin/python tests/benchmarks/bench_circle.py [--rounds 3] [--idle 20] [--ttl 10]
        [--fast-ttl 3] [--dir PARENT] [--logs FOLDER]

Not a test: it prints figures and asserts nothing. Every circle is removed (`circle down
--purge`) whatever happens, and what that leaves is removed by hand.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from types import FrameType

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reconciler.node import view
from reconciler.node.records import Phase
from reconciler.store import StateStore, StoreError, open_store

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = "langid"
APPROVERS = ("alice", "bob")  # 2 of 3 owners: the quorum for workloads/**
POLL = 0.02  # seconds between reads of the store while timing
HEALTHZ_POLL = 0.005  # seconds between the plain baseline's GET /healthz
PLAIN_STARTS = 3
SETTLE = 5.0  # seconds after convergence before the idle window
SANDBOX_PATH = "/artifact/bin:/usr/local/bin:/usr/bin:/bin"  # reconciler.node.sandbox.PATH
FLUX_POLL = 60.0  # Flux GitRepository .spec.interval, the documented default
ARGO_REFRESH = 180.0  # Argo CD timeout.reconciliation, the documented default
K8S_EVICTION = 40.0 + 300.0  # node-monitor-grace-period + default not-ready toleration
AGENT_RSS_TARGET = 100.0  # MiB per agent (issue 11, as bench_agents)
AGENT_CPU_TARGET = 1.0  # % of one core per agent
MS = 1000.0


class BenchError(Exception):
    """The benchmark could not measure (a circle that did not converge, a step that failed)."""


def circle_argv() -> list[str]:
    script = Path(sys.executable).with_name("circle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler"]


def run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise BenchError(f"{what}: exit {done.returncode}: {said}")
    return done


# -- one local circle ------------------------------------------------------------------------


@dataclass
class LocalCircle:
    root: Path  # DIR
    ttl: int
    source: Path | None = None  # the circle repository (default: the example)
    up_seconds: float = float("nan")
    nodes: tuple[str, ...] = ()
    bases: tuple[Path, ...] = ()  # the replicas' control groups, one base per controller
    circle: view.Circle | None = None

    @property
    def repo(self) -> Path:
        return self.root / "circle"

    @property
    def store_url(self) -> str:
        return f"sqlite:{self.root / 'state.db'}"

    @property
    def workload_file(self) -> Path:
        return self.repo / "workloads" / f"{WORKLOAD}.yaml"

    def up(self) -> None:
        """`circle up` from nothing; BenchError unless every replica is Ready."""
        began = time.perf_counter()
        argv = [*circle_argv(), "up", *([str(self.source)] if self.source else []),
                "--dir", str(self.root), "--ttl", str(self.ttl)]  # fmt: skip
        done = run([*argv, "--wait", "120", "-o", "json"], 180, "circle up")
        self.up_seconds = time.perf_counter() - began
        status = json.loads(done.stdout)
        if not status.get("converged"):
            raise BenchError(f"circle up did not converge: {done.stdout[-2000:]}")
        record = json.loads((self.root / "up.json").read_text())
        self.nodes = tuple(record["nodes"])
        self.bases = tuple(Path(b) for b in record["cgroupBases"])
        self.circle = view.circle_from(self.repo, None)

    @contextlib.contextmanager
    def store(self) -> Iterator[StateStore]:
        with open_store(self.store_url, timeout=5) as store:
            yield store

    def read(self, store: StateStore) -> view.View:
        assert self.circle is not None
        return view.read(store, self.circle)

    def wanted(self) -> int:
        found = re.search(r"^replicas:\s*(\d+)", self.workload_file.read_text(), re.MULTILINE)
        if found is None:
            raise BenchError(f"{self.workload_file}: no replicas:")
        return int(found.group(1))

    # -- its processes

    def agent_pid(self, node: str) -> int | None:
        try:
            found = json.loads((self.root / "run" / f"{node}.pid").read_text())
            process = psutil.Process(int(found["pid"]))
            if str(self.root) not in " ".join(process.cmdline()):
                return None
            return process.pid
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def pids_base(self) -> Path | None:
        """The pids controller's base (cgroup v1), else the first (a v2 unified tree)."""
        for base in self.bases:
            if "pids" in base.parts:
                return base
        return self.bases[0] if self.bases else None

    def cgroup_pids(self, node: str | None = None) -> set[int]:
        """Every pid in the circle's control groups (under `node`'s folder, when given)."""
        base = self.pids_base()
        if base is None:
            return set()
        return _group_pids(base / node if node else base)

    def processes(self) -> dict[int, str]:
        """Every process of the circle, by pid: its role (agent, shim, sandbox, service)."""
        found: set[int] = set()
        for node in self.nodes:
            pid = self.agent_pid(node)
            if pid is None:
                continue
            found.add(pid)
            with contextlib.suppress(psutil.Error):
                found.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        found |= self.cgroup_pids()
        return {pid: role for pid in found if (role := _role(pid)) is not None}

    def kill_node(self, node: str) -> float:
        """SIGKILL `node`'s agent, all it started, and all in its replicas' groups, as if the
        machine were lost; the perf_counter() just before the first kill."""
        pid = self.agent_pid(node)
        if pid is None:
            raise BenchError(f"{node}'s agent is not running")
        agent = psutil.Process(pid)
        family = [agent, *agent.children(recursive=True)]
        grouped = self.cgroup_pids(node)
        began = time.perf_counter()
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _kill(grouped)
        for _ in range(500):  # a bubblewrap that forked meanwhile
            left = self.cgroup_pids(node)
            if not left:
                break
            _kill(left)
            time.sleep(0.01)
        psutil.wait_procs(family, timeout=5)
        return began

    def lease_expiry(self, lease: int | None) -> float:
        """When `lease` expires, by the store's clock (Unix seconds; NaN if unknown): read
        from the SQLite store's own table, a diagnostic only."""
        if lease is None:
            return float("nan")
        database = f"file:{self.root / 'state.db'}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(database, uri=True, timeout=5)) as conn:
                query = "SELECT expires_at FROM leases WHERE id = ?"
                row = conn.execute(query, (lease,)).fetchone()
        except sqlite3.Error:
            return float("nan")
        return float(row[0]) if row else float("nan")

    def logs(self) -> dict[str, collections.Counter[str]]:
        """Per agent log: how many Warning events of each reason."""
        found = {}
        for log in sorted((self.root / "logs").glob("*.log")):
            counted: collections.Counter[str] = collections.Counter()
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    words = line.split()
                    if len(words) >= 2 and words[0] == "Warning":
                        counted[words[1]] += 1
                    elif line.startswith("Traceback"):
                        counted["Traceback"] += 1
            found[log.stem] = counted
        return found

    def down(self, logs: Path | None) -> None:
        """`circle down --purge`, then by hand whatever it left (agents, groups, files)."""
        if logs is not None and (self.root / "logs").is_dir():
            with contextlib.suppress(OSError):
                shutil.copytree(self.root / "logs", logs / self.root.name, dirs_exist_ok=True)
        if not self.root.exists():
            return
        argv = [*circle_argv(), "down", "--dir", str(self.root), "--purge"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
            if done.returncode != 0:
                print(
                    f"circle down: exit {done.returncode}: {done.stderr.strip()}", file=sys.stderr
                )
        except subprocess.TimeoutExpired:
            print("circle down: did not finish in 90 s", file=sys.stderr)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        for pid_file in (self.root / "run").glob("*.pid") if self.root.is_dir() else ():
            pid = self.agent_pid(pid_file.stem)
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    agent = psutil.Process(pid)
                    for process in [agent, *agent.children(recursive=True)]:
                        process.kill()
                print(f"bench_circle: killed {pid_file.stem}'s agent left running", file=sys.stderr)
        bases = self.bases
        if not bases and (self.root / "up.json").exists():
            with contextlib.suppress(OSError, ValueError, KeyError):
                bases = tuple(
                    Path(b) for b in json.loads((self.root / "up.json").read_text())["cgroupBases"]
                )
        for base in bases:
            if not base.is_dir():
                continue
            print(f"bench_circle: removing the control groups left in {base}", file=sys.stderr)
            folders = sorted((Path(f) for f, _, _ in os.walk(base)), key=lambda p: -len(p.parts))
            for folder in folders:
                for _ in range(200):
                    left = _group_pids(folder, recursive=False)
                    if not left:
                        break
                    _kill(left)
                    time.sleep(0.01)
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)


def _group_pids(folder: Path, recursive: bool = True) -> set[int]:
    found: set[int] = set()
    folders = (Path(f) for f, _, _ in os.walk(folder)) if recursive else iter([folder])
    for each in folders:
        with contextlib.suppress(OSError):
            found.update(int(w) for w in (each / "cgroup.procs").read_text().split() if w.isdigit())
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _role(pid: int) -> str | None:
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    if not argv:
        return "other"
    if "reconciler" in argv and "node" in argv and "run" in argv:
        return "agents"
    if "reconciler.node.shim" in argv:
        return "shims"
    if os.path.basename(argv[0]) == "bwrap":
        return "sandboxes (bwrap)"
    if any("langid_service" in word for word in argv):
        return "services"
    return "other"


# -- timing against the store ----------------------------------------------------------------

Test = Callable[[view.View], bool]


def watch(
    circle: LocalCircle, began: float, marks: Mapping[str, Test], final: str, timeout: float
) -> dict[str, float]:
    """Read the store every POLL seconds until `marks[final]` holds: for each mark, the
    seconds from `began` (perf_counter) to the first read after which it held."""
    found: dict[str, float] = {}
    seen: view.View | None = None
    with circle.store() as store:
        while True:
            with contextlib.suppress(StoreError):
                seen = circle.read(store)
            now = time.perf_counter()
            if seen is not None:
                for name, test in marks.items():
                    if name not in found and test(seen):
                        found[name] = now - began
            if final in found:
                return found
            if now - began > timeout:
                raise BenchError(f"{final}: not reached in {timeout:g} s; {describe(seen)}")
            time.sleep(POLL)


def describe(seen: view.View | None) -> str:
    if seen is None:
        return "the store could not be read"
    placed = [
        f"{p.assignment.slot}@{p.assignment.node} {p.assignment.commit[:8]} "
        f"{p.status.phase.value + ' ' + p.status.reason if p.status else 'no status'}"
        for p in seen.assignments
        if p.assignment.workload == WORKLOAD
    ]
    nodes = [n.registration.node for n in seen.nodes]
    return f"leader {seen.leader}, nodes {nodes}, {WORKLOAD}: {placed}"


def _mine(seen: view.View) -> list[view.Placed]:
    return [p for p in seen.assignments if p.assignment.workload == WORKLOAD]


def _ready_slots(placed: list[view.Placed]) -> set[int]:
    return {
        p.assignment.slot for p in placed if p.status is not None and p.status.phase is Phase.READY
    }


# -- figure 1: approved commit -> the new version Ready --------------------------------------


@dataclass(frozen=True)
class Rollout:
    approve: float  # seconds the two `circle approve` took together
    planned: float  # from the last approve's return: the first assignment at the new commit
    ready: float  # every wanted slot Ready at the new commit, nothing older left
    placed: tuple[float, ...]  # per slot: its first assignment at the new commit
    slots: tuple[float, ...]  # per slot: its first Ready replica at the new commit


def rollout(circle: LocalCircle, round_: int) -> Rollout:
    """A new version of `langid` (an env var changed), committed and approved."""
    path = circle.workload_file
    text = path.read_text()
    line = f'  BENCH_ROUND: "{round_}"'
    if "BENCH_ROUND:" in text:
        text = re.sub(r"^  BENCH_ROUND: .*$", line, text, flags=re.MULTILINE)
    else:
        text, count = re.subn(r'^(  PYTHONUNBUFFERED: "1")$', rf"\1\n{line}", text, flags=re.M)
        if count != 1:
            raise BenchError(f'{path}: no `  PYTHONUNBUFFERED: "1"` line under env:')
    path.write_text(text)
    git = ["git", "-C", str(circle.repo)]
    run([*git, "commit", "-qam", f"bench: round {round_}"], 30, "git commit")
    commit = run([*git, "rev-parse", "HEAD"], 30, "git rev-parse").stdout.strip()
    wanted = circle.wanted()
    slots = set(range(wanted))

    def planned(seen: view.View) -> bool:
        return any(p.assignment.commit == commit for p in _mine(seen))

    def ready(seen: view.View) -> bool:
        mine = _mine(seen)
        if any(p.assignment.commit != commit for p in mine):
            return False
        return _ready_slots(mine) >= slots

    def new(seen: view.View) -> list[view.Placed]:
        return [p for p in _mine(seen) if p.assignment.commit == commit]

    def slot_placed(slot: int) -> Test:
        return lambda seen: any(p.assignment.slot == slot for p in new(seen))

    def slot_ready(slot: int) -> Test:
        return lambda seen: slot in _ready_slots(new(seen))

    marks: dict[str, Test] = {"planned": planned, "ready": ready}
    for slot in sorted(slots):
        marks[f"slot {slot} placed"] = slot_placed(slot)
        marks[f"slot {slot} ready"] = slot_ready(slot)
    approving = time.perf_counter()
    for owner in APPROVERS:
        key = circle.root / "keys" / "owners" / owner
        argv = [*circle_argv(), "approve", "--repo", str(circle.repo), "--key", str(key)]
        run(argv, 60, f"circle approve as {owner}")
    began = time.perf_counter()
    found = watch(circle, began, marks, "ready", 60)
    placed = tuple(found.get(f"slot {n} placed", found["ready"]) for n in sorted(slots))
    each = tuple(found.get(f"slot {n} ready", found["ready"]) for n in sorted(slots))
    return Rollout(began - approving, found["planned"], found["ready"], placed, each)


# -- figures 2 and 3: node loss ----------------------------------------------------------------


@dataclass(frozen=True)
class NodeLoss:
    ttl: int
    node: str
    leader: str
    lease_left: float  # what its lease had left at the kill, by the store's clock
    gone: float  # its registration gone from the store (its lease expired)
    moved: float  # its replica placed on another node
    ready: float  # wanted replicas Ready again, none on it


def node_loss(circle: LocalCircle) -> NodeLoss:
    """Lose a node that runs a replica and does not lead."""
    with circle.store() as store:
        seen = circle.read(store)
    leader = seen.leader
    candidates = sorted({p.assignment.node for p in _mine(seen)} - {leader})
    if leader is None or not candidates:
        raise BenchError(f"no replica on a node that does not lead: {describe(seen)}")
    node = candidates[0]
    wanted = circle.wanted()

    def gone(seen: view.View) -> bool:
        return all(n.registration.node != node for n in seen.nodes)

    def moved(seen: view.View) -> bool:
        mine = _mine(seen)
        elsewhere = {p.assignment.slot for p in mine if p.assignment.node != node}
        return len(elsewhere) >= wanted and all(p.assignment.node != node for p in mine)

    def ready(seen: view.View) -> bool:
        mine = _mine(seen)
        others = [p for p in mine if p.assignment.node != node]
        return len(_ready_slots(others)) >= wanted and len(others) == len(mine)

    with circle.store() as store:
        nodes = circle.read(store).nodes
    lease = next((n.kv.lease for n in nodes if n.registration.node == node), None)
    expires = circle.lease_expiry(lease)
    began = circle.kill_node(node)
    left = expires - time.time() + (time.perf_counter() - began)
    marks = {"gone": gone, "moved": moved, "ready": ready}
    found = watch(circle, began, marks, "ready", circle.ttl + 90)
    gone_at = found.get("gone", float("nan"))
    return NodeLoss(circle.ttl, node, leader, left, gone_at, found["moved"], found["ready"])


# -- figure 4: the idle circle -------------------------------------------------------------------


@dataclass
class Usage:
    count: int = 0
    cpu: float = 0.0  # % of one core over the window
    rss: float = 0.0  # MiB at the end, summed
    pss: float = 0.0  # MiB at the end, summed (shared pages split between their users)


@dataclass
class Idle:
    seconds: float
    roles: dict[str, Usage] = field(default_factory=dict)
    total: Usage = field(default_factory=Usage)
    baseline: Usage = field(default_factory=Usage)
    churn: int = 0  # processes that came or went during the window


def _cpu(process: psutil.Process) -> float:
    """CPU seconds: its own and its reaped children's."""
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def idle(circle: LocalCircle, seconds: float) -> Idle:
    """Every process of the circle and a sleeping Python, sampled over one window."""
    floor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        time.sleep(SETTLE)  # the circle settles; the floor's own start is over

        def collect() -> dict[int, str]:
            return {**circle.processes(), floor.pid: "baseline"}

        before: dict[int, tuple[float, float]] = {}  # pid: (create time, cpu seconds)
        for pid in collect():
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                before[pid] = (process.create_time(), _cpu(process))
        began, began_wall = time.monotonic(), time.time()
        time.sleep(seconds)
        elapsed = time.monotonic() - began
        found = Idle(elapsed)
        after = collect()
        found.churn = len(set(before) ^ set(after))
        for pid, role in after.items():
            try:
                process = psutil.Process(pid)
                created = process.create_time()
                used = _cpu(process)
                memory = process.memory_full_info()
            except psutil.Error:
                continue
            if pid in before and abs(before[pid][0] - created) < 0.05:
                used -= before[pid][1]
            elif created < began_wall - 0.1:
                continue  # it ran before the window, unseen at its start
            usage = Usage(1, 100 * used / elapsed, memory.rss / 2**20, memory.pss / 2**20)
            if role == "baseline":
                found.baseline = usage
                continue
            for into in (found.roles.setdefault(role, Usage()), found.total):
                into.count += 1
                into.cpu += usage.cpu
                into.rss += usage.rss
                into.pss += usage.pss
        return found
    finally:
        floor.terminate()
        floor.wait(10)


# -- the baseline: the service's own start-up ----------------------------------------------------


def service_startup(circle: LocalCircle, scratch: Path) -> list[float]:
    """The service as a plain process, outside any sandbox, from the artifact a node installed
    and the model a node fetched (as bench_runtime's plain baseline): seconds from the spawn
    until GET /healthz answers 200, PLAIN_STARTS times."""
    for node in circle.nodes:
        state = circle.root / "nodes" / node
        installed = sorted((state / "artifacts").glob("*/app"))
        models = sorted((state / "volumes" / "model-data").glob("*/langid-model.json"))
        if installed and models:
            break
    else:
        raise BenchError("no node holds the installed artifact and the model")
    artifact = installed[0].parent
    path = SANDBOX_PATH.replace("/artifact", str(artifact))
    python = shutil.which("python3", path=path)
    if python is None:
        raise BenchError(f"no python3 on {path}")
    env = {
        "PATH": path,
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        "PYTHONPATH": f"{artifact}/app:{artifact}/site-packages",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    times = []
    for _ in range(PLAIN_STARTS):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [python, "-m", "langid_service", "--model", str(models[0])]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        began = time.perf_counter()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, cwd=scratch,
        )  # fmt: skip
        try:
            while not _healthy(port):
                if process.poll() is not None or time.perf_counter() - began > 30:
                    raise BenchError(f"the plain service did not answer (exit {process.poll()})")
                time.sleep(HEALTHZ_POLL)
            times.append(time.perf_counter() - began)
        finally:
            process.terminate()
            process.wait(10)
    return times


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


# -- the run -------------------------------------------------------------------------------------


AUTOSCALE_TARGET = 5  # rps per replica, in the benchmark's copy of the example
HPA_SYNC = 15.0  # Kubernetes HPA --horizontal-pod-autoscaler-sync-period, documented default
METRICS_RESOLUTION = 60.0  # metrics-server --metric-resolution, documented default


def autoscaled(scratch: Path, ttl: int) -> float:
    """Load start -> a third replica Ready, on a circle whose langid scales at 5 rps per
    replica (the example's copy); the load is three clients posting without pause."""
    repo = scratch / "autoscale-repo"
    shutil.copytree(REPO / "example-circle-repo", repo,
                    ignore=shutil.ignore_patterns("__pycache__", ".*cache"))  # fmt: skip
    workload = repo / "workloads" / f"{WORKLOAD}.yaml"
    text = workload.read_text()
    workload.write_text(text.replace("  target: 200\n", f"  target: {AUTOSCALE_TARGET}\n"))
    circle = LocalCircle(scratch / "autoscale", ttl, source=repo)
    stop = threading.Event()
    try:
        circle.up()
        with circle.store() as store:
            seen = circle.read(store)
        endpoints = [
            e.split("=", 1)[1] for p in _mine(seen) if p.status for e in p.status.endpoints
        ]
        clients = [threading.Thread(target=_post, args=(endpoints, stop), daemon=True)
                   for _ in range(3)]  # fmt: skip
        began = time.perf_counter()
        for client in clients:
            client.start()
        deadline = began + 120
        while time.perf_counter() < deadline:
            with circle.store() as store:
                ready = _ready_slots(_mine(circle.read(store)))
            if len(ready) >= 3:
                return time.perf_counter() - began
            time.sleep(POLL * 5)
        raise BenchError("no third replica Ready within 120 s of load")
    finally:
        stop.set()
        with _uninterrupted():
            circle.down(None)


def _post(endpoints: list[str], stop: threading.Event) -> None:
    body = json.dumps({"text": "Der Hund schläft im Haus."})
    while not stop.is_set():
        for endpoint in endpoints:
            host, port = endpoint.rsplit(":", 1)
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection(host, int(port), timeout=5)
                connection.request("POST", "/v1/predict", body,
                                   {"Content-Type": "application/json"})  # fmt: skip
                connection.getresponse().read()
                connection.close()


@dataclass
class Results:
    up: list[tuple[int, float]] = field(default_factory=list)  # (ttl, seconds)
    startup: list[float] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    losses: list[NodeLoss] = field(default_factory=list)
    idle: Idle | None = None
    autoscaled: float | None = None
    warnings: dict[str, dict[str, collections.Counter[str]]] = field(default_factory=dict)


def measure(args: argparse.Namespace, scratch: Path, results: Results) -> None:
    first = LocalCircle(scratch / f"ttl{args.ttl}", args.ttl)
    try:
        first.up()
        results.up.append((first.ttl, first.up_seconds))
        results.startup = service_startup(first, scratch)
        results.idle = idle(first, args.idle)
        for round_ in range(1, args.rounds + 1):
            results.rollouts.append(rollout(first, round_))
        time.sleep(2)  # the last round's old replicas finish stopping
        results.losses.append(node_loss(first))
        time.sleep(1)  # the events of the move reach the logs
    finally:
        with _uninterrupted():
            results.warnings[first.root.name] = first.logs()
            first.down(args.logs)
    results.autoscaled = autoscaled(scratch, args.fast_ttl if args.fast_ttl > 0 else args.ttl)
    if args.fast_ttl <= 0:
        return
    second = LocalCircle(scratch / f"ttl{args.fast_ttl}", args.fast_ttl)
    try:
        second.up()
        results.up.append((second.ttl, second.up_seconds))
        time.sleep(2)  # registrations and leases settle
        results.losses.append(node_loss(second))
        time.sleep(1)
    finally:
        with _uninterrupted():
            results.warnings[second.root.name] = second.logs()
            second.down(args.logs)


def _seconds(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value * MS:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISSED")


def report(r: Results, args: argparse.Namespace) -> None:
    startup = median(r.startup) if r.startup else float("nan")
    rows: list[tuple[str, str, str, str, str]] = []

    def row(
        name: str,
        value: float | str | None,
        baseline: float | str | None = None,
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        shown = value if isinstance(value, str) else _seconds(value)
        base = baseline if isinstance(baseline, str) else _seconds(baseline)
        rows.append((name, shown, base, target, _verdict(ok)))

    for ttl, took in r.up:
        row(f"circle up, nothing to converged (ttl {ttl})", took)
    row("service start-up, plain process (median)", startup)
    if r.rollouts:
        ready = [x.ready for x in r.rollouts]
        best = median(ready)
        row(f"approved -> new version Ready (median of {len(ready)})", best, startup,
            "<= start-up + 1 s", best <= startup + 1)  # fmt: skip
        row("  moonshot", best, startup, "<= start-up + 300 ms", best <= startup + 0.3)
        row("  min", min(ready), startup)
        row("  first assignment at the new commit (median)", median(x.planned for x in r.rollouts))
        for slot in range(len(r.rollouts[0].slots)):
            placed = median(x.placed[slot] for x in r.rollouts if slot < len(x.slots))
            row(f"  slot {slot} placed at the new commit (median)", placed)
            at = median(x.slots[slot] for x in r.rollouts if slot < len(x.slots))
            row(f"  slot {slot} Ready at the new commit (median)", at)
        row("  two `circle approve` (median, before t=0)", median(x.approve for x in r.rollouts))
        row("  Flux: source poll (documented default, not measured)", "-", FLUX_POLL)
        row("  Argo CD: refresh (documented default, not measured)", "-", ARGO_REFRESH)
    for loss in r.losses:
        limit = loss.ttl + 2 + startup
        row(f"node loss -> {WORKLOAD} Ready again (ttl {loss.ttl})", loss.ready, startup,
            f"<= {loss.ttl} s + 2 s + start-up", loss.ready <= limit)  # fmt: skip
        row("  lease time left at the kill (store's clock)", loss.lease_left)
        row("  registration gone (lease expired)", loss.gone)
        row("  replica placed on another node", loss.moved)
    if r.losses:
        row("  Kubernetes: eviction (documented default, not measured)", "-", K8S_EVICTION)
    if r.autoscaled is not None:
        row(f"load -> autoscaled replica Ready ({AUTOSCALE_TARGET} rps target)", r.autoscaled)
        row("  Kubernetes HPA: sync period (documented default, not measured)", "-", HPA_SYNC)
        row("  metrics-server: resolution (documented default, not measured)", "-",
            METRICS_RESOLUTION)  # fmt: skip

    width = max(len(name) for name, *_ in rows) + 2
    print(f"{'figure':{width}}{'value':>10}{'baseline':>10}  {'target':28}verdict")
    for name, value, baseline, target, verdict in rows:
        print(f"{name:{width}}{value:>10}{baseline:>10}  {target:28}{verdict}")

    if r.idle is not None:
        i = r.idle
        print(f"\nidle circle (ttl {args.ttl}), {i.seconds:.1f} s after {SETTLE:g} s of settling:")
        print(f"  {'processes':34}{'count':>6}{'CPU % core':>12}{'RSS MiB':>10}{'PSS MiB':>10}")
        lines = [("whole circle", i.total), *sorted(i.roles.items())]
        lines.append(("baseline: python sleeping", i.baseline))
        for name, u in lines:
            print(f"  {name:34}{u.count:>6}{u.cpu:>12.2f}{u.rss:>10.1f}{u.pss:>10.1f}")
        agents = i.roles.get("agents")
        if agents is not None and agents.count:
            cpu, rss = agents.cpu / agents.count, agents.rss / agents.count
            ok = cpu <= AGENT_CPU_TARGET and rss <= AGENT_RSS_TARGET
            print(
                f"  per agent: {cpu:.2f}% of a core, {rss:.1f} MiB RSS; target <= "
                f"{AGENT_CPU_TARGET:g}% and <= {AGENT_RSS_TARGET:g} MiB: {_verdict(ok)}"
            )
        if i.churn:
            print(f"  {i.churn} processes came or went during the window")

    print("\nrounds (approved -> Ready): " + ", ".join(_seconds(x.ready) for x in r.rollouts))
    print("plain start-ups: " + ", ".join(_seconds(s) for s in r.startup))
    for loss in r.losses:
        print(f"node loss (ttl {loss.ttl}): killed {loss.node} (leader {loss.leader})")
    for name, logs in r.warnings.items():
        said = {node: dict(counted) for node, counted in logs.items() if counted}
        print(f"warnings in {name}'s agent logs: {said or 'none'}")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored while a circle is taken down (and by `circle down`)."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rolling updates (default 3)")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, s (default 20)")
    parser.add_argument("--ttl", type=int, default=10, help="the first circle's ttl (default 10)")
    parser.add_argument(
        "--fast-ttl", type=int, default=3, help="the second circle's ttl (default 3; 0: none)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="scratch parent (default: temp)")
    parser.add_argument("--logs", type=Path, default=None, help="copy the agents' logs here")
    args = parser.parse_args()
    args.rounds = max(1, args.rounds)
    if os.geteuid() != 0 or not os.access("/usr/bin/bwrap", os.X_OK):
        print("needs root and /usr/bin/bwrap, as `circle up` does", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)
    scratch = Path(tempfile.mkdtemp(prefix="bench-circle-", dir=args.dir))
    results = Results()
    began = time.monotonic()
    failed = None
    try:
        measure(args, scratch, results)
    except BenchError as error:
        failed = error
    except KeyboardInterrupt:
        print("bench_circle: interrupted; the circles are removed", file=sys.stderr)
        return 130
    finally:
        with _uninterrupted():
            shutil.rmtree(scratch, ignore_errors=True)
    if failed is not None:
        print(f"bench_circle: {failed}; the figures measured before it:\n", file=sys.stderr)
    print(
        f"example circle, {WORKLOAD} ({len(results.rollouts)} rolling updates, "
        f"{len(results.losses)} node losses), in {time.monotonic() - began:.0f} s; "
        f"store polled every {POLL * MS:.0f} ms\n"
    )
    report(results, args)
    return 0 if failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
