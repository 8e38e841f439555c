"""The example circle runs for real: three node agents (real processes, a real SQLite store)
place the langid service on two nodes in two failure domains, each replica in its sandbox
with the model read from its Quantum Safe Storage volume; `circle get workloads` says 2/2
Ready, each replica answers POST /v1/predict at the endpoint its node publishes, and a bit
flipped in one node's installed artifact is refused, repaired and the replica restarted."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builders.chunks import ChunkStore
from qss.keys import generate_key_file, read_key_file
from reconciler import wiring
from reconciler.desired.folder import check_circle_dir
from tests.conftest import Result, run_circle_process
from tests.reconciler.node.runtime_world import needs_sandbox
from tests.reconciler.node.world import (
    NODES,
    World,
    make_world,
    release,
    run_agent,
    stop_agents,
)

pytestmark = pytest.mark.slow

SAMPLES = {
    "de": "Der Hund und die Katze schlafen zusammen im warmen Haus.",
    "fr": "Le chien et le chat dorment ensemble dans la maison chaude.",
}


def get(world: World, *what: str) -> Any:
    done = run_circle_process(*what, "--store", world.store(), "--repo", str(world.circle),
                              "-o", "json")  # fmt: skip
    assert done.code == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.25)


def ready(world: World) -> int:
    (langid,) = get(world, "get", "workloads")["workloads"]
    return int(langid["ready"])


def predict(endpoint: str, text: str) -> str:
    request = urllib.request.Request(
        f"http://{endpoint}/v1/predict",
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["language"])


def test_the_example_service_runs_in_sandboxes_answers_and_heals(
    tmp_path: Path, circle: Callable[..., Result]
) -> None:
    needs_sandbox()
    qss = tmp_path / "qss"

    def local_volumes(repo: Path) -> None:
        document = repo / "volumes" / "model-data.yaml"
        document.write_text(document.read_text().replace("/var/lib/circle/qss", str(qss)))

    world = make_world(tmp_path, circle, local_volumes)
    state = check_circle_dir(world.circle).state
    source = ChunkStore(tmp_path / "source")  # what `circle build` would leave there
    for loaded in state.builds.values():
        built = wiring.run_build(loaded.document, world.circle, source)
        assert built.artifact_id == loaded.document.digest  # the lock holds
    for backend in state.volumes["model-data"].document.backends:
        (qss / backend.name).mkdir(parents=True)
    key_file = tmp_path / "storage.key"
    generate_key_file(key_file)
    volume = wiring.volume_store(state, "model-data")
    model = world.circle / "src" / "model" / "langid-model.json"
    volume.store.put(model, storage_key=read_key_file(key_file), k=volume.k, n=volume.n)

    agents: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in NODES:
            agents[name] = run_agent(world, name, "--artifact-source", str(source.root),
                                     "--storage-key", str(key_file))  # fmt: skip
        wait_for(lambda: ready(world) == 2, 120, "2/2 Ready")
        table = run_circle_process("get", "workloads", "--store", world.store(),
                                   "--repo", str(world.circle))  # fmt: skip
        assert table.code == 0, table.stderr
        assert "2/2" in table.stdout.splitlines()[1]

        placed = get(world, "get", "assignments")["assignments"]
        assert [row["phase"] for row in placed] == ["Ready", "Ready"]
        nodes = {row["node"] for row in placed}
        domains = dict(zip(NODES, ("site-ghent", "site-cairo", "site-dubai"), strict=True))
        assert len({domains[node] for node in nodes}) == 2  # spread over failure domains
        for row in placed:
            (endpoint,) = row["endpoints"]
            name, address = endpoint.split("=")
            assert name == "http"
            assert {lang: predict(address, text) for lang, text in SAMPLES.items()} == {
                "de": "de",
                "fr": "fr",
            }

        # One bit flipped in an installed file of one node: refused, repaired, restarted.
        victim = sorted(nodes)[0]
        digest = state.workloads["langid"].document.artifact.digest
        assert digest is not None
        installed = tmp_path / victim / "artifacts" / digest.removeprefix("sha256:")
        target = installed / "app" / "langid_service" / "model.py"
        original = target.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x04
        target.write_bytes(bytes(flipped))

        def tampered_and_back() -> bool:
            events = get(world, "events")
            said = [e for e in events if e["reason"] == "ArtifactTampered"]
            return bool(said) and ready(world) == 2 and target.read_bytes() == original

        wait_for(tampered_and_back, 90, "ArtifactTampered, then 2/2 Ready again")
        events = get(world, "events")
        tampered = [e for e in events if e["reason"] == "ArtifactTampered"]
        assert tampered[0]["node"] == victim
        assert "model.py" in tampered[0]["message"]
    finally:
        stop_agents(agents.values())
        release(world)
