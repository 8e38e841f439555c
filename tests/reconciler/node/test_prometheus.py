"""Every node agent's Prometheus metrics at /metrics on its address: the pure pieces (facts in,
families out; what the leader alone exports), the pieces that measure (the timed state store,
chunk bytes by origin, the chunk server's pages), and three real `circle node run` processes
running the example service, scraped over HTTP and checked against the store, the inventory
they registered and `promtool check metrics`."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import pynvml  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families

from builders.chunks import ChunkError, ChunkStore
from builders.http_chunks import ChunkServer
from builders.manifest import decode
from builders.materialize import materialize
from builders.tree import TreeBuild, build_tree
from qss.keys import generate_key_file, read_key_file
from reconciler import wiring
from reconciler.desired.folder import check_circle_dir
from reconciler.node import view
from reconciler.node.inventory import read_inventory
from reconciler.node.leader import Observed
from reconciler.node.prometheus import ORIGINS, AgentMetrics, NodeFacts, circle_facts
from reconciler.node.records import AssignmentStatus, GpuInfo, Inventory, Phase
from reconciler.plan import (
    ArtifactDigest,
    Assignment,
    CommitId,
    GpuUuid,
    NodeName,
    Readiness,
    ReadyState,
    WorkloadName,
)
from reconciler.store import LeaseId, LeaseNotFound, Put, SqliteStore, open_store
from tests.browser import promtool_check_metrics
from tests.conftest import EXAMPLE, Result
from tests.reconciler.node.fake_nvml import GIB, FakeGpu, FakeNvml
from tests.reconciler.node.runtime_world import needs_sandbox
from tests.reconciler.node.world import (
    NODES,
    World,
    make_world,
    release,
    run_agent,
    stop_agents,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
GPU = GpuUuid("GPU-6f1c0c3e-2b1d-4c8e-9a51-0d8c2b7e1a40")


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def rendered(metrics: AgentMetrics) -> str:
    content_type, body = metrics.page()
    assert content_type.startswith("text/plain")
    return body.decode()


def assignment(
    slot: int, node: str, *, cpu: int = 500, gpus: tuple[GpuUuid, ...] = ()
) -> Assignment:
    return Assignment(
        workload=WorkloadName("langid"),
        slot=slot,
        node=NodeName(node),
        commit=CommitId("c0" * 20),
        seq=1,
        digest=ArtifactDigest("sha256:" + "ab" * 32),
        cpu=cpu,
        memory=256 << 20,
        gpus=gpus,
        epoch=7,
    )


def status(slot: int, phase: Phase, restarts: int = 0) -> AssignmentStatus:
    return AssignmentStatus(
        node=NodeName("node-a"),
        workload=WorkloadName("langid"),
        slot=slot,
        seq=1,
        phase=phase,
        reason=phase.value,
        message="",
        commit=CommitId("c0" * 20),
        observed_at=0,
        restarts=restarts,
    )


FACTS = NodeFacts(
    node="node-a",
    circle="example",
    version="9.9",
    applied_seq=4,
    inventory=Inventory(
        cpu=8000,
        memory=32 << 30,
        disk=500 << 30,
        gpus=(GpuInfo(GPU, "NVIDIA L4", 24 << 30, True, utilization=37, memory_used=3 << 30),),
    ),
    accepted=(assignment(0, "node-a", gpus=(GPU,)), assignment(1, "node-a", cpu=250)),
    reported=(
        status(0, Phase.READY, restarts=3),
        status(1, Phase.PENDING),
        status(2, Phase.REFUSED),
    ),
    workloads=("langid",),
)


# -- pure pieces ---------------------------------------------------------------------------------


def test_a_node_says_what_it_offers_holds_and_runs() -> None:
    metrics = AgentMetrics()
    metrics.node = FACTS
    found = parse(rendered(metrics))
    info = {"node": "node-a", "circle": "example", "version": "9.9"}
    assert value(found, "circle_agent_info", **info) == 1
    assert value(found, "circle_agent_leader") == 0
    assert value(found, "circle_chain_applied_seq") == 4
    assert value(found, "circle_node_capacity_cpu_cores") == 8
    assert value(found, "circle_node_capacity_memory_bytes") == 32 << 30
    assert value(found, "circle_node_capacity_gpus") == 1
    assert value(found, "circle_node_allocated_cpu_cores") == 0.75
    assert value(found, "circle_node_allocated_memory_bytes") == 512 << 20
    assert value(found, "circle_node_allocated_gpus") == 1
    gpu = {"uuid": GPU, "model": "NVIDIA L4"}
    assert value(found, "circle_gpu_utilization_ratio", **gpu) == 0.37
    assert value(found, "circle_gpu_memory_used_bytes", **gpu) == 3 << 30
    assert value(found, "circle_gpu_memory_total_bytes", **gpu) == 24 << 30
    assert value(found, "circle_gpu_healthy", **gpu) == 1
    assert value(found, "circle_gpu_allocated", **gpu) == 1
    phases = {
        p.value: value(found, "circle_node_replicas", workload="langid", phase=p.value)
        for p in Phase
    }
    assert phases == {
        "Accepted": 0,
        "Refused": 1,
        "Pending": 1,
        "Running": 0,
        "Ready": 1,
        "Failed": 0,
    }
    restarts = {
        labels: v for (name, labels), v in found.items() if name == "circle_replica_restarts_total"
    }
    assert restarts == {  # a refused assignment never ran: no restarts series
        frozenset({("workload", "langid"), ("slot", "0")}): 3,
        frozenset({("workload", "langid"), ("slot", "1")}): 0,
    }
    assert "process_resident_memory_bytes" in names(found)


def test_gpus_measured_through_nvml_are_labelled_by_uuid_and_model(tmp_path: Path) -> None:
    busy = FakeGpu("GPU-11111111-aaaa", "NVIDIA H100", memory_used=5 * GIB, utilization=80)
    faulty = FakeGpu("GPU-22222222-bbbb", retired_pages_pending=True)
    quiet = FakeGpu(
        "GPU-33333333-cccc",
        failing={"nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_NOT_SUPPORTED},
    )
    metrics = AgentMetrics()
    metrics.node = NodeFacts(inventory=read_inventory(tmp_path, FakeNvml((busy, faulty, quiet))))
    found = parse(rendered(metrics))
    h100 = {"uuid": busy.uuid, "model": "NVIDIA H100"}
    assert value(found, "circle_gpu_utilization_ratio", **h100) == 0.8
    assert value(found, "circle_gpu_memory_used_bytes", **h100) == 5 * GIB
    assert value(found, "circle_gpu_memory_total_bytes", **h100) == 24 * GIB
    assert value(found, "circle_gpu_healthy", **h100) == 1
    assert value(found, "circle_gpu_healthy", uuid=faulty.uuid, model="NVIDIA L4") == 0
    assert value(found, "circle_gpu_utilization_ratio", uuid=quiet.uuid, model="NVIDIA L4") is None
    assert value(found, "circle_gpu_healthy", uuid=quiet.uuid, model="NVIDIA L4") == 1
    assert value(found, "circle_node_capacity_gpus") == 3


def test_before_its_first_pass_an_agent_exports_no_made_up_values() -> None:
    found = parse(rendered(AgentMetrics()))
    assert value(found, "circle_agent_info", node="", circle="", version="") == 1
    assert "circle_chain_applied_seq" not in names(found)
    assert "circle_node_capacity_cpu_cores" not in names(found)
    assert value(found, "circle_node_allocated_cpu_cores") == 0


def test_only_the_leader_exports_the_circle_and_the_planner() -> None:
    metrics = AgentMetrics()
    metrics.circle = circle_facts(
        check_circle_dir(EXAMPLE).state,
        Observed(
            registrations={},
            assignments={
                a.key: ("k", a) for a in (assignment(0, "node-a"), assignment(1, "node-b"))
            },
            readiness={
                assignment(0, "node-a").key: Readiness(ReadyState.READY, 0),
                assignment(1, "node-b").key: Readiness(ReadyState.UNKNOWN, 0),
                assignment(2, "node-c").key: Readiness(ReadyState.READY, 0),  # no assignment
            },
            forged=(),
        ),
        {"langid": 3},  # the autoscaler's decision
    )
    with metrics.planner.time():
        pass
    metrics.node = FACTS
    follower = names(parse(rendered(metrics)))
    assert not {n for n in follower if n.startswith(("circle_planner", "circle_workload"))}
    metrics.node = NodeFacts(leader=True)
    found = parse(rendered(metrics))
    assert value(found, "circle_agent_leader") == 1
    assert value(found, "circle_planner_duration_seconds_count") == 1
    assert value(found, "circle_workload_replicas_desired", workload="langid") == 3
    assert value(found, "circle_workload_replicas_ready", workload="langid") == 1


def test_the_state_store_is_timed_by_operation_and_its_failures_counted(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    with metrics.timed(SqliteStore(str(tmp_path / "state.db"))) as store:
        store.put("/a", b"1")
        assert store.get("/a") is not None
        store.txn([], [Put("/b", b"2")])
        with pytest.raises(LeaseNotFound):
            store.keep_alive(LeaseId(12345))
    found = parse(rendered(metrics))
    for operation in ("put", "get", "txn", "keep_alive"):
        count = "circle_store_request_duration_seconds_count"
        assert value(found, count, operation=operation) == 1, operation
    assert value(found, "circle_store_errors_total", operation="keep_alive") == 1
    assert value(found, "circle_store_errors_total", operation="put") is None


def test_materialize_says_where_each_chunk_came_from(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a" * 5000)
    (folder / "b.bin").write_bytes(b"b" * 3000)
    source = ChunkStore(tmp_path / "source")
    manifest = build_tree(TreeBuild(folder), source)
    size = sum(chunk.size for entry in manifest.files() for chunk in entry.chunks)
    local = ChunkStore(tmp_path / "local")
    came: list[tuple[object, int]] = []

    def run(root: str) -> None:
        materialize(
            manifest.artifact_id, manifest.encode(), sources=[local, source], store=local,
            artifacts_root=tmp_path / root, on_chunk=lambda s, n: came.append((s, n)),
        )  # fmt: skip

    run("first")
    assert {s for s, _ in came} == {source}
    assert sum(n for _, n in came) == size
    came.clear()
    run("second")  # another folder: every chunk is in the local store already
    assert {s for s, _ in came} == {local}
    assert sum(n for _, n in came) == size


def test_a_chunk_server_serves_its_owners_pages_within_its_limits(tmp_path: Path) -> None:
    def broken() -> tuple[str, bytes]:
        raise RuntimeError("no page today")

    pages = {"/metrics": lambda: ("text/plain; version=0.0.4", b"up 1\n"), "/broken": broken}
    with ChunkServer(ChunkStore(tmp_path / "chunks"), pages=pages) as server:
        parts = urlsplit(server.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        for method, path, status, body in (
            ("GET", "/metrics", 200, b"up 1\n"),
            ("HEAD", "/metrics", 200, b""),
            ("GET", "/broken", 500, b"internal error\n"),
            ("GET", "/metrics?x=1", 200, b"up 1\n"),
            ("GET", "/chunks/" + "0" * 64, 404, None),  # the store's routes are as they were
            ("GET", "/other", 404, None),
        ):
            connection.request(method, path)
            reply = connection.getresponse()
            got = reply.read()
            assert reply.status == status, (method, path)
            if body is not None:
                assert got == body, (method, path)
            if path == "/metrics":
                assert reply.getheader("Content-Type") == "text/plain; version=0.0.4"
        connection.close()
    for path in ("/chunks/x", "/manifests/", "metrics", "/a b"):
        with pytest.raises(ChunkError, match="page"):
            ChunkServer(ChunkStore(tmp_path / "chunks"), pages={path: broken})


def test_promtool_finds_no_problem_in_a_full_page() -> None:
    metrics = AgentMetrics()
    metrics.node = FACTS
    metrics.health_checked("langid", 0.02, passed=False)
    metrics.chunk_came("peer", 4096)
    checked = promtool_check_metrics(rendered(metrics))
    assert checked.returncode == 0, checked.stderr


# -- three real agents ---------------------------------------------------------------------------


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"{address}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


def wait_until(check: Callable[[], list[str]], seconds: float) -> None:
    """Until `check` finds nothing wrong; fails with what it found last."""
    deadline = time.monotonic() + seconds
    while True:
        wrong = check()
        if not wrong:
            return
        assert time.monotonic() < deadline, "; ".join(wrong)
        time.sleep(0.25)


def seen(world: World) -> view.View:
    with open_store(world.store()) as store:
        return view.read(store, view.circle_from(world.circle, None))


@pytest.mark.slow
def test_every_agent_exports_what_a_person_would_check(
    tmp_path: Path, circle: Callable[..., Result]
) -> None:
    needs_sandbox()
    qss = tmp_path / "qss"

    def local_volumes(repo: Path) -> None:
        document = repo / "volumes" / "model-data.yaml"
        document.write_text(document.read_text().replace("/var/lib/circle/qss", str(qss)))

    world = make_world(tmp_path, circle, local_volumes)
    state = check_circle_dir(world.circle).state
    source = ChunkStore(tmp_path / "source")
    for loaded in state.builds.values():
        wiring.run_build(loaded.document, world.circle, source)
    for backend in state.volumes["model-data"].document.backends:
        (qss / backend.name).mkdir(parents=True)
    key_file = tmp_path / "storage.key"
    generate_key_file(key_file)
    volume = wiring.volume_store(state, "model-data")
    model = world.circle / "src" / "model" / "langid-model.json"
    volume.store.put(model, storage_key=read_key_file(key_file), k=volume.k, n=volume.n)
    digest = state.workloads["langid"].document.artifact.digest
    assert digest is not None
    artifact = decode(source.get_manifest(digest), digest)
    artifact_bytes = sum(
        chunk.size for chunk in {c.sha256: c for e in artifact.files() for c in e.chunks}.values()
    )

    agents: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in NODES:
            agents[name] = run_agent(world, name, "--artifact-source", str(source.root),
                                     "--storage-key", str(key_file))  # fmt: skip

        pages: dict[str, Samples] = {}
        texts: dict[str, str] = {}

        def agrees() -> list[str]:
            """What differs between the metrics and the store (nothing, once settled)."""
            now = seen(world)
            placed = [p for p in now.assignments if p.status is not None]
            ready = [p for p in placed if p.status and p.status.phase is Phase.READY]
            if len(now.nodes) < 3 or len(ready) < 2 or now.leader is None:
                return [f"{len(now.nodes)} nodes, {len(ready)} Ready, leader {now.leader}"]
            wrong: list[str] = []
            for node in now.nodes:
                registration = node.registration
                assert registration.address is not None
                texts[registration.node] = scrape(registration.address)
                found = pages[registration.node] = parse(texts[registration.node])
                mine = [p for p in placed if p.assignment.node == registration.node]
                expected: Mapping[str, float | None] = {
                    "circle_node_capacity_cpu_cores": registration.inventory.cpu / 1000,
                    "circle_node_capacity_memory_bytes": registration.inventory.memory,
                    "circle_node_capacity_disk_bytes": registration.inventory.disk,
                    "circle_node_allocated_cpu_cores": sum(p.assignment.cpu for p in mine) / 1000,
                    "circle_node_allocated_memory_bytes": sum(p.assignment.memory for p in mine),
                    "circle_chain_applied_seq": registration.seq,
                    "circle_agent_leader": float(now.leader == registration.node),
                }
                for metric, wanted in expected.items():
                    if value(found, metric) != wanted:
                        wrong.append(
                            f"{registration.node} {metric} {value(found, metric)} != {wanted}"
                        )
                ready_here = sum(1 for p in ready if p.assignment.node == registration.node)
                said = value(found, "circle_node_replicas", workload="langid", phase="Ready")
                if said != ready_here:
                    wrong.append(f"{registration.node} says {said} Ready, the store {ready_here}")
                if registration.node == now.leader:  # as of its last plan
                    said = value(found, "circle_workload_replicas_ready", workload="langid")
                    if said != len(ready):
                        wrong.append(f"the leader says {said} Ready, the store {len(ready)}")
            return wrong

        wait_until(agrees, 120)
        now = seen(world)
        leader = now.leader
        assert leader is not None
        running = {p.assignment.node for p in now.assignments}
        assert len(running) == 2

        for node, found in pages.items():
            info = {"node": node, "circle": now.circle.id, "version": _version()}
            assert value(found, "circle_agent_info", **info) == 1, node
            applied = json.loads((tmp_path / node / "agent.json").read_text())["lastApplied"]
            assert value(found, "circle_chain_applied_seq") == applied["seq"]
            assert (value(found, "circle_chain_follow_duration_seconds_count") or 0) >= 1
            assert (
                value(found, "circle_store_request_duration_seconds_count", operation="put") or 0
            ) >= 1
            assert (
                value(found, "circle_store_request_duration_seconds_count", operation="range") or 0
            ) >= 1
            origins = {
                o: value(found, "circle_artifact_chunk_bytes_total", origin=o) or 0
                for o in ("local", "peer", "source")
            }
            checks = value(found, "circle_health_check_duration_seconds_count", workload="langid")
            if node in running:  # it materialized the artifact once: every chunk from somewhere
                assert sum(origins.values()) == artifact_bytes, (node, origins)
                assert origins["peer"] + origins["source"] > 0, (node, origins)
                assert (checks or 0) >= 1, node
            else:
                assert sum(origins.values()) == 0, (node, origins)
                assert checks is None, node
            planner = value(found, "circle_planner_duration_seconds_count")
            desired = value(found, "circle_workload_replicas_desired", workload="langid")
            if node == leader:
                assert (planner or 0) >= 1
                assert desired == 2
                assert value(found, "circle_workload_replicas_ready", workload="langid") == 2
            else:
                assert planner is None, node
                assert desired is None, node
                assert not {n for n in names(found) if n.startswith("circle_volume")}, node
            checked = promtool_check_metrics(texts[node])
            assert checked.returncode == 0, (node, checked.stderr)

        # The leader's caretaker scrubs the model's volume a few seconds after it starts.
        address = next(n.registration.address for n in now.nodes if n.registration.node == leader)
        assert address is not None
        k, n = volume.k, volume.n

        def scrubbed() -> list[str]:
            found = parse(scrape(address))
            healthy = [
                v for (name, labels), v in found.items()
                if name == "circle_volume_object_shares" and ("status", "healthy") in labels
            ]  # fmt: skip
            margins = [v for (name, _), v in found.items() if name == "circle_volume_object_margin"]
            if healthy == [n] and margins == [n - k]:
                return []
            return [f"healthy shares {healthy}, margins {margins}; expected [{n}], [{n - k}]"]

        wait_until(scrubbed, 30)
        checked = promtool_check_metrics(scrape(address))
        assert checked.returncode == 0, checked.stderr

        # A replica moves to the spare node: it fetches the artifact, whole, from its peer first.
        victim = next(node for node in sorted(running) if node != leader)
        (spare,) = set(NODES) - running
        agents[victim].send_signal(signal.SIGTERM)
        assert agents[victim].wait(timeout=30) == 0
        spare_address = next(
            n.registration.address for n in now.nodes if n.registration.node == spare
        )
        assert spare_address is not None

        def moved() -> list[str]:
            found = parse(scrape(spare_address))
            ready = value(found, "circle_node_replicas", workload="langid", phase="Ready")
            origins = {
                o: value(found, "circle_artifact_chunk_bytes_total", origin=o) for o in ORIGINS
            }
            # From its peer first; the swarm may also ask the configured source for a chunk
            # while the peer is busy (a loaded machine), never the local store (it had none).
            whole = origins["peer"] + origins["source"] >= artifact_bytes
            if ready == 1 and origins["local"] == 0 and origins["peer"] > 0 and whole:
                return []
            return [f"{spare}: {ready} Ready, chunk bytes {origins} (artifact: {artifact_bytes})"]

        wait_until(moved, 60)
    finally:
        stop_agents(agents.values())
        release(world)


def _version() -> str:
    from reconciler import __version__

    return __version__
