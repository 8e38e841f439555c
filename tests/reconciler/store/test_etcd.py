"""What only the etcd backend has: endpoints that cannot be reached, failover between them,
and gateways that answer badly. An etcd is untrusted like any store: whatever it sends, the
client returns a StoreError in bounded time, never a traceback, never a hang."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from reconciler.store import (
    Compacted,
    EtcdStore,
    Event,
    InvalidReply,
    StoreError,
    StoreUnavailable,
    Watch,
    etcd_watch,
    open_store,
)
from tests.reconciler.store.conftest import EtcdServer, free_port

GENEROUS = 15.0  # seconds: "completes", not a timing claim


def test_an_unreachable_etcd_is_one_clear_line_at_once() -> None:
    port = free_port()
    url = f"etcd://127.0.0.1:{port}"
    started = time.monotonic()
    with open_store(url) as store:
        calls: list[Callable[[], object]] = [
            lambda: store.put("a", b"1"),
            lambda: store.range("a"),
            lambda: store.grant(5),
            lambda: store.watch("a", 1).poll(GENEROUS),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as raised:
                call()
            assert str(raised.value) == f"{url}: cannot connect: connection refused"
    assert time.monotonic() - started < GENEROUS


def test_every_endpoint_is_named_when_none_answers() -> None:
    ports = free_port(), free_port()
    url = f"etcd://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    with open_store(url) as store, pytest.raises(StoreUnavailable) as raised:
        store.revision()
    assert str(raised.value) == (
        f"{url}: cannot connect: 127.0.0.1:{ports[0]}: connection refused; "
        f"127.0.0.1:{ports[1]}: connection refused"
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port: int = listener.getsockname()[1]
        yield port


def test_a_silent_etcd_is_cut_off_at_the_deadline(silent_port: int) -> None:
    started = time.monotonic()
    with EtcdStore([("127.0.0.1", silent_port)], timeout=0.5) as store:
        with pytest.raises(StoreUnavailable, match=r": range: no answer within 0\.5 s$"):
            store.range("a")
        with pytest.raises(StoreUnavailable, match=r"no answer .* may or may not have been"):
            store.put("a", b"1")
        with pytest.raises(StoreUnavailable, match=r"no answer within 0\.5 s"):
            store.watch("a", 1).poll(GENEROUS)
    assert time.monotonic() - started < GENEROUS


def test_calls_fail_over_to_the_endpoint_that_answers(etcd_server: EtcdServer) -> None:
    dead = free_port()
    url = f"etcd://127.0.0.1:{dead},{etcd_server.host}:{etcd_server.port}"
    with open_store(url) as store:
        revision = store.put("failover/a", b"1").revision
        kv = store.get("failover/a")
        assert kv is not None
        assert kv.mod_revision == revision
        with store.watch("failover/", revision) as watch:
            (event,) = watch.poll(GENEROUS)
        assert event.key == "failover/a"
        store.delete("failover/", prefix=True)


# -- hostile gateways -----------------------------------------------------------------------

Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def gateway() -> Iterator[Callable[[Reply], EtcdStore]]:
    """A fake gateway on a free port answering every POST with the reply it is given."""
    servers: list[http.server.ThreadingHTTPServer] = []
    stores: list[EtcdStore] = []

    def serve(reply: Reply) -> EtcdStore:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with contextlib.suppress(OSError):  # the client hung up: as these tests want
                    reply(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        store = EtcdStore([("127.0.0.1", server.server_address[1])], timeout=1)
        stores.append(store)
        return store

    yield serve
    for store in stores:
        store.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def body(status: int, data: bytes, *, length: int | None = None) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data) if length is None else length))
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.05)


HEADER = b'"header":{"revision":"5"}'


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (body(200, b"<html>proxy</html>"), InvalidReply, "not JSON"),
        (body(200, b"[" * 100_000), InvalidReply, "not JSON"),
        (body(200, b"[1, 2]"), InvalidReply, "not a JSON object"),
        (body(200, b"{}"), InvalidReply, "a header without a revision"),
        (body(200, b'{"header":{"revision":"x5"}}'), InvalidReply, "revision is not an integer"),
        (body(200, b"{" + HEADER + b',"kvs":[{"key":"!!"}],"count":"1"}'), InvalidReply, "base64"),
        (body(200, b"{" + HEADER + b',"kvs":[{"key":"/w=="}],"count":"1"}'), InvalidReply, "UTF-8"),
        (
            body(200, b"{" + HEADER + b',"kvs":[{"key":"YQ=="}],"count":"0"}'),
            InvalidReply,
            "counts",
        ),
        (body(200, b"{" + HEADER + b',"kvs":"many"}'), InvalidReply, "kvs is not a list"),
        (body(200, b"x" * 100, length=100 * 1024 * 1024), InvalidReply, "over the limit"),
        (body(503, b"overloaded"), StoreUnavailable, "overloaded"),
        (body(500, b'{"error":"x","code":13,"message":"boom"}'), StoreUnavailable, "boom"),
        (body(403, b'{"error":"x","code":7,"message":"no"}'), StoreError, "no"),
        (trickle, StoreUnavailable, r"no answer within 1 s"),
    ],
    ids=[
        "html",
        "deep-nesting",
        "a-list",
        "no-header",
        "bad-revision",
        "bad-base64",
        "key-not-utf8",
        "count-too-small",
        "kvs-not-a-list",
        "huge-body",
        "http-503",
        "grpc-internal",
        "permission-denied",
        "trickle",
    ],
)
def test_a_bad_gateway_reply_is_a_store_error_in_bounded_time(
    gateway: Callable[[Reply], EtcdStore],
    reply: Reply,
    error: type[StoreError],
    message: str,
) -> None:
    store = gateway(reply)
    started = time.monotonic()
    with pytest.raises(error, match=message) as raised:
        store.range("a")
    assert str(raised.value).startswith(store.url)
    assert time.monotonic() - started < GENEROUS


def stream(lines: list[bytes]) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for line in lines:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            handler.wfile.flush()
        time.sleep(5)  # then nothing more: the watch must not wait for it

    return reply


CREATED = b'{"result":{"header":{"revision":"5"},"created":true}}\n'


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b'{"result":{"header":{"revision":"5"}}}\n'], "was not created"),
        ([CREATED, b"not json\n"], "not JSON"),
        ([CREATED, b'{"result":{"events":[{"type":"EXPLODE","kv":{}}]}}\n'], "unknown type"),
        ([CREATED, b'{"result":{"events":{}}}\n'], "events is not a list"),
        ([CREATED, b'{"error":{"grpc_code":14,"message":"leader lost"}}\n'], "leader lost"),
        ([CREATED, b'{"result":{"canceled":true,"cancel_reason":"auth"}}\n'], "canceled"),
        ([CREATED, b"x" * 2048 + b"\n"], "over 1024 bytes"),
    ],
    ids=["not-created", "not-json", "bad-event", "events-not-list", "error", "cancel", "long"],
)
def test_a_bad_watch_stream_is_a_store_error(
    gateway: Callable[[Reply], EtcdStore],
    monkeypatch: pytest.MonkeyPatch,
    lines: list[bytes],
    message: str,
) -> None:
    monkeypatch.setattr(etcd_watch, "MAX_LINE", 1024)
    store = gateway(stream(lines))
    started = time.monotonic()
    with store.watch("a", 3) as watch, pytest.raises(StoreError, match=message):
        watch.poll(GENEROUS)
    assert time.monotonic() - started < GENEROUS


# -- watch sessions -------------------------------------------------------------------------


def poll_for(watch: Watch, events: list[Event]) -> None:
    """Collect events for a generous while (or until the watch raises)."""
    deadline = time.monotonic() + GENEROUS
    while time.monotonic() < deadline:
        events.extend(watch.poll(0.5))


def test_a_watch_goes_on_across_sessions_without_gaps_or_repeats(etcd_server: EtcdServer) -> None:
    with EtcdStore([(etcd_server.host, etcd_server.port)], watch_resync=0.2) as store:
        start = store.revision() + 1
        written: list[int] = []
        with store.watch("sessions/", start) as watch:
            seen: list[Event] = []
            for i in range(12):  # about a second of writes: several sessions
                written.append(store.put(f"sessions/{i % 3}", str(i).encode()).revision)
                seen.extend(watch.poll(0.1))
            deadline = time.monotonic() + GENEROUS
            while watch.next_revision <= written[-1] and time.monotonic() < deadline:
                seen.extend(watch.poll(0.5))
        store.delete("sessions/", prefix=True)
    assert [event.revision for event in seen] == written


def test_a_compaction_during_a_catching_up_session_reports_compacted(
    etcd_server: EtcdServer,
) -> None:
    """etcd 3.4 may drop events when it compacts while a watch catches up, without saying
    so: after such a session the watch checks its start is still readable."""
    with EtcdStore([(etcd_server.host, etcd_server.port)], watch_resync=0.5) as store:
        start = store.revision() + 1
        for i in range(5):
            store.put(f"catchup/{i}", b"x")
        with store.watch("catchup/", start) as watch:  # starts behind: it catches up
            events = list(watch.poll(GENEROUS))
            store.compact(store.revision())
            with pytest.raises(Compacted) as raised:
                poll_for(watch, events)
        assert "while catching up: re-list" in str(raised.value)
        assert raised.value.compact_revision == start + 4
        assert [event.key for event in events] == [f"catchup/{i}" for i in range(5)]
        store.delete("catchup/", prefix=True)
