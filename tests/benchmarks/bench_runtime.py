"""Benchmark: what the workload runtime costs a replica, beside baselines measured in the same run.

The example circle's langid service (its python-app artifact and its model in a QSS volume,
health check GET /healthz) run through a real `Runtime` on real sandboxes and control groups:

- cold start: assignment to Ready on an empty node folder, the artifact's chunks fetched from a
  peer node's chunk server over HTTP (loopback, unthrottled) and the model read from its QSS
  backends;
- warm start: the same node again after the replica was removed (artifact installed, volume
  cached), against the baseline: the same service started as a plain process outside any
  sandbox, until GET /healthz answers 200. Warm minus plain is the runtime's own cost;
- restart after a crash: the service's main process is SIGKILLed; until the runtime has seen
  the exit, started a new shim, and the replica is Ready again;
- the sandbox's own cost: `/bin/true` run through the exact bubblewrap command line the runtime
  builds (with setpriv), then with the control group join, then through the shim, against
  `/bin/true` started plainly.

Each start figure is the median of `--repeat` runs (a fresh node folder for each cold start);
the `/bin/true` figures are means of `--starts` runs. Needs root, bubblewrap and writable
cgroups, as the runtime does.

    .venv/bin/python tests/benchmarks/bench_runtime.py [--repeat 3] [--starts 30] [--json]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, median

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builders.chunks import ChunkSource, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from qss.keys import generate_key_file, read_key_file
from reconciler import wiring
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState
from reconciler.node import sandbox
from reconciler.node.artifacts import Artifacts
from reconciler.node.cgroups import Cgroups
from reconciler.node.logs import read_log, replica_log_dir
from reconciler.node.records import Phase
from reconciler.node.replica import INFO_FD, ReplicaPaths, RunningReplica
from reconciler.node.runtime import ReplicaStatus, Runtime, RuntimeConfig, RuntimeEvent, Work
from reconciler.node.uids import UidTable
from reconciler.node.volumes import Volumes
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName
from tests.reconciler.node.runtime_world import NODE, release_cgroups

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = "langid"
KEY = (WORKLOAD, 0)
UIDS = (430_000, 430_999)
TRUE_UID = UIDS[1]  # the /bin/true sandboxes' user: the far end of the range, never allotted
HEALTHZ_POLL = 0.005  # seconds between the plain baseline's GET /healthz
FAILED_REASONS = {"ArtifactUnavailable", "VolumeUnavailable", "SandboxFailed"}
MS = 1000.0


class BenchError(Exception):
    """The benchmark could not measure (a replica that never got Ready, a missing tool)."""


# -- the circle: built once, served by a peer ---------------------------------------------------


@dataclass
class Circle:
    desired: DesiredState
    peer: ChunkStore  # the peer node's chunk store, holding every built artifact
    storage_key: bytes
    work: Work

    @classmethod
    def make(cls, scratch: Path) -> Circle:
        """Copy the example circle, point its volume at local folders, build its artifacts
        into the peer's store and put the model into its QSS volume."""
        repo = scratch / "circle"
        shutil.copytree(REPO / "example-circle-repo", repo)
        volume_file = repo / "volumes" / "model-data.yaml"
        qss = scratch / "qss"
        volume_file.write_text(volume_file.read_text().replace("/var/lib/circle/qss", str(qss)))
        desired = check_circle_dir(repo).state
        peer = ChunkStore(scratch / "peer")
        for build in desired.builds.values():
            wiring.run_build(build.document, repo, peer)
        key_file = scratch / "storage.key"
        generate_key_file(key_file)
        storage_key = read_key_file(key_file)
        for backend in desired.volumes["model-data"].document.backends:
            Path(backend.url.removeprefix("dir:")).mkdir(parents=True)
        volume = wiring.volume_store(desired, "model-data")
        volume.store.put(
            repo / "src/model/langid-model.json", storage_key=storage_key, k=volume.k, n=volume.n
        )
        # Without its sealed API key: this node has no KEM key, and a release (a tmpfs per
        # start) is not what this benchmark measures.
        workload = desired.workloads[WORKLOAD].document.model_copy(update={"secrets": []})
        assert workload.artifact.digest is not None  # the example pins it
        assignment = Assignment(
            WorkloadName(WORKLOAD), 0, NodeName(NODE), CommitId("c0" * 20), 1,
            ArtifactDigest(workload.artifact.digest), int(workload.resources.cpu),
            int(workload.resources.memory), (), 1,
        )  # fmt: skip
        return cls(desired, peer, storage_key, Work(assignment, workload, desired))


