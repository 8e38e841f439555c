"""Signing an approval statement: with a key file in this process (Ed25519 SSH or ML-DSA-65),
or through `ssh-keygen -Y sign` (keys in ssh-agent, encrypted keys whose passphrase ssh-keygen
asks for)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from builders import BuildError, sshsig
from reconciler.chain import mldsa, statements
from reconciler.errors import InputError

SSH_KEYGEN_TIMEOUT = 300  # a person may be typing a passphrase
MAX_KEY_FILE_BYTES = 64 << 10


def _read_key(key_file: Path) -> bytes:
    """A key file's bytes, bounded (a key may be a link, as in ~/.ssh: it is followed)."""
    try:
        with key_file.open("rb") as stream:
            data = stream.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise InputError(f"{key_file}: cannot read: {error.strerror}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InputError(f"{key_file}: over {MAX_KEY_FILE_BYTES} bytes, not a key")
    return data


def with_key_file(statement: bytes, key_file: Path, passphrase: bytes | None) -> tuple[str, str]:
    """The SSHSIG of `statement` by the Ed25519 private key in `key_file` (with `passphrase`
    if it is encrypted), and its public key line."""
    data = _read_key(key_file)
    try:
        key = sshsig.load_private_key(data, None)
    except BuildError as error:
        if passphrase is None:
            raise InputError(f"{key_file}: {error}") from error
        # Encrypted: one passphrase is given for all the keys of `circle approve`, and is
        # used for those that need one.
        try:
            key = sshsig.load_private_key(data, passphrase)
        except BuildError as error:
            raise InputError(f"{key_file}: {error}") from error
    return sshsig.sign(statement, key, statements.NAMESPACE), sshsig.public_key_line(key)


def is_mldsa_key_file(key_file: Path) -> bool:
    """Whether `key_file` holds an ML-DSA private key (else it is taken for an SSH key)."""
    try:
        return mldsa.is_private_key(_read_key(key_file))
    except InputError:
        return False


def with_mldsa_key_file(
    statement: bytes, key_file: Path, passphrase: bytes | None
) -> tuple[str, str]:
    """The ML-DSA envelope of `statement` by the ML-DSA-65 private key in `key_file`, and its
    public key line."""
    try:
        data = _read_key(key_file)
        key = mldsa.load_private_key(data, passphrase if mldsa.is_encrypted(data) else None)
    except mldsa.MlDsaError as error:
        raise InputError(f"{key_file}: {error}") from error
    return mldsa.sign(statement, key, statements.NAMESPACE), mldsa.public_key_line(key)


def with_ssh_keygen(statement: bytes, key_file: Path) -> tuple[str, str]:
    """The SSHSIG `ssh-keygen -Y sign` makes of `statement` with `key_file` (a private key, or a
    public key whose private half ssh-agent holds), and its public key line; ssh-keygen's
    prompts reach the terminal."""
    executable = shutil.which("ssh-keygen")
    if executable is None:
        raise InputError("ssh-keygen is not installed (apt-get install openssh-client)")
    with tempfile.TemporaryDirectory(prefix="circle-approve-") as folder:
        message = Path(folder) / "statement.json"
        message.write_bytes(statement)
        try:
            done = subprocess.run(
                [executable, "-Y", "sign", "-n", statements.NAMESPACE, "-f", str(key_file),
                 str(message)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                timeout=SSH_KEYGEN_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise InputError(
                f"ssh-keygen -Y sign with {key_file}: no signature within {SSH_KEYGEN_TIMEOUT} s"
            ) from None
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise InputError(f"ssh-keygen -Y sign with {key_file}: {said[0]}")
        signature = (Path(folder) / "statement.json.sig").read_text()
    return signature, sshsig.parse(signature).public_key_line
