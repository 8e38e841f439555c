"""A chunk source that stalls (a real slow-loris server on loopback, sending a byte every 50 ms so
that no per-read timeout ever fires) is cut off at its deadline, reported by name and deadline,
tried last from then on, and the next source serves; with no other source the chunk is
unavailable, with that said, and nothing is left behind. The chunk server, in turn, cuts off a
client that trickles its request and takes no more connections than its limit."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builders.chunks import ChunkStore, SourceUnavailable
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.materialize import ChunkUnavailable, materialize
from qss.serving import ServingLimits
from tests.builders.test_materialize import Artifact, make_artifact
from tests.conftest import Result
from tests.qss.peers import Peer, closed_by_server, returns, trickle

DEADLINE = 0.5  # where a good source must answer within it too
STALL = 0.25  # where only a stalled source is asked
RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"


@pytest.fixture
def artifact() -> Artifact:
    return make_artifact({"app/data.bin": bytes(range(256)) * 5, "app/run.sh": b"#!/bin/sh\n"})


@pytest.fixture
def good(tmp_path: Path, artifact: Artifact) -> Iterator[ChunkServer]:
    store = ChunkStore(tmp_path / "peer-store")
    for digest, data in artifact.chunks.items():
        store.put(data, digest)
    store.put_manifest(artifact.id, artifact.data)
    with ChunkServer(store) as server:
        yield server


@pytest.fixture
def slow() -> Iterator[Peer]:
    with Peer(trickle(RESPONSE_HEAD)) as peer:
        yield peer


def snapshot(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n", RESPONSE_HEAD[:5]],
    ids=["trickled-body", "trickled-status-line"],
)
def test_a_trickling_source_is_cut_off_at_its_deadline(reply: bytes, artifact: Artifact) -> None:
    digest = next(iter(artifact.chunks))
    with (
        Peer(trickle(reply)) as peer,
        HttpChunkSource(peer.url, timeout=STALL) as source,
        pytest.raises(SourceUnavailable) as stalled,
    ):
        returns(lambda: source.get(digest))
    assert str(stalled.value) == (
        f"chunk source {peer.url} stalled: GET /chunks/{digest}: timed out: no complete "
        f"response within {STALL:g} s"
    )


def test_materialize_moves_on_from_a_stalled_source_to_the_next(
    circle: Callable[..., Result],
    tmp_path: Path,
    artifact: Artifact,
    slow: Peer,
    good: ChunkServer,
) -> None:
    node_store, dest = tmp_path / "node-store", tmp_path / "artifacts"
    sources = ("--source", slow.url, "--source", good.url)
    options = ("--timeout", str(DEADLINE), "--workers", "2", "-o", "json")

    done = returns(
        lambda: circle(
            *("artifact", "materialize", artifact.id, "--dest", str(dest)),
            *("--store", str(node_store), *sources, *options),
        )
    )

    assert done.code == 0, done.stderr
    report = done.json()
    path = dest / artifact.hex
    assert report["path"] == str(path)
    assert (path / "app/data.bin").read_bytes() == bytes(range(256)) * 5
    assert report["fetchedChunks"] == len(artifact.chunks)  # all of them from the good peer
    stalled = f"chunk source {slow.url} stalled: GET /"
    within = f"timed out: no complete response within {DEADLINE:g} s"
    manifest_problem, chunk_problem = report["sourceProblems"]
    assert manifest_problem.startswith(f"{stalled}manifests/{artifact.hex}: {within}")
    assert manifest_problem.endswith("; trying the next source")
    assert chunk_problem.startswith(f"{stalled}chunks/")
    assert chunk_problem.endswith(f"{within}; it is tried last from now on")
    assert done.stderr.splitlines() == [
        f"warning: {problem}" for problem in report["sourceProblems"]
    ]
    # Tried last once it stalled: once for the manifest, at most once per worker for chunks,
    # never once per chunk.
    assert slow.connections <= 1 + 2 < len(artifact.chunks)


def test_with_only_a_stalled_source_the_chunk_is_unavailable_and_nothing_is_left(
    tmp_path: Path, artifact: Artifact, slow: Peer
) -> None:
    store, root = ChunkStore(tmp_path / "node-store"), tmp_path / "artifacts"
    problems: list[str] = []

    with (
        HttpChunkSource(slow.url, timeout=STALL) as source,
        pytest.raises(ChunkUnavailable) as unavailable,
    ):
        returns(
            lambda: materialize(
                artifact.id,
                artifact.data,
                sources=[source],
                store=store,
                artifacts_root=root,
                workers=2,
                on_problem=problems.append,
            )
        )

    message = str(unavailable.value)
    assert message.startswith("chunk ")
    assert (
        f"is available from none of 1 sources: {slow.url}: chunk source {slow.url} stalled: "
        "GET /chunks/"
    ) in message
    assert message.endswith(f"timed out: no complete response within {STALL:g} s")
    assert len(problems) == 1  # one report per source, however many chunks
    assert problems[0].startswith(f"chunk source {slow.url} stalled: GET /chunks/")
    assert snapshot(root) == []
    assert list(store.digests()) == []


def test_the_cli_names_the_stalled_source_when_no_source_delivers(
    circle: Callable[..., Result], tmp_path: Path, artifact: Artifact, slow: Peer
) -> None:
    node_store, dest = ChunkStore(tmp_path / "node-store"), tmp_path / "artifacts"
    node_store.put_manifest(artifact.id, artifact.data)

    failed = returns(
        lambda: circle(
            *("artifact", "materialize", artifact.id, "--dest", str(dest)),
            *("--store", str(node_store.root), "--source", slow.url, "--timeout", str(STALL)),
        )
    )

    assert failed.code == 1
    error = failed.stderr.splitlines()[-1]
    assert error.startswith("circle: error: chunk ")
    assert f"is available from none of 2 sources: store:{node_store.root}: missing; " in error
    assert error.endswith(f"timed out: no complete response within {STALL:g} s")
    assert "Traceback" not in failed.stderr
    assert snapshot(dest) == []
    assert list(node_store.digests()) == []


def test_the_timeout_must_be_positive(circle: Callable[..., Result], tmp_path: Path) -> None:
    result = circle(
        *("artifact", "materialize", "sha256:" + "0" * 64, "--dest", str(tmp_path / "a")),
        *("--source", "http://127.0.0.1:9", "--timeout", "0"),
    )
    assert result.code == 2
    assert "Invalid value for '--timeout': 0.0 is not in the range x>0." in result.stderr
    assert not (tmp_path / "a").exists()


# -- the server's side -------------------------------------------------------------------------


def test_a_client_that_trickles_its_request_is_cut_off(tmp_path: Path, artifact: Artifact) -> None:
    store = ChunkStore(tmp_path / "store")
    digest = store.put(b"chunk")
    limits = ServingLimits(idle_timeout=0.15, request_timeout=0.15)
    with ChunkServer(store, limits=limits) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow_client:
            assert closed_by_server(slow_client, f"GET /chunks/{digest} HTTP/1.1\r\n".encode())
        with HttpChunkSource(server.url, timeout=5) as source:
            assert source.get(digest) == b"chunk"  # others are still served


def test_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    digest = store.put(b"chunk")
    with ChunkServer(store, limits=ServingLimits(max_connections=2)) as server:
        address = ("127.0.0.1", server.port)
        held = [socket.create_connection(address, timeout=5) for _ in range(2)]
        try:
            with socket.create_connection(address, timeout=5) as third:
                assert third.recv(1) == b""  # accepted by the kernel, closed by the server
        finally:
            for connection in held:
                connection.close()
        with HttpChunkSource(server.url, timeout=5) as source:
            # Once the held connections are gone, their places are free again.
            assert returns(lambda: retry_until_served(source, digest)) == b"chunk"


def retry_until_served(source: HttpChunkSource, digest: str) -> bytes:
    while True:
        try:
            return source.get(digest)
        except SourceUnavailable:
            continue


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /chunks/" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-Many: a\r\n" * 200 + b"\r\n", b"431"),
    ],
    ids=["huge-request-line", "huge-header", "too-many-headers"],
)
def test_huge_request_heads_are_refused_and_the_connection_closed(
    tmp_path: Path, request_bytes: bytes, status: bytes
) -> None:
    with (
        ChunkServer(ChunkStore(tmp_path / "store")) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as client,
    ):
        client.sendall(request_bytes)
        answer = b""
        while chunk := client.recv(65536):  # ends when the server closes
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert len(answer) < 4096
