"""The node agents of a local circle as detached processes: each `circle node run` in a session
of its own (it outlives the command that started it and a closed terminal), its stderr
appended to DIR/logs/NAME.log, its pid and start time in DIR/run/NAME.pid.

A pid file names a running agent only while a process of that pid exists with the same start
time and runs `node run` with this node's folder: a pid reused by another process after a
reboot is never signalled.

Agents stop their replicas when they stop (`--stop-workloads`); an agent killed with SIGKILL
leaves them running, and the next agent of that node adopts them. `circle down` stops the
agents, then kills what is left in the circle's control groups and takes away the secrets
tmpfs such replicas had.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from qss.durable import write_atomically
from reconciler.errors import InputError
from reconciler.files import read_bounded
from reconciler.local.make import MAX_NODES
from reconciler.local.site import Record, Site
from reconciler.node import secrets as secret_files
from reconciler.node.cgroups import Cgroups

UID_FIRST = 500_000  # above the agent's default range (420000-429999)
UIDS_PER_NODE = 1000
UID_SLOTS = 256  # circles' uid blocks: a circle takes the block its DIR hashes to
GRACE = 5  # seconds a replica has between SIGTERM and SIGKILL when the circle goes down
_MAX_PID_FILE = 4096
_LAUNCH = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
    "start_new_session=True, close_fds=True)\n"
    "print(p.pid)\n"
)


@dataclass(frozen=True)
class Agent:
    node: str
    pid: int
    started: float  # the process's start time (psutil), which a reused pid does not share


def command(site: Site, record: Record, node: str) -> list[str]:
    """The `circle node run` command line of `node`."""
    first = record.uid_base + UIDS_PER_NODE * record.nodes.index(node)
    keepalive = max(0.5, min(3.0, record.ttl / 4))
    return [
        sys.executable, "-m", "reconciler", "node", "run",
        "--source", str(site.repo), "--introduction", str(site.intro),
        "--state", str(site.node_dir(node)), "--key", str(site.node_key(node)),
        "--store", site.store_url, "--ttl", str(record.ttl), "--keepalive", f"{keepalive:g}",
        "--address", "http://127.0.0.1:0", "--artifact-source", str(site.chunks),
        "--uids", f"{first}-{first + UIDS_PER_NODE - 1}",  # no --storage-key: volumes are shared
        "--cgroup-parent", record.cgroup_parent, "--grace", str(GRACE), "--stop-workloads",
        "--progress-deadline", f"{record.progress_deadline:g}",
        "--scrub-interval", f"{record.scrub_interval:g}",
    ]  # fmt: skip


def uid_base(tag: int) -> int:
    """The first uid of a circle's block, from a number its DIR hashes to: a block holds
    MAX_NODES ranges of UIDS_PER_NODE, so no two nodes of one circle share a uid, and two
    circles on one machine share none unless their DIRs hash to the same block (1 in 256)."""
    return UID_FIRST + (tag % UID_SLOTS) * UIDS_PER_NODE * MAX_NODES


def start(site: Site, record: Record, node: str) -> Agent:
    """Start `node`'s agent, detached, and record it."""
    for folder in (
        site.node_dir(node).parent,
        site.pid_file(node).parent,
        site.log_file(node).parent,
    ):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    site.node_dir(node).mkdir(exist_ok=True, mode=0o700)
    with site.log_file(node).open("ab") as log:
        # Started through a launcher that exits at once: the agent is nobody's child (init
        # reaps it), so neither `circle up` nor a library caller keeps a zombie or a handle.
        launched = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCH, *command(site, record, node)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=site.root,
            timeout=30,
            check=False,
        )
    words = launched.stdout.split()
    if launched.returncode != 0 or len(words) != 1 or not words[0].isdigit():
        raise InputError(f"{node}: the agent did not start (see {site.log_file(node)})")
    pid = int(words[0])
    try:
        agent = Agent(node, pid, psutil.Process(pid).create_time())
    except psutil.Error:
        raise InputError(f"{node}: the agent exited at once (see {site.log_file(node)})") from None
    write_atomically(
        site.pid_file(node),
        json.dumps({"node": node, "pid": agent.pid, "started": agent.started}) + "\n",
        mode=0o600,
    )
    return agent


def recorded_nodes(site: Site) -> tuple[str, ...]:
    """The nodes that have a pid file (for a folder whose record is lost)."""
    folder = site.pid_file("x").parent
    return tuple(sorted(p.stem for p in folder.glob("*.pid"))) if folder.is_dir() else ()


def find(site: Site, node: str) -> Agent | None:
    """`node`'s agent if it runs (see the module)."""
    path = site.pid_file(node)
    if not os.path.lexists(path):
        return None
    try:
        found = json.loads(read_bounded(path, _MAX_PID_FILE))
        agent = Agent(node, int(found["pid"]), float(found["started"]))
        process = psutil.Process(agent.pid)
        if abs(process.create_time() - agent.started) > 0.05:
            return None
        line = process.cmdline()
    except (ValueError, KeyError, TypeError, psutil.Error):
        return None
    if "node" not in line or str(site.node_dir(node)) not in line:
        return None
    if process.status() == psutil.STATUS_ZOMBIE:
        return None
    return agent


def stop(site: Site, agents: list[Agent], timeout: float) -> list[str]:
    """SIGTERM each agent (it stops its replicas, then leaves), SIGKILL those still running
    after `timeout`; the nodes that had to be killed."""
    processes: dict[str, psutil.Process] = {}
    for agent in agents:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(agent.pid)
            process.send_signal(signal.SIGTERM)
            processes[agent.node] = process
    _, alive = psutil.wait_procs(list(processes.values()), timeout=timeout)
    killed = []
    for node, process in processes.items():
        if process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
            killed.append(node)
    psutil.wait_procs(alive, timeout=5)
    for agent in agents:
        with contextlib.suppress(FileNotFoundError):
            site.pid_file(agent.node).unlink()
    return killed


def release_replicas(record: Record) -> int:
    """Kill whatever still runs in the circle's control groups (replicas of agents killed with
    SIGKILL) and remove the groups; how many groups there were."""
    released = 0
    for base in (Path(b) for b in record.cgroup_bases):
        if not base.is_dir():
            continue
        folders = sorted((Path(f) for f, _, _ in os.walk(base)), key=lambda p: -len(p.parts))
        for folder in folders:
            procs = folder / "cgroup.procs"
            for _ in range(500):
                pids = _pids(procs)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                folder.rmdir()
                released += folder != base
    return released


def release_secrets(site: Site, nodes: tuple[str, ...]) -> int:
    """Unmount the secrets tmpfs left behind in each node's folder (by replicas of an agent
    killed with SIGKILL, which no agent of that node took away since): how many. Call it once
    their replicas are gone (`release_replicas`)."""
    released = 0
    for node in nodes:
        state = site.node_dir(node)
        for workload, slot in secret_files.leftovers(state):
            folder = secret_files.folder_of(state, workload, slot)
            try:
                secret_files.unmount_secrets(folder)
            except OSError as error:
                raise InputError(f"{folder}: cannot take the secrets away: {error}") from None
            released += 1
    return released


def cgroup_bases(parent: str) -> tuple[str, ...]:
    """Where agents started from this process make their replicas' groups."""
    return tuple(str(base) for base in Cgroups.detect(parent).bases.values())


def _pids(procs: Path) -> list[int]:
    try:
        return [int(word) for word in procs.read_text().split() if word.isdigit()]
    except OSError:
        return []
