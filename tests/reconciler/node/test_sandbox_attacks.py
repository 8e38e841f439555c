"""A hostile workload against the node's sandbox: one real artifact (`hostile/attacks.py`) tries
each attack from inside its replica and says what happened, and the tables below hold what each
attempt must meet (the errno of its refusal, or what it may see). After every attack the node
is unharmed: the control circuit's files are byte-identical, the node can still fork, and its
runtime still runs the next replica.

The attacks: the node's secrets by their host paths and by tricks (/proc/<pid>/root, `..`, the
mount table); the agent's and the sandbox's first process (environ, mem, ptrace, signals); the
read-only binds and mounts (from a user namespace too); the agent's ports and sockets; a fork
bomb; memory past the limit; symlinks out of the work folder, followed neither on restart nor
on removal; folders nested past what a recursive remover can take; and who it runs as.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import secrets
import shutil
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qss.keys import generate_key_file, read_key_file
from reconciler import wiring
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState
from reconciler.node.shim import start_ticks
from tests.reconciler.node.runtime_world import MIB, RuntimeWorld, needs_sandbox, runtime_world

HOSTILE = Path(__file__).parent / "hostile" / "attacks.py"
EXAMPLE = Path(__file__).parents[3] / "example-circle-repo"
VOLUME = "model-data"
VOLUME_OBJECT = "langid-model.json"
VOLUME_BYTES = b'{"model": "what the hostile replica may read and not change"}\n'
MOUNT = "data/model"
# What the agent keeps in its folder (tests.reconciler.node.runtime_world lays it out).
CONTROL = ("node.key", "node.json", "state.db", "store.token", "repo.git")
SIOCGIFADDR = 0x8915
ZERO_CAPS = "0000000000000000"


@dataclass
class Node:
    world: RuntimeWorld
    digest: str  # the hostile artifact
    desired: DesiredState  # holds volume `model-data`
    control: dict[str, tuple[int, int, int, bytes | None]]  # the control circuit, as it began
    canaries: Iterator[int]

    def hostile(self, name: str, mode: str, **fields: Any) -> None:
        command = ["python3", "/artifact/attacks.py", mode]
        self.world.run(name, self.digest, command, desired=self.desired, **fields)


def control_circuit(state: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every entry of the control circuit: its mode, owner, size and (a file's) bytes."""
    found = {}
    for name in CONTROL:
        top = state / name
        for path in [top, *(sorted(top.rglob("*")) if top.is_dir() else [])]:
            status = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(status.st_mode) else None
            entry = (status.st_mode, status.st_uid, status.st_size, data)
            found[str(path.relative_to(state))] = entry
    return found


def records(world: RuntimeWorld, name: str) -> dict[str, dict[str, Any]]:
    """What the hostile program said, by attack (the last line of each)."""
    found = {}
    for line in world.log_text(name).splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            found[record["attack"]] = record
    return found


def wait_said(world: RuntimeWorld, name: str, attack: str, seconds: float = 20.0) -> None:
    try:
        world.wait(lambda: attack in records(world, name), seconds, f"{name} says {attack}")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{name} printed:\n{world.log_text(name)}") from None


def removed(node: Node, name: str) -> None:
    """Remove the assignment and wait until its work folder and control group are gone."""
    world = node.world
    cgroup = world.runtime._cgroup(name, 0)
    world.remove(name)
    work = world.state / "work" / name / "0"
    world.wait(lambda: not cgroup.exists() and not work.exists(), 20, f"{name} removed")


def assert_node_unharmed(node: Node) -> None:
    """The control circuit is as it was, the node can fork, and its runtime runs a replica."""
    world = node.world
    assert control_circuit(world.state) == node.control
    assert subprocess.run(["/bin/true"], check=False).returncode == 0
    name = f"canary-{next(node.canaries)}"
    world.run(name, node.digest, ["python3", "/artifact/attacks.py", "canary"])
    wait_said(world, name, "canary")
    assert records(world, name)["canary"]["outcome"] == "ok"
    removed(node, name)


