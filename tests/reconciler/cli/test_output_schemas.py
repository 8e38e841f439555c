"""Every command's `-o json` output has a published JSON Schema (`schemas/output/`), and the
schemas follow the house rules. The outputs themselves are checked against them wherever a
test runs a command (`tests/output_shapes.py`, called by the `circle` fixtures); the commands
no other test reads as JSON are run here."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest

from reconciler.cli.main import cli
from tests import output_shapes
from tests.conftest import Result, git
from tests.reconciler.cli.test_policy import ssh_keygen
from tests.reconciler.node.world import World, make_world

CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")


def json_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command path that prints JSON: those with --output, and `introduction`."""
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        if isinstance(command, click.Group):
            yield from json_commands(command, (*prefix, name))
        elif "-".join((*prefix, name)) in output_shapes.JSON_BY_DEFAULT or any(
            isinstance(p, click.Option) and "--output" in p.opts for p in command.params
        ):
            yield "-".join((*prefix, name))


def test_every_command_that_prints_json_has_a_schema_and_every_schema_a_command() -> None:
    commands = set(json_commands())
    files = {path.stem for path in output_shapes.SCHEMAS.glob("*.json")}
    assert commands - files == set(), "commands without an output schema"
    assert files - commands == {output_shapes.ERROR}, "schemas of no command"


def objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from objects(value, f"{path}/{index}")


@pytest.mark.parametrize("path", sorted(output_shapes.SCHEMAS.glob("*.json")), ids=lambda p: p.stem)
def test_a_schema_is_valid_strict_and_camel_case(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/schemas/output/{path.name}")
    assert (
        schema["title"] == f"circle {path.stem.replace('-', ' ')} -o json" or path.stem == "error"
    )
    for where, node in objects(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where}: unknown keys allowed"
            assert set(node.get("required", [])) <= set(node["properties"]), where
            keys = [key for key in node["properties"] if not CAMEL.fullmatch(key)]
            assert keys == [], f"{where}: keys not in camelCase"
        else:  # a map keyed by names (nodes, owners, refs): its values have a shape
            assert "additionalProperties" in node or "description" in node, where


def test_a_shape_that_does_not_match_is_said_with_where(monkeypatch: pytest.MonkeyPatch) -> None:
    step = {"seq": "1", "commit": "a" * 40, "signers": ["alice"], "policyVersion": 1}
    with pytest.raises(AssertionError, match=r"does not match schemas/output/log.json at 0/seq"):
        output_shapes.check(["log", "-o", "json"], 0, json.dumps([step]))
    output_shapes.check(["log", "-o", "text"], 0, json.dumps([step]))  # not JSON output
    monkeypatch.setattr(output_shapes, "schema", lambda name: None)
    with pytest.raises(AssertionError, match=r"no schemas/output/log\.json"):
        output_shapes.check(["log", "-o", "json"], 0, "[]")
    assert output_shapes.command_path(["-o", "json", "get", "nodes"]) == (["get", "nodes"], "json")
    assert output_shapes.command_path(["introduction"]) == (["introduction"], "json")
    assert output_shapes.command_path(["review", "-o", "markdown"]) == (["review"], "markdown")
    assert output_shapes.command_path(["get", "--help"]) is None


# -- commands no other test reads as JSON -------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> World:
    return make_world(tmp_path, circle)


def test_land_and_the_policy_edits_print_their_shapes(
    world: World, circle: Callable[..., Result], tmp_path: Path
) -> None:
    repo = str(world.circle)
    git(world.circle, "checkout", "-q", "-b", "more")
    (world.circle / "NOTES.md").write_text("notes\n")
    git(world.circle, "add", "NOTES.md")
    git(world.circle, "commit", "-qm", "notes")
    for owner in ("alice", "bob"):
        assert circle("approve", "--repo", repo, "--key", str(world.keys / owner)).code == 0
    git(world.circle, "checkout", "-q", "main")
    landed = circle("land", "more", "--repo", repo, "-o", "json")
    assert landed.code == 0, landed.stderr
    assert landed.json()["seq"] == 2

    dave = ssh_keygen(tmp_path / "dave")
    added = circle("policy", "members", "add", "dave", "--key", str(dave), "--repo", repo,
                   "-o", "json")  # fmt: skip
    assert added.code == 0, added.stderr
    assert added.json()["version"] == 2
    git(world.circle, "checkout", "-q", "--", "circle.yaml")
    rotated = circle("policy", "members", "rotate-key", "bob", "--key", str(dave),
                     "--repo", repo, "-o", "json")  # fmt: skip
    assert rotated.code == 0, rotated.stderr
    git(world.circle, "checkout", "-q", "--", "circle.yaml")
    lowered = circle("policy", "rules", "set", "governance", "--threshold", "2", "--repo", repo,
                     "-o", "json")  # fmt: skip
    assert lowered.code == 0, lowered.stderr
    assert lowered.json()["written"] is True


def test_qss_get_artifact_verify_and_node_status_print_their_shapes(
    circle: Callable[..., Result], example: Path, tmp_path: Path
) -> None:
    key = tmp_path / "storage.key"
    assert circle("qss", "keygen", str(key)).code == 0
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(5000))
    backends = []
    for index in range(6):
        (tmp_path / f"b{index}").mkdir()
        backends += ["-b", f"dir:{tmp_path / f'b{index}'}"]
    put = circle("qss", "put", str(source), "--key", str(key), *backends)
    assert put.code == 0, put.stderr
    got = circle("qss", "get", put.stdout.strip(), str(tmp_path / "out.bin"), "--key", str(key),
                 *backends, "-o", "json")  # fmt: skip
    assert got.code == 0, got.stderr
    assert got.json()["needsRepair"] == []

    store = tmp_path / "store"
    built = circle("build", "langid-service", "--repo", str(example), "--store", str(store),
                   "-o", "json")  # fmt: skip
    assert built.code == 0, built.stderr
    artifact = built.json()[0]["digest"]
    dest = tmp_path / "artifacts"
    made = circle("artifact", "materialize", artifact, "--dest", str(dest), "--store", str(store),
                  "-o", "json")  # fmt: skip
    assert made.code == 0, made.stderr
    verified = circle("artifact", "verify", made.json()["path"], "--id", artifact,
                      "--store", str(store), "-o", "json")  # fmt: skip
    assert verified.code == 0, verified.stderr
    assert verified.json()["verified"] is True

    node = tmp_path / "node"
    node.mkdir(mode=0o700)
    status = {
        "node": "node-a", "circle": "example-ai-circle", "store": "sqlite:///x", "leader": True,
        "epoch": 3, "lastApplied": {"commit": "a" * 40, "seq": 2}, "lastAttempted": "a" * 40,
        "refusal": None, "updatedAt": 1_900_000_000,
        "conditions": [{"type": "Ready", "status": True, "reason": "Applied", "message": "ok"}],
    }  # fmt: skip
    (node / "agent.json").write_text(json.dumps(status))
    shown = circle("node", "status", "--state", str(node), "-o", "json")
    assert shown.code == 0, shown.stderr
    assert shown.json() == status
