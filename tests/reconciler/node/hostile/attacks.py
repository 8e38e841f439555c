"""A hostile workload: run in a replica's sandbox by `test_sandbox_attacks.py`, it tries to
break out and prints one JSON line per attempt, `{"attack": ID, "outcome": ...}`, where the
outcome is the errno name of the refusal ("EACCES"), or what it got when nothing refused it.

    python3 attacks.py probe | forkbomb | oom | symlink | deeptree | neighbour | canary

Only the standard library of the host's /usr/bin/python3. What it knows of the node comes
from its environment (the test puts it there): ATTACK_STATE (the node's folder, a host path),
ATTACK_AGENT (the agent's pid on the host), ATTACK_PORT and ATTACK_HOST (where the agent
listens), ATTACK_UNIX (a unix socket in the node's folder), ATTACK_ABSTRACT (an abstract
socket name), ATTACK_MARKER (a word in a neighbour replica's command line), ATTACK_VOLUME (its
volume's mount point), ATTACK_LINK (where the symlink attack points /work/data), ATTACK_OUTSIDE
(a host folder the symlinks aim at), ATTACK_LIMIT (its memory limit), ATTACK_DEPTH (how deep
`deeptree` nests).
"""

import ctypes
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

ENV = os.environ
STATE = ENV.get("ATTACK_STATE", "/nonexistent-state")
SECRETS = (
    "node.key",
    "node.json",
    "state.db",
    "store.token",
    "repo.git/HEAD",
    "repo.git/refs/quarantine/main",
)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2


def say(attack, outcome, **detail):
    print(json.dumps({"attack": attack, "outcome": outcome, **detail}), flush=True)


def refusal(error):
    return errno.errorcode.get(error.errno or 0, str(error))


def libc_outcome(result):
    if result == -1:
        return errno.errorcode.get(ctypes.get_errno(), "E?")
    return "ok"


def try_read(attack, path, limit=64):
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except OSError as error:
        say(attack, refusal(error))
        return
    say(attack, "read", bytes=data.decode("latin-1"))


def try_write(attack, path, mode="wb"):
    try:
        with open(path, mode) as handle:
            handle.write(b"overwritten by a workload")
    except OSError as error:
        say(attack, refusal(error))
        return
    say(attack, "written")


def try_call(attack, call, *args):
    try:
        call(*args)
    except OSError as error:
        say(attack, refusal(error))
        return
    say(attack, "ok")


# -- 1. the control circuit's secrets ----------------------------------------------------------


def secrets_by_path():
    agent = ENV.get("ATTACK_AGENT", "0")
    up = "/".join([".."] * 12)
    for name in SECRETS:
        key = name.replace("/", "-")
        host = f"{STATE}/{name}"
        try_read(f"secret-{key}-host-path", host)
        try_read(f"secret-{key}-proc-1-root", f"/proc/1/root{host}")
        try_read(f"secret-{key}-proc-agent-root", f"/proc/{agent}/root{host}")
        try_read(f"secret-{key}-proc-self-root", f"/proc/self/root{host}")
        try_read(f"secret-{key}-dotdot-work", f"/work/{up}{host}")
        try_read(f"secret-{key}-dotdot-artifact", f"/artifact/{up}{host}")
    try_call("secret-state-dir-list", os.listdir, STATE)
    try_call("proc-1-root-list", os.listdir, "/proc/1/root/")
    try_call("proc-1-cwd-list", os.listdir, "/proc/1/cwd/")


def secrets_by_mounts():
    """Look for a mount whose source folder holds the node's folder, and read through it."""
    tried = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            root, point = fields[3], fields[4]
            if root != "/" and (root == STATE or STATE.startswith(root.rstrip("/") + "/")):
                for name in SECRETS:
                    path = os.path.join(point, os.path.relpath(f"{STATE}/{name}", root))
                    tried.append(path)
                    try_read(f"secret-via-mount-{point}", path)
    say("secret-mount-covering-state", "found" if tried else "none", paths=tried)


# -- 2, 3. the agent's process, and the sandbox's first one ----------------------------------


