"""The workload runtime: it runs the assignments the agent accepted, one supervised replica per
(workload, slot), and says how each is doing.

Each replica goes through ordered steps that stop at the first error, and its status is
written whatever happens (Flux's way):

    artifact   fetch and verify it, or check the installed tree; a changed tree is refused
               (ArtifactTampered), set aside and rebuilt from verified chunks   ArtifactUnavailable
    volumes    its QSS objects, read and verified into the read-only cache    VolumeUnavailable
    sandbox    uid, work folder, mount points, /etc files, control group      SandboxFailed
    secrets    the secrets it names, released to this workload and artifact   SecretRefused
               alone, into its private tmpfs (`reconciler.node.secrets`)
    start      the shim starts the sandbox (`reconciler.node.replica`)        SandboxFailed
    health     its check, until it passes                                     Unhealthy
    Ready

A replica that ends is restarted with the crash-loop backoff (`reconciler.node.supervisor`);
one whose check fails `failureThreshold` times in a row is stopped and restarted; one whose
artifact changes on disk while it runs (a cheap check every `check_interval`, a full hash every
`full_check_interval`) is stopped, repaired and restarted. A replica whose assignment goes is
stopped (SIGTERM, the grace period, then its control group is killed) and its work folder
removed; its log stays. A replica's secrets go whenever it stops, for whatever reason (their
tmpfs is unmounted); started again, it has them released again. `close(stop=False)` lets
every replica run on: the next agent adopts them (`adopt`) from what their shims recorded,
and takes away the secrets left mounted for any replica that no longer runs.

Each replica has a thread of its own, which waits on its shim's pidfd (an exit is seen at
once), its next check, and a wake-up from `sync`. Status changes and events are queued for the
agent, which signs and stores them (`on_change` wakes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import select
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from qss.durable import write_atomically
from reconciler.desired.model.workload import Workload
from reconciler.desired.repository import DesiredState
from reconciler.errors import ReconcilerError
from reconciler.files import remove_entry, remove_tree
from reconciler.node import health, sandbox, seccomp
from reconciler.node import secrets as secret_files
from reconciler.node.artifacts import Artifacts, ArtifactUnavailable, Installed
from reconciler.node.cgroups import Cgroup, CgroupError, Cgroups
from reconciler.node.netns import NamespaceError, PortProxy
from reconciler.node.records import EventType, Phase
from reconciler.node.replica import (
    INFO_FD,
    SECCOMP_FD,
    Exited,
    ReplicaPaths,
    RunningReplica,
    SandboxFailed,
)
from reconciler.node.supervisor import CrashLoop
from reconciler.node.uids import UidError, UidTable
from reconciler.node.volumes import Volumes, VolumeUnavailable
from reconciler.plan import Assignment

PIDS_LIMIT = 1024
_FAST_FIRST_CHECK = 0.05  # seconds: until a replica first passes its check, checks come fast
_FAST_FOR = 5.0  # seconds of start-up checked that often, then the pace doubles to `interval`


@dataclass(frozen=True)
class Work:
    """One accepted assignment and the approved desired state it belongs to."""

    assignment: Assignment
    workload: Workload
    desired: DesiredState

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes it another replica: a new version, other resources, other GPUs."""
        a = self.assignment
        return (a.seq, a.digest, a.cpu, a.memory, a.gpus)


@dataclass(frozen=True)
class ReplicaStatus:
    workload: str
    slot: int
    seq: int
    commit: str
    phase: Phase
    reason: str
    message: str
    restarts: int = 0
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeEvent:
    type: EventType
    reason: str
    subject: str
    message: str


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: Path
    node: str
    publish_host: str = "127.0.0.1"
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    check_interval: float = 10.0  # cheap check of running artifacts (stat)
    full_check_interval: float = 3600.0  # full hash of running artifacts
    pids: int = PIDS_LIMIT
    stop_on_exit: bool = False


