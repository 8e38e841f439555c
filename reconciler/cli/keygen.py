"""`circle keygen PATH`: an Ed25519 SSH key for an owner (or a node, or a builder), or with
`--type ml-dsa-65` a post-quantum ML-DSA-65 key for an owner.

Writes the private key to PATH (mode 0600, never over an existing file) and the public line to
PATH.pub. An Ed25519 key is exactly what `ssh-keygen -t ed25519` would make; keys made by
ssh-keygen work the same everywhere `circle` takes a key. An ML-DSA-65 key is its FIPS 204 seed
in PKCS#8 PEM, or sealed with scrypt + AES-256-GCM under a passphrase, and its public line is
`ml-dsa-65 BASE64 [comment]` (`reconciler.chain.mldsa`). Commands that need a private key
refuse a public one given in its place, naming the private key to give (`refuse_public_key`).
"""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from builders import sshsig
from qss.durable import write_atomically
from reconciler.chain import mldsa
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.desired.model.types import key_fingerprint
from reconciler.errors import InputError
from reconciler.files import read_bounded

# How an OpenSSH public key line starts (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*@openssh.com).
_PUBLIC_KEY_STARTS = (b"ssh-", b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-", b"ml-dsa-65 ")
ED25519, MLDSA65 = "ed25519", "ml-dsa-65"


def refuse_public_key(path: Path) -> None:
    """Refuse `path` where a private key is needed if it holds a public key line, naming the
    private key to give instead. A file that cannot be read is left to the key's loader."""
    try:
        head = read_bounded(path, 64)
    except InputError:
        return
    if not head.lstrip().startswith(_PUBLIC_KEY_STARTS):
        return
    if path.name.endswith(".pub") and path.name != ".pub":
        private = path.with_name(path.name.removesuffix(".pub"))
        raise InputError(f"{path} is a public key: give the private key {private}")
    raise InputError(f"{path} is a public key: give its private key")


def refuse_public_name(path: Path) -> None:
    """Refuse to make a private key at a `.pub` path: its public half would be `.pub.pub`."""
    if path.name.endswith(".pub") and path.name != ".pub":
        private = path.with_name(path.name.removesuffix(".pub"))
        raise InputError(
            f"{path} is a public key's name: give the private key's path {private} "
            f"(its public key goes to {private}.pub)"
        )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        write_atomically(path, data, mode=mode, exclusive=True)
    except FileExistsError:
        raise InputError(f"{path}: exists; refusing to overwrite a key") from None
    except OSError as error:
        raise InputError(f"{path}: cannot write: {error.strerror}") from None


@click.command("keygen")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--type",
    "-t",
    "key_type",
    type=click.Choice([ED25519, MLDSA65]),
    default=ED25519,
    show_default=True,
    help="ed25519 (an SSH key) or ml-dsa-65 (a post-quantum key, FIPS 204).",
)
@click.option("--comment", "-C", default="", help="The comment of the public key line.")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Encrypt the private key with the first line of this file.",
)
@output_option
def command(
    path: Path, key_type: str, comment: str, passphrase_file: Path | None, output: str | None
) -> int:
    """Make an Ed25519 (or ML-DSA-65) key: PATH (private, 0600) and PATH.pub."""
    refuse_public_name(path)
    public_path = path.with_name(path.name + ".pub")
    if public_path.exists():
        raise InputError(f"{public_path}: exists; refusing to overwrite a key")
    passphrase = None
    if passphrase_file is not None:
        lines = passphrase_file.read_bytes().splitlines()
        passphrase = lines[0] if lines else b""
        if not passphrase:
            raise InputError(f"{passphrase_file}: the first line (the passphrase) is empty")
    if key_type == MLDSA65:
        private, line = _mldsa_key(comment, passphrase)
        fingerprint = key_fingerprint(line)
    else:
        private, line = _ed25519_key(comment, passphrase)
        fingerprint = sshsig.fingerprint(line)
    _write_new(path, private, 0o600)
    _write_new(public_path, (line + "\n").encode(), 0o644)
    if settings(output).json:
        print_json(
            {
                "type": line.split(maxsplit=1)[0],  # as circle.yaml names it: ssh-ed25519
                "private": str(path),
                "public": str(public_path),
                "key": line,
                "fingerprint": fingerprint,
            }
        )
    else:
        stdout.print(
            f"{path}: {key_type} key {fingerprint}; public line in {public_path}", markup=False
        )
    return 0


def _ed25519_key(comment: str, passphrase: bytes | None) -> tuple[bytes, str]:
    """An OpenSSH private key file (bcrypt-pbkdf + AES-256-CTR under a passphrase, as
    ssh-keygen) and its public line."""
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    return private, sshsig.public_key_line(key, comment)


def _mldsa_key(comment: str, passphrase: bytes | None) -> tuple[bytes, str]:
    """An ML-DSA-65 private key file and its public line."""
    if "\n" in comment or "\r" in comment:
        raise InputError("the public key comment must be a single line")
    key = MLDSA65PrivateKey.generate()
    return mldsa.encode_private_key(key, passphrase), mldsa.public_key_line(key, comment)
