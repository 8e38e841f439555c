"""What one hostile or broken backend can do, and what it cannot: found by review, kept by tests.

A backend holds blobs the store did not check yet. Whatever it serves (a malformed manifest, a
forged newer version with a misdirected placement, a listing of garbage, an endless body), the
store must either return the right bytes or a StorageError: never a traceback, never wrong data.
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qss.backends import DirectoryBackend, HttpBackend
from qss.errors import BackendError, InvalidBlob, InvalidParameters, ManifestError
from qss.manifest import Manifest, Placement, decode
from qss.reports import Inventory, Listing
from qss.store import Store, manifest_key

SEGMENT = 4096


def directories(root: Path, count: int) -> list[DirectoryBackend]:
    backends = []
    for index in range(count):
        folder = root / f"b{index}"
        folder.mkdir(parents=True)
        backends.append(DirectoryBackend(folder, name=f"b{index}", failure_domain=f"d{index % 3}"))
    return backends


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Store, Manifest, bytes, bytes, list[DirectoryBackend]]:
    backends = directories(tmp_path / "backends", 7)  # b6 is a spare: it holds no share
    store = Store(backends[:6])
    data = secrets.token_bytes(3 * SEGMENT + 5)
    source = tmp_path / "object.bin"
    source.write_bytes(data)
    key = secrets.token_bytes(32)
    manifest = store.put(source, storage_key=key, k=4, n=6, segment_size=SEGMENT).manifest
    return Store(backends), manifest, data, key, backends


def read(store: Store, object_id: str, key: bytes, folder: Path) -> bytes:
    folder.mkdir(exist_ok=True)
    out = folder / "out.bin"
    store.get(object_id, out, storage_key=key)
    return out.read_bytes()


@pytest.mark.parametrize(
    "garbage",
    [
        b'{"format":"qss-manifest/1","content":[]}',
        b'{"format":"qss-manifest/1","content":{},"placement":"x"}',
        b"[" * 100_000,
        b"\xff\xfe not json",
    ],
    ids=["content-is-a-list", "placement-is-a-string", "deep-nesting", "not-utf8"],
)
def test_a_malformed_newer_manifest_is_skipped(
    stored: tuple[Store, Manifest, bytes, bytes, list[DirectoryBackend]],
    tmp_path: Path,
    garbage: bytes,
) -> None:
    store, manifest, data, key, backends = stored
    backends[6].put(manifest_key(manifest.object_id, 99), garbage)

    assert store.find_manifest(manifest.object_id) == manifest
    assert read(store, manifest.object_id, key, tmp_path / "out") == data


def test_a_forged_newer_placement_cannot_deny_the_object(
    stored: tuple[Store, Manifest, bytes, bytes, list[DirectoryBackend]], tmp_path: Path
) -> None:
    """The spare b6 serves version 2 claiming shares 0-2 live on b6, b7 and nowhere: the shares
    are found where they are, by their hashes, and repair restores a truthful placement."""
    store, manifest, data, key, backends = stored
    forged = Manifest(
        manifest.content,
        tuple(
            Placement(p.share, {0: "b6", 1: "ghost-1", 2: "ghost-2"}.get(p.share, p.backend), "x")
            for p in manifest.placement
        ),
        version=2,
        supersedes=manifest.digest(),
    )
    backends[6].put(manifest_key(manifest.object_id, 2), forged.encode())
    assert store.find_manifest(manifest.object_id).version == 2

    assert read(store, manifest.object_id, key, tmp_path / "out") == data

    repaired = store.repair(manifest.object_id)
    assert repaired.manifest.version == 3
    assert store.scrub(manifest.object_id).margin == 2
    assert read(store, manifest.object_id, key, tmp_path / "again") == data


def test_put_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A device or pipe has no size to trust: refused, not stored as an empty object."""
    store = Store(directories(tmp_path / "backends", 6))
    with pytest.raises(InvalidParameters, match="/dev/zero: not a regular file"):
        store.put(Path("/dev/zero"), storage_key=secrets.token_bytes(32), k=4, n=6)
    assert store.list_objects() == Listing(())


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A blob server that lists garbage and answers every get with an oversized body."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/blobs?"):
            body = (
                b"garbage\nm/../../etc/passwd\nM/UPPER/1\n" + f"m/{'a' * 64}/0000000001\n".encode()
            )
        else:
            body = b"x" * 5000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_an_http_backend_keeps_only_keys_that_could_be_ours(hostile_url: str) -> None:
    backend = HttpBackend(hostile_url, name="evil")
    try:
        assert list(backend.list("m/")) == [f"m/{'a' * 64}/0000000001"]
        assert Store([backend]).object_ids() == Inventory(frozenset({"a" * 64}), ())
    finally:
        backend.close()


def test_an_http_response_over_the_limit_is_refused(hostile_url: str) -> None:
    backend = HttpBackend(hostile_url, name="evil", max_response=4096)
    try:
        with pytest.raises(InvalidBlob, match="the response announces 5000 bytes, over the limit"):
            backend.get("s/00/0/0")
        with pytest.raises(BackendError, match="the response announces 5000 bytes, over the limit"):
            backend.info()
    finally:
        backend.close()


def test_http_connections_do_not_pile_up_across_thread_pools(tmp_path: Path) -> None:
    from qss.backends.http import BlobServer

    folder = tmp_path / "served"
    folder.mkdir()
    with BlobServer(DirectoryBackend(folder, name="served", failure_domain="d")) as server:
        backend = HttpBackend(server.url, name="client", max_idle=4)
        try:
            for _ in range(20):
                threads = [
                    threading.Thread(target=backend.put, args=(f"m/{i}/1", b"x")) for i in range(8)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=10)
            assert backend._pool.idle <= 4  # the pool's bound, whatever threads came and went
        finally:
            backend.close()
    assert json.loads(json.dumps(sorted(p.name for p in (folder / "m").iterdir()))) == [
        str(i) for i in range(8)
    ]


@pytest.mark.parametrize(
    "garbage",
    [b"null", b"1", b'"x"', b"[]", b'{"format":"qss-manifest/1"}', b"{" * 5000],
    ids=["null", "number", "string", "list", "format-only", "deep"],
)
def test_a_manifest_decoder_raises_nothing_but_manifest_error(garbage: bytes) -> None:
    with pytest.raises(ManifestError):
        decode(garbage)
