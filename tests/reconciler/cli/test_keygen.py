"""`circle keygen` makes keys ssh-keygen reads, and that sign what ssh-keygen verifies."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from builders import sshsig
from tests.conftest import Result


def test_a_key_ssh_keygen_reads_and_whose_signatures_it_verifies(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "alice"

    made = circle("keygen", str(key), "-C", "alice@example", "-o", "json")

    assert made.code == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = (tmp_path / "alice.pub").read_text().strip()
    assert public.endswith(" alice@example")
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert derived[:2] == public.split()[:2]
    assert made.json()["fingerprint"] == sshsig.fingerprint(public)

    message = tmp_path / "statement"
    message.write_bytes(b"approve transition 1")
    signed = sshsig.sign(
        message.read_bytes(), sshsig.load_private_key(key.read_bytes(), None), "circle-approval-v1"
    )
    (tmp_path / "statement.sig").write_text(signed)
    (tmp_path / "allowed").write_text(f"alice {public}\n")
    with open(message, "rb") as stdin:
        verified = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "alice",
             "-n", "circle-approval-v1", "-s", str(tmp_path / "statement.sig")],
            stdin=stdin, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    assert verified.returncode == 0, verified.stderr


def test_an_encrypted_key_needs_its_passphrase(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    key = tmp_path / "bob"

    assert circle("keygen", str(key), "--passphrase-file", str(passphrase)).code == 0

    wrong = subprocess.run(
        ["ssh-keygen", "-y", "-P", "wrong", "-f", str(key)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    right = subprocess.run(
        ["ssh-keygen", "-y", "-P", "correct horse", "-f", str(key)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert right.returncode == 0
    assert right.stdout.split()[:2] == (tmp_path / "bob.pub").read_text().split()[:2]


def test_an_existing_key_is_never_overwritten(
    circle: Callable[..., Result], tmp_path: Path
) -> None:
    key = tmp_path / "carol"
    key.write_text("precious\n")
    result = circle("keygen", str(key))
    assert result.code == 2
    assert result.stderr == f"circle: error: {key}: exists; refusing to overwrite a key\n"
    assert key.read_text() == "precious\n"
    assert not (tmp_path / "carol.pub").exists()
