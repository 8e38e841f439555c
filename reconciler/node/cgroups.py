"""Control groups for replicas: one group per replica, holding every process of its sandbox, with
its memory, CPU and pids limits; the agent stops a replica through its group, because
bubblewrap does not forward signals and a workload may fork.

Version 2 is used where the unified hierarchy offers the memory, cpu and pids controllers;
otherwise version 1, one group per controller (memory, cpu, pids and freezer), as on hosts
booted with the legacy hierarchy. Groups are made below the agent's own group (so a host's
limits on the agent bound its workloads too), under `<parent>/<node>/<workload>.<slot>`:

    v1: /sys/fs/cgroup/<controller>/<agent's group>/circle/<node>/<workload>.<slot>/
    v2: /sys/fs/cgroup/<agent's group>/circle/<node>/<workload>.<slot>/

Version 2 allows controllers below a group only when that group holds no process itself; when
the agent's own group holds the agent, the agent first moves itself into `<its group>/agent`
(as container runtimes without systemd do), and says plainly why not when it cannot.

    CgroupError            a group cannot be made, limited, joined or removed
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ReconcilerError, Retry
from reconciler.node.sandbox import Limits

V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
CFS_PERIOD = 100_000  # microseconds
_MAX_READ = 1 << 20


class CgroupError(ReconcilerError):
    """A replica's control group cannot be made, limited, joined or removed."""

    retry = Retry.TRANSIENT


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted hierarchy: where it is, the agent's group in it, what it controls."""

    mount: Path
    own: str  # the agent's group, relative to the mount ("" for its root)
    controllers: frozenset[str]


class Cgroups:
    """Where this agent makes its replicas' groups (see the module)."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases  # v1: controller -> base folder; v2: {"unified": base}

    @classmethod
    def detect(
        cls,
        parent: str = "circle",
        *,
        proc: Path = Path("/proc/self"),
    ) -> Cgroups:
        """This host's cgroups, and the base folders below the agent's own groups."""
        hierarchies = _hierarchies(proc)
        unified = next((h for h in hierarchies if "" in h.controllers), None)
        if unified is not None:
            available = _words(_read(unified.mount / unified.own / "cgroup.controllers", ""))
            if set(V2_CONTROLLERS) <= available:
                base = _delegate_v2(unified, parent)
                return cls(2, {"unified": base})
        bases: dict[str, Path] = {}
        for controller in V1_CONTROLLERS:
            found = next((h for h in hierarchies if controller in h.controllers), None)
            if found is None:
                raise CgroupError(
                    f"no cgroup hierarchy has the {controller} controller (neither v2 with "
                    f"{', '.join(V2_CONTROLLERS)} nor v1 {controller} is mounted): replicas "
                    "cannot be limited, so none is started"
                )
            bases[controller] = found.mount / found.own / parent
        # cpuacct measures CPU time (for autoscaling on cpu); where it is not mounted, the
        # replicas run as well, unmeasured.
        accounting = next((h for h in hierarchies if "cpuacct" in h.controllers), None)
        if accounting is not None:
            bases["cpuacct"] = accounting.mount / accounting.own / parent
        return cls(1, bases)

    def tidy(self, node: str) -> None:
        """Remove the node's folder and the base folder where they hold no group any more."""
        for base in self.bases.values():
            for folder in (base / node, base):
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def group(self, node: str, name: str) -> Cgroup:
        """The group `<parent>/<node>/<name>` (which may not exist yet)."""
        return Cgroup(self.version, {c: base / node / name for c, base in self.bases.items()})


