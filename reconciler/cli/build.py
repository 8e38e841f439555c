"""`circle build [NAME ...]`: build what `builds/NAME.yaml` describes, lock its digest.

Each build stores its chunks and manifest in the chunk store, prints `NAME sha256:...`, writes
the digest into `builds/NAME.yaml` (the lock) and into every workload that pins that build,
keeping their comments. `--check` rebuilds in a clean temporary store and exits 1 unless the
result equals the committed lock: the reproducibility check a second builder (or CI) runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from builders import BuildError
from builders.chunks import ChunkStore
from reconciler import wiring
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.keygen import refuse_public_key
from reconciler.cli.render import ProblemsFound, print_json, stderr, stdout
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.lock import lock_build
from reconciler.errors import CheckFailed, InputError


@dataclass(frozen=True)
class BuildResult:
    build: str
    digest: str
    locked: str | None  # the digest the document held before
    changed: list[str]  # files the new lock was written into
    attestation: Path | None = None  # the signed provenance statement, with --attest


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
        raise ProblemsFound(f"{repo}: fix these problems before building", report.errors)
    builds = report.state.builds
    unknown = sorted(set(names) - set(builds))
    if unknown:
        raise InputError(
            f"no build named {', '.join(unknown)} (builds: {', '.join(sorted(builds))})"
        )
    signer = None
    if attest_key is not None:
        refuse_public_key(attest_key)
        signer = wiring.load_signer(attest_key, passphrase_file, builder_id)
    results: list[BuildResult] = []
    with tempfile.TemporaryDirectory(prefix="circle-build-check-") as scratch:
        try:
            store = ChunkStore(
                Path(scratch) if check else (store_dir or wiring.default_chunk_store())
            )
        except BuildError as error:
            raise InputError(str(error)) from error
        for name in names or sorted(builds):
            build = builds[name].document
            try:
                with stderr.status(f"building {name} ({build.builder.value})"):
                    manifest = wiring.run_build(build, repo, store)
            except BuildError as error:
                raise CheckFailed(f"build {name}: {error}") from error
            digest = manifest.artifact_id
            pins = {n: w.document.artifact.build for n, w in report.state.workloads.items()}
            changed = [] if check else lock_build(repo, pins, build.name, digest)
            attestation = wiring.attest(signer, build, manifest, store) if signer else None
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
