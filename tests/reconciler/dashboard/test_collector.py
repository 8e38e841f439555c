"""The dashboard over a real circle repository and a real SQLite store, called in-process: a
node's GPUs as NVML reports them (FakeNvml stands in for the driver: no GPU here) show on the
Nodes page and its JSON twin; a record no admitted node signed is counted, never shown; a
store that breaks leaves the last reading on the page, saying since when; a repository that
is no circle is refused before anything is served."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.dashboard.app import make_app
from reconciler.dashboard.collect import Collector, Sources
from reconciler.node.identity import NodeKey
from reconciler.node.inventory import read_inventory
from reconciler.node.layout import Layout
from reconciler.node.records import Registration, ShareState, VolumeStatus, sign_record
from reconciler.plan.inputs import CommitId, NodeName
from reconciler.store import open_store
from tests.conftest import Result
from tests.reconciler.node.fake_nvml import GIB, FakeGpu, FakeNvml
from tests.reconciler.node.world import World, make_world

HOSTS = {"127.0.0.1:7480"}


def call(app: Any, path: str, query: str = "") -> tuple[int, dict[str, str], str]:
    """One GET through the whole ASGI application, Guard included."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "headers": [(b"host", b"127.0.0.1:7480")],
        "scheme": "http", "server": ("127.0.0.1", 7480), "client": ("127.0.0.1", 5000),
        "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body.decode()


def register(world: World, name: str, nvml: FakeNvml, tmp_path: Path) -> None:
    """What node `name`'s agent writes when it registers, signed with its key."""
    intro = json.loads(world.intro.read_text())
    record = Registration(
        node=NodeName(name), circle=intro["circle"], failure_domain="site-dubai",
        address="http://127.0.0.1:7400", inventory=read_inventory(tmp_path, nvml),
        commit=CommitId(intro["commit"]), seq=1, started_at=1_700_000_000,
        heartbeat_at=1_700_000_000, agent="0.1.0",
    )  # fmt: skip
    with open_store(world.store()) as store:
        lease = store.grant(600)
        key = NodeKey.load(world.node_key(name))
        store.put(Layout(intro["circle"]).node(name), sign_record(key, name, record), lease=lease)


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    return make_world(tmp_path / "world", circle)


def test_gpus_show_on_the_nodes_page_as_nvml_reports_them(world: World, tmp_path: Path) -> None:
    busy = FakeGpu("GPU-11111111-aaaa", "NVIDIA H100", memory_used=5 * GIB, utilization=80)
    faulty = FakeGpu("GPU-22222222-bbbb", retired_pages_pending=True)
    register(world, "node-c", FakeNvml((busy, faulty)), tmp_path)
    collector = Collector(Sources(world.store(), world.circle))
    collector.refresh()
    app = make_app(collector, token=None, hosts=HOSTS)

    status, _, body = call(app, "/api/nodes")
    assert status == 200
    node_c = next(n for n in json.loads(body)["nodes"] if n["name"] == "node-c")
    assert node_c["status"] == "Ready"
    assert node_c["gpus"] == [
        {"uuid": busy.uuid, "model": "NVIDIA H100", "memory": 24 * GIB, "memoryUsed": 5 * GIB,
         "utilization": 80, "healthy": True},
        {"uuid": faulty.uuid, "model": "NVIDIA L4", "memory": 24 * GIB, "memoryUsed": 0,
         "utilization": 0, "healthy": False},
    ]  # fmt: skip

    status, _, page = call(app, "/nodes")
    assert status == 200
    assert f"<code>{busy.uuid}</code> NVIDIA H100 · 5Gi / 24Gi · 80% · healthy" in page
    assert f'<div class="gpu bad"><code>{faulty.uuid}</code>' in page
    assert page.count('class="down"') == 2  # node-a and node-b never registered
    assert "never seen" in page


def test_a_record_no_admitted_node_signed_is_counted_not_shown(
    world: World, tmp_path: Path
) -> None:
    intro = json.loads(world.intro.read_text())
    stranger = NodeKey(Ed25519PrivateKey.generate())
    record = Registration(
        node=NodeName("node-a"), circle=intro["circle"], failure_domain="site-ghent",
        address=None, inventory=read_inventory(tmp_path, FakeNvml(())),
        commit=CommitId(intro["commit"]), seq=1, started_at=1, heartbeat_at=1, agent="0.1.0",
    )  # fmt: skip
    with open_store(world.store()) as store:
        store.put(Layout(intro["circle"]).node("node-a"), sign_record(stranger, "node-a", record))
    collector = Collector(Sources(world.store(), world.circle))
    collector.refresh()
    app = make_app(collector, token=None, hosts=HOSTS)
    nodes = json.loads(call(app, "/api/nodes")[2])
    assert nodes["unverified"] == 1
    assert {n["name"]: n["status"] for n in nodes["nodes"]}["node-a"] == "NotReady"
    assert "1 record(s) in the store did not verify" in call(app, "/")[2]


