"""The backend contract, run against every kind (a directory, a real redis-server, a BlobServer
over HTTP), then what is particular to each: crash safety and symlinks for directories, tokens
and size limits for HTTP, prefixes for Redis, and the URLs `open_backend` accepts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from qss.backends import (
    BlobServer,
    DirectoryBackend,
    HttpBackend,
    RedisBackend,
    open_backend,
)
from qss.backends.base import Backend, BackendInfo
from qss.backends.directory import TEMP_PREFIX
from qss.errors import BackendError, BackendUnavailable, BlobNotFound
from tests.qss.conftest import Harness, RedisServer, files_under, redis_keys

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The contract, for every kind


def test_is_a_backend(harness: Harness) -> None:
    assert isinstance(harness.backend, Backend)


def test_put_then_get(harness: Harness) -> None:
    backend = harness.backend
    backend.put("s/ab12/0/3", b"share bytes")
    assert backend.get("s/ab12/0/3") == b"share bytes"
    assert backend.exists("s/ab12/0/3")


def test_put_overwrites(harness: Harness) -> None:
    backend = harness.backend
    backend.put("m/ab12/1", b"first version, longer")
    backend.put("m/ab12/1", b"second")
    assert backend.get("m/ab12/1") == b"second"
    assert list(backend.list()) == ["m/ab12/1"]


def test_empty_value(harness: Harness) -> None:
    harness.backend.put("e", b"")
    assert harness.backend.get("e") == b""
    assert harness.backend.exists("e")


def test_five_mib_value(harness: Harness) -> None:
    data = os.urandom(5 * MiB)
    harness.backend.put("s/big/0/0", data)
    assert harness.backend.get("s/big/0/0") == data


def test_missing_key(harness: Harness) -> None:
    backend = harness.backend
    backend.put("s/present/0/0", b"x")
    for key in ("s/absent/0/0", "s/present/0/1", "s/present/0/0/deeper", "nothing"):
        with pytest.raises(BlobNotFound, match=key):
            backend.get(key)
        assert not backend.exists(key)


def test_delete_is_idempotent(harness: Harness) -> None:
    backend = harness.backend
    backend.put("s/ab/0/0", b"x")
    backend.put("s/ab/0/1", b"y")
    backend.delete("s/ab/0/0")
    backend.delete("s/ab/0/0")
    backend.delete("never/was")
    assert not backend.exists("s/ab/0/0")
    with pytest.raises(BlobNotFound):
        backend.get("s/ab/0/0")
    assert backend.get("s/ab/0/1") == b"y"
    assert list(backend.list()) == ["s/ab/0/1"]


KEYS = ["s/aa/0/0", "s/aa/1/0", "s/ab/0/0", "s/b/0/0", "m/aa/1", "m/aa/2", "x"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", KEYS),
        ("s/", KEYS[:4]),
        ("s/a", KEYS[:3]),
        ("s/aa", KEYS[:2]),
        ("s/aa/", KEYS[:2]),
        ("s/aa/1/0", ["s/aa/1/0"]),
        ("m/aa/", ["m/aa/1", "m/aa/2"]),
        ("x", ["x"]),
        ("y", []),
        ("s/c/", []),
        ("s/*", []),
        ("s/[a]", []),
        ("?", []),
        ("../", []),
        ("/", []),
        ("s//", []),
    ],
    ids=repr,
)
def test_list_by_prefix(harness: Harness, prefix: str, expected: list[str]) -> None:
    for key in KEYS:
        harness.backend.put(key, key.encode())
    assert sorted(harness.backend.list(prefix)) == sorted(expected)


BAD_KEYS = ["../x", "/abs", "a//b", "A", "a/./b", "a" * 600, "", "a/", "a/..", "a b", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda key: repr(key[:12]))
def test_bad_keys_are_refused_and_nothing_is_written(harness: Harness, key: str) -> None:
    backend = harness.backend
    calls: list[Callable[[], object]] = [
        lambda: backend.put(key, b"payload"),
        lambda: backend.get(key),
        lambda: backend.exists(key),
        lambda: backend.delete(key),
    ]
    for call in calls:
        with pytest.raises(BackendError, match="invalid blob key") as refused:
            call()
        assert type(refused.value) is BackendError
    assert harness.stored() == set()


def test_info(harness: Harness) -> None:
    info = harness.backend.info()
    assert isinstance(info, BackendInfo)
    assert info.kind == harness.kind
    if harness.kind == "redis":
        assert info.free_bytes is None
    else:
        assert isinstance(info.free_bytes, int)
        assert info.free_bytes > 0


def test_unreachable_backend(unreachable: Backend) -> None:
    calls: list[Callable[[], object]] = [
        lambda: unreachable.put("s/ab/0/0", b"x"),
        lambda: unreachable.get("s/ab/0/0"),
        lambda: unreachable.exists("s/ab/0/0"),
        lambda: unreachable.delete("s/ab/0/0"),
        lambda: list(unreachable.list()),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match=r"is unavailable"):
            call()


@pytest.mark.parametrize("kind", ["redis", "http"])
def test_server_that_never_answers_times_out(silent_listener: int, kind: str) -> None:
    backend: Backend
    if kind == "redis":
        backend = RedisBackend("127.0.0.1", silent_listener, connect_timeout=0.5, timeout=0.3)
    else:
        backend = HttpBackend(f"http://127.0.0.1:{silent_listener}", timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable):
            backend.get("s/ab/0/0")
    finally:
        backend.close()
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------
# Directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "blobs"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the root, holding a secret no backend call may read or change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "x").write_bytes(b"secret")
    return path


CRASHING_PUT = textwrap.dedent(
    """
    import os, sys
    from qss.backends.directory import DirectoryBackend

    os.replace = lambda *args, **kwargs: os._exit(17)  # the process dies before the rename
    DirectoryBackend(sys.argv[1]).put("s/ab/0/0", b"half written")
    """
)


def test_crash_before_rename_leaves_no_blob_and_sweep_removes_the_rest(root: Path) -> None:
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_PUT, str(root)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == 17, crashed.stderr.decode()
    backend = DirectoryBackend(root)
    assert list(backend.list()) == []
    assert not backend.exists("s/ab/0/0")
    with pytest.raises(BlobNotFound):
        backend.get("s/ab/0/0")
    (temporary,) = root.rglob(f"{TEMP_PREFIX}*")
    assert temporary.read_bytes() == b"half written"

    assert backend.sweep_temporary(older_than_seconds=60) == 0  # might be a put in progress
    an_hour_ago = time.time() - 3600
    os.utime(temporary, (an_hour_ago, an_hour_ago))
    assert backend.sweep_temporary(older_than_seconds=60) == 1
    assert list(root.rglob(f"{TEMP_PREFIX}*")) == []


def test_failed_rename_cleans_up(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = DirectoryBackend(root)
    backend.put("s/ab/0/0", b"old")

    def no_rename(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", no_rename)
        with pytest.raises(BackendUnavailable, match=r"put 's/ab/0/0'.*Input/output error"):
            backend.put("s/ab/0/0", b"new")
    assert backend.get("s/ab/0/0") == b"old"
    assert list(root.rglob(f"{TEMP_PREFIX}*")) == []


def test_blob_files_are_private(root: Path) -> None:
    DirectoryBackend(root).put("s/ab/0/0", b"x")
    assert (root / "s/ab/0/0").stat().st_mode & 0o777 == 0o600


def test_symlinked_directory_is_not_followed(root: Path, outside: Path) -> None:
    (root / "s").symlink_to(outside, target_is_directory=True)
    backend = DirectoryBackend(root)
    calls: list[Callable[[], object]] = [
        lambda: backend.get("s/x"),
        lambda: backend.exists("s/x"),
        lambda: backend.put("s/y", b"planted"),
        lambda: backend.delete("s/x"),
        lambda: list(backend.list("s/")),
    ]
    for call in calls:
        with pytest.raises(BackendError, match="symlink") as refused:
            call()
        assert type(refused.value) is BackendError
    assert list(backend.list()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["x"]
    assert (outside / "x").read_bytes() == b"secret"


def test_symlinked_blob_is_not_followed(root: Path, outside: Path) -> None:
    (root / "m").mkdir()
    (root / "m" / "a").symlink_to(outside / "x")
    backend = DirectoryBackend(root)
    with pytest.raises(BackendError, match="symlink"):
        backend.get("m/a")
    with pytest.raises(BackendError, match="symlink"):
        backend.delete("m/a")
    assert list(backend.list()) == []
    backend.put("m/a", b"mine")  # the rename replaces the link itself, never its target
    assert backend.get("m/a") == b"mine"
    assert not (root / "m" / "a").is_symlink()
    assert (outside / "x").read_bytes() == b"secret"


def test_key_cannot_be_blob_and_directory(root: Path) -> None:
    backend = DirectoryBackend(root)
    backend.put("a", b"blob")
    with pytest.raises(BackendError, match=r"cannot put 'a/b'"):
        backend.put("a/b", b"x")
    backend.put("c/d", b"deeper")
    with pytest.raises(BackendError, match=r"cannot put 'c'"):
        backend.put("c", b"x")
    with pytest.raises(BlobNotFound):
        backend.get("c")
    backend.delete("c")
    assert sorted(backend.list()) == ["a", "c/d"]
    assert backend.get("a") == b"blob"
    assert list(root.rglob(f"{TEMP_PREFIX}*")) == []


def test_missing_root_is_unavailable_until_created(tmp_path: Path) -> None:
    root = tmp_path / "not-mounted"
    with pytest.raises(BackendUnavailable, match="not-mounted"):
        DirectoryBackend(root).put("a", b"x")
    with pytest.raises(BackendUnavailable, match="not-mounted"):
        DirectoryBackend(root).info()
    backend = DirectoryBackend(root, create=True)
    backend.put("a", b"x")
    assert backend.get("a") == b"x"


def test_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_bytes(b"")
    with pytest.raises(BackendUnavailable):
        DirectoryBackend(root).get("a")


def test_foreign_files_are_not_listed(root: Path) -> None:
    backend = DirectoryBackend(root)
    backend.put("s/ab/0/0", b"x")
    (root / "README").write_text("not a key")
    (root / "s" / ".hidden").write_text("not a key")
    (root / "s" / "ab" / f"{TEMP_PREFIX}0-123").write_text("a put in progress")
    assert list(backend.list()) == ["s/ab/0/0"]


# ---------------------------------------------------------------------------------------------
# HTTP


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., tuple[BlobServer, Path]]]:
    """Start BlobServers over fresh directories; every one is stopped at the end."""
    servers: list[BlobServer] = []

    def start(**options: Any) -> tuple[BlobServer, Path]:
        root = tmp_path / f"served-{len(servers)}"
        root.mkdir()
        server = BlobServer(DirectoryBackend(root), **options)
        servers.append(server.start())
        return server, root

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def raw_request(
    server: BlobServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def test_token_is_required_when_configured(
    served: Callable[..., tuple[BlobServer, Path]],
) -> None:
    server, root = served(token="s3cret-token")
    for token in (None, "wrong", "s3cret-token2", "s3cret-toke"):
        client = HttpBackend(server.url, token=token)
        try:
            with pytest.raises(BackendError, match="HTTP 401"):
                client.put("s/ab/0/0", b"x")
            with pytest.raises(BackendError, match="HTTP 401"):
                list(client.list())
        finally:
            client.close()
    assert files_under(root) == set()

    status, _, response = raw_request(server, "GET", "/info")
    assert status == 401
    assert response.getheader("WWW-Authenticate") == "Bearer"

    client = HttpBackend(server.url, token="s3cret-token")
    try:
        client.put("s/ab/0/0", b"x")
        assert client.get("s/ab/0/0") == b"x"
        assert list(client.list()) == ["s/ab/0/0"]
    finally:
        client.close()


def test_body_over_the_limit_is_refused(served: Callable[..., tuple[BlobServer, Path]]) -> None:
    server, root = served(max_body=1024)
    client = HttpBackend(server.url)
    try:
        client.put("at/limit", b"x" * 1024)
        with pytest.raises(BackendError, match=r"HTTP 413.*over the limit of 1024"):
            client.put("over/limit", b"x" * 1025)
        # Far over the limit, the server stops reading: the client may see the 413 or a reset.
        with pytest.raises(BackendError):
            client.put("far/over", b"x" * (17 * MiB))
        assert client.get("at/limit") == b"x" * 1024  # and the server still serves
        assert sorted(client.list()) == ["at/limit"]
    finally:
        client.close()
    assert "over" not in files_under(root)
    assert "far" not in files_under(root)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Transfer-Encoding": "chunked"}],
    ids=["no-length", "chunked"],
)
def test_put_needs_content_length(
    served: Callable[..., tuple[BlobServer, Path]], headers: dict[str, str]
) -> None:
    server, root = served()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("PUT", "/blobs/a", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 411
        response.read()
    finally:
        connection.close()
    assert files_under(root) == set()


@pytest.mark.parametrize(
    "path", ["/blobs/..%2Fx", "/blobs/%2Fabs", "/blobs/a//b", "/blobs/A", "/blobs/a/./b"]
)
def test_server_checks_keys_too(served: Callable[..., tuple[BlobServer, Path]], path: str) -> None:
    server, root = served()
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        status, _, _ = raw_request(server, method, path, body=b"x" if method == "PUT" else None)
        assert status == 400, method
    assert files_under(root) == set()


def test_server_reports_an_unavailable_backend(
    served: Callable[..., tuple[BlobServer, Path]],
) -> None:
    server, root = served()
    shutil.rmtree(root)
    client = HttpBackend(server.url)
    try:
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            client.put("s/ab/0/0", b"x")
        with pytest.raises(BackendUnavailable, match="HTTP 503"):
            client.get("s/ab/0/0")
    finally:
        client.close()


def test_info_document(served: Callable[..., tuple[BlobServer, Path]]) -> None:
    server, _ = served()
    status, body, response = raw_request(server, "GET", "/info")
    assert status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert set(json.loads(body)) == {"name", "kind", "free_bytes"}


def test_many_threads_share_one_client(served: Callable[..., tuple[BlobServer, Path]]) -> None:
    server, _ = served()
    client = HttpBackend(server.url)
    keys = [f"s/ab/{share}/{segment}" for share in range(8) for segment in range(8)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda key: client.put(key, key.encode()), keys))
            fetched = list(pool.map(client.get, keys))
        assert fetched == [key.encode() for key in keys]
        assert sorted(client.list("s/ab/")) == sorted(keys)
    finally:
        client.close()


def test_client_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    backend = DirectoryBackend(tmp_path)
    server = BlobServer(backend).start()
    port = server.port
    client = HttpBackend(server.url)
    try:
        client.put("a", b"1")
        server.stop()  # drops the client's keep-alive connection
        server = BlobServer(backend, port=port).start()
        assert client.get("a") == b"1"
    finally:
        client.close()
        server.stop()


def test_stop_ends_open_connections(tmp_path: Path) -> None:
    server = BlobServer(DirectoryBackend(tmp_path)).start()
    client = HttpBackend(server.url)
    try:
        client.put("a", b"1")  # leaves a keep-alive connection open in a handler thread
        before = threading.active_count()
        server.stop()
        assert threading.active_count() < before
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Redis


def test_blobs_are_stored_under_the_prefix(redis_db: RedisServer) -> None:
    backend = RedisBackend(redis_db.host, redis_db.port)
    try:
        backend.put("s/ab/0/0", b"x")
    finally:
        backend.close()
    assert redis_keys(redis_db) == {"qss:s/ab/0/0"}


def test_prefixes_keep_backends_apart(redis_db: RedisServer) -> None:
    # An unescaped MATCH pattern "q*:*" would also match the keys of "qx:".
    globbing = RedisBackend(redis_db.host, redis_db.port, prefix="q*:")
    plain = RedisBackend(redis_db.host, redis_db.port, prefix="qx:")
    try:
        globbing.put("a/1", b"1")
        plain.put("a/2", b"2")
        plain.put("b", b"3")
        assert list(globbing.list()) == ["a/1"]
        assert sorted(plain.list()) == ["a/2", "b"]
        assert not plain.exists("a/1")
    finally:
        globbing.close()
        plain.close()


def test_list_pages_through_many_keys(redis_db: RedisServer) -> None:
    backend = RedisBackend(redis_db.host, redis_db.port)
    client = redis_db.client()
    try:
        client.mset({f"qss:s/ab/{i}/0": b"x" for i in range(2500)})
        client.set("other:s/ab/0/0", b"x")
        assert len(set(backend.list("s/"))) == 2500
    finally:
        client.close()
        backend.close()


def test_a_database_number_selects_that_database(redis_db: RedisServer) -> None:
    backend = RedisBackend(redis_db.host, redis_db.port, 3)
    client = redis.Redis(redis_db.host, redis_db.port, db=3, socket_timeout=5)
    try:
        backend.put("s/ab/0/0", b"in three")
        assert client.get("qss:s/ab/0/0") == b"in three"
        assert redis_keys(redis_db) == set()  # nothing in database 0
        assert backend.get("s/ab/0/0") == b"in three"
    finally:
        client.close()
        backend.close()


def test_a_password_is_sent_and_a_wrong_or_missing_one_is_named(redis_db: RedisServer) -> None:
    admin = redis_db.client()
    admin.config_set("requirepass", "s3cret")
    try:
        admin.execute_command("AUTH", "s3cret")
        right = RedisBackend(redis_db.host, redis_db.port, password="s3cret")
        wrong = RedisBackend(redis_db.host, redis_db.port, name="wrong", password="nope")
        none = RedisBackend(redis_db.host, redis_db.port, name="none")
        try:
            right.put("m/ab/1", b"x")
            assert right.get("m/ab/1") == b"x"
            with pytest.raises(BackendError, match=r"'wrong' .*: put 'm/ab/1': authentication "):
                wrong.put("m/ab/1", b"y")
            with pytest.raises(BackendError, match=r"'none' .*: get 'm/ab/1': authentication "):
                none.get("m/ab/1")
        finally:
            for backend in (right, wrong, none):
                backend.close()
        assert admin.get("qss:m/ab/1") == b"x"
    finally:
        admin.config_set("requirepass", "")
        admin.close()


# ---------------------------------------------------------------------------------------------
# open_backend


def test_open_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_backend(f"dir:{tmp_path}/node-1")
    assert isinstance(absolute, DirectoryBackend)
    assert absolute.root == tmp_path / "node-1"
    assert (absolute.name, absolute.failure_domain) == ("node-1", "node-1")

    monkeypatch.chdir(tmp_path)
    relative = open_backend("dir:shares/b", name="b", failure_domain="rack-2")
    assert isinstance(relative, DirectoryBackend)
    assert relative.root == tmp_path / "shares" / "b"
    assert (relative.name, relative.failure_domain) == ("b", "rack-2")


@pytest.mark.parametrize(
    ("url", "host", "port", "db", "prefix", "name"),
    [
        ("redis://cache.example:6380/2", "cache.example", 6380, 2, "qss:", "cache.example:6380/2"),
        ("redis://10.0.0.5", "10.0.0.5", 6379, 0, "qss:", "10.0.0.5:6379"),
        ("redis://h:7000/?prefix=circle-a:", "h", 7000, 0, "circle-a:", "h:7000"),
        ("redis://[::1]:9900/0", "::1", 9900, 0, "qss:", "[::1]:9900"),
    ],
)
def test_open_redis(url: str, host: str, port: int, db: int, prefix: str, name: str) -> None:
    backend = open_backend(url, token="password")
    try:
        assert isinstance(backend, RedisBackend)
        assert (backend.host, backend.port, backend.db, backend.prefix) == (host, port, db, prefix)
        assert (backend.name, backend.failure_domain) == (name, name)
    finally:
        backend.close()


def test_open_redis_talks_to_the_server(redis_db: RedisServer) -> None:
    backend = open_backend(f"redis://{redis_db.host}:{redis_db.port}/0")
    try:
        backend.put("a", b"1")
        assert backend.get("a") == b"1"
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("url", "base", "name"),
    [
        ("http://node-3.example:8470", "http://node-3.example:8470", "node-3.example:8470"),
        ("https://blobs.example/qss/", "https://blobs.example/qss", "blobs.example/qss"),
    ],
)
def test_open_http(url: str, base: str, name: str) -> None:
    backend = open_backend(url, failure_domain="rack-1", token="t")
    try:
        assert isinstance(backend, HttpBackend)
        assert (backend.url, backend.name, backend.failure_domain) == (base, name, "rack-1")
    finally:
        backend.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/plain/path",
        "dir:",
        "dir://host/path",
        "file:///tmp/x",
        "s3://bucket",
        "redis://",
        "redis://h:port",
        "redis://h:0",
        "redis://h/db1",
        "redis://user:pw@h",
        "redis://h?timeout=3",
        "http://",
        "http://h:99999",
        "http://h/?q=1",
        "http://user@h",
    ],
)
def test_open_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(BackendError, match="accepted forms") as refused:
        open_backend(url)
    assert repr(url) in str(refused.value)


def test_open_directory_takes_no_token(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no token"):
        open_backend(f"dir:{tmp_path}", token="t")
