"""The python-app builder with a real pip and a real (tiny, locally made) wheel."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from builders import BuildError
from builders.chunks import ChunkStore
from builders.python_app import PythonAppBuild, build_python_app


def make_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel `tinylib 1.0`, built by hand (no network, no build tool)."""
    files = {
        "tinylib/__init__.py": b"ANSWER = 42\n",
        "tinylib-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinylib\nVersion: 1.0\n",
        "tinylib-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinylib-1.0.dist-info/RECORD,,")
    files["tinylib-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / "tinylib-1.0-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return wheel


def make_app(root: Path, wheel: Path | None) -> PythonAppBuild:
    (root / "src/app").mkdir(parents=True)
    (root / "src/app/__main__.py").write_text("import tinylib\nprint(tinylib.ANSWER)\n")
    lock = root / "src/requirements.lock"
    if wheel is None:
        lock.write_text("# standard library only\n")
    else:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lock.write_text(f"tinylib==1.0 \\\n    --hash=sha256:{digest}\n")
    return PythonAppBuild(
        root / "src", lock, wheel.parent if wheel else None, exclude=("requirements.lock",)
    )


def test_a_build_with_a_locked_wheel_is_reproducible(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheelhouse")
    spec = make_app(tmp_path, wheel)

    first = build_python_app(spec, ChunkStore(tmp_path / "store-1"))
    previous = os.umask(0o077)
    try:
        second = build_python_app(spec, ChunkStore(tmp_path / "store-2"))
    finally:
        os.umask(previous)

    assert first.artifact_id == second.artifact_id
    paths = {entry.path for entry in first.entries}
    assert "app/app/__main__.py" in paths
    assert "site-packages/tinylib/__init__.py" in paths
    assert not any(p.endswith((".pyc", "direct_url.json")) or "__pycache__" in p for p in paths)


def test_standard_library_only_needs_no_wheelhouse(tmp_path: Path) -> None:
    spec = make_app(tmp_path, None)
    manifest = build_python_app(spec, ChunkStore(tmp_path / "store"))
    assert [e.path for e in manifest.entries if e.type == "file"] == ["app/app/__main__.py"]


def test_a_wheel_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheelhouse")
    spec = make_app(tmp_path, wheel)
    spec.requirements.write_text(f"tinylib==1.0 --hash=sha256:{'0' * 64}\n")
    with pytest.raises(BuildError, match=r"pip install from \S+ failed: "):
        build_python_app(spec, ChunkStore(tmp_path / "store"))
