"""`circle node keygen --hybrid`: the node key's ML-DSA-65 half beside its Ed25519 key and its
KEM key, and the `mldsaPublicKey:` line to paste into nodes/NAME.yaml; all the files or none."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.model import Node
from reconciler.node.identity import NodeKey
from tests.conftest import Result

HALF = ".ml-dsa-65"


def _files(folder: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in sorted(folder.iterdir())}


def test_a_hybrid_node_key_prints_the_line_to_paste(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "node-a"

    made = circle("node", "keygen", str(key), "-C", "node-a@example", "--hybrid")

    assert made.code == 0, made.stderr
    assert _files(tmp_path) == {
        "node-a": 0o600,
        "node-a.ml-dsa-65": 0o600,
        "node-a.ml-dsa-65.pub": 0o644,
        "node-a.pub": 0o644,
        "node-a.x-wing": 0o600,
        "node-a.x-wing.pub": 0o644,
    }
    line = (tmp_path / f"node-a{HALF}.pub").read_text().strip()
    assert line.startswith("ml-dsa-65 ")
    assert line.endswith(" node-a@example")
    assert f"mldsaPublicKey: {line}" in made.stdout.splitlines()
    assert f"ML-DSA-65 half {key}{HALF}, public key {key}{HALF}.pub" in made.stdout
    loaded = NodeKey.load(key)
    assert str(loaded.mldsa_public_key_line).split() == line.split()[:2]  # the comment is in .pub
    # The printed line is what the node document takes.
    node = Node.model_validate(
        {
            "apiVersion": "circle/v1",
            "kind": "Node",
            "name": "node-a",
            "publicKey": loaded.public_key_line,
            "mldsaPublicKey": line,
            "failureDomain": "site-ghent",
            "capacity": {"cpu": 1, "memory": "1Gi"},
        }
    )
    assert node.mldsa_public_key == line


def test_hybrid_json_names_the_half_and_its_line(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "node-b"

    made = circle("node", "keygen", str(key), "--hybrid", "-o", "json")

    assert made.code == 0, made.stderr
    found = made.json()
    assert found["mldsaKey"] == f"{key}{HALF}"
    assert found["mldsaPublicKey"] == (tmp_path / f"node-b{HALF}.pub").read_text().strip()
    assert found["publicKey"] == (tmp_path / "node-b.pub").read_text().strip()


def test_without_hybrid_there_is_no_mldsa_half(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "node-c"

    made = circle("node", "keygen", str(key), "-o", "json")

    assert made.code == 0, made.stderr
    assert "mldsaKey" not in made.json()
    assert "mldsaPublicKey" not in made.json()
    assert not (tmp_path / f"node-c{HALF}").exists()
    assert NodeKey.load(key).mldsa_public_key_line is None
    text = circle("node", "keygen", str(tmp_path / "node-d"))
    assert "mldsaPublicKey" not in text.stdout


@pytest.mark.parametrize("taken", [HALF, f"{HALF}.pub"], ids=["private-half", "public-half"])
def test_an_existing_half_is_never_overwritten_and_nothing_is_made(
    circle: Callable[..., Result], tmp_path: Path, taken: str
) -> None:
    key = tmp_path / "node-a"
    (tmp_path / f"node-a{taken}").write_text("someone's\n")

    made = circle("node", "keygen", str(key), "--hybrid")

    assert made.code == 2
    assert made.stderr == (
        f"circle: error: {tmp_path / f'node-a{taken}'}: exists; refusing to overwrite a key\n"
    )
    assert _files(tmp_path) == {f"node-a{taken}": 0o644}
    assert (tmp_path / f"node-a{taken}").read_text() == "someone's\n"
