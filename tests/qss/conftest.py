"""Fixtures of the qss tests: a real redis-server for the session, and each backend kind ready
to use (with a view of what it physically stores, to prove that refused calls wrote nothing).

redis-server must be on PATH (`bash .ci/setup --test` installs it); without it the Redis tests
fail, they are never skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from qss.backends import BlobServer, DirectoryBackend, HttpBackend, RedisBackend
from qss.backends.base import Backend

KINDS = ["dir", "redis", "http"]
REDIS_MISSING = (
    "redis-server is not on PATH: the Redis backend is tested against a real one. "
    "Run `bash .ci/setup --test` (CI installs it)."
)


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    def client(self) -> redis.Redis:
        """A raw client, to look behind the backend. Close it."""
        return redis.Redis(self.host, self.port, socket_timeout=5, socket_connect_timeout=5)


@dataclass(frozen=True)
class Harness:
    kind: str
    backend: Backend
    stored: Callable[[], set[str]]  # everything physically kept: files, directories or keys


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; good enough for tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of our own on a free loopback port, without persistence."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(REDIS_MISSING, pytrace=False)
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        log = workdir / f"redis-{port}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    *(executable, "--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(port):
                try:
                    yield RedisServer("127.0.0.1", port)
                finally:
                    _stop(process)
                return
            time.sleep(0.05)
        _stop(process)
    pytest.fail(f"redis-server did not answer PING; its log:\n{log.read_text()[-2000:]}")


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied for this test."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


def redis_keys(server: RedisServer) -> set[str]:
    client = server.client()
    try:
        return {key.decode() for key in client.scan_iter(count=1000)}
    finally:
        client.close()


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A working backend of each kind; the HTTP one serves a directory through a BlobServer."""
    kind: str = request.param
    root = tmp_path / "blobs"
    root.mkdir()
    if kind == "dir":
        yield Harness(kind, DirectoryBackend(root, name="local"), lambda: files_under(root))
    elif kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_db")
        backend = RedisBackend(server.host, server.port, name="redis", timeout=10)
        try:
            yield Harness(kind, backend, lambda: redis_keys(server))
        finally:
            backend.close()
    else:
        blob_server = BlobServer(DirectoryBackend(root, name="served")).start()
        try:
            client = HttpBackend(blob_server.url, name="remote", timeout=10)
            try:
                yield Harness(kind, client, lambda: files_under(root))
            finally:
                client.close()
        finally:
            blob_server.stop()


@pytest.fixture(params=KINDS)
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend of each kind that cannot be reached: a removed directory, a closed port."""
    kind: str = request.param
    backend: Backend
    if kind == "dir":
        root = tmp_path / "gone"
        root.mkdir()
        backend = DirectoryBackend(root)
        root.rmdir()
    elif kind == "redis":
        backend = RedisBackend("127.0.0.1", free_port(), connect_timeout=2, timeout=2)
    else:
        backend = HttpBackend(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel does) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port: int = listener.getsockname()[1]
        yield port