def running(pid: int, ticks: int | None) -> bool:
    """Process `pid`, started at `ticks`, still runs: it is there and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != b"Z" and start_ticks(pid) == ticks


def host_address() -> str | None:
    """This host's first IPv4 address that is not a loopback one, if it has any."""
    for _, interface in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("256s", interface.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue
        address = socket.inet_ntoa(answer[20:24])
        if not address.startswith("127."):
            return address
    return None


def volume_circle(root: Path) -> tuple[DesiredState, bytes]:
    """An approved state holding volume `model-data` (dir backends below `root`, the one
    object unpinned), its object stored there; and the storage key that reads it."""
    repo = root / "circle"
    repo.mkdir()
    for part in ("circle.yaml", "nodes", "volumes"):
        source = EXAMPLE / part
        copy = shutil.copytree if source.is_dir() else shutil.copyfile
        copy(source, repo / part)
    document = repo / "volumes" / f"{VOLUME}.yaml"
    text = document.read_text().replace("dir:/var/lib/circle/qss", f"dir:{root / 'qss'}")
    document.write_text(text.replace("    build: langid-model\n", ""))
    for line in text.splitlines():
        if "url:" in line:
            Path(line.split('"dir:')[1].split('"')[0]).mkdir(parents=True)
    desired = check_circle_dir(repo).state
    key_file = root / "storage.key"
    generate_key_file(key_file)
    key = read_key_file(key_file)
    stored = root / "object" / VOLUME_OBJECT
    stored.parent.mkdir()
    stored.write_bytes(VOLUME_BYTES)
    opened = wiring.volume_store(desired, VOLUME)
    opened.store.put(stored, storage_key=key, k=opened.k, n=opened.n)
    return desired, key


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    needs_sandbox()
    root = tmp_path_factory.mktemp("attacked")
    desired, key = volume_circle(root)
    with runtime_world(root, storage_key=key) as world:
        control = control_circuit(world.state)
        digest = world.artifact({"attacks.py": HOSTILE.read_text()})
        yield Node(world, digest, desired, control, itertools.count())


# -- the probe: one replica tries everything, beside a neighbour --------------------------------


@dataclass
class Probe:
    said: dict[str, dict[str, Any]]
    uid: int
    host: str | None
    listeners: list[socket.socket]


@pytest.fixture(scope="module")
def probe(node: Node) -> Iterator[Probe]:
    world = node.world
    marker = f"neighbour-{secrets.token_hex(6)}"
    world.run("neighbour", node.digest, ["python3", "/artifact/attacks.py", "neighbour", marker])
    wait_said(world, "neighbour", "neighbour")
    host = host_address()
    tcp = socket.create_server(("0.0.0.0", 0))  # noqa: S104 - loopback and the host address
    port = tcp.getsockname()[1]
    listeners = [tcp]
    with contextlib.suppress(OSError):
        listeners.append(socket.create_server(("::1", port), family=socket.AF_INET6))
    unix_path = world.state / "agent.sock"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    abstract_name = f"circle-agent-{secrets.token_hex(6)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    listeners += [unix, abstract]
    for listener in listeners:
        listener.listen()
        listener.setblocking(False)
    env = {
        "ATTACK_STATE": str(world.state),
        "ATTACK_AGENT": str(os.getpid()),
        "ATTACK_PORT": str(port),
        "ATTACK_HOST": host or "",
        "ATTACK_UNIX": str(unix_path),
        "ATTACK_ABSTRACT": abstract_name,
        "ATTACK_MARKER": marker,
        "ATTACK_VOLUME": f"/work/{MOUNT}",
    }
    volumes = [{"volume": VOLUME, "path": MOUNT}]
    try:
        node.hostile("hostile", "probe", env=env, volumes=volumes)
        wait_said(world, "hostile", "done")
        said = records(world, "hostile")
        uid = world.runtime.uids.uid_of("hostile")
        removed(node, "hostile")
        removed(node, "neighbour")
        yield Probe(said, uid, host, listeners)
    finally:
        for listener in listeners:
            listener.close()
        unix_path.unlink(missing_ok=True)


def _secrets() -> list[Any]:
    ways = {
        "host-path": "ENOENT",  # the node's folder is not in its mount namespace
        "proc-1-root": "EACCES",  # bubblewrap's init is root's: no ptrace access, so no root
        "proc-agent-root": "ENOENT",  # the agent is not in its pid namespace
        "proc-self-root": "ENOENT",
        "dotdot-work": "ENOENT",  # `..` of a bind's root is the sandbox's own root
        "dotdot-artifact": "ENOENT",
    }
    names = (
        "node.key",
        "node.json",
        "state.db",
        "store.token",
        "repo.git/HEAD",
        "repo.git/refs/quarantine/main",
    )
    return [
        pytest.param(f"secret-{name.replace('/', '-')}-{way}", expected, id=f"secret-{name}-{way}")
        for name in names
        for way, expected in ways.items()
    ]


REFUSED = [
    *_secrets(),
    pytest.param("secret-state-dir-list", "ENOENT", id="list-the-node-folder"),
    pytest.param("proc-1-root-list", "EACCES", id="list-proc-1-root"),
    pytest.param("proc-1-cwd-list", "EACCES", id="list-proc-1-cwd"),
    pytest.param("secret-mount-covering-state", "none", id="a-mount-that-holds-the-node-folder"),
    # 2, 3: the agent is not in its pid namespace; its pid 1 is root's and not its to touch
    pytest.param("proc-agent-environ", "ENOENT", id="agent-environ"),
    pytest.param("proc-agent-mem", "ENOENT", id="agent-mem"),
    pytest.param("proc-agent-fd-list", "ENOENT", id="agent-fds"),
    pytest.param("ptrace-attach-agent", "ESRCH", id="ptrace-the-agent"),
    pytest.param("kill-0-agent", "ESRCH", id="signal-0-the-agent"),
    pytest.param("kill-9-agent", "ESRCH", id="sigkill-the-agent"),
    pytest.param("proc-pid1-environ", "EACCES", id="pid1-environ"),
    pytest.param("proc-pid1-mem", "EACCES", id="pid1-mem"),
    pytest.param("proc-pid1-fd-list", "EACCES", id="pid1-fds"),
    pytest.param("ptrace-attach-pid1", "EPERM", id="ptrace-pid1"),
    pytest.param("kill-0-pid1", "EPERM", id="signal-0-pid1"),
    pytest.param("kill-9-pid1", "EPERM", id="sigkill-pid1"),
    pytest.param("proc-agent-visible", "unseen", id="agent-in-proc"),
    pytest.param("proc-neighbour-visible", "unseen", id="neighbour-replica-in-proc"),
    # 4: read-only binds and no mounts; a read-only file opened for append is refused earlier
    pytest.param("write-artifact-file", "EROFS", id="overwrite-own-artifact"),
    pytest.param("append-artifact-file", "EACCES", id="append-to-own-artifact"),
    pytest.param("create-artifact-file", "EROFS", id="create-in-own-artifact"),
    pytest.param("mkdir-artifact", "EROFS", id="mkdir-in-own-artifact"),
    pytest.param("chmod-artifact-file", "EROFS", id="chmod-own-artifact"),
    pytest.param("unlink-artifact-file", "EROFS", id="unlink-own-artifact"),
    pytest.param("write-root", "EROFS", id="write-sandbox-root"),
    pytest.param("write-etc-passwd", "EROFS", id="write-etc-passwd"),
    pytest.param("write-usr", "EROFS", id="write-usr"),
    pytest.param("write-volume-file", "EROFS", id="overwrite-volume-object"),
    pytest.param("create-volume-file", "EROFS", id="create-in-volume"),
    pytest.param("unlink-volume-file", "EROFS", id="unlink-volume-object"),
    pytest.param("rename-volume-file", "EROFS", id="rename-volume-object"),
    pytest.param("mount-remount-artifact-rw", "EPERM", id="remount-artifact-rw"),
    pytest.param("mount-tmpfs-over-work", "EPERM", id="mount-over-work"),
    pytest.param("umount-artifact", "EPERM", id="umount-artifact"),
    pytest.param(
        "userns-create",
        "EPERM",
        id="create-a-user-namespace",
    ),
    # the seccomp filter: no new namespace, no mount API, none of the kernel's unprivileged
    # attack surface; threads still work (clone3 answers ENOSYS, the C library falls back)
    pytest.param("clone-new-network-namespace", "EPERM", id="clone-a-namespace"),
    pytest.param("clone3", "ENOSYS", id="clone3"),
    pytest.param("setns-own-namespace", "EPERM", id="setns"),
    pytest.param("bpf-map-create", "EPERM", id="bpf"),
    pytest.param("keyctl-session-keyring", "EPERM", id="keyctl"),
    pytest.param("io-uring-setup", "EPERM", id="io-uring"),
    pytest.param("userfaultfd", "EPERM", id="userfaultfd"),
    pytest.param("perf-event-open", "EPERM", id="perf-event-open"),
    pytest.param("fsopen-tmpfs", "EPERM", id="fsopen"),
    pytest.param("open-tree-root", "EPERM", id="open-tree"),
    pytest.param("thread", "ok", id="threads-still-work"),
    # 5: its network namespace has only lo; unix sockets of the host are out of reach
    pytest.param("tcp-agent-loopback", "ECONNREFUSED", id="agent-port-on-loopback"),
    pytest.param("tcp-agent-host-address", "ENETUNREACH", id="agent-port-on-host-address"),
    pytest.param(
        "tcp-agent-loopback-v6", ("ECONNREFUSED", "EADDRNOTAVAIL"), id="agent-port-on-ipv6-lo"
    ),
    pytest.param("unix-agent-socket", "ENOENT", id="agent-unix-socket"),
    pytest.param("unix-agent-abstract", "ECONNREFUSED", id="agent-abstract-socket"),
    pytest.param("net-interfaces", ["lo"], id="network-interfaces"),
    # 9: privileges
    *[
        pytest.param(f"status-{field}", ZERO_CAPS, id=field)
        for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    ],
    pytest.param("status-NoNewPrivs", "1", id="NoNewPrivs"),
]
# What the tests below look at more closely than an outcome.
SPECIAL = {
    "done",
    "uid",
    "status-Seccomp",
    "proc-pids-visible",
    "setuid-su",
    "setuid-passwd",
    "setuid-own-copy",
}


@pytest.mark.parametrize(("attack", "expected"), REFUSED)
def test_attack_is_refused(probe: Probe, attack: str, expected: str | tuple[str, ...]) -> None:
    if attack == "tcp-agent-host-address" and probe.host is None:
        pytest.skip("this host has no address but loopback ones")
    assert attack in probe.said, f"the hostile replica never tried {attack}"
    outcome = probe.said[attack]["outcome"]
    if isinstance(expected, tuple):
        assert outcome in expected, probe.said[attack]
    else:
        assert outcome == expected, probe.said[attack]


def test_every_attempt_has_an_expectation(probe: Probe) -> None:
    table = {param.values[0] for param in REFUSED}
    assert set(probe.said) - table - SPECIAL == set()


def test_it_sees_only_its_own_processes(probe: Probe) -> None:
    visible = probe.said["proc-pids-visible"]
    own = visible["own"]
    assert visible["outcome"] == [1, own]
    assert visible["commands"]["1"].startswith("/usr/bin/bwrap ")
    assert visible["commands"][str(own)].startswith("python3 /artifact/attacks.py probe")


def test_it_runs_as_its_own_user_without_privileges(probe: Probe) -> None:
    uid = probe.uid
    assert uid != 0
    assert probe.said["uid"]["outcome"] == [uid, uid, uid, uid, []]


@pytest.mark.parametrize("binary", ["su", "passwd", "own-copy"])
def test_a_setuid_binary_gains_nothing(probe: Probe, binary: str) -> None:
    said = probe.said[f"setuid-{binary}"]
    assert said["outcome"] == "ran", said
    uid = str(probe.uid)
    assert said["creds"] == {"Uid": [uid] * 4, "Gid": [uid] * 4, "CapEff": [ZERO_CAPS]}
    if binary == "own-copy":
        assert said["setuid_bit"] is True  # the bit was set, and ignored


def test_the_agents_listeners_accepted_nothing(node: Node, probe: Probe) -> None:
    for listener in probe.listeners:
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert_node_unharmed(node)


# -- resources -----------------------------------------------------------------------------------


def test_a_fork_bomb_meets_the_pids_limit_and_is_stopped_whole(node: Node) -> None:
    world = node.world
    node.hostile("forkbomb", "forkbomb", memory=256 * MIB)
    wait_said(world, "forkbomb", "done", seconds=60)
    said = records(world, "forkbomb")
    limit = world.runtime.config.pids
    assert said["forkbomb-spawn"]["outcome"] == "EAGAIN"
    assert 0 < said["forkbomb-spawn"]["spawned"] < limit
    assert said["forkbomb-fork"]["outcome"] == "EAGAIN"
    assert said["forkbomb-thread"]["outcome"] == "refused"
    pids_group = world.runtime._cgroup("forkbomb", 0).paths.get("pids")
    if pids_group is None:  # cgroup v2: one folder
        pids_group = world.runtime._cgroup("forkbomb", 0).main
    assert int((pids_group / "pids.current").read_text()) <= limit
    events = dict(line.split() for line in (pids_group / "pids.events").read_text().splitlines())
    assert int(events["max"]) > 0
    assert subprocess.run(["/bin/true"], check=False).returncode == 0  # the node still forks
    bomb = {pid: start_ticks(pid) for pid in world.pids("forkbomb")}
    assert len(bomb) > said["forkbomb-spawn"]["spawned"]
    removed(node, "forkbomb")
    # killed, all of them (a killed sandbox init whose parent died first waits, a zombie,
    # for the host's init to reap it)
    assert [pid for pid, ticks in bomb.items() if running(pid, ticks)] == []
    assert_node_unharmed(node)


def test_memory_past_the_limit_ends_in_oomkilled(node: Node) -> None:
    world = node.world
    limit = 64 * MIB
    node.hostile("hungry", "oom", memory=limit, env={"ATTACK_LIMIT": str(limit)})
    world.wait(lambda: "OOMKilled" in world.reasons(), 30, "an OOMKilled event")
    event = next(e for e in world.said() if e.reason == "OOMKilled")
    assert event.subject == "assignment/hungry/0"
    said = records(world, "hungry")
    assert "oom-survived" not in said
    assert said["oom-allocated"]["bytes"] <= limit  # the last it held before the kernel's kill
    removed(node, "hungry")
    assert_node_unharmed(node)


# -- the work folder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "link"),
    [
        pytest.param("to-root", "/", id="to-the-root"),
        pytest.param("up", "../../..", id="up-to-the-node-folder"),  # as the host resolves it
        pytest.param("into-repo", "{state}/repo.git", id="into-the-repository"),
    ],
)
def test_a_symlink_in_the_work_folder_is_followed_neither_on_restart_nor_on_removal(
    node: Node, name: str, link: str
) -> None:
    world = node.world
    link = link.format(state=world.state)
    work = world.state / "work" / name / "0"
    outside = world.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("a host file the workload aims its links at\n")
    env = {"ATTACK_LINK": link, "ATTACK_OUTSIDE": str(outside)}
    node.hostile(name, "symlink", env=env, volumes=[{"volume": VOLUME, "path": MOUNT}])
    wait_said(world, name, "done")
    said = records(world, name)
    assert said["symlink-planted"]["outcome"] == link  # the first run aimed it, and crashed
    assert said["symlink-planted"]["volume"] == [VOLUME_OBJECT]
    restart = said["symlink-restart"]
    assert restart["outcome"] == "folder", restart  # the runtime put a real folder back
    assert restart["mounted"] is True
    assert restart["volume"] == {VOLUME_OBJECT: hashlib.sha256(VOLUME_BYTES).hexdigest()}
    assert restart["owner"] == world.runtime.uids.uid_of(name)
    followed = Path(os.path.normpath(os.path.join(work, link, "model")))
    assert not followed.exists(), f"the runtime made {followed} through the workload's link"
    assert not (work / "data").is_symlink()
    assert os.readlink(work / "escape-absolute") == str(outside)
    removed(node, name)
    assert (outside / "keep.txt").read_text() == "a host file the workload aims its links at\n"
    assert_node_unharmed(node)


