"""The `python-app` builder: application sources plus dependencies installed from hash-locked
requirements out of a local wheelhouse, normalized so that two builds are identical.

    <artifact>/app/...            the application's sources (include/exclude applied)
    <artifact>/site-packages/...  its dependencies: `pip install --no-index --require-hashes
                                  --find-links WHEELHOUSE --target ... --no-compile`

Normalization removes what differs between machines or runs: bytecode (never compiled, and any
`__pycache__` removed), `direct_url.json` (it names the wheel's absolute path) and its RECORD
line, and `bin/` (console scripts carry the build machine's interpreter path in their shebang;
workloads run `python3 -m module`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from builders import BuildError
from builders.chunks import ChunkStore
from builders.manifest import ArtifactManifest
from builders.paths import matches_any
from builders.tree import ARCHIVE_CHUNKING, TreeBuild, build_tree, walk

PIP_TIMEOUT = 600


@dataclass(frozen=True)
class PythonAppBuild:
    source: Path
    requirements: Path
    wheelhouse: Path | None = None
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    prefetch: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    source_date_epoch: int = 0


def locked_requirements(path: Path) -> list[str]:
    """The requirement lines of a lock file (comments, blanks and continuations aside)."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("--hash") and line != "\\":
            lines.append(line)
    return lines


def _copy_sources(spec: PythonAppBuild, target: Path) -> None:
    for path, status in walk(spec.source):
        if stat.S_ISDIR(status.st_mode):
            continue
        if not matches_any(spec.include, path) or matches_any(spec.exclude, path):
            continue
        if not stat.S_ISREG(status.st_mode):
            raise BuildError(f"{path}: python-app sources must be regular files")
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.source / path, destination)
        destination.chmod(0o755 if status.st_mode & stat.S_IXUSR else 0o644)


def _install(spec: PythonAppBuild, target: Path) -> None:
    if not spec.requirements.is_file():
        raise BuildError(f"{spec.requirements}: the requirements lock does not exist")
    if not locked_requirements(spec.requirements):
        return  # the standard library only: nothing to install
    if spec.wheelhouse is None or not spec.wheelhouse.is_dir():
        raise BuildError(f"{spec.requirements} lists packages but no wheelhouse folder is given")
    command = [
        sys.executable, "-m", "pip", "install",
        "--isolated", "--no-index", "--require-hashes", "--only-binary=:all:",
        "--no-compile", "--disable-pip-version-check", "--no-warn-script-location",
        "--find-links", str(spec.wheelhouse),
        "--target", str(target),
        "-r", str(spec.requirements),
    ]  # fmt: skip
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SOURCE_DATE_EPOCH": str(spec.source_date_epoch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            timeout=PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"pip did not finish within {PIP_TIMEOUT} s") from None
    if completed.returncode != 0:
        detail = (completed.stderr.strip() or completed.stdout.strip()).splitlines()
        last = next((line for line in reversed(detail) if line.strip()), "no output")
        raise BuildError(f"pip install from {spec.wheelhouse} failed: {last.strip()}")


def _normalize(site_packages: Path) -> None:
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    for cache in sorted(site_packages.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for compiled in site_packages.rglob("*.py[co]"):
        compiled.unlink()
    for record in site_packages.glob("*.dist-info/RECORD"):
        direct = record.parent / "direct_url.json"
        if direct.exists():
            direct.unlink()
            kept = [
                line
                for line in record.read_text(encoding="utf-8").splitlines()
                if not line.startswith(f"{record.parent.name}/direct_url.json,")
            ]
            record.write_text("\n".join(kept) + "\n", encoding="utf-8")


def build_python_app(spec: PythonAppBuild, store: ChunkStore) -> ArtifactManifest:
    """Sources and locked dependencies, normalized, as one artifact in `store`."""
    if not spec.source.is_dir():
        raise BuildError(f"{spec.source}: the build source is not a folder")
    with tempfile.TemporaryDirectory(prefix="circle-python-app-") as scratch:
        root = Path(scratch) / "artifact"
        _copy_sources(spec, root / "app")
        _install(spec, root / "site-packages")
        if (root / "site-packages").is_dir():
            _normalize(root / "site-packages")
        prefetch = tuple(f"app/{pattern}" for pattern in spec.prefetch)
        return build_tree(
            TreeBuild(root, chunking=ARCHIVE_CHUNKING, prefetch=prefetch, labels=spec.labels), store
        )
