"""`circle secret seal|reseal` on a real circle: real Git, real owner and node keys, the chain
verified from its introduction. The recipients are the nodes admitted at the approved head
(or the working tree's with --nodes working-tree); each node opens its copy with the key
`circle node keygen` made; the value is in no file, output or error; every refusal names what
is wrong and writes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.documents import parse_document
from reconciler.desired.model import KINDS, Secret
from reconciler.secrets import keys, seal
from tests.conftest import Result, git, without_secrets
from tests.reconciler.node.world import NODES, OWNERS, World, make_world

Circle = Callable[..., Result]
VALUE = b"api-key-4f1c9e0b7a-this-must-never-show"
DIGEST = "sha256:ade6e1b2bcd3cfa7b644c1b339dec5060c4186380ac05477377be7ce1c8fd0ef"


@pytest.fixture
def world(tmp_path: Path, circle: Circle) -> World:
    return make_world(tmp_path, circle, without_secrets)


def publish_kem_keys(world: World, nodes: tuple[str, ...] = NODES) -> None:
    """Write each node's PATH.x-wing.pub line into nodes/NAME.yaml (working tree only)."""
    for name in nodes:
        document = world.circle / "nodes" / f"{name}.yaml"
        line = keys.public_path(world.node_key(name)).read_text().strip()
        text = document.read_text()
        document.write_text(
            re.sub(r"(publicKey: .*\n)", rf"\1kemPublicKey: {line}\n", text, count=1)
        )


def approve_all(world: World, circle: Circle, message: str) -> None:
    git(world.circle, "add", "-A")
    if git(world.circle, "status", "--porcelain"):
        git(world.circle, "commit", "-q", "-m", message)
    for name in OWNERS:
        done = circle("approve", "--repo", str(world.circle), "--key", str(world.keys / name))
        assert done.code == 0 or "is the approved head already" in done.stderr, done.stderr


def value_file(tmp_path: Path) -> Path:
    path = tmp_path / "value"
    path.write_bytes(VALUE)
    return path


def seal_args(world: World, tmp_path: Path, *extra: str) -> list[str]:
    return ["secret", "seal", "api-key", "--workload", "langid", "--repo", str(world.circle),
            "--from-file", str(value_file(tmp_path)), *extra]  # fmt: skip


def loaded(world: World) -> Secret:
    data = (world.circle / "secrets" / "api-key.yaml").read_bytes()
    assert VALUE not in data
    document = parse_document(data, "secrets/api-key.yaml", [KINDS["Secret"]]).document
    assert isinstance(document, Secret)
    return document


def test_node_keygen_makes_the_kem_key_beside_the_node_key(world: World) -> None:
    for name in NODES:
        private = keys.private_path(world.node_key(name))
        assert private.stat().st_mode & 0o777 == 0o600
        assert keys.public_path(world.node_key(name)).read_text().startswith("x-wing ")
        assert keys.load(world.node_key(name)).public_key_line() in (
            keys.public_path(world.node_key(name)).read_text()
        )


def test_seal_for_the_nodes_of_the_approved_head(
    world: World, circle: Circle, tmp_path: Path
) -> None:
    refused = circle(*seal_args(world, tmp_path))
    assert refused.code == 2
    assert refused.stderr.startswith(
        "circle: error: node(s) node-a, node-b, node-c publish no kemPublicKey in "
        "nodes/NAME.yaml (approved head seq 1, commit "
    )
    assert not (world.circle / "secrets").exists()

    publish_kem_keys(world)  # in the working tree: not approved yet
    assert circle(*seal_args(world, tmp_path)).code == 2
    early = circle(*seal_args(world, tmp_path, "--nodes", "working-tree", "-o", "json"))
    assert early.code == 0, early.stderr
    assert early.json()["nodesFrom"] == {"source": "working-tree"}

    approve_all(world, circle, "nodes publish their KEM keys")
    done = circle(*seal_args(world, tmp_path, "--replace", "--digest", DIGEST, "-o", "json"))
    assert done.code == 0, done.stderr
    report = done.json()
    assert report["nodesFrom"]["source"] == "approved-head"
    assert report["nodesFrom"]["seq"] == 2
    assert report["nodesFrom"]["commit"] == git(world.circle, "rev-parse", "HEAD")
    assert [r["node"] for r in report["recipients"]] == list(NODES)
    assert (report["workloads"], report["digests"]) == (["langid"], [DIGEST])
    secret = loaded(world)
    assert secret.circle == "example-ai-circle"
    for name in NODES:
        assert seal.open_secret(secret, name, keys.load(world.node_key(name))) == VALUE
    for result in (early, done):
        assert VALUE.decode() not in result.stdout + result.stderr

    valid = circle("validate", str(world.circle))
    assert valid.code == 0, valid.stdout + valid.stderr
    approve_all(world, circle, "the api key")  # a commit like any other, under the rules
    assert circle("verify", "--repo", str(world.circle)).code == 0


