"""One replica's processes as the agent holds them: its shim (`reconciler.node.shim`), the
sandbox the shim started, and the control group around the sandbox.

    STATE/replicas/<workload>/<slot>/
        spec.json     what the shim runs (written by the agent, 0600)
        assignment.json   which version of the assignment it runs (to adopt it or not)
        run.json      the shim's and the sandbox's pids (written by the shim)
        exit.json     how the sandbox ended (written by the shim)
        shim.log      what the shim itself said, if anything went wrong in it
        etc/          the generated /etc files of the sandbox
        log/          the replica's output (reconciler.node.logs)

`start` spawns a shim; `adopt` takes over one that an earlier agent started and that still runs
(its pid and start time must match `run.json`). `wait` sees the shim end (through a pidfd, so at
once, child or not); `stop` asks every process of the sandbox to end (SIGTERM), waits the grace
period, then kills what is left through the control group.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qss.durable import write_atomically
from reconciler.errors import ReconcilerError, Retry
from reconciler.node import shim
from reconciler.node.cgroups import Cgroup, CgroupError
from reconciler.node.logs import replica_log_dir

START_TIMEOUT = 10.0  # seconds for the shim to report the sandbox's pid
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_MAX_FILES = 5
INFO_FD = 3
SECCOMP_FD = 4
_MAX_RECORD = 64 * 1024


class SandboxFailed(ReconcilerError):
    """The sandbox could not be prepared or started."""

    retry = Retry.TRANSIENT


@dataclass(frozen=True, slots=True)
class ReplicaPaths:
    root: Path

    @classmethod
    def of(cls, state_dir: Path, workload: str, slot: int) -> ReplicaPaths:
        return cls(replica_log_dir(state_dir, workload, slot).parent)

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def exit(self) -> Path:
        return self.root / "exit.json"

    @property
    def identity(self) -> Path:
        return self.root / "assignment.json"

    @property
    def shim_log(self) -> Path:
        return self.root / "shim.log"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def log(self) -> Path:
        return self.root / "log"


@dataclass(frozen=True, slots=True)
class Exited:
    """How a replica ended."""

    exit_code: int | None
    signal: int | None
    oom_killed: bool
    finished_at: float
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.oom_killed

    @property
    def reason(self) -> str:
        """Kubernetes' words for a terminated container: OOMKilled, Completed or Error."""
        if self.oom_killed:
            return "OOMKilled"
        return "Completed" if self.exit_code == 0 else "Error"

    def describe(self) -> str:
        if self.oom_killed:
            return "killed by the kernel: over its memory limit (OOMKilled)"
        if self.detail:
            return self.detail
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        if self.exit_code is not None and self.exit_code > 128:
            return f"exited with code {self.exit_code} (signal {self.exit_code - 128})"
        return f"exited with code {self.exit_code}"


