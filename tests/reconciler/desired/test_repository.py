"""Whole-repository checks: documents that are each valid but do not fit together, admission
rules, and the example circle itself. These are failed checks (exit 1), not bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Result, edit, run_circle_process

# (id, edits [(file, old, new)], expected problem lines)
CASES: list[tuple[str, list[tuple[str, str, str]], list[str]]] = [
    (
        "unknown-build",
        [("workloads/langid.yaml", "build: langid-service", "build: langid-svc")],
        [
            "workloads/langid.yaml:9:10: unknown build 'langid-svc' "
            "(builds: langid-model, langid-service)"
        ],
    ),
    (
        "unknown-volume",
        [("workloads/langid.yaml", "volume: model-data", "volume: model-cache")],
        ["workloads/langid.yaml:39:13: unknown volume 'model-cache' (volumes: model-data)"],
    ),
    (
        "pinned-digest-differs-from-lock",
        [
            (
                "builds/langid-service.yaml",
                "digest: {pinned}",
                f"digest: sha256:{'ab' * 32}",
            )
        ],
        [
            "workloads/langid.yaml:10:11: pins {pinned} but builds/langid-service.yaml locks "
            f"sha256:{'ab' * 32}"
        ],
    ),
    (
        "no-node-fits",
        [("workloads/langid.yaml", "  cpu: 500m", "  cpu: 32")],
        [
            "workloads/langid.yaml:26:3: no node can hold one replica (cpu 32, memory 256Mi); "
            "the largest, node-c, has cpu 16, memory 64Gi and 1 GPU(s)"
        ],
    ),
    (
        "required-gpu-too-small",
        [
            (
                "workloads/langid.yaml",
                "    minMemory: 8Gi\n    optional: true",
                "    minMemory: 48Gi",
            )
        ],
        [
            "workloads/langid.yaml:26:3: no node can hold one replica (cpu 500m, memory 256Mi, "
            "1 GPU(s) with at least 48Gi); the largest, node-c, has cpu 16, memory 64Gi and "
            "1 GPU(s)"
        ],
    ),
    (
        "selector-matches-nothing",
        [
            (
                "workloads/langid.yaml",
                "  minFailureDomains: 2",
                "  minFailureDomains: 2\n  nodeSelector: {region: mars}",
            )
        ],
        ["workloads/langid.yaml:34:17: no node carries the labels region=mars"],
    ),
    (
        "spread-unsatisfiable",
        [
            (
                "workloads/langid.yaml",
                "  minFailureDomains: 2",
                "  minFailureDomains: 2\n  nodeSelector: {accelerator: nvidia}",
            )
        ],
        [
            "workloads/langid.yaml:33:22: needs 2 failure domains, but the nodes that fit span 1 "
            "(site-dubai)"
        ],
    ),
    (
        "name-differs-from-file",
        [("nodes/node-b.yaml", "name: node-b", "name: node-z")],
        ["nodes/node-b.yaml:4:7: name 'node-z' does not match the file name 'node-b'"],
    ),
    (
        "node-key-is-an-owner-key",
        [
            (
                "nodes/node-b.yaml",
                "AAAAC3NzaC1lZDI1NTE5AAAAIO05U5Vrly+n3sigDgtT767xginq/pqPk0hjPd1cjgSF",
                "AAAAC3NzaC1lZDI1NTE5AAAAIJf5PfP32Yl/kqUF05JNJbLNCY0bOju6ovhdMt14kn6o",
            )
        ],
        [
            "nodes/node-b.yaml:6:12: node key is also the key of member alice: node keys and "
            "owner keys must differ (a node must never be able to approve changes)"
        ],
    ),
    (
        "two-nodes-one-key",
        [
            (
                "nodes/node-b.yaml",
                "AAAAC3NzaC1lZDI1NTE5AAAAIO05U5Vrly+n3sigDgtT767xginq/pqPk0hjPd1cjgSF",
                "AAAAC3NzaC1lZDI1NTE5AAAAIBByA3NQ/4UdhV2oRQbkT9Hl9Bjiq4SrLbRT3D7mR/ga",
            )
        ],
        ["nodes/node-b.yaml:6:12: node key is also the key of node node-a"],
    ),
    (
        "backend-on-unknown-node",
        [("volumes/model-data.yaml", 'dubai-2", node: node-c}', 'dubai-2", node: node-d}')],
        ["volumes/model-data.yaml:17:67: unknown node 'node-d' (nodes: node-a, node-b, node-c)"],
    ),
    (
        "source-folder-empty",
        [("builds/langid-model.yaml", "source: src/model", "source: src/nowhere")],
        ["builds/langid-model.yaml:8:9: source folder 'src/nowhere' holds no files"],
    ),
    (
        "unknown-admission-preset",
        [("circle.yaml", "presets: [baseline]", "presets: [baseline, strictest]")],
        [
            "circle.yaml:54:23: unknown admission preset 'strictest' "
            "(shipped: baseline, gpu-small, production)"
        ],
    ),
    (
        "admission-replica-cap",
        [("workloads/langid.yaml", "  max: 4", "  max: 100")],
        [
            "circle.yaml:54:3: circle admission rules: workloads claim 100 GPUs at full scale; "
            "the cap is 4",
            "workloads/langid.yaml:20:8: admission preset baseline: 100 replicas exceed the "
            "cap of 64",
        ],
    ),
    (
        "admission-own-gpu-cap",
        [("workloads/langid.yaml", "    count: 1", "    count: 2")],
        [
            "circle.yaml:54:3: circle admission rules: workloads claim 8 GPUs at full scale; "
            "the cap is 4",
            "workloads/langid.yaml:29:12: circle admission rules: 2 GPUs per replica exceed "
            "the cap of 1",
        ],
    ),
    (
        "admission-privileged-port",
        [
            ("workloads/langid.yaml", "{name: http, port: 8080}", "{name: http, port: 80}"),
            ("workloads/langid.yaml", "/healthz, port: 8080}", "/healthz, port: 80}"),
            ("workloads/langid.yaml", "source: {port: 8080", "source: {port: 80"),
        ],
        [
            "workloads/langid.yaml:16:24: admission preset baseline: port 80 is below the "
            "lowest allowed port 1024"
        ],
    ),
    (
        "admission-single-domain",
        [("workloads/langid.yaml", "  minFailureDomains: 2", "  minFailureDomains: 1")],
        [
            "workloads/langid.yaml:33:3: admission preset baseline: a workload of 4 replicas "
            "must spread over at least 2 failure domains (placement.minFailureDomains is 1)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_documents_that_do_not_fit_together_fail_the_check(
    example: Path,
    circle: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    edits: list[tuple[str, str, str]],
    expected: list[str],
) -> None:
    pinned = (example / "workloads/langid.yaml").read_text().split("digest: ")[1].split()[0]
    for file, old, new in edits:
        edit(example / file, old.replace("{pinned}", pinned), new)
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[:-1] == [
        line.replace("{pinned}", pinned) for line in expected
    ]
    assert result.code == 1


def test_unpinned_artifact_is_refused_by_baseline(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (example / "workloads/langid.yaml").read_text()
    start = text.index("  digest: ")
    (example / "workloads/langid.yaml").write_text(
        text[:start] + text[text.index("\n", start) + 1 :]
    )
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[:-1] == [
        "workloads/langid.yaml:9:3: admission preset baseline: artifact is not pinned; "
        "expected a sha256 digest"
    ]
    assert result.code == 1


def test_volume_that_cannot_survive_a_domain_loss_warns(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(example / "volumes/model-data.yaml", "k: 4", "k: 5")
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[:-1] == [
        "volumes/model-data.yaml:12:3: warning: losing failure domain 'site-ghent' loses 2 of "
        "6 shares, more than the 1 a 5-of-6 volume can spare: the data would not survive the "
        "loss of one failure domain"
    ]
    assert result.code == 0, "warnings alone do not fail validation"


def test_missing_circle_yaml(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    (example / "circle.yaml").unlink()
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[0] == (
        "circle.yaml:1:1: missing: a circle repository has circle.yaml at its top"
    )
    assert result.code == 2


def test_wrong_suffix_is_a_warning(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    (example / "nodes/node-d.yml").write_text("apiVersion: circle/v1\n")
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[:-1] == [
        "nodes/node-d.yml:1:1: warning: ignored: Node documents in nodes/ end in .yaml"
    ]
    assert result.code == 0


def test_example_circle_is_valid_from_a_real_process() -> None:
    result = run_circle_process("validate", str(EXAMPLE))

    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{EXAMPLE}: circle example-ai-circle v1, 9 documents valid; 3 members, 4 rules, "
        "3 nodes, 1 workload, 2 builds, 1 volume; 0 warnings"
    ]
    assert result.stderr == ""


def test_validate_json_shape(circle: Callable[..., Result]) -> None:
    result = circle("--output", "json", "validate", str(EXAMPLE))

    report = result.json()
    assert result.code == 0
    assert report["valid"] is True
    assert report["exitCode"] == 0
    assert report["documents"] == 9
    assert report["problems"] == []
    assert report["counts"] == {
        "members": 3,
        "rules": 4,
        "nodes": 3,
        "workloads": 1,
        "builds": 2,
        "volumes": 1,
    }
    assert report["circle"]["id"] == "example-ai-circle"
    assert len(report["circle"]["policySha256"]) == 64


def test_validate_json_lists_problems_with_positions(
    example: Path, circle: Callable[..., Result]
) -> None:
    edit(example / "workloads/langid.yaml", "replicas: 2", 'replicas: "2"')

    result = circle("validate", str(example), "--output", "json")

    report = result.json()
    assert result.code == 2
    assert report["valid"] is False
    assert report["problems"] == [
        {
            "file": f"{example}/workloads/langid.yaml",
            "line": 17,
            "column": 11,
            "severity": "error",
            "stage": "document",
            "code": "schema.int_type",
            "message": "expected an integer, found the string '2'",
        }
    ]


def test_describe_shows_the_desired_state(circle: Callable[..., Result]) -> None:
    result = circle("describe", str(EXAMPLE))

    assert result.code == 0
    for expected in (
        "Circle example-ai-circle, policy version 1",
        "alice",
        "weight 3 of 3",
        "site-dubai",
        "NVIDIA L4 24Gi",
        "langid-service",
        "4-of-6",
    ):
        assert expected in result.stdout


def test_describe_json_carries_every_document(circle: Callable[..., Result]) -> None:
    result = circle("describe", str(EXAMPLE), "-o", "json")

    state = result.json()["state"]
    assert result.code == 0
    assert sorted(state["nodes"]) == ["node-a", "node-b", "node-c"]
    assert state["workloads"]["langid"]["resources"] == {
        "cpu": "500m",
        "memory": "256Mi",
        "gpu": {"count": 1, "minMemory": "8Gi", "models": [], "optional": True},
    }
    assert state["circle"]["consensus"]["rules"][0]["name"] == "governance"


def test_document_warning_is_reported_once_and_does_not_fail(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(example / "workloads/langid.yaml", "  timeout: 2s", "  timeout: 10s")
    monkeypatch.chdir(example)

    result = circle("validate")

    assert result.stdout.splitlines()[:-1] == [
        "workloads/langid.yaml:37:12: warning: health check timeout (10s) is not shorter than "
        "its interval (10s)"
    ]
    assert result.code == 0
    assert result.stdout.splitlines()[-1].endswith("; 1 warning")
