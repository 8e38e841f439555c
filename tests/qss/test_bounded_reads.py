"""Every read from a backend is bounded in bytes and in time: against real hostile peers on
loopback (trickling, flooding, announcing lengths they never send), a real redis-server
holding a value far larger than a share, and files that are not blobs (huge, FIFOs). Each
refusal is the specific error, allocates little, returns at once, and changes nothing stored.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qss.backends import BlobServer, DirectoryBackend, HttpBackend, RedisBackend
from qss.backends.base import MAX_BLOB
from qss.errors import BackendError, BackendUnavailable, InvalidBlob
from qss.reports import ShareStatus
from qss.serving import ServingLimits
from qss.store import Store, share_key
from tests.qss.conftest import RedisServer
from tests.qss.helpers import SEGMENT, Cluster, get_bytes, payload, put_bytes
from tests.qss.peers import MiB, Peer, allocations, closed_by_server, flood, returns, trickle

DEADLINE = 0.25
KEY = "s/" + "ab" * 16 + "/0/0"
# What a refusal may allocate at most: generous, and far below what reading the value would.
BOUND = 64 * MiB
OVERSIZED = 100 * MiB


# ---------------------------------------------------------------------------------------------
# HTTP: a total deadline per request, and a limit per response


@pytest.mark.parametrize(
    "reply",
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"],
    ids=["trickled-headers", "trickled-body"],
)
def test_an_http_backend_that_trickles_is_cut_off_at_the_deadline(reply: bytes) -> None:
    with Peer(trickle(reply)) as peer:
        backend = HttpBackend(peer.url, name="slow", timeout=DEADLINE)
        try:
            with pytest.raises(BackendUnavailable) as stalled:
                returns(lambda: backend.get(KEY))
        finally:
            backend.close()
    assert str(stalled.value) == (
        f"http backend 'slow' ({peer.url}) is unavailable: GET {KEY!r}: timed out: no complete "
        f"response within {DEADLINE:g} s"
    )


def test_a_tls_handshake_that_trickles_is_cut_off_at_the_deadline() -> None:
    # A TLS record header announcing 16 KiB, then a byte each 50 ms: the handshake never ends.
    with Peer(trickle(b"\x16\x03\x03\x40\x00", then=b"\x00")) as peer:
        url = f"https://127.0.0.1:{peer.port}"
        backend = HttpBackend(
            url, name="tls", timeout=DEADLINE, ssl_context=ssl.create_default_context()
        )
        try:
            with pytest.raises(
                BackendUnavailable, match=f"no complete response within {DEADLINE:g} s$"
            ):
                returns(lambda: backend.get(KEY))
        finally:
            backend.close()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n",
            "the response announces 10000000000 bytes, over the limit of 4096",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "the response exceeds 4096 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "the response exceeds 4096 bytes"),
    ],
    ids=["huge-content-length", "endless-chunked", "endless-until-close"],
)
def test_an_endless_http_body_is_refused_after_the_limit(head: bytes, expected: str) -> None:
    chunked = b"Transfer-Encoding" in head
    filler = b"10000\r\n" + b"x" * 65536 + b"\r\n" if chunked else b"x" * 65536
    with Peer(flood(head, filler)) as peer:
        backend = HttpBackend(peer.url, name="flood", timeout=10)
        try:
            with allocations() as peak, pytest.raises(InvalidBlob) as refused:
                returns(lambda: backend.get(KEY, 4096))
        finally:
            backend.close()
    assert str(refused.value) == f"http backend 'flood' ({peer.url}): GET {KEY!r}: {expected}"
    assert peak[0] < BOUND


def test_a_blob_over_the_limit_is_refused_by_the_blob_server(tmp_path: Path) -> None:
    root = tmp_path / "served"
    served = DirectoryBackend(root, name="served", create=True)
    blob = secrets.token_bytes(100_000)
    served.put(KEY, blob)
    with BlobServer(served) as server:
        backend = HttpBackend(server.url, name="remote")
        try:
            with pytest.raises(InvalidBlob) as refused:
                backend.get(KEY, 1000)
            assert backend.get(KEY, len(blob)) == blob
        finally:
            backend.close()
    assert str(refused.value) == (
        f"http backend 'remote' ({server.url}): get {KEY!r}: dir backend 'served' ({root}): "
        f"refusing {KEY!r}: it holds 100000 bytes, more than the 1000 expected"
    )
    assert served.get(KEY) == blob


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_the_blob_server_cuts_off_a_client_that_trickles(tmp_path: Path, method: str) -> None:
    served = DirectoryBackend(tmp_path / "served", name="served", create=True)
    limits = ServingLimits(idle_timeout=0.15, request_timeout=0.15)
    request = f"{method} /blobs/{KEY} HTTP/1.1\r\nContent-Length: 1000\r\n\r\n".encode()
    with BlobServer(served, limits=limits) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            assert closed_by_server(client, request)
        backend = HttpBackend(server.url, name="remote")
        try:
            backend.put(KEY, b"fine")  # others are still served
        finally:
            backend.close()
    assert served.get(KEY) == b"fine"


# ---------------------------------------------------------------------------------------------
# Redis protocol: every reply bounded by what the command may answer


def test_an_oversized_value_in_redis_is_refused_from_its_header(redis_db: RedisServer) -> None:
    raw = redis_db.client()
    try:
        # 100 MiB made by the server itself: this process never holds the value.
        raw.setrange(f"qss:{KEY}", OVERSIZED - 1, b"x")
        backend = RedisBackend(redis_db.host, redis_db.port, name="r")
        try:
            with allocations() as peak, pytest.raises(InvalidBlob) as refused:
                returns(lambda: backend.get(KEY, 4096))
        finally:
            backend.close()
        assert raw.strlen(f"qss:{KEY}") == OVERSIZED
    finally:
        raw.close()
    assert str(refused.value) == (
        f"redis backend 'r' (redis://{redis_db.host}:{redis_db.port}/0, prefix 'qss:'): get "
        f"{KEY!r}: the reply announces a {OVERSIZED}-byte value, more than the 4096 expected "
        "(refused unread)"
    )
    assert peak[0] < BOUND


def test_a_share_replaced_by_a_huge_value_reads_as_corrupt_and_is_repaired(
    redis_db: RedisServer, tmp_path: Path
) -> None:
    cluster = Cluster.of_redis(tmp_path, redis_db, [f"r{i}" for i in range(6)])
    try:
        store = cluster.store()
        data = payload(2 * SEGMENT + 10)
        key = secrets.token_bytes(32)
        manifest = put_bytes(store, tmp_path / "staging", data, key, k=4, n=6)
        holder = cluster.holder(manifest, 0)
        stored = f"{holder.name}:{share_key(manifest, 0, 1)}"
        raw = redis_db.client()
        try:
            raw.delete(stored)
            raw.setrange(stored, OVERSIZED - 1, b"x")

            with allocations() as peak:
                health = returns(lambda: store.scrub(manifest.object_id))
                read, result = returns(lambda: get_bytes(store, manifest.object_id, key, tmp_path))
            assert peak[0] < BOUND
            assert raw.strlen(stored) == OVERSIZED  # found and refused, not changed
            assert [(s.share, s.status, s.bad_segments) for s in health.shares if s.share == 0] == [
                (0, ShareStatus.CORRUPT, (1,))
            ]
            assert read == data
            [problem] = [p for p in result.problems if p.share == 0]
            assert problem.status is ShareStatus.CORRUPT
            assert f"the reply announces a {OVERSIZED}-byte value" in problem.detail

            repaired = store.repair(manifest.object_id)
            assert repaired.repaired[0].backend == holder.name  # in place: no spare backend
            assert raw.strlen(stored) == manifest.content.layout.block_length(1)
            assert store.scrub(manifest.object_id).margin == 2
        finally:
            raw.close()
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("head", "filler", "error", "expected"),
    [
        (
            b"$9999999999\r\n",
            b"x" * 65536,
            InvalidBlob,
            "the reply announces a 9999999999-byte value, more than the 4096 expected",
        ),
        (b"+", b"x" * 65536, InvalidBlob, "a reply line exceeds 65536 bytes"),
        (b"$100\r\n", b"x" * 65536, BackendError, "a 100-byte value is not followed by CRLF"),
        (
            b"*9999999999\r\n",
            b"$1\r\nx\r\n" * 1000,
            InvalidBlob,
            "the reply announces an array of 9999999999 elements, more than the 0 expected",
        ),
        (b"x", b"x" * 65536, BackendError, "not a RESP reply: b'x"),
    ],
    ids=["huge-bulk-header", "endless-line", "bulk-without-end", "huge-array", "not-resp"],
)
def test_a_hostile_redis_server_is_refused_quickly_and_cheaply(
    head: bytes, filler: bytes, error: type[BackendError], expected: str
) -> None:
    with Peer(flood(head, filler)) as peer:
        backend = RedisBackend("127.0.0.1", peer.port, name="evil", timeout=10)
        try:
            with allocations() as peak, pytest.raises(error) as refused:
                returns(lambda: backend.get(KEY, 4096))
        finally:
            backend.close()
    assert type(refused.value) is error
    assert str(refused.value).startswith(
        f"redis backend 'evil' (redis://127.0.0.1:{peer.port}/0, prefix 'qss:'): get {KEY!r}: "
        + expected
    )
    assert peak[0] < BOUND


def test_a_hostile_scan_reply_is_refused(tmp_path: Path) -> None:
    with Peer(flood(b"*2\r\n$1\r\n0\r\n*9999999\r\n", b"$4\r\nqss:\r\n" * 1000)) as peer:
        backend = RedisBackend("127.0.0.1", peer.port, name="evil", timeout=10)
        try:
            with allocations() as peak, pytest.raises(BackendError) as refused:
                returns(lambda: list(backend.list("m/")))
        finally:
            backend.close()
    assert "the reply announces an array of 9999999 elements, more than the 100000" in str(
        refused.value
    )
    assert peak[0] < BOUND


def test_a_redis_server_that_trickles_is_cut_off_at_the_deadline() -> None:
    with Peer(trickle(b"$5\r\n", then=b"x")) as peer:
        backend = RedisBackend("127.0.0.1", peer.port, name="slow", timeout=DEADLINE)
        try:
            with pytest.raises(BackendUnavailable) as stalled:
                returns(lambda: backend.get(KEY))
        finally:
            backend.close()
    assert str(stalled.value) == (
        f"redis backend 'slow' (redis://127.0.0.1:{peer.port}/0, prefix 'qss:') is "
        f"unavailable: get {KEY!r}: timed out: no complete reply within {DEADLINE:g} s"
    )


# ---------------------------------------------------------------------------------------------
# Directories: only regular files are blobs, and never more than the limit is read


@pytest.fixture
def directory(tmp_path: Path) -> tuple[DirectoryBackend, Path]:
    root = tmp_path / "blobs"
    root.mkdir()
    return DirectoryBackend(root, name="local"), root


def test_a_huge_file_at_a_key_is_refused_unread(directory: tuple[DirectoryBackend, Path]) -> None:
    backend, root = directory
    backend.put(KEY, b"")
    path = root / KEY
    os.truncate(path, 10 * 1024 * MiB)  # sparse: 10 GiB on no disk at all

    with allocations() as peak, pytest.raises(InvalidBlob) as refused:
        returns(lambda: backend.get(KEY, 4096))
    with pytest.raises(InvalidBlob, match=f"more than the {MAX_BLOB} expected"):
        backend.get(KEY)

    assert str(refused.value) == (
        f"dir backend 'local' ({root}): refusing {KEY!r}: it holds {10 * 1024 * MiB} bytes, more "
        "than the 4096 expected"
    )
    assert peak[0] < BOUND
    assert path.stat().st_size == 10 * 1024 * MiB


def bind_unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # the name stays after the socket is closed


@pytest.mark.parametrize(
    ("plant", "what"),
    [
        (lambda path: os.mkfifo(path), "a FIFO"),
        (lambda path: path.symlink_to("/dev/zero"), "a symlink"),
        (lambda path: bind_unix_socket(path), "a socket"),
    ],
    ids=["fifo", "symlink-to-dev-zero", "unix-socket"],
)
def test_what_is_not_a_regular_file_is_refused_unopened(
    directory: tuple[DirectoryBackend, Path], plant: Callable[[Path], None], what: str
) -> None:
    backend, root = directory
    backend.put(KEY, b"x")
    path = root / KEY
    path.unlink()
    plant(path)
    planted = path.lstat()
    for call in (lambda: backend.get(KEY), lambda: backend.exists(KEY)):
        with pytest.raises(InvalidBlob) as refused:
            returns(call)
        assert str(refused.value) == (
            f"dir backend 'local' ({root}): refusing {KEY!r}: {what} is there, not a blob "
            "(never followed or read)"
        )
    assert list(backend.list()) == []
    assert path.lstat() == planted  # looked at, never opened, changed or followed

    backend.put(KEY, b"mine")  # replaces the name itself, whatever it is
    assert backend.get(KEY) == b"mine"
    assert path.is_file()
    assert not path.is_symlink()


def test_a_put_replaces_an_empty_directory_but_not_one_holding_blobs(
    directory: tuple[DirectoryBackend, Path],
) -> None:
    backend, root = directory
    (root / KEY).mkdir(parents=True)
    backend.put(KEY, b"blob")
    assert backend.get(KEY) == b"blob"

    backend.put("m/a/b", b"deeper")
    with pytest.raises(BackendError, match=r"cannot put 'm/a': a directory of longer keys"):
        backend.put("m/a", b"x")
    assert sorted(backend.list()) == sorted([KEY, "m/a/b"])
    assert backend.get("m/a/b") == b"deeper"


def test_a_store_reads_and_scrubs_past_a_fifo_without_hanging(tmp_path: Path) -> None:
    six = Cluster.of_directories(tmp_path / "backends", [f"b{i}" for i in range(6)])
    key = secrets.token_bytes(32)
    data = payload(SEGMENT + 1)
    manifest = put_bytes(six.store(), tmp_path / "staging", data, key, k=4, n=6)
    path = six.root("b0") / share_key(manifest, 0, 0)
    path.unlink()
    os.mkfifo(path)
    store = Store(six.backends)

    health = returns(lambda: store.scrub(manifest.object_id))
    read, _ = returns(lambda: get_bytes(store, manifest.object_id, key, tmp_path / "out"))

    assert [(s.share, s.status) for s in health.shares if s.status is not ShareStatus.HEALTHY] == [
        (0, ShareStatus.CORRUPT)
    ]
    assert read == data


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_https_backend_completes_its_handshake_within_the_deadline(tmp_path: Path) -> None:
    """The deadline-bound TLS handshake against a real TLS server: blobs go and come back."""
    cert, key = self_signed(tmp_path)
    served = DirectoryBackend(tmp_path / "served", name="served", create=True)
    with BlobServer(served) as server:
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)
        assert server._running is not None
        listener = server._running.server
        listener.socket = server_tls.wrap_socket(listener.socket, server_side=True)
        client_tls = ssl.create_default_context(cafile=str(cert))
        backend = HttpBackend(
            f"https://127.0.0.1:{server.port}", name="tls", timeout=10, ssl_context=client_tls
        )
        try:
            backend.put(KEY, b"over tls")
            assert returns(lambda: backend.get(KEY)) == b"over tls"
        finally:
            backend.close()
    assert served.get(KEY) == b"over tls"
