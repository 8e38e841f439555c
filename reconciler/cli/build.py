"""`circle build [NAME ...]`: build what `builds/NAME.yaml` describes, lock its digest.

Each build stores its chunks and manifest in the chunk store, prints `NAME sha256:...`, writes
the digest into `builds/NAME.yaml` (the lock) and into every workload that pins that build,
keeping their comments. `--check` rebuilds in a clean temporary store and exits 1 unless the
result equals the committed lock: the reproducibility check a second builder (or CI) runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import BuildError, provenance, sshsig
from builders.chunks import ChunkStore
from builders.manifest import ArtifactManifest, Chunking
from builders.python_app import PythonAppBuild, build_python_app
from builders.tree import ARCHIVE_CHUNKING, MODEL_CHUNKING, TreeBuild, build_tree
from qss.durable import write_atomically
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import print_json, print_problems, stderr, stdout
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.lock import set_digest
from reconciler.desired.model import Build, BuilderKind
from reconciler.desired.repository import DesiredState
from reconciler.errors import CheckFailed, InputError


@dataclass(frozen=True)
class BuildResult:
    build: str
    digest: str
    locked: str | None  # the digest the document held before
    changed: list[str]  # files the new lock was written into
    attestation: Path | None = None  # the signed provenance statement, with --attest


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    builder_id: str


def _signer(key_file: Path, passphrase_file: Path | None, builder_id: str | None) -> Signer:
    passphrase = passphrase_file.read_bytes().rstrip(b"\n") if passphrase_file else None
    try:
        key = sshsig.load_private_key(key_file.read_bytes(), passphrase)
    except BuildError as error:
        raise InputError(f"{key_file}: {error}") from error
    public = key_file.with_name(key_file.name + ".pub")
    fields = public.read_text(encoding="utf-8").split() if public.is_file() else []
    default = fields[2] if len(fields) > 2 else None
    identity = builder_id or default or sshsig.fingerprint(sshsig.public_key_line(key))
    return Signer(key, identity)


def _attest(signer: Signer, build: Build, manifest: ArtifactManifest, store: ChunkStore) -> Path:
    """Sign the provenance of `manifest` and keep it in the store beside the manifest."""
    inputs = {entry.path: entry.sha256 or "" for entry in manifest.files()}
    document = provenance.statement(
        manifest.artifact_id,
        build.name,
        build.builder.value,
        inputs,
        signer.builder_id,
        {"command": "circle build", "build": build.name},
    )
    signed = provenance.attest(document, signer.key)
    folder = store.root / "attestations" / manifest.artifact_id.removeprefix("sha256:")
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(signer.builder_id.encode()).hexdigest()[:16]
    write_atomically(folder / f"{name}.intoto.json", signed.statement.decode())
    write_atomically(folder / f"{name}.intoto.json.sig", signed.signature)
    return folder / f"{name}.intoto.json"


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
@repo_option
@click.option(
    "--store",
    "store_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The chunk store (default: $XDG_CACHE_HOME/circle/store).",
)
@click.option("--check", is_flag=True, help="Rebuild in a clean place; exit 1 unless locked.")
@click.option(
    "--attest",
    "attest_key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Sign an in-toto/SLSA provenance statement with this Ed25519 SSH private key.",
)
@click.option("--builder-id", help="Who built it, in the statement (default: the key's comment).")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The key's passphrase, for an encrypted key.",
)
@output_option
def command(
    names: tuple[str, ...],
    repo: Path,
    store_dir: Path | None,
    check: bool,
    attest_key: Path | None,
    builder_id: str | None,
    passphrase_file: Path | None,
    output: str | None,
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
    signer = _signer(attest_key, passphrase_file, builder_id) if attest_key else None
    results: list[BuildResult] = []
    with tempfile.TemporaryDirectory(prefix="circle-build-check-") as scratch:
        try:
            store = ChunkStore(Path(scratch) if check else (store_dir or default_store()))
        except BuildError as error:
            raise InputError(str(error)) from error
        for name in names or sorted(builds):
            build = builds[name].document
            try:
                with stderr.status(f"building {name} ({build.builder.value})"):
                    manifest = run_build(build, repo, store)
            except BuildError as error:
                raise CheckFailed(f"build {name}: {error}") from error
            digest = manifest.artifact_id
            changed = [] if check else _lock(repo, report.state, build, digest)
            attestation = _attest(signer, build, manifest, store) if signer else None
            results.append(BuildResult(name, digest, build.digest, changed, attestation))
    if settings(output).json:
        print_json(
            [
                {
                    "build": r.build,
                    "digest": r.digest,
                    "locked": r.locked,
                    "reproduced": r.digest == r.locked,
                    "changed": r.changed,
                    "attestation": str(r.attestation) if r.attestation else None,
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
            if r.attestation:
                stdout.print(f"  provenance signed: {r.attestation}", markup=False)
    if check and any(r.digest != r.locked for r in results):
        return 1
    return 0
