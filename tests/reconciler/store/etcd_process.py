"""A real etcd of our own, for the tests and the store benchmark: one member on free
loopback ports (client and peer), its data in a folder we give it.

The binary is $CIRCLE_ETCD, else the one `bash .ci/setup --test` unpacks into
.ci/cache/etcd, else `etcd` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ETCD_MISSING = (
    "no etcd binary: set CIRCLE_ETCD, put etcd on PATH, or run `bash .ci/setup --test` "
    "(it unpacks Debian's etcd-server into .ci/cache/etcd); CI always has one"
)


@dataclass(frozen=True)
class EtcdServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"etcd://{self.host}:{self.port}"


class EtcdFailed(Exception):
    pass


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; good enough for tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_etcd() -> str | None:
    explicit = os.environ.get("CIRCLE_ETCD")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    cached = ROOT / ".ci" / "cache" / "etcd" / "usr" / "bin" / "etcd"
    if os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("etcd")


def _answers(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v3/kv/range", data=b'{"key":"AA=="}', method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as reply:
            return "header" in json.loads(reply.read())
    except (OSError, ValueError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def running_etcd(executable: str, workdir: Path) -> Iterator[EtcdServer]:
    """Start etcd, wait until it answers (20 s at most), stop it at the end."""
    log = workdir / "etcd.log"
    for attempt in range(3):  # a free port may be taken between probing and binding
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        log = workdir / f"etcd-{attempt}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    executable,
                    *("--name", "test", "--data-dir", str(workdir / f"data-{attempt}")),
                    *("--listen-client-urls", client_url, "--advertise-client-urls", client_url),
                    *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
                    *("--initial-cluster", f"test={peer_url}", "--logger", "zap"),
                    *("--log-level", "warn"),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 20
            while process.poll() is None and time.monotonic() < deadline:
                if _answers(client):
                    yield EtcdServer("127.0.0.1", client)
                    return
                time.sleep(0.1)
        finally:
            _stop(process)
    raise EtcdFailed(f"etcd did not answer; its log:\n{log.read_text()[-3000:]}")
