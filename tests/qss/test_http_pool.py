"""The pooled HTTP client keeps no connection once it is closed: a request that finishes after
`close()` closes its own connection instead of parking it in a pool nobody will close."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from qss.http_client import HttpPool

ARRIVED = threading.Event()


class _Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        ARRIVED.set()
        time.sleep(0.3)
        body = b"done"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    served = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


def test_a_request_that_ends_after_close_closes_its_connection(
    server: http.server.ThreadingHTTPServer,
) -> None:
    pool = HttpPool("http", "127.0.0.1", server.server_address[1], timeout=10)
    assert pool.request("GET", "/", limit=100).body == b"done"
    assert pool.idle == 1  # kept for the next request
    replies = []
    ARRIVED.clear()
    request = threading.Thread(target=lambda: replies.append(pool.request("GET", "/", limit=100)))
    request.start()
    assert ARRIVED.wait(10)  # the request is in flight, waiting for its slow answer
    pool.close()
    request.join(10)
    assert [reply.body for reply in replies] == [b"done"]
    assert pool.idle == 0
