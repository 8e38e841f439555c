"""`circle build` on the example circle: builds, locks digests in place, checks reproducibility."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from builders import provenance
from builders.chunks import ChunkStore
from builders.manifest import decode
from tests.conftest import Result, edit


def test_build_locks_the_digests_and_check_reproduces_them(
    example: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    locked = (example / "builds/langid-model.yaml").read_text()

    built = circle("build", "--repo", str(example), "--store", str(store), "-o", "json")

    assert built.code == 0, built.stderr
    results = {item["build"]: item for item in built.json()}
    assert set(results) == {"langid-model", "langid-service"}
    # The example is committed locked: a rebuild changes nothing.
    assert all(item["changed"] == [] for item in results.values())
    assert (example / "builds/langid-model.yaml").read_text() == locked
    for item in results.values():
        manifest = decode(ChunkStore(store).get_manifest(item["digest"]), item["digest"])
        assert all(ChunkStore(store).has(digest) for digest in manifest.chunk_digests())

    check = circle("build", "--repo", str(example), "--check")
    assert check.code == 0
    assert all(line.endswith("reproduced") for line in check.stdout.splitlines())


def test_a_changed_source_fails_the_check_and_build_relocks_keeping_comments(
    example: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    main = example / "src/inference/langid_service/__init__.py"
    main.write_text(main.read_text() + "\n# a change\n")

    check = circle("build", "langid-service", "--repo", str(example), "--check")
    assert check.code == 1
    assert "differs from the lock sha256:" in check.stdout

    built = circle(
        "build", "langid-service", "--repo", str(example), "--store", str(tmp_path / "s")
    )
    assert built.code == 0
    assert "(locked in builds/langid-service.yaml, workloads/langid.yaml)" in built.stdout
    workload = (example / "workloads/langid.yaml").read_text()
    assert workload.startswith("# yaml-language-server: $schema=../../schemas/workload.json\n")
    assert "# The inference service" in workload
    assert circle("validate", str(example)).code == 0
    assert circle("build", "langid-service", "--repo", str(example), "--check").code == 0


def test_unknown_build_and_broken_documents_are_bad_input(
    example: Path, circle: Callable[..., Result]
) -> None:
    unknown = circle("build", "nope", "--repo", str(example), "--check")
    assert unknown.code == 2
    assert unknown.stderr == (
        "circle: error: no build named nope (builds: langid-model, langid-service)\n"
    )

    edit(example / "builds/langid-model.yaml", "builder: model", "builder: modle")
    broken = circle("build", "--repo", str(example), "--check")
    assert broken.code == 2
    assert "builds/langid-model.yaml:" in broken.stdout
    assert broken.stderr == f"circle: error: {example}: fix the problems above before building\n"


def test_attest_signs_provenance_that_two_builders_can_agree_on(
    example: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    """Two builders with their own ssh-keygen keys build the same artifact and sign it; the
    agreement check finds both."""
    trusted = {}
    attestations = []
    for builder in ("builder-a", "builder-b"):
        key = tmp_path / builder
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", builder, "-f", str(key)],
            check=True,
            timeout=30,
        )
        trusted[builder] = (tmp_path / f"{builder}.pub").read_text().strip()
        store = str(tmp_path / f"store-{builder}")
        result = circle(
            "build", "langid-model", "--repo", str(example), "--store", store,
            "--attest", str(key), "-o", "json",
        )  # fmt: skip
        assert result.code == 0, result.stderr
        statement = Path(result.json()[0]["attestation"])
        attestations.append((statement.read_bytes(), Path(f"{statement}.sig").read_text()))
        digest = result.json()[0]["digest"]

    agreed = provenance.verify_agreement(digest, attestations, trusted, required=2)

    assert sorted(agreed) == ["builder-a", "builder-b"]
