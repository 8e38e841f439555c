"""`mldsaPublicKey` in nodes/NAME.yaml: a key line the model checks, held to the rules of the
Ed25519 key beside it (no member's, no other node's), given to every reader of the node's
records, and shown by review as a fingerprint, not 2.6 KB of base64."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from reconciler.chain import mldsa
from reconciler.desired import review
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model.types import key_fingerprint
from reconciler.node.leader import node_keys
from tests.conftest import Result, edit


def _line(comment: str = "") -> str:
    return mldsa.public_key_line(MLDSA65PrivateKey.generate(), comment)


def _declare(example: Path, node: str, line: str) -> tuple[int, int]:
    """Put `mldsaPublicKey: line` into nodes/NODE.yaml; the line and column of its value."""
    path = example / "nodes" / f"{node}.yaml"
    text = path.read_text()
    edit(path, "failureDomain:", f"mldsaPublicKey: {line}\nfailureDomain:")
    return text[: text.index("failureDomain:")].count("\n") + 1, len("mldsaPublicKey: ") + 1


def _node_problems(example: Path) -> list[str]:
    """The problems found in nodes/ (the rest of the example is others' business here)."""
    report = check_circle_dir(example)
    return [str(p).removeprefix(f"{example}/") for p in report.errors if "/nodes/" in p.file]


def test_a_declared_key_line_is_read_and_given_to_the_readers(example: Path) -> None:
    line = _line("node-b@example-circle")
    _declare(example, "node-b", line)

    report = check_circle_dir(example)

    assert _node_problems(example) == []
    node = report.state.nodes["node-b"].document
    assert node.mldsa_public_key == line
    keys, mldsa_keys = node_keys(report.state)
    assert sorted(keys) == ["node-a", "node-b", "node-c"]
    assert keys["node-b"] == node.public_key
    assert mldsa_keys == {"node-b": line}  # node-a and node-c sign Ed25519 only, as before


BAD_LINES = [
    ("an-ssh-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBByA3NQ/4UdhV2oRQbkT9Hl9Bjiq4SrLbRT3D7m",
     "expected a line 'ml-dsa-65 BASE64 [comment]'"),
    ("wrong-length", "ml-dsa-65 " + "A" * 2604,
     "1953 bytes, expected the 1952-byte ml-dsa-65 public key"),
    ("not-base64", "ml-dsa-65 " + "*" * 2604, "the key is not base64"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "fragment"), [case[1:] for case in BAD_LINES], ids=[case[0] for case in BAD_LINES]
)
def test_a_key_line_that_is_no_mldsa_key_is_refused_with_its_place(
    example: Path, line: str, fragment: str
) -> None:
    row, column = _declare(example, "node-b", line)

    [problem] = _node_problems(example)

    assert problem.startswith(f"nodes/node-b.yaml:{row}:{column}: ")
    assert fragment in problem
    assert "node-b" not in check_circle_dir(example).state.nodes


def test_two_nodes_with_one_mldsa_key_are_refused(example: Path) -> None:
    line = _line()
    _declare(example, "node-a", line)
    row, column = _declare(example, "node-b", line)

    assert _node_problems(example) == [
        f"nodes/node-b.yaml:{row}:{column}: ML-DSA key is also the ML-DSA key of node node-a"
    ]


def test_a_members_mldsa_key_is_no_node_key(example: Path) -> None:
    line = _line("alice-pq")
    edit(
        example / "circle.yaml",
        "  - id: alice\n    keys:\n",
        f"  - id: alice\n    keys:\n      - type: ml-dsa-65\n        key: {line}\n",
    )
    row, column = _declare(example, "node-c", line)

    assert _node_problems(example) == [
        f"nodes/node-c.yaml:{row}:{column}: ML-DSA key is also the key of member alice: node "
        "keys and owner keys must differ (a node must never be able to approve changes)"
    ]


def test_review_names_the_key_by_its_fingerprint(example: Path) -> None:
    path = "nodes/node-a.yaml"
    before = (example / path).read_bytes()
    first, second = _line("node-a@example-circle"), _line("node-a@example-circle")
    _declare(example, "node-a", first)
    hybrid = (example / path).read_bytes()
    rotated = hybrid.replace(first.encode(), second.encode())

    def details(old: bytes, new: bytes) -> tuple[str, ...]:
        [change] = review.describe_changes({path: old}, {path: new}, [path])
        return change.details

    def shown(line: str) -> str:
        return f"ml-dsa-65 {key_fingerprint(line)[:19]}… (node-a@example-circle)"

    assert details(before, hybrid) == (f"mldsaPublicKey none -> {shown(first)}",)
    assert details(hybrid, rotated) == (f"mldsaPublicKey {shown(first)} -> {shown(second)}",)
    assert details(hybrid, before) == (f"mldsaPublicKey {shown(first)} -> none",)
    assert re.fullmatch(r"ml-dsa-65 SHA256:\S{12}… \(node-a@example-circle\)", shown(first))


def test_describe_says_which_nodes_sign_hybrid_once_one_does(
    example: Path, circle: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    classic = circle("describe", str(example))
    line = _line("node-b@example-circle")
    _declare(example, "node-b", line)

    hybrid = circle("describe", str(example))
    as_json = circle("describe", str(example), "-o", "json")

    assert "signs" not in classic.stdout  # a classic circle's table is as it was
    rows = {row.split()[1]: row for row in hybrid.stdout.splitlines() if "│ node-" in row}
    assert "signs" in hybrid.stdout
    assert "│ hybrid " in rows["node-b"]
    assert "│ classic " in rows["node-a"]
    assert "│ classic " in rows["node-c"]
    nodes = as_json.json()["state"]["nodes"]
    assert nodes["node-b"]["mldsaPublicKey"] == line
    assert "mldsaPublicKey" not in nodes["node-a"]
