"""`circle qss` with recipients: put and share wrap the data key for nodes and members, get reads
it back with a node's X-Wing key and no storage key, unshare takes it away; a volume's
`recipients` says which nodes, and the repository check refuses one that cannot be shared with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.secrets import keys as kem_keys
from tests.conftest import Result, copy_example, edit

SITES = [f"{site}-{index}" for site in ("ghent", "cairo", "dubai") for index in (1, 2)]


def set_kem_key(repo: Path, node: str, line: str) -> None:
    path = repo / "nodes" / f"{node}.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        re.sub(r"^kemPublicKey: .*$", f"kemPublicKey: {line}", text, count=1, flags=re.M),
        encoding="utf-8",
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example circle, its volume on folders of this test, shared with node-a and node-b,
    and node-a's KEM key one whose private half is at tmp_path/node-a.x-wing."""
    repo = copy_example(tmp_path / "circle")
    volume = repo / "volumes/model-data.yaml"
    for site in SITES:
        (tmp_path / site).mkdir()
        edit(volume, f"dir:/var/lib/circle/qss/{site}", f"dir:{tmp_path / site}")
    edit(volume, "recipients: admitted-nodes", "recipients: [node-a, node-b]")
    set_kem_key(repo, "node-a", kem_keys.generate(tmp_path / "node-a").public_key_line())
    return repo


@pytest.fixture
def storage_key(circle: Callable[..., Result], tmp_path: Path) -> Path:
    key = tmp_path / "storage.key"
    assert circle("qss", "keygen", str(key)).code == 0
    return key


def volume(repo: Path) -> list[str]:
    return ["--volume", "model-data", "--repo", str(repo)]


def test_a_node_reads_what_its_volume_is_shared_with_without_the_storage_key(
    circle: Callable[..., Result], repo: Path, storage_key: Path, tmp_path: Path
) -> None:
    model = repo / "src/model/langid-model.json"
    alice = kem_keys.generate(tmp_path / "alice")
    put = circle(
        "qss", "put", str(model), "--key", str(storage_key), *volume(repo),
        "--recipient", f"alice={alice.public_key_line('alice@example')}", "-o", "json",
    )  # fmt: skip
    assert put.code == 0, put.stderr
    stored = put.json()
    assert [r["name"] for r in stored["recipients"]] == ["alice", "node-a", "node-b"]
    assert stored["recipients"][0]["kemKey"].startswith("sha256:")

    out = tmp_path / "model.json"
    got = circle(
        "qss", "get", stored["objectId"][:12], str(out), *volume(repo),
        "--kem-key", str(kem_keys.private_path(tmp_path / "node-a")), "--as", "node-a",
        "-o", "json",
    )  # fmt: skip
    assert got.code == 0, got.stderr
    assert out.read_bytes() == model.read_bytes()
    assert got.json()["recipients"] == stored["recipients"]
    out.unlink()
    # alice's key was given as a line, node-a's comes from nodes/node-a.yaml
    got = circle(
        "qss", "get", stored["objectId"], str(out), *volume(repo),
        "--kem-key", str(kem_keys.private_path(tmp_path / "alice")), "--as", "alice",
    )  # fmt: skip
    assert got.code == 0, got.stderr
    assert out.read_bytes() == model.read_bytes()

    listed = circle("qss", "ls", *volume(repo), "-o", "json")
    assert listed.json()["objects"][0]["recipients"] == stored["recipients"]


def test_a_key_the_object_is_not_shared_with_reads_nothing(
    circle: Callable[..., Result], repo: Path, storage_key: Path, tmp_path: Path
) -> None:
    model = repo / "src/model/langid-model.json"
    put = circle("qss", "put", str(model), "--key", str(storage_key), *volume(repo))
    assert put.code == 0, put.stderr
    oid = put.stdout.strip()
    kem_keys.generate(tmp_path / "node-c")
    out = tmp_path / "model.json"

    got = circle(
        "qss", "get", oid, str(out), *volume(repo),
        "--kem-key", str(kem_keys.private_path(tmp_path / "node-c")), "--as", "node-c",
    )  # fmt: skip
    assert got.code == 1
    assert got.stderr == (
        f"circle: error: object {oid[:16]} is not shared with node-c (shared with node-a, "
        "node-b): `circle qss share` it with the storage key\n"
    )
    assert not out.exists()
    # node-a's key read as node-b: the entry of node-b is for another key
    got = circle(
        "qss", "get", oid, str(out), *volume(repo),
        "--kem-key", str(kem_keys.private_path(tmp_path / "node-a")), "--as", "node-b",
    )  # fmt: skip
    assert got.code == 1
    assert f"object {oid[:16]}: the entry for node-b is wrapped for KEM key sha256:" in got.stderr
    assert not out.exists()


