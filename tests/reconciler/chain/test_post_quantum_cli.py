"""`circle keygen --type ml-dsa-65` and `circle approve --key A --key B` on a real circle
repository whose owners hold an Ed25519 key made by `ssh-keygen` and an ML-DSA-65 key made by
`circle keygen`, under hybrid rules."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.chain import approvals, mldsa, signing
from reconciler.chain.statements import NAMESPACE
from reconciler.desired.model.types import key_fingerprint, mldsa65_key_blob
from reconciler.errors import InputError
from tests.conftest import Result, copy_example, git

OWNERS = ("alice", "bob", "carol")


def passphrase_file(folder: Path, text: str = "correct horse") -> Path:
    path = folder / "passphrase"
    path.write_text(f"{text}\n")
    return path


def test_an_mldsa_key_is_a_0600_private_file_and_a_one_line_public_key(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "alice-pq"

    made = circle("keygen", str(key), "--type", "ml-dsa-65", "-C", "alice@pq", "-o", "json")

    assert made.code == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = (tmp_path / "alice-pq.pub").read_text()
    assert public.count("\n") == 1
    assert re.fullmatch(r"ml-dsa-65 [A-Za-z0-9+/]{2603}= alice@pq\n", public)
    mldsa65_key_blob(public)  # the line circle.yaml takes
    assert made.json() == {
        "type": "ml-dsa-65",
        "private": str(key),
        "public": str(tmp_path / "alice-pq.pub"),
        "key": public.strip(),
        "fingerprint": key_fingerprint(public),
    }
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, the seed

    signature, line = signing.with_mldsa_key_file(b"statement", key, None)
    assert line.split()[:2] == public.split()[:2]
    mldsa.verify(b"statement", signature, public, NAMESPACE)

    again = circle("keygen", str(key), "--type", "ml-dsa-65")
    assert again.code == 2
    assert again.stderr == f"circle: error: {key}.pub: exists; refusing to overwrite a key\n"
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_an_encrypted_mldsa_key_needs_its_passphrase(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "bob-pq"
    secret = passphrase_file(tmp_path)

    made = circle("keygen", str(key), "--type", "ml-dsa-65", "--passphrase-file", str(secret))

    assert made.code == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    data = key.read_bytes()
    assert data.startswith(b"-----BEGIN CIRCLE ENCRYPTED ML-DSA-65 PRIVATE KEY-----\n")
    assert b"PRIVATE KEY-----\n" in data
    public = (tmp_path / "bob-pq.pub").read_text()

    right = mldsa.load_private_key(data, b"correct horse")
    assert mldsa.public_key_line(right).split() == public.split()[:2]
    assert right.private_bytes_raw() not in data  # the seed is sealed
    with pytest.raises(mldsa.MlDsaError, match="wrong passphrase, or a damaged file"):
        mldsa.load_private_key(data, b"wrong")
    with pytest.raises(
        InputError, match="the ML-DSA private key is encrypted: give its passphrase"
    ):
        signing.with_mldsa_key_file(b"statement", key, None)
    lines = data.decode().splitlines()
    blob = base64.b64decode("".join(lines[1:-1]))
    damaged = mldsa._armor(blob[:-1] + bytes([blob[-1] ^ 1]), lines[0], lines[-1]).encode()
    with pytest.raises(mldsa.MlDsaError, match="wrong passphrase, or a damaged file"):
        mldsa.load_private_key(damaged, b"correct horse")


def _with_mldsa_key(text: str, name: str, public: str) -> str:
    ssh_line = re.compile(rf"(        key: ssh-ed25519 \S+ {name}@example-circle\n)")
    assert ssh_line.search(text), name
    return ssh_line.sub(
        lambda found: f"{found.group(1)}      - type: ml-dsa-65\n        key: {public}\n", text
    )


@pytest.fixture
def hybrid_circle(tmp_path: Path, circle: Callable[..., Result]) -> Path:
    """The example circle, its owners' keys replaced by real ones (Ed25519 from ssh-keygen,
    ML-DSA-65 from circle keygen; carol's encrypted), governance and workloads hybrid."""
    keys = tmp_path / "keys"
    keys.mkdir()
    root = copy_example(tmp_path / "circle")
    text = (root / "circle.yaml").read_text()
    for name in OWNERS:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example-circle",
             "-f", str(keys / name)],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        ssh_public = (keys / f"{name}.pub").read_text().split()
        text = re.sub(
            rf"ssh-ed25519 \S+ {name}@example-circle", " ".join(ssh_public[:2]) + f" {name}"
            "@example-circle", text,
        )  # fmt: skip
        extra = ["--passphrase-file", str(passphrase_file(keys))] if name == "carol" else []
        made = circle("keygen", str(keys / f"{name}-pq"), "--type", "ml-dsa-65", *extra)
        assert made.code == 0, made.stderr
        text = _with_mldsa_key(text, name, (keys / f"{name}-pq.pub").read_text().strip())
    for rule in ("governance", "workloads"):
        text = text.replace(
            f"    - name: {rule}\n", f"    - name: {rule}\n      signatures: hybrid\n"
        )
    (root / "circle.yaml").write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the circle")
    return root