# -- a node: a runtime whose status changes are stamped as they happen ---------------------------


@dataclass(frozen=True)
class Mark:
    at: float  # time.perf_counter()
    status: ReplicaStatus | None
    events: tuple[RuntimeEvent, ...]


class Node:
    """A real `Runtime` over `state` (as `tests/reconciler/node/runtime_world.make_runtime`,
    but with any chunk sources), each status change and event recorded with its time."""

    def __init__(
        self, state: Path, sources: Sequence[ChunkSource], circle: Circle, cgroup_parent: str
    ) -> None:
        self.state = state
        self.marks: list[Mark] = []
        self._changes = threading.Condition()
        self.runtime: Runtime | None = None
        artifacts = Artifacts(state, lambda: list(sources))
        self.runtime = Runtime(
            RuntimeConfig(state, NODE, grace=2.0),
            artifacts=artifacts,
            volumes=Volumes(state, circle.storage_key, artifacts),
            cgroups=Cgroups.detect(cgroup_parent),
            uids=UidTable(state / "uids.json", UIDS),
            on_change=self._changed,
        )

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def _changed(self) -> None:
        # Called on the replica's own thread right after its status or events changed.
        now = time.perf_counter()
        runtime = self.runtime
        if runtime is None:
            return
        found = [s for s in runtime.statuses() if (s.workload, s.slot) == KEY]
        mark = Mark(now, found[0] if found else None, tuple(runtime.take_events()))
        with self._changes:
            self.marks.append(mark)
            self._changes.notify_all()

    def wait(self, since: int, reached: Callable[[Mark], bool], what: str, seconds: float) -> Mark:
        """The first mark from index `since` on that `reached`; BenchError after `seconds` or
        when the replica fails to start."""
        deadline = time.monotonic() + seconds
        index = since
        with self._changes:
            while True:
                while index < len(self.marks):
                    mark = self.marks[index]
                    index += 1
                    status = mark.status
                    if status is not None and status.reason in FAILED_REASONS:
                        raise BenchError(f"waiting for {what}: {status.reason}: {status.message}")
                    if reached(mark):
                        return mark
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.marks[-1].status if self.marks else None
                    raise BenchError(f"{what} not reached in {seconds:g} s (last status: {last})")
                self._changes.wait(left)

    def start(self, work: Work) -> Start:
        """Assign `work` and wait until its replica is Ready: the times of its steps."""
        since = len(self.marks)
        began, began_wall = time.perf_counter(), time.time()
        self.rt.sync({KEY: work})
        ready = self.wait(since, _phase(Phase.READY), "Ready", 60)
        marks = self.marks[since:]
        return Start(
            starting=_first(marks, lambda m: _reason(m) == "Starting") - began,
            started=_first(marks, lambda m: _said(m, "Started")) - began,
            listening=self.listening_after(began_wall) - began_wall,
            ready=ready.at - began,
        )

    def remove(self) -> None:
        """Remove the assignment and wait until its worker has finished: a `sync` that comes
        while the old worker is still retiring is lost (see the report), so this waits on the
        runtime's private table, as nothing public says."""
        since = len(self.marks)
        self.rt.sync({})
        self.wait(since, lambda m: m.status is None, "removed", 30)
        deadline = time.monotonic() + 30
        while self.rt._workers:
            if time.monotonic() > deadline:
                raise BenchError("the removed replica's worker did not finish in 30 s")
            time.sleep(0.002)
            self.rt.sync({})

    def main_pid(self) -> int:
        """The service's process in the replica's control group: not bubblewrap (the outer
        one or its pid-1 init inside the namespace), the one whose command line is the
        service's."""
        group = self.rt.cgroups.group(NODE, f"{KEY[0]}.{KEY[1]}")
        found = []
        for pid in sorted(group.pids()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if os.path.basename(argv[0]) != b"bwrap" and b"langid_service" in argv:
                found.append(pid)
        if len(found) != 1:
            raise BenchError(f"expected one service process in {group.main}, found {found}")
        return found[0]

    def crash(self) -> Restart:
        """SIGKILL the service's main process; the times until the runtime saw the exit, had
        a new shim running it, and the replica was Ready again."""
        pid = self.main_pid()
        since = len(self.marks)
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        # The exit's event comes while the status still says Ready: wait for the new start.
        exited = self.wait(since, lambda m: _said(m, "Exited"), "the exit seen", 30)
        started = self.wait(since, lambda m: _said(m, "Started"), "a new start", 30)
        ready = self.wait(self.marks.index(started), _phase(Phase.READY), "Ready again", 60)
        return Restart(
            exit_seen=exited.at - began,
            restarted=started.at - began,
            ready=ready.at - began,
            restarts=ready.status.restarts if ready.status else 0,
        )

    def listening_after(self, wall: float) -> float:
        """When the replica's log says `listening on` (the shim's time for it), after `wall`."""
        for line in read_log(replica_log_dir(self.state, *KEY)):
            at = _cri_time(line.time)
            if at >= wall and line.text.startswith("listening on"):
                return at
        raise BenchError("the replica's log has no `listening on` line")

    def endpoint(self) -> str:
        status = next(s for s in self.rt.statuses() if (s.workload, s.slot) == KEY)
        return status.endpoints[0].split("=", 1)[1]

    def close(self) -> None:
        self.rt.close(stop=True)


@dataclass(frozen=True)
class Start:
    starting: float  # artifact and volume checked or fetched, sandbox prepared
    started: float  # the shim has the sandbox running
    listening: float  # the service printed `listening on`
    ready: float  # its health check passed


@dataclass(frozen=True)
class Restart:
    exit_seen: float
    restarted: float
    ready: float
    restarts: int


def _phase(phase: Phase) -> Callable[[Mark], bool]:
    return lambda mark: mark.status is not None and mark.status.phase is phase


def _reason(mark: Mark) -> str | None:
    return mark.status.reason if mark.status is not None else None


def _said(mark: Mark, reason: str) -> bool:
    return any(event.reason == reason for event in mark.events)


def _first(marks: list[Mark], reached: Callable[[Mark], bool]) -> float:
    return next(mark.at for mark in marks if reached(mark))


def _cri_time(text: str) -> float:
    """A CRI log time (RFC 3339, nine fractional digits, Z) as Unix seconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return moment.timestamp() + float(f"0.{fraction or '0'}")


# -- the plain baseline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plain:
    listening: float
    ready: float


def plain_start(
    installed: Path, model: Path, scratch: Path, join: Sequence[str] | None = None
) -> Plain:
    """The service as a plain process, outside any sandbox: the same interpreter the sandbox
    finds on its PATH, the same PYTHONPATH (the installed artifact), a free port; until GET
    /healthz answers 200, polled every HEALTHZ_POLL seconds. With `join` (cgroup.procs files)
    it runs in that control group, under its limits."""
    path = sandbox.PATH.replace(sandbox.ARTIFACT, str(installed))
    python = shutil.which("python3", path=path)
    if python is None:
        raise BenchError(f"no python3 on {path}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": path,
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        "PYTHONPATH": f"{installed}/app:{installed}/site-packages",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [python, "-m", "langid_service", "--model", str(model), "--host", "127.0.0.1"]
    heard: list[float] = []
    began = time.perf_counter()
    argv += ["--port", str(port)]
    process = subprocess.Popen(
        argv if join is None else sandbox.joined_argv(join, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=scratch,
    )
    assert process.stdout is not None
    stdout = process.stdout

    def listen() -> None:
        for line in stdout:
            if line.startswith(b"listening on") and not heard:
                heard.append(time.perf_counter())

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    try:
        deadline = began + 30
        while not _healthy(port):
            if process.poll() is not None or time.perf_counter() > deadline:
                raise BenchError(f"the plain service did not answer (exit {process.poll()})")
            time.sleep(HEALTHZ_POLL)
        ready = time.perf_counter() - began
    finally:
        process.terminate()
        process.wait(10)
        reader.join(5)
    return Plain(listening=heard[0] - began if heard else float("nan"), ready=ready)


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def predict(endpoint: str) -> str:
    """POST /v1/predict through the published port: the language it names."""
    host, port = endpoint.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        body = json.dumps({"text": "der Hund und die Katze sind im Haus"})
        connection.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        return str(json.loads(answer.read())["language"])
    finally:
        connection.close()


# -- the sandbox's own cost ----------------------------------------------------------------------


@dataclass(frozen=True)
class Starts:
    plain: float
    sandboxed: float
    joined: float
    shim_up: float  # RunningReplica.start returned: the shim reported the sandbox's pid
    shim_done: float  # and RunningReplica.wait saw it end (the group killed and removed)


def true_starts(runtime: Runtime, scratch: Path, count: int) -> Starts:
    """`/bin/true`, `count` times each (after one warm-up): plainly; through the runtime's
    bubblewrap command line; with the cgroup join in front; through the shim (spawned, its
    sandbox pid reported, its exit seen by `RunningReplica.wait`). Mean seconds."""
    root = scratch / "true"
    (root / "artifact").mkdir(parents=True)
    (root / "work").mkdir(mode=0o700)
    os.chown(root / "work", TRUE_UID, TRUE_UID)
    (root / "etc").mkdir()
    for name, text in sandbox.etc_files(TRUE_UID, TRUE_UID, "bench-true", "bench-true").items():
        (root / "etc" / name).write_text(text)
        (root / "etc" / name).chmod(0o644)

    def plan(info_fd: int | None) -> sandbox.SandboxPlan:
        return sandbox.SandboxPlan(
            uid=TRUE_UID, gid=TRUE_UID, hostname="bench-true", artifact=str(root / "artifact"),
            work=str(root / "work"), files=str(root / "etc"), command=("/bin/true",),
            env=sandbox.environment({}, builder="archive"), info_fd=info_fd,
        )  # fmt: skip

    limits = sandbox.Limits(memory=64 << 20, cpu=500, pids=runtime.config.pids)
    group = runtime.cgroups.group(NODE, "bench-true.0")
    group.create(limits)
    argv = sandbox.bwrap_argv(plan(None), runtime.host)
    joined = sandbox.joined_argv(group.procs_files(), argv)
    plain = _mean_run(["/bin/true"], count)
    sandboxed = _mean_run(argv, count)
    joined_mean = _mean_run(joined, count)
    group.kill()
    group.remove()

    paths = ReplicaPaths(root / "replica")
    paths.root.mkdir()
    shim_argv = sandbox.bwrap_argv(plan(INFO_FD), runtime.host)
    up, done = [], []
    for index in range(count + 1):
        group.create(limits)  # the shim's end removes it, as a replica's does
        began = time.perf_counter()
        running = RunningReplica.start(paths, shim_argv, group)
        started = time.perf_counter()
        ended = running.wait(10)
        ended_at = time.perf_counter()
        if ended is None or not ended.succeeded:
            raise BenchError(f"/bin/true through the shim: {ended and ended.describe()}")
        if index:
            up.append(started - began)
            done.append(ended_at - began)
    return Starts(plain, sandboxed, joined_mean, fmean(up), fmean(done))


def _mean_run(argv: list[str], count: int) -> float:
    times = []
    for index in range(count + 1):
        began = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip()
            raise BenchError(f"{argv[0]} ... {argv[-1]}: exit {done.returncode}: {said}")
        if index:
            times.append(elapsed)
    return fmean(times)


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    cold: list[Start] = field(default_factory=list)
    warm: list[Start] = field(default_factory=list)
    plain: list[Plain] = field(default_factory=list)
    limited: list[Plain] = field(default_factory=list)  # plain, in the replica's cgroup limits
    restart: list[Restart] = field(default_factory=list)
    starts: Starts | None = None
    language: str = ""


def measure(scratch: Path, repeat: int, count: int) -> Results:
    circle = Circle.make(scratch)
    results = Results()
    parent = f"circle-bench-{secrets.token_hex(4)}"
    node: Node | None = None
    a = circle.work.assignment
    try:
        with ChunkServer(circle.peer) as server:
            for index in range(repeat):
                state = scratch / f"node-{index}"
                state.mkdir(mode=0o700)
                with HttpChunkSource(server.url) as peer:
                    node = Node(state, [peer], circle, parent)
                    group = node.rt.cgroups.group(NODE, "bench-plain.0")
                    group.create(sandbox.Limits(memory=a.memory, cpu=a.cpu))
                    limited = group.procs_files()
                    results.cold.append(node.start(circle.work))
                    node.remove()
                    results.warm.append(node.start(circle.work))
                    results.language = predict(node.endpoint())
                    results.restart.append(node.crash())
                    node.remove()
                    installed = state / "artifacts" / a.digest.removeprefix("sha256:")
                    model = next((state / "volumes" / "model-data").glob("*/langid-model.json"))
                    results.plain.append(plain_start(installed, model, scratch))
                    results.limited.append(plain_start(installed, model, scratch, limited))
                    if index < repeat - 1:
                        node.close()
                        node = None
        assert node is not None
        results.starts = true_starts(node.rt, scratch, count)
    finally:
        if node is not None:
            node.close()
        release_cgroups(parent)
    return results


def rows(r: Results) -> list[dict[str, object]]:
    """The figures: name, value, baseline (seconds), target and verdict."""
    assert r.starts is not None
    cold = median([s.ready for s in r.cold])
    warm = median([s.ready for s in r.warm])
    plain = median([p.ready for p in r.plain])
    limited = median([p.ready for p in r.limited])
    warm_started = median([s.started for s in r.warm])
    restarted = median([c.restarted for c in r.restart])
    ready_again = median([c.ready for c in r.restart])
    s = r.starts

    def row(
        name: str, value: float, baseline: float | None, target: str, ok: bool | None
    ) -> dict[str, object]:
        verdict = "-" if ok is None else ("ok" if ok else "MISSED")
        return {
            "figure": name,
            "value": value,
            "baseline": baseline,
            "target": target,
            "verdict": verdict,
        }

    return [
        row("cold start to Ready (peer over HTTP)", cold, plain, "", None),
        row("warm start to Ready (same node)", warm, plain, "", None),
        row("runtime's own cost (warm - plain)", warm - plain, None, "<= 1 s", warm - plain <= 1),
        row("  the same beside plain in its CPU limit", warm - limited, None, "", None),
        row("crash: exit seen", median([c.exit_seen for c in r.restart]), None, "", None),
        row("crash: restarted (new shim)", restarted, warm_started, "<= 1 s", restarted <= 1),
        row("crash: Ready again", ready_again, plain, "<= plain + 1 s", ready_again <= plain + 1),
        row("/bin/true in the sandbox (bwrap+setpriv)", s.sandboxed, s.plain, "<= +50 ms",
            s.sandboxed - s.plain <= 0.05),
        row("  + cgroup join", s.joined, s.plain, "<= +50 ms", s.joined - s.plain <= 0.05),
        row("  through the shim: up", s.shim_up, s.plain, "<= +50 ms",
            s.shim_up - s.plain <= 0.05),
        row("  through the shim: exit seen", s.shim_done, s.plain, "", None),
    ]  # fmt: skip


def stages(r: Results) -> dict[str, dict[str, float]]:
    """Where a start's time goes (medians, seconds from the assignment)."""
    found = {}
    for label, starts in (("cold", r.cold), ("warm", r.warm)):
        found[label] = {
            "prepared (artifact, volume, sandbox)": median([s.starting for s in starts]),
            "shim running the sandbox": median([s.started for s in starts]),
            "service listening (its log)": median([s.listening for s in starts]),
            "health check passed (Ready)": median([s.ready for s in starts]),
        }
    for label, plains in (("plain", r.plain), ("plain in its cgroup", r.limited)):
        found[label] = {
            "service listening (its stdout)": median([p.listening for p in plains]),
            "GET /healthz 200": median([p.ready for p in plains]),
        }
    return found


def _seconds(value: object) -> str:
    if not isinstance(value, float):
        return "-"
    return f"{value * MS:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"


def report(r: Results, repeat: int, count: int) -> None:
    print(
        f"langid service (example circle), {repeat} runs each, medians; /bin/true means of "
        f"{count}; POST /v1/predict answered {r.language!r}\n"
    )
    print(f"{'figure':44}{'value':>11}{'baseline':>11}  {'target':16}verdict")
    for found in rows(r):
        print(
            f"{found['figure']!s:44}{_seconds(found['value']):>11}"
            f"{_seconds(found['baseline']):>11}  {found['target']!s:16}{found['verdict']}"
        )
    print("\nbaselines: starts and Ready again: the plain process until GET /healthz is 200;")
    print("restarted: a warm start's assignment to shim; /bin/true: started plainly.")
    print("\nwhere a start's time goes (medians, from the assignment or the spawn):")
    for label, steps in stages(r).items():
        print(f"  {label}")
        for step, at in steps.items():
            print(f"    {step:40}{_seconds(at):>11}")
    print(f"restart counts after one crash: {[c.restarts for c in r.restart]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each start (default 3)")
    parser.add_argument("--starts", type=int, default=30, help="/bin/true runs (default 30)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: temp).")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.access(sandbox.BWRAP, os.X_OK):
        print(f"needs root and {sandbox.BWRAP} (bash .ci/setup installs it)", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-runtime-", dir=args.dir))
    try:
        results = measure(scratch, max(1, args.repeat), max(1, args.starts))
    except BenchError as error:
        print(f"bench_runtime: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps({"figures": rows(results), "stages": stages(results)}, indent=2))
    else:
        report(results, max(1, args.repeat), max(1, args.starts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
