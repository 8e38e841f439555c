"""`circle qss` commands in-process: the storage key file and the refusals users meet first."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qss.backends import open_backend
from tests.conftest import Result, copy_example, edit


def test_keygen_writes_an_owner_only_key_and_never_overwrites(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "storage.key"

    made = circle("qss", "keygen", str(key), "-o", "json")

    assert made.code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    document = json.loads(key.read_text())
    assert document["format"] == "qss-storage-key/1"
    assert made.json() == {"keyFile": str(key), "keyId": document["keyId"]}
    before = key.read_bytes()

    again = circle("qss", "keygen", str(key))

    assert again.code == 2
    assert again.stderr == (
        f"circle: error: {key}: exists; refusing to overwrite a key (use --force)\n"
    )
    assert key.read_bytes() == before


def test_a_key_others_can_read_is_refused(circle: Callable[..., Result], tmp_path: Path) -> None:
    key = tmp_path / "storage.key"
    assert circle("qss", "keygen", str(key)).code == 0
    os.chmod(key, 0o644)
    (tmp_path / "data").write_bytes(b"x")
    (tmp_path / "b").mkdir()

    result = circle(
        "qss", "put", str(tmp_path / "data"), "--key", str(key), "-b", f"dir:{tmp_path / 'b'}"
    )

    assert result.code == 2
    assert result.stderr == (
        f"circle: error: {key}: permissions 0644 are too open; the storage key must be "
        f"readable by its owner only (chmod 600 {key})\n"
    )
    assert list((tmp_path / "b").iterdir()) == []


def test_too_few_backends_is_refused_before_anything_is_written(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "storage.key"
    circle("qss", "keygen", str(key))
    (tmp_path / "data").write_bytes(b"payload")
    folders = [tmp_path / f"b{index}" for index in range(3)]
    for folder in folders:
        folder.mkdir()

    result = circle(
        "qss",
        "put",
        str(tmp_path / "data"),
        "--key",
        str(key),
        *[arg for folder in folders for arg in ("-b", f"dir:{folder}")],
    )

    assert result.code == 2
    assert (
        result.stderr == "circle: error: 6 shares need 6 distinct backends; 3 given (b0, b1, b2)\n"
    )
    assert all(not any(folder.iterdir()) for folder in folders)


def test_no_backend_given(circle: Callable[..., Result], tmp_path: Path) -> None:
    result = circle("qss", "ls")
    assert result.code == 2
    assert result.stderr == (
        "circle: error: no backends: give --backend URL (repeatable) or --volume NAME\n"
    )


def test_volume_of_a_circle_drives_put_and_get(
    circle: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_example(tmp_path / "circle")
    volume = repo / "volumes/model-data.yaml"
    for site in ("ghent", "cairo", "dubai"):
        for index in (1, 2):
            folder = tmp_path / f"{site}-{index}"
            folder.mkdir()
            edit(volume, f"dir:/var/lib/circle/qss/{site}-{index}", f"dir:{folder}")
    key = tmp_path / "storage.key"
    circle("qss", "keygen", str(key))
    model = repo / "src/model/langid-model.json"

    put = circle(
        "qss",
        "put",
        str(model),
        "--key",
        str(key),
        "--volume",
        "model-data",
        "--repo",
        str(repo),
        "-o",
        "json",
    )

    assert put.code == 0, put.stderr
    stored = put.json()
    assert (stored["k"], stored["n"]) == (4, 6)
    assert sorted({p["failureDomain"] for p in stored["placement"]}) == [
        "site-cairo",
        "site-dubai",
        "site-ghent",
    ]
    out = tmp_path / "model.json"
    got = circle(
        "qss",
        "get",
        stored["objectId"][:12],
        str(out),
        "--key",
        str(key),
        "--volume",
        "model-data",
        "--repo",
        str(repo),
    )
    assert got.code == 0, got.stderr
    assert out.read_bytes() == model.read_bytes()


def test_unknown_volume(circle: Callable[..., Result], tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "circle")
    result = circle("qss", "ls", "--volume", "scratch", "--repo", str(repo))
    assert result.code == 2
    assert result.stderr == (
        f"circle: error: {repo}: no valid volume 'scratch' (volumes: model-data)\n"
    )


def test_serve_exposes_a_backend_over_http_until_sigterm(tmp_path: Path) -> None:
    """A real `circle qss serve` process, used through the http backend, then stopped."""
    folder = tmp_path / "blobs"
    folder.mkdir()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "qss",
            "serve",
            f"dir:{folder}",
            "--port",
            "0",
            "--token-file",
            str(token),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert line.startswith("serving blobs at http://")
        url = line.rsplit(" ", 1)[1]
        client = open_backend(url, token="s3cret")
        try:
            client.put("m/abc/1", b"hello")
            assert client.get("m/abc/1") == b"hello"
            assert (folder / "m/abc/1").read_bytes() == b"hello"
        finally:
            client.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        for stream in (server.stdout, server.stderr):
            if stream is not None:
                stream.close()


def test_a_put_below_the_required_spread_is_refused(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "storage.key"
    circle("qss", "keygen", str(key))
    (tmp_path / "data").write_bytes(b"payload")
    backends = []
    for index in range(6):
        folder = tmp_path / f"b{index}"
        folder.mkdir()
        backends += ["-b", f"b{index}@rack-{index % 2}=dir:{folder}"]

    result = circle(
        "qss", "put", str(tmp_path / "data"), "--key", str(key), "--min-domains", "3", *backends
    )

    assert result.code == 2
    assert result.stderr == (
        "circle: error: shares must span at least 3 failure domains; the backends given span "
        "2 (rack-0, rack-1)\n"
    )
    assert all(not any((tmp_path / f"b{index}").iterdir()) for index in range(6))
