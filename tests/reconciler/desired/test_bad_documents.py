"""Bad input: every broken document gets one precise `file:line:col: message` and exit 2.

Each case breaks one thing in a fresh copy of the example circle and checks the complete list
of problems `circle validate` prints, so a case also fails if the break causes follow-on noise
(an "unknown node" for a node that is merely unreadable, say).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, Result, edit

# Whatever the example pins today (`circle build` rewrites it).
PINNED_DIGEST = re.findall(
    r"digest: (sha256:[0-9a-f]{64})", (EXAMPLE / "workloads/langid.yaml").read_text()
)[0]
BOB_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAILRymp//pWK5+3K6Cgt9srid7++z9a8y8aQCjG2oli5u"
ALICE_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIJf5PfP32Yl/kqUF05JNJbLNCY0bOju6ovhdMt14kn6o"
TAGS = "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq"

# (id, file, text to replace (None: replace the whole file), replacement, expected problems)
CASES: list[tuple[str, str, str | None, str, list[str]]] = [
    (
        "yaml-syntax",
        "workloads/langid.yaml",
        "replicas: 2",
        "replicas: [2",
        [
            "workloads/langid.yaml:18:10: invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence)"
        ],
    ),
    (
        "yaml-mapping-in-scalar",
        "workloads/langid.yaml",
        "replicas: 2",
        "replicas: 2: 3",
        ["workloads/langid.yaml:17:12: invalid YAML: mapping values are not allowed here"],
    ),
    (
        "duplicate-key",
        "workloads/langid.yaml",
        "replicas: 2\n",
        "replicas: 2\nreplicas: 3\n",
        ["workloads/langid.yaml:18:1: duplicate key 'replicas' (first defined at line 17)"],
    ),
    (
        "unknown-field",
        "nodes/node-a.yaml",
        "  disk: 200Gi",
        "  disks: 200Gi",
        [
            "nodes/node-a.yaml:16:3: unknown field 'disks' "
            "(expected one of: cpu, memory, disk, gpus)"
        ],
    ),
    (
        "misspelled-required-field",
        "workloads/langid.yaml",
        "replicas: 2",
        "replica: 2",
        [
            "workloads/langid.yaml:4:1: missing required field 'replicas'",
            "workloads/langid.yaml:17:1: unknown field 'replica' (expected one of: apiVersion, "
            "kind, name, description, artifact, command, args, env, ports, replicas, autoscale, "
            "resources, placement, health, volumes, secrets)",
        ],
    ),
    (
        "string-for-integer",
        "workloads/langid.yaml",
        "replicas: 2",
        'replicas: "2"',
        ["workloads/langid.yaml:17:11: expected an integer, found the string '2'"],
    ),
    (
        "yaml-1.1-boolean",
        "workloads/langid.yaml",
        "optional: true",
        "optional: yes",
        ["workloads/langid.yaml:31:15: expected true or false, found the string 'yes'"],
    ),
    (
        "anchor",
        "workloads/langid.yaml",
        "ports:\n",
        "ports: &ports\n",
        [
            "workloads/langid.yaml:15:8: YAML anchor &ports is not allowed "
            "(anchors and aliases are refused)"
        ],
    ),
    (
        "alias",
        "workloads/langid.yaml",
        'PYTHONUNBUFFERED: "1"',
        "PYTHONUNBUFFERED: *one",
        [
            "workloads/langid.yaml:14:21: YAML alias *one is not allowed "
            "(anchors and aliases are refused)"
        ],
    ),
    (
        "python-tag",
        "workloads/langid.yaml",
        "replicas: 2",
        "replicas: !!python/object:os.system 2",
        [
            "workloads/langid.yaml:17:11: YAML tag !!python/object:os.system is not allowed "
            f"(expected plain data: the YAML 1.2 core schema's {TAGS})"
        ],
    ),
    (
        "binary-tag",
        "workloads/langid.yaml",
        'PYTHONUNBUFFERED: "1"',
        "PYTHONUNBUFFERED: !!binary MQ==",
        [
            "workloads/langid.yaml:14:21: YAML tag !!binary is not allowed "
            f"(expected plain data: the YAML 1.2 core schema's {TAGS})"
        ],
    ),
    (
        "two-documents",
        "nodes/node-b.yaml",
        "  disk: 200Gi\n",
        "  disk: 200Gi\n---\nkind: Node\n",
        ["nodes/node-b.yaml:15:1: expected a single YAML document, found a second one"],
    ),
    (
        "empty-document",
        "nodes/node-b.yaml",
        None,
        "# nothing here\n",
        [
            "nodes/node-b.yaml:1:1: expected a mapping with apiVersion and kind (Node), "
            "found an empty document"
        ],
    ),
    (
        "list-document",
        "nodes/node-b.yaml",
        None,
        "- apiVersion: circle/v1\n- kind: Node\n",
        ["nodes/node-b.yaml:1:1: expected a mapping with apiVersion and kind (Node), found a list"],
    ),
    (
        "api-version",
        "nodes/node-b.yaml",
        "apiVersion: circle/v1",
        "apiVersion: circle/v2",
        ["nodes/node-b.yaml:2:13: unsupported apiVersion 'circle/v2'; expected circle/v1"],
    ),
    (
        "missing-kind",
        "nodes/node-b.yaml",
        "kind: Node\n",
        "",
        ["nodes/node-b.yaml:2:1: missing required field 'kind' (expected Node)"],
    ),
    (
        "kind-in-wrong-folder",
        "nodes/node-b.yaml",
        "kind: Node",
        "kind: Workload",
        ["nodes/node-b.yaml:3:7: kind Workload belongs in workloads/; expected Node here"],
    ),
    (
        "unknown-kind",
        "nodes/node-b.yaml",
        "kind: Node",
        "kind: Deployment",
        ["nodes/node-b.yaml:3:7: unknown kind 'Deployment'; expected Node"],
    ),
    (
        "bad-name",
        "nodes/node-b.yaml",
        "name: node-b",
        "name: Node_B",
        [
            "nodes/node-b.yaml:4:7: invalid name 'Node_B': expected 1-63 lowercase letters, "
            "digits and '-', starting with a letter and not ending with '-'"
        ],
    ),
    (
        "short-digest",
        "workloads/langid.yaml",
        PINNED_DIGEST,
        "sha256:abc",
        [
            "workloads/langid.yaml:10:11: invalid digest 'sha256:abc': expected 'sha256:' and "
            "64 lowercase hexadecimal digits"
        ],
    ),
    (
        "bad-cpu",
        "nodes/node-b.yaml",
        "  cpu: 4",
        "  cpu: fast",
        [
            "nodes/node-b.yaml:12:8: invalid CPU quantity 'fast': expected cores (2, 0.5) or "
            "millicores ('500m')"
        ],
    ),
    (
        "bad-memory",
        "nodes/node-b.yaml",
        "  memory: 8Gi",
        "  memory: 8GB",
        [
            "nodes/node-b.yaml:13:11: invalid byte quantity '8GB': expected a number with an "
            "optional unit (Ki, Mi, Gi, Ti, Pi, k, M, G, T, P), such as 512Mi"
        ],
    ),
    (
        "truncated-ssh-key",
        "circle.yaml",
        BOB_KEY,
        BOB_KEY[:30],
        [
            "circle.yaml:22:14: invalid public key 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...': "
            "the key is not base64"
        ],
    ),
    (
        "unknown-key-type",
        "circle.yaml",
        "      - type: sigstore",
        "      - type: pgp",
        ["circle.yaml:28:9: unknown type 'pgp'; expected 'ssh-ed25519', 'sigstore', 'ml-dsa-65'"],
    ),
    (
        "path-traversal",
        "builds/langid-model.yaml",
        "source: src/model",
        "source: src/../../etc",
        [
            "builds/langid-model.yaml:8:9: path 'src/../../etc' has an empty, '.' or '..' "
            "component; expected a normalized relative path"
        ],
    ),
    (
        "absolute-mount",
        "workloads/langid.yaml",
        "    path: data/model",
        "    path: /etc/shadow",
        [
            "workloads/langid.yaml:40:11: path '/etc/shadow' is absolute; expected a path "
            "relative to the repository"
        ],
    ),
    (
        "autoscale-bounds",
        "workloads/langid.yaml",
        "  min: 2\n  max: 4",
        "  min: 5\n  max: 4",
        ["workloads/langid.yaml:19:8: autoscale.min (5) is above autoscale.max (4)"],
    ),
    (
        "autoscale-no-source",
        "workloads/langid.yaml",
        "  source: {port: 8080, path: /metrics, series: langid_predictions_total}\n",
        "",
        [
            "workloads/langid.yaml:19:3: autoscale on requests-per-second needs a source: the "
            "port, path and series of the replicas' Prometheus metrics"
        ],
    ),
    (
        "autoscale-source-port",
        "workloads/langid.yaml",
        "source: {port: 8080,",
        "source: {port: 9090,",
        ["workloads/langid.yaml:24:18: port 9090 is not one of the workload's ports"],
    ),
    (
        "autoscale-cpu-source",
        "workloads/langid.yaml",
        "metric: requests-per-second",
        "metric: cpu",
        [
            "workloads/langid.yaml:24:11: autoscale on cpu is measured by the node; source "
            "applies to requests-per-second and gauge only"
        ],
    ),
    (
        "reserved-env",
        "workloads/langid.yaml",
        'PYTHONUNBUFFERED: "1"',
        'CUDA_VISIBLE_DEVICES: "0"',
        [
            "workloads/langid.yaml:14:3: CUDA_VISIBLE_DEVICES is set by the node agent; "
            "a workload cannot choose it"
        ],
    ),
    (
        "shared-member-key",
        "circle.yaml",
        BOB_KEY,
        ALICE_KEY,
        [
            "circle.yaml:21:9: member bob uses a key that belongs to member alice; "
            "a key may belong to one member only"
        ],
    ),
    (
        "no-governance-rule",
        "circle.yaml",
        "    - name: governance",
        "    - name: owners",
        ["circle.yaml:35:5: no rule named 'governance': circle.yaml changes need one"],
    ),
    (
        "unsatisfiable-rule",
        "circle.yaml",
        "      threshold: 3",
        "      threshold: 4",
        [
            "circle.yaml:37:18: rule governance needs weight 4 but its members hold only 3: "
            "it could never be satisfied"
        ],
    ),
    (
        "health-check-port",
        "workloads/langid.yaml",
        "/healthz, port: 8080}",
        "/healthz, port: 9090}",
        [
            "workloads/langid.yaml:35:32: health check port 9090 is not one of the workload's "
            "ports (8080)"
        ],
    ),
    (
        "k-above-n",
        "volumes/model-data.yaml",
        "k: 4",
        "k: 7",
        ["volumes/model-data.yaml:8:4: k (7) must not exceed n (6)"],
    ),
]


def problem_lines(result: Result) -> list[str]:
    """The problem lines of `circle validate` text output (all but the summary line)."""
    lines = result.stdout.splitlines()
    assert lines, "validate printed nothing"
    return lines[:-1]


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_broken_document_is_reported_precisely(
    example: Path,
    circle: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    file: str,
    old: str | None,
    new: str,
    expected: list[str],
) -> None:
    path = example / file
    if old is None:
        path.write_text(new, encoding="utf-8")
    else:
        edit(path, old, new)
    monkeypatch.chdir(example)

    result = circle("validate")

    assert problem_lines(result) == expected
    assert result.code == 2
    assert result.stderr == ""
    assert "invalid" in result.stdout.splitlines()[-1]


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 20
    assert len({case[0] for case in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"apiVersion: circle/v1\nkind: Node\nname: caf\xe9\n",
            "nodes/node-b.yaml:3:10: invalid UTF-8 (byte 0xe9); documents are UTF-8 text",
        ),
        (
            b"apiVersion: circle/v1\nkind: Node\nname: a\x07b\n",
            "nodes/node-b.yaml:3:8: invalid character U+0007 (control characters are not allowed)",
        ),
        (
            b"apiVersion: circle/v1\n" + b"#" * (1024 * 1024),
            "nodes/node-b.yaml:1:1: document is larger than the limit of 1048576 bytes (1 MiB)",
        ),
    ],
    ids=["not-utf8", "control-character", "over-1-MiB"],
)
def test_unreadable_bytes_are_reported_precisely(
    example: Path,
    circle: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    expected: str,
) -> None:
    (example / "nodes/node-b.yaml").write_bytes(data)
    monkeypatch.chdir(example)

    result = circle("validate")

    assert problem_lines(result) == [expected]
    assert result.code == 2


def test_all_problems_are_reported_not_just_the_first(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    edit(example / "workloads/langid.yaml", "replicas: 2", 'replicas: "2"')
    edit(example / "nodes/node-b.yaml", "  cpu: 4", "  cpu: fast")
    edit(example / "volumes/model-data.yaml", "k: 4", "k: 7")
    monkeypatch.chdir(example)

    result = circle("validate")

    assert [line.split(":")[0] for line in problem_lines(result)] == [
        "nodes/node-b.yaml",
        "volumes/model-data.yaml",
        "workloads/langid.yaml",
    ]
    assert result.code == 2


def test_symlinked_document_is_refused_not_followed(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_bytes((example / "nodes/node-b.yaml").read_bytes())
    (example / "nodes/node-b.yaml").unlink()
    (example / "nodes/node-b.yaml").symlink_to(outside)
    monkeypatch.chdir(example)

    result = circle("validate")

    assert problem_lines(result) == [
        "nodes/node-b.yaml:1:1: is a symbolic link; circle documents must be regular files"
    ]
    assert result.code == 2