def test_seal_reads_the_value_from_stdin_and_never_echoes_it(world: World) -> None:
    publish_kem_keys(world)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "secret", "seal", "api-key", "--workload", "langid",
         "--repo", str(world.circle), "--from-stdin", "--nodes", "working-tree"],
        input=VALUE, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert VALUE not in done.stdout + done.stderr
    secret = loaded(world)
    assert seal.open_secret(secret, "node-a", keys.load(world.node_key("node-a"))) == VALUE


def test_reseal_after_the_nodes_change_keeps_the_binding(
    world: World, circle: Circle, tmp_path: Path
) -> None:
    publish_kem_keys(world, ("node-a", "node-b"))
    (world.circle / "nodes" / "node-c.yaml").unlink()
    approve_all(world, circle, "node-c leaves; a and b publish KEM keys")
    sealed = circle(*seal_args(world, tmp_path, "--digest", DIGEST, "--description", "the key"))
    assert sealed.code == 0, sealed.stderr
    assert [r.node for r in loaded(world).recipients] == ["node-a", "node-b"]
    git(world.circle, "add", "-A")
    git(world.circle, "commit", "-q", "-m", "the api key")
    added = circle("review", "--repo", str(world.circle), "-o", "json")
    assert [c["line"] for c in added.json()["changes"]] == [
        "secret api-key added (for langid, artifacts sha256:ade6e1b2bcd3…, sealed to node-a, "
        "node-b)"
    ]
    approve_all(world, circle, "the api key")

    git(world.circle, "checkout", "-q", "HEAD~2", "--", "nodes/node-c.yaml")
    publish_kem_keys(world, ("node-c",))
    approve_all(world, circle, "node-c is back, with a KEM key")
    before = loaded(world)
    done = circle("secret", "reseal", "api-key", "--repo", str(world.circle),
                  "--from-file", str(value_file(tmp_path)), "-o", "json")  # fmt: skip
    assert done.code == 0, done.stderr
    after = loaded(world)
    assert [r.node for r in after.recipients] == list(NODES)
    assert (after.workloads, after.digests, after.description) == (
        before.workloads, before.digests, before.description,
    )  # fmt: skip
    assert after.ciphertext != before.ciphertext  # a fresh data key
    assert seal.open_secret(after, "node-c", keys.load(world.node_key("node-c"))) == VALUE
    assert json.loads(done.stdout)["digests"] == [DIGEST]
    git(world.circle, "commit", "-q", "-am", "api-key resealed for node-c")
    review = circle("review", "--repo", str(world.circle), "-o", "json")
    assert VALUE.decode() not in review.stdout
    [change] = review.json()["changes"]
    assert change["subject"] == "secret api-key"
    assert change["details"][0].startswith('value "sealed ')  # a fresh ciphertext
    assert change["details"][1] == 'sealedTo "node-a, node-b" -> "node-a, node-b, node-c"'


def test_refusals_name_the_problem_and_write_nothing(
    world: World, circle: Circle, tmp_path: Path
) -> None:
    publish_kem_keys(world)
    approve_all(world, circle, "KEM keys")
    repo = str(world.circle)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    value = str(value_file(tmp_path))
    base = ["secret", "seal", "api-key", "--repo", repo]
    cases = {
        "unknown-workload": (
            [*base, "--workload", "ghost", "--from-file", value],
            "unknown workload(s) ghost (workloads: langid)",
        ),
        "no-value": ([*base, "--workload", "langid"],
                     "give the value with exactly one of --from-file FILE or --from-stdin"),
        "two-values": ([*base, "--workload", "langid", "--from-file", value, "--from-stdin"],
                       "give the value with exactly one of --from-file FILE or --from-stdin"),
        "empty-value": ([*base, "--workload", "langid", "--from-file", str(empty)],
                        "the value is empty; refusing to seal nothing"),
        "bad-digest": ([*base, "--workload", "langid", "--digest", "sha256:xyz",
                        "--from-file", value],
                       "invalid digest 'sha256:xyz': expected 'sha256:' and 64 lowercase "
                       "hexadecimal digits"),
        "bad-name": (["secret", "seal", "API", "--repo", repo, "--workload", "langid",
                      "--from-file", value], "invalid name 'API'"),
        "reseal-missing": (["secret", "reseal", "api-key", "--repo", repo, "--from-file", value],
                           f"{world.circle / 'secrets' / 'api-key.yaml'}: no such secret; "
                           "circle secret seal api-key makes it"),
    }  # fmt: skip
    for name, (args, message) in cases.items():
        done = circle(*args)
        assert done.code == 2, (name, done.stdout, done.stderr)
        assert message in done.stderr, (name, done.stderr)
        assert not (world.circle / "secrets").exists(), name

    assert circle(*base, "--workload", "langid", "--from-file", value).code == 0
    first = (world.circle / "secrets" / "api-key.yaml").read_bytes()
    again = circle(*base, "--workload", "langid", "--from-file", value)
    assert again.code == 2
    assert "exists; circle secret reseal api-key seals it again for the nodes" in again.stderr
    assert (world.circle / "secrets" / "api-key.yaml").read_bytes() == first
