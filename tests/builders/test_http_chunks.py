"""`ChunkServer` and `HttpChunkSource` against each other, over real sockets on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from builders.chunks import ChunkError, ChunkMissing, ChunkStore, chunk_digest
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.manifest import ArtifactManifest, Chunk, Entry


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "store")


@pytest.fixture
def served(store: ChunkStore) -> Iterator[tuple[ChunkServer, HttpChunkSource]]:
    with ChunkServer(store) as server, HttpChunkSource(server.url) as source:
        yield server, source


def raw(url: str, method: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_chunks_and_manifests_round_trip(
    store: ChunkStore, served: tuple[ChunkServer, HttpChunkSource]
) -> None:
    server, source = served
    data = os.urandom(100_000)
    digest = store.put(data)
    body = b'{"a": 1}'
    entry = Entry("f", "file", "0644", len(data), chunk_digest(data), (Chunk(digest, len(data)),))
    manifest = ArtifactManifest((entry,))
    store.put_manifest(manifest.artifact_id, manifest.encode())

    assert source.name == server.url
    assert source.get(digest) == data
    assert source.has(digest)
    assert source.get_manifest(manifest.artifact_id) == manifest.encode()
    missing = chunk_digest(body)
    assert not source.has(missing)
    with pytest.raises(ChunkMissing):
        source.get(missing)
    with pytest.raises(ChunkMissing):
        source.get_manifest("sha256:" + missing)
    assert raw(server.url, "HEAD", f"/manifests/{manifest.artifact_id[7:]}")[0] == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/chunks/" + "A" * 64, 400),
        ("/chunks/abc", 400),
        ("/manifests/../../etc/passwd", 404),
        ("/nothing", 404),
        ("/chunks/" + "0" * 64, 404),
    ],
    ids=["uppercase-digest", "short-digest", "traversal", "no-route", "missing"],
)
def test_bad_requests_get_clear_statuses(
    served: tuple[ChunkServer, HttpChunkSource], path: str, status: int
) -> None:
    server, _ = served
    found, body = raw(server.url, "GET", path)
    assert found == status
    assert b"Traceback" not in body


def test_a_corrupt_chunk_is_refused_with_500_and_no_traceback(
    store: ChunkStore, served: tuple[ChunkServer, HttpChunkSource]
) -> None:
    server, source = served
    digest = store.put(b"x" * 1000)
    store.path(digest).write_bytes(b"y" * 1000)

    with pytest.raises(ChunkError, match=f"HTTP 500: chunk {digest} is corrupt"):
        source.get(digest)
    status, body = raw(server.url, "GET", f"/chunks/{digest}")
    assert status == 404  # the store removed its bad copy
    assert b"Traceback" not in body


def test_connections_are_reused_from_a_bounded_pool_across_threads(
    store: ChunkStore, served: tuple[ChunkServer, HttpChunkSource]
) -> None:
    server, source = served
    digests = [store.put(os.urandom(1000)) for _ in range(50)]
    for _ in range(3):  # pools that come and go, as materialization's do
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(source.get, digests))
        assert [chunk_digest(data) for data in results] == digests
    assert source._pool.idle <= 8
    assert server._running is not None
    assert len(server._running.server.open_sockets) <= 8


def test_a_stopped_server_gives_a_clear_error(store: ChunkStore) -> None:
    digest = store.put(b"data")
    server = ChunkServer(store).start()
    with HttpChunkSource(server.url, timeout=5) as source:
        assert source.get(digest) == b"data"
        server.stop()
        with pytest.raises(ChunkError, match="is unreachable"):
            source.get(digest)


def test_bad_urls_are_refused() -> None:
    for url in ("ftp://host/", "http://", "http://user@host/", "http://host:99999/"):
        with pytest.raises(ChunkError):
            HttpChunkSource(url)


def test_rate_limit_slows_a_transfer_to_about_the_set_rate(store: ChunkStore) -> None:
    data = os.urandom(2 * 1024 * 1024)
    digest = store.put(data)
    rate = 8 * 1024 * 1024  # bytes per second: 2 MiB takes about 0.25 s
    with ChunkServer(store, rate_limit=rate) as server, HttpChunkSource(server.url) as source:
        started = time.monotonic()
        assert source.get(digest) == data
        elapsed = time.monotonic() - started
    assert elapsed >= 0.5 * len(data) / rate
