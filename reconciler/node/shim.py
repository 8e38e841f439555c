"""The shim: one small process per running replica, between the agent and the sandbox, as
containerd-shim, conmon and Nomad's executor are. It lets the agent restart (or crash) without
touching its workloads, and it keeps what a restarted agent needs:

- it starts the sandbox (the command of its spec) with the sandbox's first process already in
  the replica's control groups, so that nothing it forks escapes them;
- it writes everything the replica prints into the replica's log (`reconciler.node.logs`,
  rotated by size, no line lost, whatever the agent is doing);
- it records the sandbox's pids once they are known (`run.json`) and how the replica ended
  (`exit.json`), each written atomically, then exits.

Run as `python -S -m reconciler.node.shim SPEC.json`, detached (its own session) by the agent.
It imports a few standard modules and `reconciler.node.logfile` only: it is paid for at every
start of a replica.
It ignores SIGTERM, SIGINT and SIGHUP: a replica is stopped through its control group, and the
shim leaves when the sandbox has. Its spec (`circle-shim/1`, written by the agent, 0600):

    {"format": "circle-shim/1", "argv": [...], "cgroupProcs": [path, ...], "logDir": path,
     "logMaxBytes": n, "logMaxFiles": n, "runFile": path, "exitFile": path, "infoFd": 3,
     "seccompFile": path, "seccompFd": 4}

The shim is a child subreaper: a process of the sandbox whose parent dies first (bubblewrap's
init, when the outer bubblewrap is killed before it) is the shim's to reap, and the shim
leaves only once every one of them has ended.

`run.json`: {"format": "circle-shim-run/1", "shim": pid, "shimStart": ticks, "bwrap": pid,
"sandbox": pid or null, "startedAt": unix seconds}; `sandbox` is the sandbox's first process
(bubblewrap's "child-pid"), whose namespaces a health check enters.
`exit.json`: {"format": "circle-shim-exit/1", "exitCode": n or null, "signal": n or null,
"finishedAt": unix seconds, "error": text or null}.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import sys
import time

from reconciler.node.logfile import LogWriter

TYPE_CHECKING = False  # typing itself costs an import at every start; type checkers see True
if TYPE_CHECKING:
    from typing import Any

PR_SET_CHILD_SUBREAPER = 36
SPEC_FORMAT = "circle-shim/1"
RUN_FORMAT = "circle-shim-run/1"
EXIT_FORMAT = "circle-shim-exit/1"
MAX_SPEC = 1 << 20
MAX_INFO = 4096
_READ = 64 * 1024
_QUIET = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


def start_ticks(pid: int | str) -> int | None:
    """When process `pid` started (clock ticks since boot), to tell it from a later process
    that reuses its pid; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def write_json(path: str, document: dict[str, Any]) -> None:
    """Replace `path` with `document` durably: a reader sees the old file or the new."""
    temporary = f"{path}.tmp-{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(document).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_spec(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        spec = json.loads(handle.read(MAX_SPEC))
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{path}: not a {SPEC_FORMAT} spec")
    return spec


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m reconciler.node.shim SPEC.json", file=sys.stderr)
        return 2
    spec = read_spec(argv[1])
    for signum in _QUIET:
        signal.signal(signum, signal.SIG_IGN)
    log = LogWriter(spec["logDir"], max_bytes=spec["logMaxBytes"], max_files=spec["logMaxFiles"])
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    info_r, info_w = os.pipe()
    info_fd = int(spec["infoFd"])
    _libc_prctl(PR_SET_CHILD_SUBREAPER, 1)
    pid = os.fork()
    if pid == 0:  # the child: join the groups, then become the sandbox
        _exec_child(spec, out_w, err_w, info_w, info_fd)
    for fd in (out_w, err_w, info_w):
        os.close(fd)
    run = {
        "format": RUN_FORMAT,
        "shim": os.getpid(),
        "shimStart": start_ticks("self"),
        "bwrap": pid,
        "sandbox": None,
        "startedAt": time.time(),
    }
    write_json(spec["runFile"], run)
    _pump(log, run, spec["runFile"], {out_r: "stdout", err_r: "stderr"}, info_r)
    _, status = os.waitpid(pid, 0)
    _reap_the_rest()
    log.close()
    write_json(
        spec["exitFile"],
        {
            "format": EXIT_FORMAT,
            "exitCode": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "finishedAt": time.time(),
            "error": None,
        },
    )
    return 0


def _exec_child(spec: dict[str, Any], out_w: int, err_w: int, info_w: int, info_fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(info_w, info_fd)
        keep = [info_fd]
        if spec.get("seccompFile"):
            seccomp_fd = int(spec["seccompFd"])
            filter_fd = os.open(spec["seccompFile"], os.O_RDONLY | os.O_CLOEXEC)
            os.dup2(filter_fd, seccomp_fd)
            keep.append(seccomp_fd)
        previous = 3
        for fd in sorted(keep):  # close everything else the shim holds
            os.closerange(previous, fd)
            previous = fd + 1
        os.closerange(previous, 1 << 16)
        for fd in keep:
            os.set_inheritable(fd, True)
        for procs in spec["cgroupProcs"]:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        for signum in _QUIET:
            signal.signal(signum, signal.SIG_DFL)
        argv = spec["argv"]
        os.execv(argv[0], argv)  # noqa: S606 - the agent's own sandbox command line
    except BaseException as error:  # noqa: BLE001 - nothing may unwind past a fork
        try:
            os.write(2, f"circle shim: cannot start the sandbox: {error}\n".encode())
        finally:
            os._exit(127)


def _pump(
    log: LogWriter,
    run: dict[str, Any],
    run_file: str,
    streams: dict[int, str],
    info_r: int,
) -> None:
    """Copy the replica's output into its log until both streams end; note the sandbox pid."""
    selector = selectors.DefaultSelector()
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    selector.register(info_r, selectors.EVENT_READ)
    info = b""
    open_streams = set(streams)
    while open_streams:
        for key, _ in selector.select():
            fd = int(key.fd)
            try:
                data = os.read(fd, _READ)
            except OSError:
                data = b""
            if fd == info_r:
                info += data
                if not data or len(info) > MAX_INFO:
                    selector.unregister(info_r)
                    os.close(info_r)
                pid = _child_pid(info)
                if pid is not None and run["sandbox"] is None:
                    run["sandbox"] = pid
                    write_json(run_file, run)
                continue
            if data:
                log.write(streams[fd], data)
            else:
                selector.unregister(fd)
                os.close(fd)
                open_streams.discard(fd)
    selector.close()


def _reap_the_rest() -> None:
    """Wait for every orphan of the sandbox that came to the shim (it is their subreaper)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _libc_prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


def _child_pid(info: bytes) -> int | None:
    """bubblewrap's `--info-fd` JSON: {"child-pid": N, ...}, once it is complete."""
    try:
        found = json.loads(info.decode("utf-8", "replace"))
    except ValueError:
        return None
    pid = found.get("child-pid") if isinstance(found, dict) else None
    return pid if type(pid) is int and pid > 0 else None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
