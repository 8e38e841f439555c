"""`describe_changes`: what a transition changes, in desired-state terms, on edits of the example
circle. Every case asserts the exact lines an owner reads in `circle review`."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.repository import PathRole, classify
from reconciler.desired.review import Action, Change, describe_changes, short_digest
from tests.conftest import EXAMPLE

FILES = {
    path.relative_to(EXAMPLE).as_posix(): path.read_bytes()
    for path in sorted(EXAMPLE.rglob("*"))
    if path.is_file() and "__pycache__" not in path.parts
}
DOCUMENTS = {path: data for path, data in FILES.items() if classify(path)[0] is PathRole.DOCUMENT}
LANGID_DIGEST = "sha256:e80f98d2ab2462473c07787a1e32cf642a48316e0a3ebb068d4a4b2e23375c77"


def ssh_key(fill: int, comment: str) -> str:
    """A well-formed Ed25519 public key line (32 bytes of `fill`); nobody holds its private key."""
    blob = b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + bytes([fill]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


Edit = tuple[str, str, str]  # path, old text, new text (the first occurrence is replaced)


def edited(*edits: Edit, base: Mapping[str, bytes] = DOCUMENTS) -> dict[str, bytes]:
    documents = dict(base)
    for path, old, new in edits:
        text = documents[path].decode()
        assert old in text, f"{old!r} is not in {path}"
        documents[path] = text.replace(old, new, 1).encode()
    return documents


def review(new: Mapping[str, bytes], old: Mapping[str, bytes] | None = DOCUMENTS) -> list[str]:
    changed = sorted(
        path for path in set(new) | set(old or {}) if (old or {}).get(path) != new.get(path)
    )
    return [change.line() for change in describe_changes(old, new, changed)]


CASES: list[tuple[str, tuple[Edit, ...], list[str]]] = [
    (
        "replicas",
        (("workloads/langid.yaml", "replicas: 2", "replicas: 4"),),
        ["workload langid: replicas 2 -> 4"],
    ),
    (
        "artifact-digest",
        (("workloads/langid.yaml", LANGID_DIGEST, "sha256:" + "cd34" * 16),),
        ["workload langid: artifact digest sha256:e80f98d2ab24… -> sha256:cd34cd34cd34…"],
    ),
    (
        "workload-resources-and-autoscale",
        (
            ("workloads/langid.yaml", "max: 4", "max: 6"),
            ("workloads/langid.yaml", "cpu: 500m", "cpu: 1"),
            ("workloads/langid.yaml", "count: 1", "count: 2"),
        ),
        [
            "workload langid: autoscale 2..4 -> 2..6; resources.cpu 500m -> 1; "
            "resources.gpu.count 1 -> 2"
        ],
    ),
    (
        "gpu-request-removed",
        (
            (
                "workloads/langid.yaml",
                "  gpu:\n    count: 1\n    minMemory: 8Gi\n    optional: true\n",
                "",
            ),
        ),
        ["workload langid: resources.gpu 1 optional GPU with at least 8Gi -> none"],
    ),
    (
        "member-added",
        (
            (
                "circle.yaml",
                "consensus:",
                f"  - id: dave\n    keys:\n      - type: ssh-ed25519\n"
                f"        key: {ssh_key(7, 'dave@example-circle')}\nconsensus:",
            ),
        ),
        ["member dave added (weight 1, 1 key)"],
    ),
    (
        "member-weight",
        (("circle.yaml", "  - id: bob\n", "  - id: bob\n    weight: 2\n"),),
        ["member bob: weight 1 -> 2"],
    ),
    (
        "member-key-added",
        (
            (
                "circle.yaml",
                "  - id: bob\n    keys:\n",
                "  - id: bob\n    keys:\n      - type: ssh-ed25519\n"
                f"        key: {ssh_key(9, 'bob@laptop')}\n",
            ),
        ),
        ["member bob: key added ssh-ed25519 SHA256:xcTb/ZL8NmQs… (bob@laptop)"],
    ),
    (
        "rule-threshold",
        (("circle.yaml", "threshold: 2\n    # The sealed", "threshold: 3\n    # The sealed"),),
        ["rule workloads: threshold 2 -> 3"],
    ),
    (
        "governance-members",
        (
            (
                "circle.yaml",
                "      threshold: 3\n",
                "      threshold: 2\n      members: [alice, bob]\n      required: [alice]\n",
            ),
        ),
        ["rule governance: members all -> [alice, bob]; threshold 3 -> 2; required [] -> [alice]"],
    ),
    (
        "policy-version-and-lifetime",
        (
            ("circle.yaml", "version: 1", "version: 2\nprevious: " + "ab" * 32),
            ("circle.yaml", "approvalLifetime: 7d", "approvalLifetime: 1d"),
        ),
        [
            "circle: version 1 -> 2; previous none -> abababababab…",
            "consensus: approvalLifetime 7d -> 1d",
        ],
    ),
    (
        "node-gpu-added",
        (
            (
                "nodes/node-a.yaml",
                "  disk: 200Gi",
                "  disk: 200Gi\n  gpus:\n    - {model: NVIDIA L4, memory: 24Gi}",
            ),
        ),
        ["node node-a: capacity.gpus none -> 1 x NVIDIA L4 24Gi"],
    ),
    (
        "volume-k",
        (("volumes/model-data.yaml", "k: 4", "k: 5"),),
        ["volume model-data: k/n 4/6 -> 5/6"],
    ),
    (
        "volume-backend-removed",
        (
            ("volumes/model-data.yaml", "n: 6", "n: 5"),
            (
                "volumes/model-data.yaml",
                '  - {name: dubai-2, url: "dir:/var/lib/circle/qss/dubai-2", node: node-c}\n',
                "",
            ),
        ),
        ["volume model-data: k/n 4/6 -> 4/5; backends[dubai-2] removed"],
    ),
    (
        "build-lock",
        (("builds/langid-model.yaml", "digest: sha256:9e15", "digest: sha256:0e15"),),
        ["build langid-model: lock digest sha256:9e15cc88f1b9… -> sha256:0e15cc88f1b9…"],
    ),
    (
        "comment-only",
        (("nodes/node-a.yaml", "cpu: 4", "cpu: 4  # cores"),),
        ["node node-a: comments or formatting only"],
    ),
    (
        "long-description",
        (("workloads/langid.yaml", "description: 'Language", "description: 'The language"),),
        ["workload langid: description changed"],
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_edit_reads_as(edits: tuple[Edit, ...], expected: list[str]) -> None:
    assert review(edited(*edits)) == expected


def test_node_removed() -> None:
    new = dict(DOCUMENTS)
    del new["nodes/node-c.yaml"]
    assert review(new) == ["node node-c removed"]


def test_node_added() -> None:
    node = DOCUMENTS["nodes/node-c.yaml"].replace(b"name: node-c", b"name: node-d")
    assert review({**DOCUMENTS, "nodes/node-d.yaml": node}) == [
        "node node-d added (site-dubai, cpu 16, memory 64Gi, 1 GPU (NVIDIA L4 24Gi))"
    ]


def test_files_outside_the_documents() -> None:
    changes = describe_changes(
        {**DOCUMENTS, "README.md": b"old"},
        {**DOCUMENTS, "docs/notes.md": b"new"},
        ["src/inference/langid_service/server.py", "docs/notes.md", "README.md", "nodes/a.yml"],
    )
    assert [change.line() for change in changes] == [
        "file README.md removed",
        "file docs/notes.md added",
        "file nodes/a.yml changed",  # a near miss is not a document
        "file src/inference/langid_service/server.py changed",
    ]
    assert changes[-1] == Change(
        "file src/inference/langid_service/server.py",
        Action.CHANGED,
        (),
        "src/inference/langid_service/server.py",
    )


def test_a_document_that_does_not_parse_is_shown_with_the_rest() -> None:
    new = edited(("workloads/langid.yaml", "replicas: 2", "replicas: 3"))
    new["workloads/broken.yaml"] = (
        b"apiVersion: circle/v1\nkind: Workload\nname: broken\nreplicas: two\n"
    )
    new["volumes/model-data.yaml"] = b"kind: [\n"
    assert review(new) == [
        "workload broken: does not parse: workloads/broken.yaml:1:1: missing required field "
        "'artifact' (and 3 more)",
        "workload langid: replicas 2 -> 3",
        "volume model-data: does not parse: volumes/model-data.yaml:2:1: invalid YAML: expected "
        "a value, but found the end of the text (while parsing a flow node)",
    ]


def test_a_document_that_parses_again() -> None:
    broken = {**DOCUMENTS, "builds/langid-model.yaml": b"builder: model\n"}
    assert review(DOCUMENTS, old=broken) == [
        "build langid-model: parses now (did not before); builder model; source src/model; "
        "lock sha256:9e15cc88f1b9…"
    ]


def test_first_commit_adds_everything() -> None:
    changes = describe_changes(None, DOCUMENTS, [*DOCUMENTS, "src/model/train.py", "README.md"])
    assert {change.action for change in changes} == {Action.ADDED}
    assert [change.line() for change in changes] == [
        "circle added (id example-ai-circle, version 1, approvalLifetime 7d)",
        "member alice added (weight 1, 1 key)",
        "member bob added (weight 1, 1 key)",
        "member carol added (weight 1, 2 keys)",
        "rule default added (threshold 2 of all members, paths [**])",
        "rule governance added (threshold 3 of all members, paths [circle.yaml])",
        "rule secrets added (threshold 2 of all members, paths [secrets/**])",
        "rule workloads added (threshold 2 of all members, "
        "paths [workloads/**, builds/**, src/**])",
        "node node-a added (site-ghent, cpu 4, memory 8Gi, no GPU)",
        "node node-b added (site-cairo, cpu 4, memory 8Gi, no GPU)",
        "node node-c added (site-dubai, cpu 16, memory 64Gi, 1 GPU (NVIDIA L4 24Gi))",
        "workload langid added (artifact langid-service sha256:e80f98d2ab24…, 2 replicas, "
        "autoscale 2..4, cpu 500m, memory 256Mi, 1 optional GPU with at least 8Gi)",
        "build langid-model added (builder model, source src/model, lock sha256:9e15cc88f1b9…)",
        "build langid-service added (builder python-app, source src/inference, "
        "lock sha256:e80f98d2ab24…)",
        "volume model-data added (k/n 4/6, 6 backends, 1 object)",
        "secret langid-api-key added (for langid, sealed to node-a, node-b, node-c)",
        "file README.md added",
        "file src/model/train.py added",
    ]


def test_order_is_circle_then_kinds_then_files() -> None:
    new = edited(
        ("volumes/model-data.yaml", "k: 4", "k: 5"),
        ("workloads/langid.yaml", "replicas: 2", "replicas: 4"),
        ("circle.yaml", "  - id: bob\n", "  - id: bob\n    weight: 2\n"),
        ("nodes/node-a.yaml", "cpu: 4", "cpu: 8"),
    )
    changed = [*sorted(path for path in new if new[path] != DOCUMENTS[path]), "README.md"]
    assert [change.subject for change in describe_changes(DOCUMENTS, new, changed)] == [
        "member bob",
        "node node-a",
        "workload langid",
        "volume model-data",
        "file README.md",
    ]


def test_no_change() -> None:
    assert describe_changes(DOCUMENTS, DOCUMENTS, []) == []
    assert review(DOCUMENTS) == []


def test_short_digest() -> None:
    assert short_digest(LANGID_DIGEST) == "sha256:e80f98d2ab24…"
    assert short_digest("ab" * 32) == "abababababab…"
    assert short_digest("sha256:abc") == "sha256:abc"


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_review_never_raises(data: bytes) -> None:
    changes = describe_changes(
        DOCUMENTS, {**DOCUMENTS, "workloads/langid.yaml": data}, ["workloads/langid.yaml"]
    )
    assert len(changes) == 1
    assert changes[0].subject == "workload langid"
    assert changes[0].details[0].startswith("does not parse: workloads/langid.yaml:")
