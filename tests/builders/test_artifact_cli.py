"""`circle artifact` end to end: build the example's service, serve its store over HTTP,
materialize it into an empty node, verify, tamper, diff, and refuse a corrupt chunk."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builders.chunks import ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.manifest import decode
from tests.conftest import Result
from tests.reconciler.cli.test_consistency import snake_keys

SERVICE_FILE = "app/langid_service/__init__.py"


def build_service(circle: Callable[..., Result], repo: Path, store: Path) -> str:
    built = circle(
        "build", "langid-service", "--repo", str(repo), "--store", str(store), "-o", "json"
    )
    assert built.code == 0, built.stderr
    digest: str = built.json()[0]["digest"]
    return digest


@pytest.fixture
def built(example: Path, circle: Callable[..., Result], tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "built-store"
    return store, build_service(circle, example, store)


@pytest.fixture
def server(built: tuple[Path, str]) -> Iterator[ChunkServer]:
    with ChunkServer(ChunkStore(built[0])) as running:
        yield running


def test_materialize_from_a_peer_then_verify_and_detect_tampering(
    built: tuple[Path, str], server: ChunkServer, circle: Callable[..., Result], tmp_path: Path
) -> None:
    _, artifact_id = built
    node_store, dest = tmp_path / "node-store", tmp_path / "artifacts"
    args = ("--dest", str(dest), "--store", str(node_store), "--source", server.url)

    done = circle("artifact", "materialize", artifact_id, *args, "-o", "json")

    assert done.code == 0, done.stderr
    path = Path(done.json()["path"])
    assert done.json()["artifact"] == artifact_id
    assert done.json()["fetchedBytes"] > 0
    assert snake_keys(done.json()) == []
    assert path == dest / artifact_id.removeprefix("sha256:")
    assert (dest / "current").resolve() == path
    assert (path / SERVICE_FILE).is_file()
    # The node now holds the manifest and every chunk: a second run fetches nothing.
    again = circle("artifact", "materialize", artifact_id, *args[:4], "-o", "json")
    assert again.code == 0, again.stderr
    assert again.json()["fetchedBytes"] == 0

    verified = circle("artifact", "verify", str(path), "--id", artifact_id, "--source", server.url)
    assert verified.code == 0, verified.stderr
    assert circle("artifact", "verify", str(dest / "current"), "--id", artifact_id,
                  "--store", str(node_store)).code == 0  # fmt: skip

    target = path / SERVICE_FILE
    target.chmod(0o644)
    target.write_text(target.read_text() + "# tampered\n")
    tampered = circle(
        "artifact", "verify", str(path), "--id", artifact_id, "--store", str(node_store)
    )
    assert tampered.code == 1
    assert SERVICE_FILE in tampered.stderr
    assert len(tampered.stderr.strip().splitlines()) == 1


def test_diff_of_two_builds_lists_the_changed_file_and_the_bytes_to_fetch(
    example: Path, built: tuple[Path, str], circle: Callable[..., Result]
) -> None:
    store, first = built
    source = example / "src/inference/langid_service/__init__.py"
    source.write_text(source.read_text() + "\n# a change\n")
    second = build_service(circle, example, store)
    assert second != first

    diff = circle("artifact", "diff", first, second, "--store", str(store), "-o", "json")

    assert diff.code == 0, diff.stderr
    report = diff.json()
    assert snake_keys(report) == []
    assert (report["added"], report["removed"]) == ([], [])
    assert report["changed"] == [SERVICE_FILE]
    manifest = decode(ChunkStore(store).get_manifest(second), second)
    (entry,) = [e for e in manifest.files() if e.path == SERVICE_FILE]
    assert report["fetchBytes"] == entry.size
    assert 0 < report["fetchBytes"] < report["totalBytes"]

    text = circle("artifact", "diff", first, second, "--store", str(store))
    assert text.code == 0
    assert "changed" in text.stdout
    assert SERVICE_FILE in text.stdout
    assert f"fetch {report['fetchBytes']}" in text.stdout


def test_a_corrupt_chunk_on_the_peer_fails_materialize_and_leaves_nothing(
    built: tuple[Path, str], server: ChunkServer, circle: Callable[..., Result], tmp_path: Path
) -> None:
    store_dir, artifact_id = built
    store = ChunkStore(store_dir)
    manifest = decode(store.get_manifest(artifact_id), artifact_id)
    (entry,) = [e for e in manifest.files() if e.path == SERVICE_FILE]
    digest = entry.chunks[0].sha256
    chunk_file = store.path(digest)
    data = bytearray(chunk_file.read_bytes())
    data[0] ^= 1
    chunk_file.write_bytes(bytes(data))
    dest = tmp_path / "artifacts"

    failed = circle(
        "artifact", "materialize", artifact_id, "--dest", str(dest),
        "--store", str(tmp_path / "node-store"), "--source", server.url,
    )  # fmt: skip

    assert failed.code == 1
    assert digest in failed.stderr
    assert "Traceback" not in failed.stderr
    assert [p.name for p in dest.iterdir()] == []


def test_bad_usage_exits_2(circle: Callable[..., Result], tmp_path: Path) -> None:
    bad_id = circle("artifact", "verify", str(tmp_path), "--id", "sha256:xyz", "--store", ".")
    assert bad_id.code == 2
    no_store = circle("artifact", "diff", "sha256:" + "0" * 64, "sha256:" + "1" * 64,
                      "--store", str(tmp_path / "nowhere"))  # fmt: skip
    assert no_store.code == 2
    missing = ChunkStore(tmp_path / "empty")
    absent = circle("artifact", "verify", str(tmp_path), "--id", "sha256:" + "0" * 64,
                    "--store", str(missing.root))  # fmt: skip
    assert absent.code == 1
    assert "no manifest of" in absent.stderr


def test_serve_runs_until_sigterm(built: tuple[Path, str]) -> None:
    store_dir, artifact_id = built
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "artifact", "serve", "--store", str(store_dir),
         "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith(f"serving {store_dir} at http://127.0.0.1:"), line
        url = line.rpartition(" at ")[2]
        with HttpChunkSource(url) as source:
            assert source.get_manifest(artifact_id) == ChunkStore(store_dir).get_manifest(
                artifact_id
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