def processes():
    agent = int(ENV.get("ATTACK_AGENT", "0"))
    for who, pid in (("agent", agent), ("pid1", 1)):
        try_read(f"proc-{who}-environ", f"/proc/{pid}/environ")
        try_read(f"proc-{who}-mem", f"/proc/{pid}/mem")
        try_call(f"proc-{who}-fd-list", os.listdir, f"/proc/{pid}/fd")
        result = _libc.ptrace(PTRACE_ATTACH, pid, None, None)
        outcome = libc_outcome(result)
        if result == 0:
            _libc.ptrace(PTRACE_DETACH, pid, None, None)
        say(f"ptrace-attach-{who}", outcome)
        try_call(f"kill-0-{who}", os.kill, pid, 0)
        try_call(f"kill-9-{who}", os.kill, pid, signal.SIGKILL)
    seen = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    commands = {}
    for pid in seen:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                commands[pid] = handle.read().replace(b"\0", b" ").decode()[:80]
        except OSError as error:
            commands[pid] = refusal(error)
    marker = ENV.get("ATTACK_MARKER", "")
    seen_marker = [pid for pid, text in commands.items() if marker and marker in text]
    say("proc-pids-visible", seen, own=os.getpid(), commands=commands)
    say("proc-neighbour-visible", "seen" if seen_marker else "unseen", pids=seen_marker)
    say("proc-agent-visible", "seen" if agent in seen else "unseen")


# -- 4. read-only binds and mounts -------------------------------------------------------------


def read_only():
    try_write("write-artifact-file", "/artifact/attacks.py")
    try_write("append-artifact-file", "/artifact/attacks.py", "ab")
    try_write("create-artifact-file", "/artifact/planted.py")
    try_call("mkdir-artifact", os.mkdir, "/artifact/planted")
    try_call("chmod-artifact-file", os.chmod, "/artifact/attacks.py", 0o777)
    try_call("unlink-artifact-file", os.unlink, "/artifact/attacks.py")
    try_write("write-root", "/planted")
    try_write("write-etc-passwd", "/etc/passwd")
    try_write("write-usr", "/usr/bin/planted")
    volume = ENV.get("ATTACK_VOLUME")
    if volume:
        target = os.path.join(volume, sorted(os.listdir(volume))[0])
        try_write("write-volume-file", target)
        try_write("create-volume-file", os.path.join(volume, "planted"))
        try_call("unlink-volume-file", os.unlink, target)
        try_call("rename-volume-file", os.rename, target, os.path.join(volume, "moved"))
    remount = _libc.mount(None, b"/artifact", None, MS_REMOUNT | MS_BIND, None)
    say("mount-remount-artifact-rw", libc_outcome(remount))
    tmpfs = _libc.mount(b"tmpfs", b"/work", b"tmpfs", 0, None)
    say("mount-tmpfs-over-work", libc_outcome(tmpfs))
    say("umount-artifact", libc_outcome(_libc.umount2(b"/artifact", MNT_DETACH)))
    _in_user_namespace()


