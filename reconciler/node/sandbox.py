"""The sandbox of one replica, as a command line: what bubblewrap is told to build, and how the
workload's privileges are dropped inside it. Pure: values in, an argument vector out; the shell
(`reconciler.node.runtime`) measures the host, prepares the folders and runs it.

Inside, a replica sees (and nothing else of the machine):

    /usr /etc/<allow-list>      the host's system folders, read-only (/bin, /lib ... as the
                                host has them: symlinks into /usr, or read-only binds)
    /etc/passwd /etc/group      two lines each: root and the workload's own user
    /etc/hosts /etc/hostname    localhost and the replica's host name
    /artifact                   the verified artifact, read-only
    /work                       its private writable work folder (HOME, the working folder)
    /work/<path>                each volume, read-only, where the workload says
    /tmp                        a private tmpfs (charged to the replica's memory limit)
    /run/secrets/<name>         the secrets it names, read-only, 0400 and its own (a tmpfs the
                                agent fills: `reconciler.node.secrets`), when it names any
    /proc /dev                  its own: a procfs of its pid namespace, a minimal /dev
    /dev/nvidia<N> ...          only its GPUs, and the NVIDIA control devices, when it has any

in new mount, pid, ipc, uts, cgroup and network namespaces: the network namespace holds only
`lo`; a declared port is reached through the agent (`reconciler.node.netns`), never directly.

bubblewrap runs as root without a user namespace (it needs root to bind and to make device
nodes), which leaves the command running as uid 0 without capabilities: able to read any
root-owned file bound in, and to change any root-owned file not read-only. So the first thing
run inside is `setpriv`, which takes the workload's uid and gid, clears the supplementary
groups, empties the inheritable, ambient and bounding capability sets and sets no_new_privs,
then execs the workload. Nothing the workload runs can gain a privilege again, and its seccomp
filter (`reconciler.node.seccomp`, loaded by bubblewrap) keeps it from new namespaces, mounts
and the kernel interfaces that need none.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
NSENTER = "/usr/bin/nsenter"
ARTIFACT = "/artifact"
WORK = "/work"
TMP = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs
SECRETS = "/run/secrets"
PATH = "/artifact/bin:/usr/local/bin:/usr/bin:/bin"
# The host's top-level system folders a workload may see (when the host has them).
SYSTEM_TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What of /etc a program needs to run (libraries, certificates, time zone), nothing secret.
ETC_ALLOW = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "protocols",
    "services",
    "ssl",
)
# NVIDIA devices every GPU workload needs beside its own /dev/nvidia<minor>.
NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What the runtime sets and the workload's `env` cannot override.
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"})


class SandboxError(ValueError):
    """A sandbox that cannot be described: a path or a name that would escape its place."""


@dataclass(frozen=True, slots=True)
class Host:
    """What the host offers: for each of SYSTEM_TOP it has, a symlink target or None (a real
    folder); the names of ETC_ALLOW that exist in its /etc."""

    top: Mapping[str, str | None]
    etc: frozenset[str]


@dataclass(frozen=True, slots=True)
class VolumeBind:
    source: str  # a host folder (the verified, read-only cache of the volume)
    path: str  # where it appears, relative to /work


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    """One replica's sandbox. Host paths are absolute; `files` are the generated /etc files."""

    uid: int
    gid: int
    hostname: str
    artifact: str  # host folder of the verified artifact
    work: str  # host folder: the replica's work folder, owned by `uid`
    files: str  # host folder holding passwd, group, hosts, hostname for /etc
    command: tuple[str, ...]
    env: Mapping[str, str]
    volumes: tuple[VolumeBind, ...] = ()
    devices: tuple[str, ...] = ()  # /dev/nvidia* device nodes to bind
    info_fd: int | None = None  # bwrap writes {"child-pid": N} there once the sandbox is up
    seccomp_fd: int | None = None  # the filter (`reconciler.node.seccomp`) bwrap loads
    tmp_size: int = 64 * 1024 * 1024  # bytes of /tmp (its pages count against the memory limit)
    secrets: str | None = None  # host folder: the replica's secrets tmpfs, bound at SECRETS