def test_removal_deletes_a_work_folder_nested_past_recursion(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = node.world
    work = world.state / "work" / "nester" / "0"
    node.hostile("nester", "deeptree", env={"ATTACK_DEPTH": "3000"})
    worker = world.runtime._workers[("nester", 0)]
    died: list[BaseException | None] = []  # what ended the replica's thread, if anything did
    hook = threading.excepthook
    monkeypatch.setattr(
        threading,
        "excepthook",
        lambda args: died.append(args.exc_value) if args.thread is worker.thread else hook(args),
    )
    try:
        wait_said(world, "nester", "done")
        world.remove("nester")
        worker.join(timeout=30)
        assert died == [], f"the replica's thread died removing it: {died!r}"
        assert not work.exists(), "the removed assignment's work folder is still there"
        assert_node_unharmed(node)
    finally:
        _remove_deep(work)  # whatever is left (the test world's own cleanup recurses too)


def _remove_deep(folder: Path) -> None:
    """Remove a folder however deep it nests, without recursion, never following a link."""
    if not folder.is_dir():
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    stack = [(os.open(folder, flags), "")]  # open folders, each with its name in the one above
    try:
        while stack:
            fd = stack[-1][0]
            for entry in os.listdir(fd):
                try:
                    stack.append((os.open(entry, flags, dir_fd=fd), entry))
                    break
                except OSError as error:
                    if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    os.unlink(entry, dir_fd=fd)
            else:  # empty now: remove it from the folder above
                os.close(fd)
                _, name = stack.pop()
                if stack:
                    os.rmdir(name, dir_fd=stack[-1][0])
    finally:
        for fd, _ in stack:
            os.close(fd)
    folder.rmdir()