def _in_user_namespace():
    """A user namespace of its own gives every capability over that namespace: whether it
    can make one, and that the read-only binds stay read-only even from one."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        lines = []

        def note(attack, outcome, **detail):
            lines.append({"attack": attack, "outcome": outcome, **detail})

        made = _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS)
        with open("/proc/self/status") as handle:
            caps = [line.split()[1] for line in handle if line.startswith("CapEff")]
        note("userns-create", libc_outcome(made), cap_eff=caps[0])
        if made == 0:
            remount = _libc.mount(None, b"/artifact", None, MS_REMOUNT | MS_BIND, None)
            note("userns-remount-artifact-rw", libc_outcome(remount))
            note("userns-umount-artifact", libc_outcome(_libc.umount2(b"/artifact", 0)))
            try:
                with open("/artifact/attacks.py", "wb"):
                    pass
                note("userns-write-artifact-file", "written")
            except OSError as error:
                note("userns-write-artifact-file", refusal(error))
        os.write(write_end, json.dumps(lines).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.waitpid(child, 0)
    for line in json.loads(data):
        say(line["attack"], line["outcome"])


# -- 5. the network ------------------------------------------------------------------------------


def network():
    port = int(ENV.get("ATTACK_PORT", "1"))
    targets = [("tcp-agent-loopback", "127.0.0.1")]
    if ENV.get("ATTACK_HOST"):
        targets.append(("tcp-agent-host-address", ENV["ATTACK_HOST"]))
    for attack, host in targets:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            try_call(attack, sock.connect, (host, port))
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try_call("tcp-agent-loopback-v6", sock.connect, ("::1", port))
    for attack, address in (
        ("unix-agent-socket", ENV.get("ATTACK_UNIX", "/nonexistent")),
        ("unix-agent-abstract", "\0" + ENV.get("ATTACK_ABSTRACT", "none")),
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try_call(attack, sock.connect, address)
    with open("/proc/net/dev") as handle:
        interfaces = sorted(line.split(":")[0].strip() for line in handle if ":" in line)
    say("net-interfaces", interfaces)


# -- 9. who it is --------------------------------------------------------------------------------


def identity():
    say("uid", [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()])
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        say(f"status-{name}", fields.get(name))
    for binary in ("/usr/bin/su", "/usr/bin/passwd"):
        outcome, creds = _exec_creds(binary, [binary])
        say(f"setuid-{os.path.basename(binary)}", outcome, creds=creds)
    mine = "/work/own-setuid-sleep"
    with open("/usr/bin/sleep", "rb") as source, open(mine, "wb") as copy:
        copy.write(source.read())
    os.chmod(mine, 0o4755)  # noqa: S103 - its own file: that the bit is set, and gives nothing
    mode = os.stat(mine).st_mode
    outcome, creds = _exec_creds(mine, [mine, "5"])
    say("setuid-own-copy", outcome, creds=creds, setuid_bit=bool(mode & 0o4000))


def _exec_creds(binary, argv):
    """The credentials `binary` runs with once it is exec'd (read from its /proc status)."""
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    name = os.path.basename(binary)[:15]
    creds = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child.pid}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            break
        if fields.get("Name", "").strip() == name:  # exec'd: its credentials are final
            creds = {key: fields[key].split() for key in ("Uid", "Gid", "CapEff")}
            break
        time.sleep(0.002)
    child.kill()
    child.wait()
    if creds is None:
        return "not-seen", None
    return "ran", creds


# -- the other programs ----------------------------------------------------------------------


def forkbomb():
    """Spawn until refused, then hold every process (the test counts and stops them)."""
    spawned = 0
    outcome = "never-refused"
    while spawned < 10_000:
        try:
            os.posix_spawn("/usr/bin/sleep", ["sleep", "1000"], {})
        except OSError as error:
            outcome = refusal(error)
            break
        spawned += 1
    say("forkbomb-spawn", outcome, spawned=spawned)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        say("forkbomb-fork", "ok")
    except OSError as error:
        say("forkbomb-fork", refusal(error))
    try:
        threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
        say("forkbomb-thread", "ok")
    except RuntimeError as error:
        say("forkbomb-thread", "refused", detail=str(error))
    say("done", "holding")
    while True:
        time.sleep(1000)


def oom():
    """Allocate (and touch) memory until the kernel stops it; say how far it got."""
    held = []
    limit = int(ENV.get("ATTACK_LIMIT", str(64 << 20)))
    step = 4 << 20
    while len(held) * step < 4 * limit:
        held.append(b"\x01" * step)  # written, so every page is really used
        say("oom-allocated", "ok", bytes=len(held) * step)
    say("oom-survived", "survived", bytes=len(held) * step)


def symlink():
    """First run: aim /work/data (the parent of its volume's mount point) elsewhere and
    crash. Second run: say where the volume is, plant links for the removal, and wait."""
    marker = "/work/.attacked"
    volume = "/work/data/model"
    if not os.path.exists(marker):
        listing = sorted(os.listdir(volume))
        os.rename("/work/data", "/work/moved")  # the mount point moves along with its parent
        os.symlink(ENV["ATTACK_LINK"], "/work/data")
        with open(marker, "w") as handle:
            handle.write("1")
        say("symlink-planted", os.readlink("/work/data"), volume=listing)
        sys.exit(3)
    data = os.lstat("/work/data")
    with open("/proc/self/mountinfo") as handle:
        mounted = any(line.split()[4] == volume for line in handle)
    digests = {}
    for name in sorted(os.listdir(volume)):
        with open(os.path.join(volume, name), "rb") as handle:
            digests[name] = hashlib.sha256(handle.read()).hexdigest()
    say(
        "symlink-restart",
        "link" if os.path.islink("/work/data") else "folder",
        mounted=mounted,
        volume=digests,
        owner=data.st_uid,
    )
    outside = ENV["ATTACK_OUTSIDE"]
    os.symlink(outside, "/work/escape-absolute")
    os.symlink("../../../../" + os.path.basename(outside), "/work/escape-relative")
    os.makedirs("/work/deep/er")
    os.symlink(outside, "/work/deep/er/escape")
    say("done", "holding")
    while True:
        time.sleep(1000)