def _filed(root: Path) -> list[str]:
    repo = pygit2.Repository(str(root))
    return sorted(stored.path for stored in approvals.read(repo))


def test_approve_with_two_keys_files_both_and_meets_a_hybrid_rule(
    hybrid_circle: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    keys, repo = tmp_path / "keys", str(hybrid_circle)
    secret = str(keys / "passphrase")
    for name in OWNERS:
        # Carol's classic half is signed by the real ssh-keygen, her ML-DSA half here.
        through = ["--ssh-keygen"] if name == "carol" else []
        approved = circle(
            "approve", "--repo", repo, "--key", str(keys / name), "--key",
            str(keys / f"{name}-pq"), "--passphrase-file", secret, "-o", "json", *through,
        )  # fmt: skip
        assert approved.code == 0, approved.stderr
        shown = approved.json()
        assert [(item["key"], item["type"], item["member"]) for item in shown["approvals"]] == [
            (str(keys / name), "ssh-ed25519", name),
            (str(keys / f"{name}-pq"), "ml-dsa-65", name),
        ]
        assert (shown["member"], shown["path"]) == (name, shown["approvals"][0]["path"])
    filed = _filed(hybrid_circle)
    assert len(filed) == 6
    verified = circle("verify", "--repo", repo, "-o", "json")
    assert verified.code == 0, verified.stdout
    assert verified.json()["signers"] == list(OWNERS)

    workload = hybrid_circle / "workloads/langid.yaml"
    workload.write_text(workload.read_text().replace("replicas: 2", "replicas: 3"))
    git(hybrid_circle, "commit", "-q", "-am", "three")
    for name in ("alice", "bob"):
        only_classic = circle("approve", "--repo", repo, "--key", str(keys / name))
        assert only_classic.code == 0, only_classic.stderr
        assert only_classic.stdout.startswith("approved seq 2 ")
    refused = circle("verify", "--repo", repo)
    assert refused.code == 1
    assert (
        "rule workloads needs weight 2 of hybrid signatures, has 0; not counted, without a "
        "classic and an ML-DSA signature of one statement: alice, bob" in refused.stdout
    )

    two = circle(
        "approve", "--repo", repo, "--key", str(keys / "alice"), "--key", str(keys / "alice-pq")
    )
    assert two.code == 0, two.stderr
    assert two.stdout.count("approved seq 2 ") == 2
    assert "with ml-dsa-65 key" in two.stdout
    assert circle("verify", "--repo", repo).code == 1  # bob still lacks his pair
    bob = circle(
        "approve", "--repo", repo, "--key", str(keys / "bob"), "--key", str(keys / "bob-pq")
    )
    assert bob.code == 0, bob.stderr
    assert circle("verify", "--repo", repo).code == 0

    # An ML-DSA approval of an earlier version of the next change is named stale by review.
    workload.write_text(workload.read_text().replace("replicas: 3", "replicas: 4"))
    git(hybrid_circle, "commit", "-q", "-am", "four")
    earlier = circle("approve", "--repo", repo, "--key", str(keys / "alice-pq"))
    assert earlier.code == 0, earlier.stderr
    workload.write_text(workload.read_text().replace("replicas: 4", "replicas: 2"))
    git(hybrid_circle, "commit", "-q", "--amend", "-am", "two again")
    reviewed = circle("review", "--repo", repo, "-o", "json")
    assert reviewed.code == 0, reviewed.stderr
    assert [(s["member"], s["seq"]) for s in reviewed.json()["stale"]] == [("alice", 3)]
    assert reviewed.json()["stale"][0]["reason"].startswith("approves another version")


def test_approve_files_nothing_when_one_of_its_keys_fails(
    hybrid_circle: Path, circle: Callable[..., Result], tmp_path: Path
) -> None:
    keys, repo = tmp_path / "keys", str(hybrid_circle)
    before = _filed(hybrid_circle)

    no_passphrase = circle(
        "approve", "--repo", repo, "--key", str(keys / "carol"), "--key", str(keys / "carol-pq")
    )
    assert no_passphrase.code == 2
    assert no_passphrase.stderr == (
        f"circle: error: {keys / 'carol-pq'}: the ML-DSA private key is encrypted: give its "
        "passphrase\n"
    )
    outsider = keys / "mallory-pq"
    assert circle("keygen", str(outsider), "--type", "ml-dsa-65").code == 0
    not_a_member = circle(
        "approve", "--repo", repo, "--key", str(keys / "alice"), "--key", str(outsider)
    )
    assert not_a_member.code == 2
    assert not_a_member.stderr == (
        f"circle: error: {outsider}: this key belongs to no member of circle example-ai-circle\n"
    )
    assert _filed(hybrid_circle) == before