def test_share_then_unshare_a_recipient(
    circle: Callable[..., Result], repo: Path, storage_key: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"weights" * 1000)
    backends = [a for site in SITES for a in ("-b", f"dir:{tmp_path / site}")]
    put = circle("qss", "put", str(data), "--key", str(storage_key), *backends, "-o", "json")
    assert put.code == 0, put.stderr
    assert put.json()["recipients"] == []
    oid = put.json()["objectId"]
    pub = kem_keys.public_path(tmp_path / "node-a")

    shared = circle(
        "qss", "share", oid[:10], "--key", str(storage_key), "--recipient", f"node-a={pub}",
        *backends, "-o", "json",
    )  # fmt: skip
    assert shared.code == 0, shared.stderr
    assert (shared.json()["objectId"], shared.json()["version"]) == (oid, 2)
    assert shared.json()["shared"] == ["node-a"]
    out = tmp_path / "out.bin"
    reader = ["--kem-key", str(kem_keys.private_path(tmp_path / "node-a")), "--as", "node-a"]
    assert circle("qss", "get", oid, str(out), *backends, *reader).code == 0
    assert out.read_bytes() == data.read_bytes()
    out.unlink()

    removed = circle("qss", "unshare", oid, "--recipient", "node-a", *backends, "-o", "json")
    assert removed.code == 0, removed.stderr
    assert removed.json()["recipients"] == []
    assert (removed.json()["unshared"], removed.json()["failedBackends"]) == (["node-a"], [])
    got = circle("qss", "get", oid, str(out), *backends, *reader)
    assert got.code == 1
    assert "is not shared with node-a (shared with no one)" in got.stderr
    assert not out.exists()
    again = circle("qss", "unshare", oid, "--recipient", "node-a", *backends)
    assert again.code == 1
    assert again.stderr == (
        f"circle: error: object {oid[:16]} is not shared with node-a (shared with no one); "
        "nothing was changed\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipient", "node-a"], "--recipient 'node-a': expected NAME=KEY"),
        (["--recipient", "node-a=x-wing AAAA"], "--recipient node-a: an X-Wing public key is"),
        (["--recipient", "../a=x-wing AAAA"], "--recipient '../a': a recipient name is 1-128"),
    ],
)
def test_a_bad_recipient_is_refused_before_anything_is_written(
    circle: Callable[..., Result],
    storage_key: Path,
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "data").write_bytes(b"x")
    result = circle(
        "qss", "put", str(tmp_path / "data"), "--key", str(storage_key),
        "-b", f"dir:{tmp_path / 'b'}", *args,
    )  # fmt: skip
    assert result.code == 2
    assert result.stderr.startswith(f"circle: error: {message}")
    assert list((tmp_path / "b").iterdir()) == []


def test_get_takes_the_storage_key_or_a_kem_key_with_its_name(
    circle: Callable[..., Result], storage_key: Path, tmp_path: Path
) -> None:
    (tmp_path / "b").mkdir()
    where = ["-b", f"dir:{tmp_path / 'b'}"]
    out = str(tmp_path / "out")
    both = circle("qss", "get", "0" * 64, out, "--key", str(storage_key), "--kem-key", "k",
                  "--as", "n", *where)  # fmt: skip
    neither = circle("qss", "get", "0" * 64, out, *where)
    alone = circle("qss", "get", "0" * 64, out, "--kem-key", "k", *where)
    for result in (both, neither):
        assert (result.code, result.stderr) == (
            2,
            "circle: error: give --key STORAGE_KEY, or --kem-key KEY.x-wing --as NAME\n",
        )
    assert (alone.code, alone.stderr) == (
        2,
        "circle: error: --kem-key and --as go together: the key, and the recipient it is\n",
    )
    key = tmp_path / "node.x-wing"
    key.write_text("not a key\n")
    key.chmod(0o600)
    bad = circle("qss", "get", "0" * 64, out, "--kem-key", str(key), "--as", "n", *where)
    assert bad.code == 2
    assert bad.stderr.startswith(f"circle: error: {key}: expected -----BEGIN CIRCLE X-WING")
    for command in ("share", "unshare"):
        assert circle("qss", command, "--help").code == 0


@pytest.mark.parametrize(
    ("recipients", "expected"),
    [
        (
            "recipients: [node-a, node-d]",
            "volumes/model-data.yaml:24:22: unknown node 'node-d' (nodes: node-a, node-b, node-c)",
        ),
        (
            "recipients: admitted-nodes",
            "volumes/model-data.yaml:24:13: node node-c has no kemPublicKey: the volume cannot "
            "be shared with it (circle node keygen writes one; add it to nodes/node-c.yaml)",
        ),
    ],
)
def test_the_check_refuses_a_recipient_that_is_not_an_admitted_node_with_a_kem_key(
    circle: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recipients: str,
    expected: str,
) -> None:
    repo = copy_example(tmp_path / "circle")
    edit(repo / "volumes/model-data.yaml", "recipients: admitted-nodes", recipients)
    text = (repo / "nodes/node-c.yaml").read_text()
    (repo / "nodes/node-c.yaml").write_text(re.sub(r"^kemPublicKey: .*\n", "", text, flags=re.M))
    monkeypatch.chdir(repo)

    result = circle("validate")

    assert expected in result.stdout.splitlines()
    assert result.code == 1


def test_a_volume_whose_recipients_are_refused_is_not_put_into_but_still_listed(
    circle: Callable[..., Result], repo: Path, storage_key: Path, tmp_path: Path
) -> None:
    edit(repo / "volumes/model-data.yaml", "[node-a, node-b]", "[node-a, node-d]")
    model = repo / "src/model/langid-model.json"
    put = circle("qss", "put", str(model), "--key", str(storage_key), *volume(repo))
    assert put.code == 2
    assert put.stderr == (
        f"circle: error: {repo}: volume model-data is shared with node node-d, which is not "
        "admitted or has no kemPublicKey (circle validate says where)\n"
    )
    assert [p for site in SITES for p in (tmp_path / site).rglob("*") if p.is_file()] == []
    listed = circle("qss", "ls", *volume(repo), "-o", "json")
    assert (listed.code, listed.json()["objects"]) == (0, [])
