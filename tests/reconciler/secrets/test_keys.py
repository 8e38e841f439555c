"""A node's KEM key files: made 0600 and never overwritten; read back only from a regular file
of this uid's that no one else may read (the node key's rules, `reconciler.files.read_private`),
each refusal saying which, never a byte of the key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler.secrets import keys
from reconciler.secrets.errors import KemKeyError


def test_a_made_key_reads_back_and_is_never_overwritten(tmp_path: Path) -> None:
    node_key = tmp_path / "node-a"
    made = keys.generate(node_key, "node-a")
    assert keys.private_path(node_key).stat().st_mode & 0o777 == 0o600
    assert keys.load(node_key).public_bytes == made.public_bytes
    with pytest.raises(KemKeyError, match="exists; refusing to overwrite a key"):
        keys.generate(node_key)


@pytest.mark.parametrize("damage", ["open", "link", "folder", "huge", "junk"])
def test_a_key_file_that_breaks_a_rule_is_refused_naming_it(damage: str, tmp_path: Path) -> None:
    node_key = tmp_path / "node-a"
    keys.generate(node_key)
    path = keys.private_path(node_key)
    secret = path.read_bytes()
    expected = {
        "open": f"{path}: permissions 0644 are too open; a KEM key must be readable by its "
        f"agent alone (chmod 600 {path})",
        "link": f"{path}: the KEM key is a symbolic link; give the key file itself",
        "folder": f"{path}: the KEM key is not a regular file",
        "huge": f"{path}: over {keys.MAX_KEY_BYTES} bytes; not an X-Wing key",
    }
    if damage == "open":
        path.chmod(0o644)
    elif damage == "link":
        (tmp_path / "elsewhere").write_bytes(secret)
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere")
    elif damage == "folder":
        path.unlink()
        path.mkdir(0o700)
    elif damage == "huge":
        path.write_bytes(b"x" * (keys.MAX_KEY_BYTES + 1))
    elif damage == "junk":
        path.write_bytes(b"not a key\n")
    with pytest.raises(KemKeyError) as refused:
        keys.load(node_key)
    message = str(refused.value)
    if damage in expected:
        assert message == expected[damage]
    else:
        assert message.startswith(f"{path}: ")
    body = re.sub(rb"-----[A-Z -]+-----|\s", b"", secret)
    assert body.decode() not in message
    assert os.path.lexists(path)