def test_volume_scrubs_show_in_circle_get_and_on_the_page(
    world: World, circle: Callable[..., Result]
) -> None:
    intro = json.loads(world.intro.read_text())
    layout = Layout(intro["circle"])
    object_id = "0520c81f" + "ab" * 28
    scrub = VolumeStatus(
        node=NodeName("node-c"), volume="model-data", object=object_id,
        name="langid-model.json", k=4, n=6,
        shares=tuple(ShareState(i, f"b{i}", f"site-{'abc'[i // 2]}",
                                "missing" if i == 0 else "healthy") for i in range(6)),
        margin=1, scrubbed_at=1_700_000_000, repairs=2, repaired_at=1_699_999_990,
    )  # fmt: skip
    forged = replace(scrub, volume="model-data", name="planted by node-a")
    with open_store(world.store()) as store:
        node_c = NodeKey.load(world.node_key("node-c"))
        store.put(layout.volume("model-data", object_id), sign_record(node_c, "node-c", scrub))
        # signed by an admitted node, but under another object's key: not believed
        other = "ff" * 32
        store.put(layout.volume("model-data", other), sign_record(node_c, "node-c", forged))

    store = ("--repo", str(world.circle), "--store", world.store())
    done = circle("get", "volumes", *store, "-o", "json")
    assert done.code == 0, done.stderr
    table = json.loads(done.stdout)
    assert table["unverified"] == 1
    (volume,) = table["volumes"]
    (found,) = volume["objects"]
    assert (found["status"], found["healthy"], found["margin"], found["repairs"]) == (
        "Degraded", 5, 1, 2)  # fmt: skip
    assert found["failureDomains"]["site-a"] == {"shares": 2, "healthy": 1, "marginIfLost": 0}
    text = circle("get", "volumes", *store)
    assert text.code == 0
    header, row = text.stdout.splitlines()
    assert header.split() == ["VOLUME", "OBJECT", "STATUS", "SHARES", "MARGIN", "REPAIRS",
                              "SCRUBBED"]  # fmt: skip
    assert row.split()[:6] == ["model-data", "langid-model.json", "Degraded", "5/6", "1", "2"]
    assert "did not verify" in text.stderr

    collector = Collector(Sources(world.store(), world.circle))
    collector.refresh()
    app = make_app(collector, token=None, hosts=HOSTS)
    assert json.loads(call(app, "/api/volumes")[2]) == table
    page = call(app, "/volumes")[2]
    assert "planted" not in page
    assert "5/6 (k=4)" in page
    assert "site-a: 1/2, 0" in page


def test_a_broken_store_leaves_the_last_reading_saying_since_when(world: World) -> None:
    moments = iter([1_800_000_000.0, 1_800_000_042.0, 1_800_000_050.0])
    collector = Collector(Sources(world.store(), world.circle), clock=lambda: next(moments))
    collector.refresh()
    app = make_app(collector, token=None, hosts=HOSTS)
    before = json.loads(call(app, "/api/nodes")[2])
    assert "stale" not in before

    collector.stop()  # its store closed: the next reading opens it again
    store_file = Path(world.store().removeprefix("sqlite:"))
    for leftover in store_file.parent.glob("state.db-*"):
        leftover.unlink()
    store_file.write_bytes(b"this is no longer a database" * 100)
    collector.refresh()
    collector.refresh()
    after = json.loads(call(app, "/api/nodes")[2])
    assert after["nodes"] == before["nodes"]  # the last reading, kept
    assert after["stale"]["since"] == 1_800_000_042  # the first failure, not the last
    assert after["stale"]["message"]
    status, _, page = call(app, "/nodes")
    assert status == 200
    assert 'id="stale"' in page
    assert "Showing what was read" in page


def test_before_the_first_reading_pages_say_so(world: World) -> None:
    collector = Collector(Sources("etcd://127.0.0.1:9", world.circle))  # nothing listens there
    collector.refresh()
    app = make_app(collector, token=None, hosts=HOSTS)
    assert call(app, "/nodes")[0] == 503
    status, _, body = call(app, "/api/nodes")
    assert (status, json.loads(body)) == (
        503,
        {"error": "the dashboard is still reading the circle"},
    )


def test_a_folder_that_is_no_circle_is_refused_before_serving(
    tmp_path: Path, circle: Callable[..., Result]
) -> None:
    done = circle("dashboard", "--repo", str(tmp_path), "--store", f"sqlite:{tmp_path / 's.db'}")
    assert done.code == 2
    assert "not a circle repository" in done.stderr
    assert not (tmp_path / "s.db").exists()
