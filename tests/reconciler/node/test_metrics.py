"""The load of autoscaled replicas, measured on the node: Prometheus text read exactly (pure),
and a real replica's request rate (from its own endpoint, inside its network namespace) and
CPU (from its control group) measured by the `Meter`, while hostile endpoints cost nothing."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from reconciler.node import metrics
from reconciler.node.metrics import Meter, Target, parse_series
from reconciler.node.records import Phase
from tests.reconciler.node.runtime_world import runtime_world

TEXT = """\
# HELP langid_predictions_total Predictions answered, by language.
# TYPE langid_predictions_total counter
langid_predictions_total{language="de"} 12
langid_predictions_total{language="fr",le="x y"} 3.5
langid_predictions_total_created 1.7e9
langid_predictions 99
langid_predictions_total{language="nl"} NaN
langid_predictions_total{broken 7
queue_depth 4 1700000000000
"""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("langid_predictions_total", 15.5),  # summed over labels; NaN and broken lines skipped
        ("langid_predictions", 99.0),  # a prefix of another series is not that series
        ("queue_depth", 4.0),  # a timestamp after the value is not the value
        ("absent", None),
    ],
    ids=["counter", "prefix", "timestamp", "absent"],
)
def test_parse_series(name: str, expected: float | None) -> None:
    assert parse_series(TEXT, name) == expected


SERVER = """\
import http.server, threading, time
count = 0
lock = threading.Lock()
def burn():
    while True:
        pass
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        if self.path == "/work":
            with lock:
                count += 1
            body = b"ok"
        elif self.path == "/burn":
            threading.Thread(target=burn, daemon=True).start()
            body = b"burning"
        elif self.path == "/metrics":
            body = f"requests_total {count}\\n".encode()
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


def test_a_replicas_request_rate_and_cpu_are_measured(tmp_path: Path) -> None:
    with runtime_world(tmp_path) as world:
        digest = world.artifact({"main.py": SERVER})
        work = world.run(
            "web", digest, ["python3", "/artifact/main.py"], cpu=500,
            ports=[{"name": "http", "port": 8080}],
            health={"http": {"path": "/healthz", "port": 8080}, "interval": "1s"},
        )  # fmt: skip
        status = world.wait_status("web", phase=Phase.READY)
        address = status.endpoints[0].split("=")[1]
        clock = [100.0]
        meter = Meter(dict, lambda: None, clock=lambda: clock[0])

        def target(metric: str) -> Target:
            return Target(
                key=("web", 0, 1), metric=metric, cpu=500, memory=work.assignment.memory,
                gpus=(), group=world.runtime.group("web", 0),
                sandbox_pid=world.runtime.sandbox_pid("web", 0),
                port=8080, path="/metrics", series="requests_total",
            )  # fmt: skip

        meter.watch([target("requests-per-second")])
        meter.measure_all()
        assert meter.load(("web", 0, 1)) is None  # a rate needs two samples
        for _ in range(30):
            urllib.request.urlopen(f"http://{address}/work", timeout=5).read()
        clock[0] += 10.0
        meter.measure_all()
        assert meter.load(("web", 0, 1)) == pytest.approx(3.0)  # 30 requests in 10 s

        meter.watch([target("memory")])
        meter.measure_all()
        memory = meter.load(("web", 0, 1))
        assert memory is not None
        assert 0 < memory < 100  # percent of the 64 MiB request

        meter.watch([target("cpu")])
        meter.measure_all()
        urllib.request.urlopen(f"http://{address}/burn", timeout=5).read()
        started = time.monotonic()
        time.sleep(2)
        clock[0] += time.monotonic() - started
        meter.measure_all()
        cpu = meter.load(("web", 0, 1))
        assert cpu is not None
        # a busy thread, capped by the 500m quota: about 100% of its request
        assert 60 < cpu < 130, cpu
        meter.stop()


def test_an_endpoint_that_floods_or_stalls_costs_only_its_measurement(tmp_path: Path) -> None:
    flood = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8080)); s.listen()\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n')\n"
        "    try:\n"
        "        while True: c.sendall(b'requests_total 1\\n' * 4096)\n"
        "    except OSError: c.close()\n"
    )
    stall = (
        "import socket, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8080)); s.listen()\n"
        "held = []\n"
        "while True:\n"
        "    c, _ = s.accept(); held.append(c); c.sendall(b'HTTP/1.0 200 OK\\r\\n')\n"
    )
    with runtime_world(tmp_path) as world:
        for name, program in (("flood", flood), ("stall", stall)):
            digest = world.artifact({"main.py": program})
            world.run(name, digest, ["python3", "/artifact/main.py"],
                      ports=[{"name": "http", "port": 8080}])  # fmt: skip
            world.wait_status(name, phase=Phase.READY)
        time.sleep(0.5)  # both listening
        meter = Meter(dict, lambda: None)
        meter.watch([
            Target((name, 0, 1), "gauge", 500, 1, (), world.runtime.group(name, 0),
                   world.runtime.sandbox_pid(name, 0), 8080, "/metrics", "requests_total")
            for name in ("flood", "stall")
        ])  # fmt: skip
        started = time.monotonic()
        meter.measure_all()
        took = time.monotonic() - started
        assert meter.load(("flood", 0, 1)) is None  # past MAX_SCRAPE: refused, not read on
        assert meter.load(("stall", 0, 1)) is None
        assert took < 2 * metrics.SCRAPE_TIMEOUT + 2  # each within its own deadline
        meter.stop()