def bwrap_argv(plan: SandboxPlan, host: Host, *, own_network: bool = True) -> list[str]:
    """The bubblewrap command line that runs `plan.command` in its sandbox; `own_network=False`
    keeps the network namespace it is started in (a check joins the replica's)."""
    _check_plan(plan)
    argv = [
        BWRAP,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        *(["--unshare-net"] if own_network else []),
        "--unshare-cgroup-try",
        "--new-session",  # no TIOCSTI into the agent's terminal
        "--hostname",
        plan.hostname,
        "--clearenv",
    ]
    if plan.info_fd is not None:
        argv += ["--info-fd", str(plan.info_fd)]
    if plan.seccomp_fd is not None:
        argv += ["--seccomp", str(plan.seccomp_fd)]
    for name in SYSTEM_TOP:
        if name not in host.top:
            continue
        target = host.top[name]
        if target is None:
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
        else:
            argv += ["--symlink", target, f"/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(plan.tmp_size), "--tmpfs", TMP, "--dir", "/etc"]
    for name in sorted(host.etc & frozenset(ETC_ALLOW)):
        argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group", "hosts", "hostname"):
        argv += ["--ro-bind", posixpath.join(plan.files, name), f"/etc/{name}"]
    for device in plan.devices:
        argv += ["--dev-bind", device, device]
    argv += ["--ro-bind", plan.artifact, ARTIFACT, "--bind", plan.work, WORK]
    for volume in plan.volumes:
        argv += ["--ro-bind", volume.source, posixpath.join(WORK, volume.path)]
    if plan.secrets is not None:
        argv += ["--perms", "0755", "--dir", posixpath.dirname(SECRETS)]
        argv += ["--ro-bind", plan.secrets, SECRETS]
    argv += ["--remount-ro", "/", "--chdir", WORK]
    for name, value in sorted(plan.env.items()):
        argv += ["--setenv", name, value]
    return [*argv, "--", *drop_privileges(plan.uid, plan.gid), *plan.command]


def drop_privileges(uid: int, gid: int) -> list[str]:
    """`setpriv` taking uid and gid, no groups, no capabilities ever, no_new_privs; then exec."""
    return [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def check_argv(sandbox_pid: int, plan: SandboxPlan, host: Host) -> list[str]:
    """A command health check: `plan.command` in a sandbox like the replica's (its files, its
    user, its environment, its filter), inside the replica's network namespace (entered by
    nsenter first: the sandbox's own filter then forbids entering any namespace)."""
    return [NSENTER, f"--net=/proc/{sandbox_pid}/ns/net", "--",
            *bwrap_argv(plan, host, own_network=False)]  # fmt: skip


def joined_argv(procs_files: Sequence[str], command: Sequence[str]) -> list[str]:
    """`command`, started as a member of the control groups whose `cgroup.procs` files are
    given: a shell writes its own pid into each, then execs (so nothing runs outside)."""
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *procs_files, "--", *command]


def environment(
    declared: Mapping[str, str],
    *,
    builder: str,
    gpus: Sequence[str] = (),
    secret_paths: Mapping[str, str] = {},
) -> dict[str, str]:
    """The whole environment of a replica: PATH, HOME, TMPDIR (and PYTHONPATH for a
    `python-app` artifact), then the workload's `env`, then the path of each secret whose
    `env` names a variable (`secret_paths`: variable -> secret), then the GPUs it was given."""
    env = {"PATH": PATH, "HOME": WORK, "TMPDIR": TMP, "LANG": "C.UTF-8"}
    if builder == "python-app":
        env["PYTHONPATH"] = f"{ARTIFACT}/app:{ARTIFACT}/site-packages"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the artifact is read-only, and stays identical
    for name, value in declared.items():
        if name in RESERVED_ENV:
            raise SandboxError(f"env {name} is set by the node (it names the replica's GPUs)")
        env[name] = value
    for name, secret in secret_paths.items():
        if name in RESERVED_ENV:
            raise SandboxError(f"env {name} is set by the node (it names the replica's GPUs)")
        env[name] = posixpath.join(SECRETS, secret)
    visible = ",".join(gpus) if gpus else "void"  # "void": no device, as the NVIDIA runtime says
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env["NVIDIA_VISIBLE_DEVICES"] = visible
    return env


def etc_files(uid: int, gid: int, user: str, hostname: str) -> dict[str, str]:
    """The generated /etc files: the workload's user and group beside root's, and its hosts."""
    return {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{user}:x:{uid}:{gid}:{user}:{WORK}:/usr/sbin/nologin\n",
        "group": f"root:x:0:\n{user}:x:{gid}:\n",
        "hosts": f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost\n",
        "hostname": f"{hostname}\n",
    }


def _check_plan(plan: SandboxPlan) -> None:
    for what, path in (("artifact", plan.artifact), ("work", plan.work), ("files", plan.files)):
        if not posixpath.isabs(path) or "\0" in path:
            raise SandboxError(f"the {what} folder must be an absolute path: {path!r}")
    if not plan.command:
        raise SandboxError("a sandbox needs a command")
    for name in plan.env:
        if _ENV_NAME.fullmatch(name) is None:
            raise SandboxError(f"{name!r} is not an environment variable name")
    for volume in plan.volumes:
        check_relative(volume.path)
    for device in plan.devices:
        if re.fullmatch(r"/dev/nvidia[a-z0-9-]*", device) is None:
            raise SandboxError(f"{device!r} is not an NVIDIA device node")
    if not 0 < plan.uid < 2**31 or not 0 < plan.gid < 2**31:
        raise SandboxError(f"a workload never runs as uid {plan.uid} or gid {plan.gid}")


def check_relative(path: str) -> str:
    """A path inside /work: relative, normalized, no `..`, not empty; SandboxError otherwise."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise SandboxError(f"{path!r} is not a plain relative path inside {WORK}")
    return path


@dataclass(frozen=True, slots=True)
class Limits:
    """A replica's cgroup limits: its requests, as Kubernetes' Guaranteed class does."""

    memory: int  # bytes
    cpu: int  # millicores
    pids: int = 1024

    def cfs_quota(self, period: int = 100_000) -> int:
        """CPU time per `period` (microseconds), at least 1 ms as the kernel requires."""
        return max(1000, self.cpu * period // 1000)
