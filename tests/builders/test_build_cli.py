"""`circle build` on the example circle: builds, locks digests in place, checks reproducibility."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builders import provenance, sshsig
from builders.chunks import ChunkStore
from builders.manifest import decode
from tests.conftest import Result, edit
from tests.reconciler.cli.test_consistency import snake_keys


def test_build_locks_the_digests_and_check_reproduces_them(
    example: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    locked = (example / "builds/langid-model.yaml").read_text()

    built = circle("build", "--repo", str(example), "--store", str(store), "-o", "json")

    assert built.code == 0, built.stderr
    assert snake_keys(built.json()) == []
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
    assert broken.stdout == ""
    problem, error = broken.stderr.splitlines()
    assert problem.startswith(f"{example}/builds/langid-model.yaml:")
    assert error == f"circle: error: {example}: fix these problems before building"


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


@pytest.fixture
def attested(example: Path, circle: Callable[..., Result], tmp_path: Path) -> dict[str, Path]:
    """langid-model built by two builders, each with a key of its own and a store of its own,
    each signing its provenance."""
    found: dict[str, Path] = {}
    for builder in ("builder-a", "builder-b"):
        key = tmp_path / builder
        assert circle("keygen", str(key), "-C", builder).code == 0
        store = tmp_path / f"store-{builder}"
        built = circle(
            "build", "langid-model", "--repo", str(example), "--store", str(store),
            "--attest", str(key),
        )  # fmt: skip
        assert built.code == 0, built.stderr
        found[builder] = store
    return found


def test_verify_provenance_counts_distinct_trusted_builders(
    example: Path, circle: Callable[..., Result], tmp_path: Path, attested: dict[str, Path]
) -> None:
    store_a, store_b = attested["builder-a"], attested["builder-b"]
    trust = ["--trust", f"{tmp_path / 'builder-a'}.pub", "--trust", f"{tmp_path / 'builder-b'}.pub"]
    digest = (example / "builds/langid-model.yaml").read_text().split("digest: ")[1].split()[0]
    verify = ("artifact", "verify-provenance", "langid-model", "--repo", str(example))

    both = circle(*verify, "--store", str(store_a), "--source", str(store_b), *trust)

    assert both.code == 0, both.stderr
    assert both.stdout == (
        f"langid-model {digest}: provenance verified: 2 of 2 required trusted builders agree "
        "(builder-a, builder-b)\n"
    )

    one = circle(*verify, "--store", str(store_a), *trust, "-o", "json")
    assert one.code == 1
    assert snake_keys(one.json()) == []
    assert one.json() == {
        "build": "langid-model",
        "artifact": digest,
        "verified": False,
        "required": 2,
        "agreeing": ["builder-a"],
        "excluded": [],
    }
    assert circle(*verify, "--store", str(store_a), *trust, "--builders", "1").code == 0
    by_id = circle("artifact", "verify-provenance", digest, "--store", str(store_a), *trust[:2])
    assert by_id.code == 0, by_id.stderr

    # Only builder-a trusted: builder-b's attestation is named and not counted.
    untrusted = circle(*verify, "--store", str(store_a), "--source", str(store_b), *trust[:2],
                       "-o", "json")  # fmt: skip
    assert untrusted.code == 0
    [excluded] = untrusted.json()["excluded"]
    assert excluded["file"].startswith(f"{store_b}/attestations/{digest.removeprefix('sha256:')}/")
    fingerprint = sshsig.fingerprint((tmp_path / "builder-b.pub").read_text())
    assert excluded["reason"] == f"untrusted key {fingerprint}"


def test_verify_provenance_refuses_a_tampered_statement_and_bad_input(
    example: Path, circle: Callable[..., Result], tmp_path: Path, attested: dict[str, Path]
) -> None:
    store_a, store_b = attested["builder-a"], attested["builder-b"]
    trust = ["--trust", f"{tmp_path / 'builder-a'}.pub", "--trust", f"{tmp_path / 'builder-b'}.pub"]
    verify = ("artifact", "verify-provenance", "langid-model", "--repo", str(example))
    [statement] = (store_b / "attestations").rglob("*.intoto.json")
    statement.write_bytes(statement.read_bytes().replace(b"builder-b", b"builder-c", 1))

    tampered = circle(*verify, "--store", str(store_a), "--source", str(store_b), *trust)

    assert tampered.code == 1
    first, second = tampered.stdout.splitlines()
    assert first.endswith(": provenance not verified: 1 of 2 required trusted builders agree "
                          "(builder-a)")  # fmt: skip
    assert second.startswith(f"  not counted: {statement}: builder 'builder-b': bad signature")

    private = circle(*verify, "--store", str(store_a), "--trust", str(tmp_path / "builder-a"))
    assert private.stderr == (
        f"circle: error: {tmp_path / 'builder-a'} is a private key: give its public key "
        f"{tmp_path / 'builder-a'}.pub\n"
    )
    too_many = circle(*verify, "--store", str(store_a), *trust, "--builders", "3")
    assert too_many.stderr == "circle: error: --builders 3: only 2 trusted builders given\n"
    unknown = circle("artifact", "verify-provenance", "nope", "--repo", str(example), *trust)
    assert unknown.stderr == (
        "circle: error: no build named nope (builds: langid-model, langid-service)\n"
    )
    for result in (private, too_many, unknown):
        assert result.code == 2