class StepFailed(ReconcilerError):
    """A step of a replica's start failed: its reason is the status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Runtime:
    """Runs this node's accepted assignments (see the module)."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        artifacts: Artifacts,
        volumes: Volumes,
        cgroups: Cgroups,
        uids: UidTable,
        gpu_devices: Callable[[Sequence[str]], tuple[str, ...]] = lambda uuids: (),
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        on_check: Callable[[str, float, bool], None] = lambda workload, seconds, passed: None,
        secrets: Callable[[Work], Mapping[str, bytes]] | None = None,
        on_release: Callable[[str, str], None] = lambda workload, secret: None,
    ) -> None:
        self.config = config
        self.artifacts = artifacts
        self.volumes = volumes
        self.cgroups = cgroups
        self.uids = uids
        self.gpu_devices = gpu_devices
        self.on_change = on_change
        self.on_check = on_check  # each health check: workload, seconds it took, passed
        # The values of the secrets a replica names, or SecretRefused (default: no KEM key).
        self.secrets = secrets or secret_files.Releaser(config.node, None)
        self.on_release = on_release  # each secret released: workload, secret
        self.clock = clock
        self.host = _measure_host()
        try:
            program = seccomp.program(seccomp.arch_of(platform.machine()))
        except seccomp.UnknownArch as error:
            raise SandboxFailed(f"{error}: replicas cannot be confined here") from None
        self.seccomp = config.state_dir / "seccomp.bpf"
        write_atomically(self.seccomp, program, mode=0o600)
        self._workers: dict[tuple[str, int], _Worker] = {}
        self._lock = threading.Lock()
        self._events: list[RuntimeEvent] = []
        self._closed = False

    # -- what the agent calls ------------------------------------------------------------

    def adopt(self) -> int:
        """Take over the replicas an earlier agent left running; how many. Each waits for
        `sync` to say whether it is still wanted."""
        root = self.config.state_dir / "replicas"
        adopted = 0
        for workload_dir in sorted(root.iterdir()) if root.is_dir() else []:
            for slot_dir in sorted(workload_dir.iterdir()):
                if not slot_dir.name.isdigit():
                    continue
                key = (workload_dir.name, int(slot_dir.name))
                paths = ReplicaPaths(slot_dir)
                found = RunningReplica.adopt(paths, self._cgroup(*key))
                if found is None:
                    continue
                worker = _Worker(self, key, paths)
                if isinstance(found, RunningReplica):
                    worker.running = found
                    adopted += 1
                    self.event(EventType.NORMAL, "Adopted", worker.subject,
                               f"running since {time.ctime(found.started_at)}, shim "
                               f"{found.shim_pid}: adopted, not restarted")  # fmt: skip
                else:
                    worker.ended = found
                with self._lock:
                    self._workers[key] = worker
                worker.start()
        self._tidy_secrets()
        return adopted

    def _tidy_secrets(self) -> None:
        """Take away the secrets an earlier agent left mounted for a replica not running."""
        state = self.config.state_dir
        for key in secret_files.leftovers(state):
            worker = self._workers.get(key)
            if worker is not None and worker.running is not None:
                continue
            try:
                secret_files.unmount_secrets(secret_files.folder_of(state, *key))
            except OSError as error:
                self.event(EventType.WARNING, "CleanupFailed", f"assignment/{key[0]}/{key[1]}",
                           f"its secrets could not be taken away: {error}")  # fmt: skip

    def sync(self, wanted: dict[tuple[str, int], Work]) -> None:
        """Make the replicas those of `wanted`: start new ones, replace changed ones, stop
        those no longer wanted."""
        with self._lock:
            if self._closed:
                return
            for key, work in wanted.items():
                worker = self._workers.get(key)
                if worker is None or not worker.want(work):
                    worker = _Worker(self, key, ReplicaPaths.of(self.config.state_dir, *key))
                    self._workers[key] = worker
                    worker.want(work)
                    worker.start()
            for key, worker in list(self._workers.items()):
                if key not in wanted:
                    worker.want(None)
                if worker.finished:
                    del self._workers[key]

    def statuses(self) -> list[ReplicaStatus]:
        with self._lock:
            return [w.status for w in self._workers.values() if w.status is not None]

    def sandbox_pid(self, workload: str, slot: int) -> int | None:
        """The pid of the replica's sandbox (its namespaces), while it runs."""
        with self._lock:
            worker = self._workers.get((workload, slot))
        running = worker.running if worker is not None else None
        return running.sandbox_pid if running is not None else None

    def group(self, workload: str, slot: int) -> Cgroup:
        """The replica's control group (which may not exist)."""
        return self._cgroup(workload, slot)

    def take_events(self) -> list[RuntimeEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def close(self, *, stop: bool | None = None) -> None:
        """End every replica's thread; stop the replicas too when `stop` (default: the
        config's `stop_on_exit`), else let them run for the next agent to adopt."""
        stopping = self.config.stop_on_exit if stop is None else stop
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.leave(stop=stopping)
        for worker in workers:
            worker.join(timeout=self.config.grace + 15)
        if stopping:
            self.cgroups.tidy(self.config.node)

    # -- for the workers -----------------------------------------------------------------

    def event(self, kind: EventType, reason: str, subject: str, message: str) -> None:
        with self._lock:
            self._events.append(RuntimeEvent(kind, reason, subject, message))
        self.on_change()

    def changed(self) -> None:
        self.on_change()

    def _cgroup(self, workload: str, slot: int) -> Cgroup:
        return self.cgroups.group(self.config.node, f"{workload}.{slot}")


@dataclass
class _Health:
    check: health.Verdicts
    next_at: float
    fast: float = _FAST_FIRST_CHECK
    passed_once: bool = False


@dataclass
class _Timers:
    next_check: float = 0.0
    next_full_check: float = 0.0


class _Worker:
    """One (workload, slot): its wanted work, its running replica, its status, its thread."""

    def __init__(self, runtime: Runtime, key: tuple[str, int], paths: ReplicaPaths) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"replica-{key[0]}-{key[1]}", daemon=True
        )
        self.runtime = runtime
        self.key = key
        self.paths = paths
        self.subject = f"assignment/{key[0]}/{key[1]}"
        self.status: ReplicaStatus | None = None
        self.running: RunningReplica | None = None
        self.ended: Exited | None = None
        self.finished = False
        self._wanted: Work | None = None
        self._has_wanted = threading.Event()
        self._leaving: bool | None = None  # None: keep going; True/False: leave, stopping or not
        self._current: Work | None = None
        self._installed: Installed | None = None
        self._proxies: list[PortProxy] = []
        self._health: _Health | None = None
        self._plan: sandbox.SandboxPlan | None = None
        self._timers = _Timers()
        self._crash = CrashLoop()
        self._starts = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._mutex = threading.Lock()

    # -- from other threads --------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def want(self, work: Work | None) -> bool:
        """Give the worker its work (None: retire); False when it has finished already."""
        with self._mutex:
            if self.finished:
                return False
            self._wanted = work
        self._has_wanted.set()
        self._wake()
        return True

    def leave(self, *, stop: bool) -> None:
        with self._mutex:
            self._leaving = stop
        self._has_wanted.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._has_wanted.wait()  # an adopted replica waits to hear whether it is wanted
            retired = False
            while True:
                with self._mutex:
                    wanted, leaving = self._wanted, self._leaving
                if leaving is not None:
                    self._leave(stop=leaving)
                    return
                if wanted is not None:
                    retired = False
                    self._step(wanted)
                    continue
                if not retired:
                    self._retire()  # then look again: it may be wanted back meanwhile
                    retired = True
                    continue
                with self._mutex:
                    if self._wanted is None and self._leaving is None:
                        self.finished = True  # `want` sees it from now on
                        return
        finally:
            with self._mutex:
                self.finished = True
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _step(self, wanted: Work) -> None:
        now = self.runtime.clock()
        if self.running is not None and self._current is None:
            self._current = wanted  # adopted: the replica of this assignment, if it fits
            if _read_identity(self.paths) != _identity_json(wanted):
                self._stop("Killing", "the adopted replica runs another version: replaced")
            else:
                self._adopted(wanted)
        if (
            self.running is not None
            and self._current is not None
            and self._current.identity != wanted.identity
        ):
            self._stop("Killing", f"replaced by seq {wanted.assignment.seq}")
            self._crash = CrashLoop()
        self._current = wanted
        if self.running is None:
            if self.ended is not None:
                self._drop_secrets()
                self._after_exit(self.ended, now)
                self.ended = None
                return
            if not self._crash.due(now):
                self._sleep(self._crash.not_before - now)
                return
            self._start(wanted)
            return
        self._supervise(now)

    # -- starting ------------------------------------------------------------------------

    def _start(self, work: Work) -> None:
        try:
            self._set(work, Phase.PENDING, "Preparing", "fetching and checking the artifact")
            installed = self._artifact(work)
            binds = self._volumes(work)
            argv, cgroup = self._sandbox(work, installed, binds)
            self._set(work, Phase.PENDING, "Starting", "starting the sandbox")
            try:
                write_atomically(self.paths.identity, _identity_json(work), mode=0o600)
                self.running = RunningReplica.start(self.paths, argv, cgroup, self.runtime.seccomp)
            except OSError as error:
                raise StepFailed("SandboxFailed", f"cannot start the shim: {error}") from error
        except StepFailed as failed:
            self._drop_secrets()
            self._failed(work, failed.reason, str(failed))
            return
        except SandboxFailed as error:
            self._drop_secrets()
            self._failed(work, "SandboxFailed", str(error))
            return
        self._crash.started(self.runtime.clock(), first=self._starts == 0)
        self._starts += 1
        uid = self.runtime.uids.uid_of(self.key[0])
        self.runtime.event(
            EventType.NORMAL,
            "Started",
            self.subject,
            f"seq {work.assignment.seq} in its sandbox as uid {uid} (shim {self.running.shim_pid})",
        )
        self._watch(work, installed, "Started")

    def _adopted(self, work: Work) -> None:
        """An adopted replica of this very assignment: check its artifact, publish its ports,
        watch it as if this agent had started it."""
        assert self.running is not None
        self._starts = 1
        try:
            installed = self._artifact(work)
        except StepFailed as failed:
            self._set(work, Phase.RUNNING, failed.reason, str(failed))
            return
        if installed.tampered is not None:
            self._stop("Killing", "its artifact had changed on disk: restarted from a good copy")
            return
        try:
            self._plan = self._make_plan(work, installed, self._volumes(work))
        except (StepFailed, sandbox.SandboxError) as error:
            self._plan = None  # it runs on; only a command check cannot be made
            self.runtime.event(EventType.WARNING, "SandboxUnknown", self.subject, str(error))
        self._watch(work, installed, "Adopted")

    def _watch(self, work: Work, installed: Installed, how: str) -> None:
        now = self.runtime.clock()
        self._installed = installed
        self._publish(work)
        config = self.runtime.config
        self._timers = _Timers(now + config.check_interval, now + config.full_check_interval)
        check = work.workload.health
        if check is None:
            self._health = None
            self._set(work, Phase.READY, "Ready", "running (no health check)")
        else:
            self._health = _Health(
                health.Verdicts(check.failure_threshold), next_at=now + check.initial_delay
            )
            self._set(work, Phase.RUNNING, how, "running; waiting for its health check")

    def _artifact(self, work: Work) -> Installed:
        digest = work.assignment.digest
        try:
            installed = self.runtime.artifacts.ensure(digest)
        except ArtifactUnavailable as error:
            raise StepFailed("ArtifactUnavailable", str(error)) from error
        if installed.tampered is not None:
            self.runtime.event(
                EventType.WARNING,
                "ArtifactTampered",
                self.subject,
                f"{installed.tampered}: start refused; rebuilt from verified chunks",
            )
        return installed

    def _volumes(self, work: Work) -> tuple[sandbox.VolumeBind, ...]:
        binds = []
        for mount in work.workload.volumes:
            try:
                folder = self.runtime.volumes.ensure(mount.volume, work.desired)
            except VolumeUnavailable as error:
                raise StepFailed("VolumeUnavailable", str(error)) from error
            binds.append(sandbox.VolumeBind(str(folder), mount.path))
        return tuple(binds)

    def _sandbox(
        self, work: Work, installed: Installed, binds: tuple[sandbox.VolumeBind, ...]
    ) -> tuple[list[str], Cgroup]:
        runtime = self.runtime
        workload, slot = self.key
        try:
            uid = runtime.uids.uid_of(workload)
            work_dir = _work_folder(runtime.config.state_dir, workload, slot, uid)
            for bind in binds:
                _mount_point(work_dir, bind.path, uid)
            _write_etc(self.paths.etc, sandbox.etc_files(uid, uid, workload, f"{workload}-{slot}"))
            self.paths.log.mkdir(parents=True, exist_ok=True, mode=0o700)
            limits = sandbox.Limits(
                memory=work.assignment.memory, cpu=work.assignment.cpu, pids=runtime.config.pids
            )
            cgroup = runtime._cgroup(workload, slot)
            cgroup.create(limits)
            self._plan = self._make_plan(work, installed, binds)
            argv = sandbox.bwrap_argv(self._plan, runtime.host)
            self._hand_secrets(work, uid)
            return argv, cgroup
        except (OSError, CgroupError, UidError, sandbox.SandboxError) as error:
            raise StepFailed("SandboxFailed", f"cannot prepare the sandbox: {error}") from error

    def _hand_secrets(self, work: Work, uid: int) -> None:
        """Release the secrets the replica names into its private tmpfs (the last step before
        it starts); SecretRefused fails the start, and nothing is written."""
        if not work.workload.secrets:
            return
        runtime = self.runtime
        try:
            values = runtime.secrets(work)
        except secret_files.SecretRefused as refused:
            raise StepFailed("SecretRefused", str(refused)) from None
        folder = secret_files.folder_of(runtime.config.state_dir, *self.key)
        try:
            secret_files.mount_secrets(folder, uid, values)
        finally:
            names = sorted(values)
            del values  # the values live on in the tmpfs alone
        a = work.assignment
        for name in names:
            runtime.on_release(str(a.workload), name)
            runtime.event(
                EventType.NORMAL,
                "SecretReleased",
                self.subject,
                f"secret {name} to workload {a.workload} running {a.digest} on node "
                f"{runtime.config.node}, commit {a.commit}",
            )

    def _drop_secrets(self) -> None:
        """Take the replica's secrets away (it stopped, or never started)."""
        folder = secret_files.folder_of(self.runtime.config.state_dir, *self.key)
        try:
            secret_files.unmount_secrets(folder)
        except OSError as error:
            self.runtime.event(EventType.WARNING, "CleanupFailed", self.subject,
                               f"its secrets could not be taken away: {error}")  # fmt: skip

    def _make_plan(
        self, work: Work, installed: Installed, binds: tuple[sandbox.VolumeBind, ...]
    ) -> sandbox.SandboxPlan:
        runtime = self.runtime
        workload, slot = self.key
        uid = runtime.uids.uid_of(workload)
        gpus = tuple(work.assignment.gpus)
        refs = work.workload.secrets
        secret_paths = {ref.env: ref.secret for ref in refs if ref.env is not None}
        folder = secret_files.folder_of(runtime.config.state_dir, workload, slot)
        return sandbox.SandboxPlan(
            uid=uid,
            gid=uid,
            hostname=f"{workload}-{slot}",
            artifact=str(installed.path),
            work=str(runtime.config.state_dir / "work" / workload / str(slot)),
            files=str(self.paths.etc),
            command=(*work.workload.command, *work.workload.args),
            env=sandbox.environment(
                work.workload.env, builder=installed.builder, gpus=gpus, secret_paths=secret_paths
            ),
            volumes=binds,
            devices=runtime.gpu_devices(gpus) if gpus else (),
            info_fd=INFO_FD,
            seccomp_fd=SECCOMP_FD,
            tmp_size=work.assignment.memory,
            secrets=str(folder) if refs else None,
        )

    def _publish(self, work: Work) -> None:
        assert self.running is not None
        pid = self.running.sandbox_pid
        self._close_proxies()
        if pid is None:
            return
        for port in work.workload.ports:
            if port.protocol != "tcp":
                continue
            try:
                proxy = PortProxy(pid, port.port, self.runtime.config.publish_host,
                                  on_error=lambda said: None)  # fmt: skip
            except OSError as error:
                self.runtime.event(EventType.WARNING, "PortUnavailable", self.subject,
                                   f"port {port.name} ({port.port}): {error.strerror}")  # fmt: skip
                continue
            self._proxies.append(proxy)

    def _endpoints(self, work: Work) -> tuple[str, ...]:
        named = {p.port: p.name for p in work.workload.ports}
        return tuple(
            f"{named.get(proxy.port, proxy.port)}={proxy.address[0]}:{proxy.address[1]}"
            for proxy in self._proxies
        )

    def _failed(self, work: Work, reason: str, message: str) -> None:
        now = self.runtime.clock()
        wait = self._crash.ended(now)
        self.runtime.event(EventType.WARNING, reason, self.subject,
                           f"{message}; retrying in {wait:.0f} s")  # fmt: skip
        self._set(work, Phase.PENDING, reason, message)

    # -- while it runs -------------------------------------------------------------------

    def _supervise(self, now: float) -> None:
        assert self.running is not None
        assert self._current is not None
        work = self._current
        due = [self._timers.next_check, self._timers.next_full_check]
        if self._health is not None:
            due.append(self._health.next_at)
        ended = self._wait(self.running, max(0.0, min(due) - now))
        now = self.runtime.clock()
        if ended is not None:
            self.running = None
            self._close_proxies()
            self._drop_secrets()
            self._after_exit(ended, now)
            return
        if self._health is not None and now >= self._health.next_at:
            self._probe(work, now)
        if self.running is not None and now >= min(self._timers.next_check,
                                                   self._timers.next_full_check):  # fmt: skip
            self._tamper_check(work, now)

    def _wait(self, running: RunningReplica, timeout: float) -> Exited | None:
        fds = [self._wake_r]
        if running.fileno() is not None:
            fds.append(running.fileno())  # type: ignore[arg-type]
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        return running.wait(0)

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
        if ready:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)

    def _probe(self, work: Work, now: float) -> None:
        assert self._health is not None
        assert self.running is not None
        check = work.workload.health
        assert check is not None
        state = self._health
        began = time.monotonic()
        result = self._run_check(work)
        self.runtime.on_check(work.assignment.workload, time.monotonic() - began, result.passed)
        state.check.record(result)
        if result.passed:
            state.passed_once = True
            state.next_at = now + check.interval
            self._crash.healthy(now)
            if self.status is None or self.status.phase is not Phase.READY:
                self._set(work, Phase.READY, "Ready", result.message)
            return
        self._crash.unwell()
        if not state.passed_once:
            if now - self.running.started_at > _FAST_FOR:
                state.fast = min(check.interval, state.fast * 2)  # a slow start: fewer checks
            state.next_at = now + state.fast
            grace = check.initial_delay + check.failure_threshold * check.interval
            if now - self.running.started_at < grace:
                self._set(work, Phase.RUNNING, "Started", f"not ready yet: {result.message}")
                return
        else:
            state.next_at = now + check.interval
        if state.check.unhealthy:
            self.runtime.event(
                EventType.WARNING,
                "Unhealthy",
                self.subject,
                f"{result.message}: {state.check.failures} failures in a row; restarting",
            )
            self._stop_for_restart("Unhealthy", result.message)
        else:
            self._set(work, Phase.RUNNING, "Unhealthy", result.message)

    def _run_check(self, work: Work) -> health.Result:
        assert self.running is not None
        check = work.workload.health
        assert check is not None
        pid = self.running.sandbox_pid
        if pid is None:
            return health.Result(False, "the sandbox has no pid yet")
        if check.http is not None:
            try:
                return health.http_check(pid, check.http.port, check.http.path, check.timeout)
            except NamespaceError as error:
                return health.Result(False, f"cannot enter the sandbox: {error.strerror}")
        assert check.command is not None
        if self._plan is None:
            return health.Result(False, "the replica's sandbox is not known to this agent")
        filter_fd = os.open(self.runtime.seccomp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            plan = replace(
                self._plan, command=tuple(check.command), info_fd=None, seccomp_fd=filter_fd
            )
            argv = sandbox.joined_argv(
                self.running.cgroup.procs_files(),
                sandbox.check_argv(pid, plan, self.runtime.host),
            )
            return health.command_check(argv, check.timeout, pass_fds=(filter_fd,))
        finally:
            os.close(filter_fd)

    def _tamper_check(self, work: Work, now: float) -> None:
        if self._installed is None:
            return
        config = self.runtime.config
        full = now >= self._timers.next_full_check
        problem = self.runtime.artifacts.check(self._installed, full=full)
        self._timers.next_check = now + config.check_interval
        if full:
            self._timers.next_full_check = now + config.full_check_interval
        if problem is None:
            return
        self.runtime.event(
            EventType.WARNING,
            "ArtifactTampered",
            self.subject,
            f"{problem}: the replica is stopped; the artifact is rebuilt from verified chunks",
        )
        self._stop("Killing", "its artifact changed on disk")
        self._crash.not_before = 0.0  # not a crash of the workload: start again at once

    def _after_exit(self, ended: Exited, now: float) -> None:
        work = self._current
        wait = self._crash.ended(now)
        kind = EventType.NORMAL if ended.succeeded else EventType.WARNING
        reason = "OOMKilled" if ended.oom_killed else "Exited"
        self.runtime.event(
            kind, reason, self.subject, f"{ended.describe()}; restart in {wait:.0f} s"
        )
        if work is None:
            return
        if self._crash.looping:
            self._set(work, Phase.FAILED, "CrashLoopBackOff",
                      f"{ended.describe()}; back-off {wait:.0f} s restarting it")  # fmt: skip
        else:
            self._set(work, Phase.PENDING, ended.reason, f"{ended.describe()}; restarting")

    def _stop_for_restart(self, reason: str, message: str) -> None:
        assert self.running is not None
        ended = self.running.stop(self.runtime.config.grace)
        self.running = None
        self._close_proxies()
        self._drop_secrets()
        now = self.runtime.clock()
        wait = self._crash.ended(now)
        if self._current is not None:
            phase = Phase.FAILED if self._crash.looping else Phase.PENDING
            self._set(self._current, phase, reason,
                      f"{message}; {ended.describe()}; restart in {wait:.0f} s")  # fmt: skip

    def _stop(self, reason: str, message: str) -> None:
        if self.running is None:
            return
        self.runtime.event(EventType.NORMAL, reason, self.subject, message)
        self.running.stop(self.runtime.config.grace)
        self.running = None
        self._close_proxies()
        self._drop_secrets()

    def _close_proxies(self) -> None:
        for proxy in self._proxies:
            proxy.close()
        self._proxies = []

    # -- leaving -------------------------------------------------------------------------

    def _retire(self) -> None:
        """The assignment is gone: stop the replica, remove its work folder and group."""
        self._stop("Killing", "its assignment is gone")
        self._drop_secrets()
        self._current = None
        workload, slot = self.key
        try:
            remove_tree(self.runtime.config.state_dir / "work" / workload / str(slot))
        except OSError as error:
            self.runtime.event(EventType.WARNING, "CleanupFailed", self.subject,
                               f"its work folder could not be removed: {error}")  # fmt: skip
        with contextlib.suppress(CgroupError):
            cgroup = self.runtime._cgroup(workload, slot)
            cgroup.kill()
            cgroup.remove()
        self.status = None
        self.runtime.changed()

    def _leave(self, *, stop: bool) -> None:
        if stop:
            self._stop("Killing", "the agent is stopping")
            self._drop_secrets()
        elif self.running is not None:
            self.running.close()
        self._close_proxies()

    # -- status --------------------------------------------------------------------------

    def _set(self, work: Work, phase: Phase, reason: str, message: str) -> None:
        a = work.assignment
        status = ReplicaStatus(
            workload=a.workload,
            slot=a.slot,
            seq=a.seq,
            commit=a.commit,
            phase=phase,
            reason=reason,
            message=message,
            restarts=self._crash.restarts,
            endpoints=self._endpoints(work) if self.running is not None else (),
        )
        if status != self.status:
            self.status = status
            self.runtime.changed()


# -- the host and the work folder --------------------------------------------------------------


def _measure_host() -> sandbox.Host:
    top: dict[str, str | None] = {}
    for name in sandbox.SYSTEM_TOP:
        path = f"/{name}"
        if os.path.islink(path):
            top[name] = os.readlink(path)
        elif os.path.isdir(path):
            top[name] = None
    etc = frozenset(name for name in sandbox.ETC_ALLOW if os.path.lexists(f"/etc/{name}"))
    return sandbox.Host(top, etc)


def _work_folder(state_dir: Path, workload: str, slot: int, uid: int) -> Path:
    """The replica's work folder, a real folder owned by `uid` (0700), made if missing."""
    parent = state_dir / "work" / workload
    parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    folder = parent / str(slot)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    status = os.lstat(folder)
    if not stat.S_ISDIR(status.st_mode):
        raise OSError(f"{folder} is not a folder")
    if status.st_uid != uid or status.st_gid != uid:
        os.chown(folder, uid, uid, follow_symlinks=False)
    if stat.S_IMODE(status.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    return folder


def _mount_point(work_dir: Path, relative: str, uid: int) -> None:
    """Make `relative` inside the work folder a chain of real folders, never following a
    link: whatever the workload left in their place (a file, a symlink) is removed first."""
    sandbox.check_relative(relative)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(work_dir, flags)
    try:
        for part in relative.split("/"):
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                child = None
            except OSError:  # a symlink (ELOOP), a file (ENOTDIR): the workload's, removed
                child = None
                remove_entry(fd, part)
            if child is None:
                os.mkdir(part, 0o755, dir_fd=fd)
                os.chown(part, uid, uid, dir_fd=fd, follow_symlinks=False)
                child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def _identity_json(work: Work) -> str:
    return json.dumps([list(v) if isinstance(v, tuple) else v for v in work.identity])


def _read_identity(paths: ReplicaPaths) -> str | None:
    try:
        return paths.identity.read_text()
    except OSError:
        return None


def _write_etc(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    for name, text in files.items():
        target = folder / name
        temporary = folder / f".{name}.tmp"
        temporary.write_text(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