def deeptree():
    """Nest folders deeper than a recursive remover can go, then wait to be removed."""
    depth = int(ENV.get("ATTACK_DEPTH", "3000"))
    fd = os.open("/work", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    say("deeptree", "made", depth=depth)
    say("done", "holding")
    while True:
        time.sleep(1000)


def neighbour():
    """Another replica, only there to be looked for."""
    say("neighbour", "up", pid=os.getpid())
    while True:
        time.sleep(1000)


# -- the kernel's surface (the seccomp filter) ---------------------------------------------------

# x86_64 and aarch64 numbers of the calls tried raw (the C library may not wrap them)
SYSCALLS = {
    "x86_64": {
        "clone": 56,
        "clone3": 435,
        "setns": 308,
        "bpf": 321,
        "keyctl": 250,
        "io_uring_setup": 425,
        "userfaultfd": 323,
        "perf_event_open": 298,
        "fsopen": 430,
        "open_tree": 428,
    },
    "aarch64": {
        "clone": 220,
        "clone3": 435,
        "setns": 268,
        "bpf": 280,
        "keyctl": 219,
        "io_uring_setup": 425,
        "userfaultfd": 282,
        "perf_event_open": 241,
        "fsopen": 430,
        "open_tree": 428,
    },
}
CLONE_NEWNET = 0x40000000
SIGCHLD = 17


def kernel_surface():
    numbers = SYSCALLS.get(os.uname().machine)
    if numbers is None:
        say("kernel-surface", "unknown architecture")
        return
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    # clone with a namespace flag: the child, if any, exits at once
    made = syscall(numbers["clone"], CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0)
    if made == 0:
        os._exit(0)
    if made > 0:
        os.waitpid(made, 0)
    say("clone-new-network-namespace", libc_outcome(-1 if made < 0 else 0))
    args = ctypes.create_string_buffer(88)  # struct clone_args, zeroed: a plain fork
    made = syscall(numbers["clone3"], args, 88)
    if made == 0:
        os._exit(0)
    if made > 0:
        os.waitpid(made, 0)
    say("clone3", libc_outcome(-1 if made < 0 else 0))
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    say("setns-own-namespace", libc_outcome(syscall(numbers["setns"], fd, 0)))
    os.close(fd)
    say(
        "bpf-map-create",
        libc_outcome(syscall(numbers["bpf"], 0, ctypes.create_string_buffer(64), 64)),
    )
    attr = ctypes.create_string_buffer(128)
    say("keyctl-session-keyring", libc_outcome(syscall(numbers["keyctl"], 0, -3, 0)))
    params = ctypes.create_string_buffer(120)
    say("io-uring-setup", libc_outcome(syscall(numbers["io_uring_setup"], 4, params)))
    say("userfaultfd", libc_outcome(syscall(numbers["userfaultfd"], 0)))
    say("perf-event-open", libc_outcome(syscall(numbers["perf_event_open"], attr, 0, -1, -1, 0)))
    say("fsopen-tmpfs", libc_outcome(syscall(numbers["fsopen"], b"tmpfs", 0)))
    say("open-tree-root", libc_outcome(syscall(numbers["open_tree"], -100, b"/", 1)))
    # what stays allowed: threads (clone without namespace flags) and plain forks
    import threading

    done = []
    worker = threading.Thread(target=lambda: done.append(1))
    worker.start()
    worker.join()
    say("thread", "ok" if done else "failed")


def probe():
    for attack in (
        secrets_by_path,
        secrets_by_mounts,
        processes,
        read_only,
        network,
        identity,
        kernel_surface,
    ):
        attack()
    say("done", "probed")


def canary():
    say("canary", "ok")


if __name__ == "__main__":
    {
        "probe": probe,
        "forkbomb": forkbomb,
        "oom": oom,
        "symlink": symlink,
        "deeptree": deeptree,
        "neighbour": neighbour,
        "canary": canary,
    }[sys.argv[1]]()
