"""Health checks of a running replica, as the kubelet's probes: an HTTP GET of a path on one of
its ports (reached inside its network namespace, `reconciler.node.netns`), or a command run
inside its sandbox as its user; each within the check's timeout.

One check serves both purposes Kubernetes splits in two: readiness (a replica is Ready only
while its check passes) and liveness (after `failureThreshold` failures in a row it is
restarted). `Verdicts` counts the results; it is pure (it is told the results and the time).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.node import netns

MAX_STATUS_LINE = 4096
MAX_OUTPUT = 4096


@dataclass(frozen=True, slots=True)
class Result:
    passed: bool
    message: str


def http_check(pid: int, port: int, path: str, timeout: float) -> Result:
    """GET `path` on `port` inside the namespace of `pid`: passes on 200-399."""
    deadline = time.monotonic() + timeout
    try:
        with netns.connect(pid, port, timeout) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n"
            sock.sendall((request + "User-Agent: circle-health\r\n\r\n").encode("ascii"))
            received = b""
            while b"\r\n" not in received and len(received) < MAX_STATUS_LINE:
                left = deadline - time.monotonic()
                if left <= 0:
                    return Result(False, f"GET {path}: no status line within {timeout:g} s")
                sock.settimeout(left)
                chunk = sock.recv(MAX_STATUS_LINE - len(received))
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        return Result(False, f"GET {path}: timed out after {timeout:g} s")
    except OSError as error:
        return Result(False, f"GET {path}: port {port}: {error.strerror or error}")
    line = received.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Result(False, f"GET {path}: not an HTTP answer: {line[:80]!r}")
    status = int(parts[1])
    if 200 <= status < 400:
        return Result(True, f"GET {path}: {status}")
    return Result(False, f"GET {path}: HTTP {status}")


def command_check(argv: Sequence[str], timeout: float, pass_fds: Sequence[int] = ()) -> Result:
    """Run `argv` (a command already wrapped to run inside the sandbox): passes on exit 0."""
    try:
        done = subprocess.run(
            list(argv),
            pass_fds=tuple(pass_fds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Result(False, f"the check command timed out after {timeout:g} s")
    except OSError as error:
        return Result(False, f"the check command cannot run: {error.strerror}")
    said = done.stdout[-MAX_OUTPUT:].decode("utf-8", "replace").strip().splitlines()
    last = said[-1][:200] if said else ""
    if done.returncode == 0:
        return Result(True, "the check command passed")
    return Result(False, f"the check command exited {done.returncode}: {last}".rstrip(": "))


@dataclass
class Verdicts:
    """Consecutive results of one replica's check: Ready while passing; `unhealthy` once
    `threshold` failures come in a row (the supervisor restarts it then)."""

    threshold: int
    ready: bool = False
    failures: int = 0
    last: Result | None = None

    def record(self, result: Result) -> None:
        self.last = result
        if result.passed:
            self.ready, self.failures = True, 0
        else:
            self.ready = False
            self.failures += 1

    @property
    def unhealthy(self) -> bool:
        return self.failures >= self.threshold
