"""`circle keygen PATH`: an Ed25519 SSH key for an owner (or a node, or a builder).

Writes the OpenSSH private key to PATH (mode 0600, never over an existing file) and the public
line to PATH.pub, exactly as `ssh-keygen -t ed25519` would; keys made by ssh-keygen work the
same everywhere `circle` takes a key. Commands that need a private key refuse a public one
given in its place, naming the private key to give (`refuse_public_key`).
"""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builders import sshsig
from qss.durable import write_atomically
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stdout
from reconciler.errors import InputError
from reconciler.files import read_bounded

# How an OpenSSH public key line starts (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*@openssh.com).
_PUBLIC_KEY_STARTS = (b"ssh-", b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-")


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
@click.option("--comment", "-C", default="", help="The comment of the public key line.")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Encrypt the private key with the first line of this file.",
)
@output_option
def command(path: Path, comment: str, passphrase_file: Path | None, output: str | None) -> int:
    """Make an Ed25519 key: PATH (private, 0600) and PATH.pub."""
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
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    line = sshsig.public_key_line(key, comment)
    _write_new(path, private, 0o600)
    _write_new(public_path, (line + "\n").encode(), 0o644)
    fingerprint = sshsig.fingerprint(line)
    if settings(output).json:
        print_json(
            {
                "private": str(path),
                "public": str(public_path),
                "key": line,
                "fingerprint": fingerprint,
            }
        )
    else:
        stdout.print(
            f"{path}: ed25519 key {fingerprint}; public line in {public_path}", markup=False
        )
    return 0