@dataclass(frozen=True)
class Cgroup:
    """One replica's group: a folder per v1 controller, or one v2 folder."""

    version: int
    paths: dict[str, Path]

    @property
    def main(self) -> Path:
        return self.paths["unified" if self.version == 2 else "pids"]

    def create(self, limits: Limits) -> None:
        """Make the group (its parents as needed) and set `limits`; an existing group is
        reused when empty, refused when it still holds processes."""
        try:
            for path in self.paths.values():
                path.mkdir(parents=True, exist_ok=True)
                if self.version == 2:
                    _enable_controllers(path.parent)
            if self.pids():
                raise CgroupError(f"{self.main}: still holds processes of an earlier start")
            if self.version == 2:
                self._limit_v2(limits)
            else:
                self._limit_v1(limits)
        except OSError as error:
            raise CgroupError(f"{self.main}: cannot set it up: {error.strerror}") from error

    def _limit_v1(self, limits: Limits) -> None:
        memory = self.paths["memory"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory))
        with contextlib.suppress(FileNotFoundError, PermissionError):
            # Swap accounting may be off; where it is on, no swap beyond the memory limit.
            _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory))
        with contextlib.suppress(FileNotFoundError, OSError):
            _write(memory / "memory.swappiness", "0")
        _write(self.paths["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD))
        _write(self.paths["cpu"] / "cpu.cfs_quota_us", str(limits.cfs_quota(CFS_PERIOD)))
        _write(self.paths["pids"] / "pids.max", str(limits.pids))

    def _limit_v2(self, limits: Limits) -> None:
        path = self.paths["unified"]
        _write(path / "memory.max", str(limits.memory))
        with contextlib.suppress(FileNotFoundError):
            _write(path / "memory.swap.max", "0")
        _write(path / "cpu.max", f"{limits.cfs_quota(CFS_PERIOD)} {CFS_PERIOD}")
        _write(path / "pids.max", str(limits.pids))

    def procs_files(self) -> list[str]:
        """The `cgroup.procs` files a process writes its pid into to join the group."""
        return [str(path / "cgroup.procs") for path in self.paths.values()]

    def exists(self) -> bool:
        return self.main.is_dir()

    def pids(self) -> set[int]:
        """Every process in the group now (the pids group is complete in v1)."""
        text = _read(self.main / "cgroup.procs", "")
        return {int(word) for word in text.split() if word.isdigit()}

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in the group so far."""
        if self.version == 2:
            found = _keyed(_read(self.paths["unified"] / "memory.events", ""))
        else:
            found = _keyed(_read(self.paths["memory"] / "memory.oom_control", ""))
        return found.get("oom_kill", 0)

    def memory_usage(self) -> int:
        if self.version == 2:
            return _number(_read(self.paths["unified"] / "memory.current", "0"))
        return _number(_read(self.paths["memory"] / "memory.usage_in_bytes", "0"))

    def cpu_usage(self) -> int | None:
        """CPU time the group's processes used so far, in nanoseconds (None: not measured)."""
        if self.version == 2:
            found = _keyed(_read(self.paths["unified"] / "cpu.stat", ""))
            usage = found.get("usage_usec")
            return None if usage is None else usage * 1000
        if "cpuacct" not in self.paths:
            return None
        text = _read(self.paths["cpuacct"] / "cpuacct.usage", "")
        return int(text) if text.strip().isdigit() else None

    def signal(self, signum: int, *, sparing: Iterable[int] = ()) -> int:
        """Send `signum` to every process of the group but `sparing`; how many got it."""
        spared = set(sparing)
        sent = 0
        for pid in sorted(self.pids() - spared):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
                sent += 1
        return sent

    def kill(self, *, timeout: float = 10.0) -> None:
        """Kill every process of the group, forks included, and wait until it is empty:
        `cgroup.kill` in v2, else freeze, SIGKILL every member, thaw."""
        if not self.exists():
            return
        if self.version == 2 and (self.paths["unified"] / "cgroup.kill").exists():
            _write(self.paths["unified"] / "cgroup.kill", "1")
        else:
            with self._frozen():
                self.signal(signal.SIGKILL)
        self.wait_empty(timeout)

    @contextlib.contextmanager
    def _frozen(self):  # type: ignore[no-untyped-def]
        if self.version == 2:
            state, frozen, thawed = self.paths["unified"] / "cgroup.freeze", "1", "0"
        else:
            state, frozen, thawed = self.paths["freezer"] / "freezer.state", "FROZEN", "THAWED"
        with contextlib.suppress(OSError):  # unfrozen, a fork may need a second round
            _write(state, frozen)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                _write(state, thawed)

    def wait_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() > deadline:
                raise CgroupError(f"{self.main}: processes remain {timeout:g} s after SIGKILL")
            self.signal(signal.SIGKILL)  # a process forked while the rest was being killed
            time.sleep(0.01)

    def remove(self) -> None:
        """Remove the group's folders (it must be empty)."""
        for path in self.paths.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError as error:
                raise CgroupError(f"{path}: cannot remove: {error.strerror}") from error


# -- reading the host -------------------------------------------------------------------------


def _hierarchies(proc: Path) -> list[Hierarchy]:
    """The mounted cgroup hierarchies, with the agent's group in each (v2: controllers {""})."""
    mine: dict[str, str] = {}
    for line in _read(proc / "cgroup", "").splitlines():
        number, names, path = [*line.split(":", 2), "", ""][:3]
        if number.isdigit():
            for controller in names.split(",") if names else [""]:
                mine[controller.removeprefix("name=")] = path
    found: list[Hierarchy] = []
    for line in _read(proc / "mountinfo", "").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        root, mount = _unescape(fields[3]), Path(_unescape(fields[4]))
        if after[0] == "cgroup2":
            controllers = frozenset({""})
            own = mine.get("", "/")
        else:
            options = set(after[2].split(","))
            controllers = frozenset(c for c in (*V1_CONTROLLERS, "cpuacct") if c in options)
            if not controllers:
                continue
            own = mine.get(next(iter(controllers)), "/")
        relative = os.path.relpath(own, root) if own.startswith(root) else "."
        found.append(Hierarchy(mount, "" if relative == "." else relative, controllers))
    return found


def _delegate_v2(unified: Hierarchy, parent: str) -> Path:
    """The v2 base `<own>/<parent>` with the controllers enabled for it (see the module)."""
    own = unified.mount / unified.own
    try:
        _enable_controllers(own)
    except OSError as error:
        if error.errno != errno.EBUSY:
            raise CgroupError(f"{own}: cannot enable {', '.join(V2_CONTROLLERS)}: "
                              f"{error.strerror}") from error  # fmt: skip
        leaf = own / "agent"
        try:
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            _enable_controllers(own)
        except OSError as again:
            raise CgroupError(
                f"{own}: holds processes besides this agent, so cgroup v2 cannot limit "
                f"groups below it ({again.strerror}): start the agent in a group of its own"
            ) from again
    base = own / parent
    base.mkdir(exist_ok=True)
    _enable_controllers(base)
    return base


def _enable_controllers(path: Path) -> None:
    wanted = _words(_read(path / "cgroup.subtree_control", ""))
    missing = [c for c in V2_CONTROLLERS if c not in wanted]
    if missing:
        _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def _read(path: Path, default: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(_MAX_READ).decode("utf-8", "replace")
    except FileNotFoundError:
        return default


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _words(text: str) -> set[str]:
    return set(text.split())


def _keyed(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


def _number(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field
