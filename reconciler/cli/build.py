"""`circle build [NAME ...]`: build what `builds/NAME.yaml` describes, lock its digest.

Each build stores its chunks and manifest in the chunk store, prints `NAME sha256:...`, writes
the digest into `builds/NAME.yaml` (the lock) and into every workload that pins that build,
keeping their comments. `--check` rebuilds in a clean temporary store and exits 1 unless the
result equals the committed lock: the reproducibility check a second builder (or CI) runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from builders import BuildError
from builders.chunks import ChunkStore
from builders.manifest import ArtifactManifest, Chunking
from builders.python_app import PythonAppBuild, build_python_app
from builders.tree import ARCHIVE_CHUNKING, MODEL_CHUNKING, TreeBuild, build_tree
from reconciler.adapters.circle_dir import check_circle_dir
from reconciler.adapters.lock import set_digest
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, print_problems, stdout
from reconciler.core.repository import DesiredState
from reconciler.errors import CheckFailed, InputError
from reconciler.model import Build, BuilderKind


@dataclass(frozen=True)
class BuildResult:
    build: str
    digest: str
    locked: str | None  # the digest the document held before
    changed: list[str]  # files the new lock was written into


def default_store() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "circle" / "store"


def run_build(build: Build, repo: Path, store: ChunkStore) -> ArtifactManifest:
    """Build one document's artifact into `store` (chunks and manifest)."""
    source = repo / build.source
    labels = {"build": build.name, "builder": build.builder.value}
    if build.builder is BuilderKind.PYTHON_APP:
        assert build.python is not None  # the document checks guarantee it
        wheelhouse = repo / build.python.wheelhouse if build.python.wheelhouse else None
        manifest = build_python_app(
            PythonAppBuild(
                source,
                repo / build.python.requirements,
                wheelhouse,
                tuple(build.include),
                tuple(build.exclude),
                tuple(build.prefetch),
                labels,
            ),
            store,
        )
    else:
        chunking = ARCHIVE_CHUNKING
        if build.builder is BuilderKind.MODEL:
            given = build.chunking
            chunking = (
                Chunking("fastcdc", given.min, given.avg, given.max) if given else MODEL_CHUNKING
            )
        manifest = build_tree(
            TreeBuild(
                source,
                tuple(build.include),
                tuple(build.exclude),
                chunking,
                build.allow_symlinks,
                tuple(build.prefetch),
                labels,
            ),
            store,
        )
    store.put_manifest(manifest.artifact_id, manifest.encode())
    return manifest


def _lock(repo: Path, state: DesiredState, build: Build, digest: str) -> list[str]:
    """Write `digest` where it belongs; the files changed."""
    changed = []
    if set_digest(repo / "builds" / f"{build.name}.yaml", ("digest",), digest):
        changed.append(f"builds/{build.name}.yaml")
    for name, workload in sorted(state.workloads.items()):
        if workload.document.artifact.build == build.name and set_digest(
            repo / "workloads" / f"{name}.yaml", ("artifact", "digest"), digest
        ):
            changed.append(f"workloads/{name}.yaml")
    return changed


@click.command("build")
@click.argument("names", nargs=-1)
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="The circle repository.",
)
@click.option(
    "--store",
    "store_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The chunk store (default: $XDG_CACHE_HOME/circle/store).",
)
@click.option("--check", is_flag=True, help="Rebuild in a clean place; exit 1 unless locked.")
@output_option
def command(
    names: tuple[str, ...], repo: Path, store_dir: Path | None, check: bool, output: str | None
) -> int:
    """Build NAMES (default: every build of the circle) and lock their digests."""
    report = check_circle_dir(repo)
    broken = [
        p for p in report.errors if p.file.removeprefix(str(repo)).lstrip("/").startswith("builds/")
    ]
    if report.exit_code == 2 or broken:
        print_problems(report.problems)
        raise InputError(f"{repo}: fix the problems above before building")
    builds = report.state.builds
    unknown = sorted(set(names) - set(builds))
    if unknown:
        raise InputError(
            f"no build named {', '.join(unknown)} (builds: {', '.join(sorted(builds))})"
        )
    results: list[BuildResult] = []
    with tempfile.TemporaryDirectory(prefix="circle-build-check-") as scratch:
        store = ChunkStore(Path(scratch) if check else (store_dir or default_store()))
        for name in names or sorted(builds):
            build = builds[name].document
            try:
                digest = run_build(build, repo, store).artifact_id
            except BuildError as error:
                raise CheckFailed(f"build {name}: {error}") from error
            changed = [] if check else _lock(repo, report.state, build, digest)
            results.append(BuildResult(name, digest, build.digest, changed))
    if settings(output).json:
        print_json(
            [
                {
                    "build": r.build,
                    "digest": r.digest,
                    "locked": r.locked,
                    "reproduced": r.digest == r.locked,
                    "changed": r.changed,
                }
                for r in results
            ]
        )
    else:
        for r in results:
            if check:
                note = "reproduced" if r.digest == r.locked else f"differs from the lock {r.locked}"
            else:
                note = f"(locked in {', '.join(r.changed)})" if r.changed else ""
            stdout.print(f"{r.build} {r.digest}  {note}".rstrip(), markup=False)
    if check and any(r.digest != r.locked for r in results):
        return 1
    return 0
