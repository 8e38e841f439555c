"""A node reads a volume shared with it with its own X-Wing key and no storage key
(`reconciler.node.volumes` over real `dir:` backends, the objects put by the real CLI); a node
the volume is not shared with, or one with neither key, is refused with what it lacks and no
view is written; the storage key path is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from qss.keys import read_key_file
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState
from reconciler.node.artifacts import Artifacts
from reconciler.node.volumes import Volumes, VolumeUnavailable
from reconciler.secrets import xwing
from tests.conftest import Result, copy_example, edit

SITES = [f"{site}-{index}" for site in ("ghent", "cairo", "dubai") for index in (1, 2)]
WEIGHTS = bytes(range(256)) * 300


def set_kem_key(repo: Path, node: str, key: xwing.XWingPrivateKey) -> None:
    path = repo / "nodes" / f"{node}.yaml"
    text = path.read_text(encoding="utf-8")
    line = f"kemPublicKey: {key.public_key_line()}"
    path.write_text(re.sub(r"^kemPublicKey: .*$", line, text, count=1, flags=re.M))


class Circle:
    """The example circle with its volume on this test's folders, shared with `recipients`,
    and one object in it put by `circle qss put --volume` and pinned by id."""

    def __init__(self, tmp_path: Path, circle: Callable[..., Result]) -> None:
        self.tmp = tmp_path
        self.circle = circle
        self.repo = copy_example(tmp_path / "circle")
        self.volume = self.repo / "volumes/model-data.yaml"
        for site in SITES:
            (tmp_path / site).mkdir()
            edit(self.volume, f"dir:/var/lib/circle/qss/{site}", f"dir:{tmp_path / site}")
        text = self.volume.read_text()
        self.volume.write_text(text[: text.index("objects:\n")] + "recipients: [node-a]\n")
        self.keys = {name: xwing.generate() for name in ("node-a", "node-b", "node-c")}
        for name, key in self.keys.items():
            set_kem_key(self.repo, name, key)
        self.storage_key = tmp_path / "storage.key"
        assert circle("qss", "keygen", str(self.storage_key)).code == 0
        source = tmp_path / "weights.bin"
        source.write_bytes(WEIGHTS)
        put = circle("qss", "put", str(source), "--key", str(self.storage_key),
                     "--volume", "model-data", "--repo", str(self.repo), "-o", "json")  # fmt: skip
        assert put.code == 0, put.stderr
        assert [r["name"] for r in put.json()["recipients"]] == ["node-a"]
        self.object_id = put.json()["objectId"]
        with self.volume.open("a") as handle:
            handle.write(f"objects:\n  - {{name: weights.bin, id: {self.object_id}}}\n")

    def desired(self) -> DesiredState:
        report = check_circle_dir(self.repo)
        assert report.errors == [], report.errors
        return report.state

    def node(
        self, name: str, *, kem: bool = True, storage_key: bool = False
    ) -> tuple[Volumes, Path]:
        state = self.tmp / f"state-{name}"
        state.mkdir(mode=0o700, exist_ok=True)
        volumes = Volumes(
            state,
            read_key_file(self.storage_key) if storage_key else None,
            Artifacts(state),
            kem_key=self.keys[name] if kem else None,
            node=lambda: name,
        )
        return volumes, state


@pytest.fixture
def world(tmp_path: Path, circle: Callable[..., Result]) -> Circle:
    return Circle(tmp_path, circle)


def test_a_node_reads_a_volume_shared_with_it_with_only_its_kem_key(world: Circle) -> None:
    volumes, _ = world.node("node-a")
    view = volumes.ensure("model-data", world.desired())
    assert (view / "weights.bin").read_bytes() == WEIGHTS
    assert volumes.storage_key is None
    # A second call finds the view as it was, and reads nothing again.
    assert volumes.ensure("model-data", world.desired()) == view


def test_the_storage_key_path_is_unchanged(world: Circle) -> None:
    volumes, _ = world.node("node-c", kem=False, storage_key=True)
    view = volumes.ensure("model-data", world.desired())
    assert (view / "weights.bin").read_bytes() == WEIGHTS


def no_view(state: Path) -> None:
    volumes = state / "volumes"
    assert not volumes.exists() or [p for p in volumes.rglob("*") if p.is_file()] == []


def test_a_node_the_volume_is_not_shared_with_is_refused_naming_what_it_lacks(
    world: Circle,
) -> None:
    volumes, state = world.node("node-c")
    with pytest.raises(VolumeUnavailable) as refused:
        volumes.ensure("model-data", world.desired())
    assert str(refused.value) == (
        "volume model-data: no storage key on this node (give the agent --storage-key), and the "
        "volume is not shared with node node-c (recipients: node-a)"
    )
    no_view(state)


def test_a_node_with_neither_key_is_refused_naming_both(world: Circle) -> None:
    volumes, state = world.node("node-a", kem=False)
    with pytest.raises(VolumeUnavailable) as refused:
        volumes.ensure("model-data", world.desired())
    assert str(refused.value) == (
        "volume model-data: no storage key on this node (give the agent --storage-key), and no "
        "X-Wing key (KEY.x-wing) to read it as a recipient"
    )
    no_view(state)


def test_a_node_added_to_the_volume_reads_only_once_the_objects_are_shared_with_it(
    world: Circle,
) -> None:
    edit(world.volume, "recipients: [node-a]", "recipients: admitted-nodes")
    volumes, state = world.node("node-b")
    with pytest.raises(VolumeUnavailable) as refused:
        volumes.ensure("model-data", world.desired())
    oid = world.object_id
    assert str(refused.value) == (
        f"volume model-data: object weights.bin: object {oid[:16]} is not shared with node-b "
        "(shared with node-a): `circle qss share` it with the storage key"
    )
    no_view(state)

    shared = world.circle("qss", "share", oid, "--key", str(world.storage_key),
                          "--volume", "model-data", "--repo", str(world.repo))  # fmt: skip
    assert shared.code == 0, shared.stderr
    view = volumes.ensure("model-data", world.desired())
    assert (view / "weights.bin").read_bytes() == WEIGHTS