class RunningReplica:
    """A started or adopted replica (see the module)."""

    def __init__(
        self,
        paths: ReplicaPaths,
        cgroup: Cgroup,
        run: dict[str, object],
        child: _Child | None,
    ) -> None:
        self.paths = paths
        self.cgroup = cgroup
        self.run = run
        self.child = child  # the shim, when this agent started it (to reap it)
        self.shim_pid = int(str(run["shim"]))
        self._pidfd: int | None = None
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(self.shim_pid)
        self._exited: Exited | None = None

    # -- starting --------------------------------------------------------------------------

    @classmethod
    def start(
        cls, paths: ReplicaPaths, argv: list[str], cgroup: Cgroup, seccomp: Path | None = None
    ) -> RunningReplica:
        """Spawn the shim for `argv` (a sandbox command line whose `--info-fd` is INFO_FD
        and, with a `seccomp` filter file, whose `--seccomp` is SECCOMP_FD) and wait until it
        reports the sandbox's pid. SandboxFailed when it does not."""
        for stale in (paths.run, paths.exit):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        spec = {
            "format": shim.SPEC_FORMAT,
            "argv": argv,
            "cgroupProcs": cgroup.procs_files(),
            "logDir": str(paths.log),
            "logMaxBytes": LOG_MAX_BYTES,
            "logMaxFiles": LOG_MAX_FILES,
            "runFile": str(paths.run),
            "exitFile": str(paths.exit),
            "infoFd": INFO_FD,
            "seccompFile": None if seccomp is None else str(seccomp),
            "seccompFd": SECCOMP_FD,
        }
        write_atomically(paths.spec, json.dumps(spec) + "\n", mode=0o600)
        child = _Child.spawn(
            [sys.executable, "-S", "-m", "reconciler.node.shim", str(paths.spec)], paths.shim_log
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            run = _read_record(paths.run, shim.RUN_FORMAT)
            if run is not None and run.get("sandbox") is not None:
                return cls(paths, cgroup, run, child)
            code = child.poll()
            if code is not None or paths.exit.exists():
                if run is not None:  # it ran and ended at once: the caller reads how
                    return cls(paths, cgroup, run, child)
                raise SandboxFailed(f"the shim exited with code {code}: {_tail(paths.shim_log)}")
            if time.monotonic() > deadline:
                child.kill()
                with contextlib.suppress(CgroupError):
                    cgroup.kill()
                raise SandboxFailed(f"the sandbox did not start within {START_TIMEOUT:g} s")
            time.sleep(0.002)

    @classmethod
    def adopt(cls, paths: ReplicaPaths, cgroup: Cgroup) -> RunningReplica | Exited | None:
        """Take over what an earlier agent left: the replica if its shim still runs; how it
        ended if it ended meanwhile; None when nothing was started here."""
        run = _read_record(paths.run, shim.RUN_FORMAT)
        if run is None:
            return None
        pid = run.get("shim")
        alive = type(pid) is int and shim.start_ticks(pid) == run.get("shimStart")
        if alive and run.get("sandbox") is not None:
            return cls(paths, cgroup, run, None)
        ended = _read_record(paths.exit, shim.EXIT_FORMAT)
        if alive:  # a shim without a sandbox: it was starting when the agent went away
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(str(pid)), signal.SIGKILL)
        with contextlib.suppress(CgroupError):
            oom = cgroup.oom_kills() > 0 if cgroup.exists() else False
            cgroup.kill()
            cgroup.remove()
            if ended is not None:
                return _exited(ended, oom)
            return Exited(None, None, oom, time.time(), "its shim was gone: the replica was killed")
        return Exited(None, None, False, time.time(), "its control group could not be emptied")

    # -- while it runs ---------------------------------------------------------------------

    @property
    def sandbox_pid(self) -> int | None:
        pid = self.run.get("sandbox")
        return pid if type(pid) is int else None

    @property
    def started_at(self) -> float:
        value = self.run.get("startedAt")
        return float(value) if isinstance(value, (int, float)) else time.time()

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when the shim ends (for select/poll)."""
        return self._pidfd

    def wait(self, timeout: float | None) -> Exited | None:
        """How the replica ended, once it has (within `timeout` seconds); None if it runs."""
        if self._exited is not None:
            return self._exited
        if self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                return None
        elif shim.start_ticks(self.shim_pid) == self.run.get("shimStart"):
            if timeout:
                time.sleep(timeout)
            return None
        return self._finish()

    def _finish(self) -> Exited:
        if self.child is not None:
            self.child.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        oom = False
        with contextlib.suppress(CgroupError, OSError):
            oom = self.cgroup.oom_kills() > 0
            self.cgroup.kill()  # anything left behind in the group
            self.cgroup.remove()
        ended = _read_record(self.paths.exit, shim.EXIT_FORMAT)
        if ended is None:
            self._exited = Exited(None, None, oom, time.time(), "its shim died: killed")
        else:
            self._exited = _exited(ended, oom)
        return self._exited

    def stop(self, grace: float) -> Exited:
        """SIGTERM to the workload's processes, `grace` seconds, then SIGKILL to the group."""
        spared = {self.run.get("bwrap"), self.run.get("sandbox")}
        with contextlib.suppress(CgroupError, OSError):
            self.cgroup.signal(signal.SIGTERM, sparing={p for p in spared if type(p) is int})
        ended = self.wait(grace)
        if ended is not None:
            return ended
        with contextlib.suppress(CgroupError, OSError):
            self.cgroup.kill()
        ended = self.wait(START_TIMEOUT)
        if ended is not None:
            return ended
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.shim_pid, signal.SIGKILL)
        return self.wait(START_TIMEOUT) or self._finish()

    def close(self) -> None:
        """Let go without stopping (the agent exits; a later agent adopts the replica)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class _Child:
    """The shim as this agent's child: spawned in a session of its own (Ctrl-C at the agent's
    terminal never reaches it) and reaped once it ends. Not `subprocess.Popen`, so that an
    agent that lets its replicas run on leaves no half-owned process object behind."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    @classmethod
    def spawn(cls, argv: list[str], log: Path) -> _Child:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                _shim_env(),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, out, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(null)
            os.close(out)
        return cls(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == 0:
                    return None
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait()


def _exited(ended: dict[str, object], oom: bool) -> Exited:
    code, sig, when = ended.get("exitCode"), ended.get("signal"), ended.get("finishedAt")
    return Exited(
        code if type(code) is int else None,
        sig if type(sig) is int else None,
        oom,
        float(when) if isinstance(when, (int, float)) else time.time(),
        str(ended.get("error") or ""),
    )


def _read_record(path: Path, form: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as handle:
            found = json.loads(handle.read(_MAX_RECORD))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("format") == form else None


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 2048))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return "(no shim log)"
    return lines[-1] if lines else "(nothing said)"


def _shim_env() -> dict[str, str]:
    """The shim's environment: enough to import this package, nothing of the agent's."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root  # the checkout or site-packages that holds `reconciler`
    return env
