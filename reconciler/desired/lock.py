"""Write an artifact digest into circle documents, keeping every comment and the layout.

`circle build` records the digest a build produced in `builds/NAME.yaml` (the lock) and in the
workloads that pin that build's artifact. ruamel.yaml's round-trip mode keeps comments, key order
and quoting; the file is replaced atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

from qss.durable import write_atomically


def set_digest(path: Path, keys: tuple[str, ...], digest: str) -> bool:
    """Set the value at `keys` (a path of mapping keys) to `digest`; False if it was already."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines such as public keys
    yaml.indent(mapping=2, sequence=4, offset=2)
    text = path.read_text(encoding="utf-8")
    document = yaml.load(text)
    node = document
    for key in keys[:-1]:
        node = node[key]
    if node.get(keys[-1]) == digest:
        return False
    if keys[-1] in node:
        node[keys[-1]] = digest
    else:
        node.insert(len(node), keys[-1], digest)
    out = io.StringIO()
    yaml.dump(document, out)
    write_atomically(path, out.getvalue())
    return True


def lock_build(repo: Path, workloads: dict[str, str], build: str, digest: str) -> list[str]:
    """Write `digest` into `builds/BUILD.yaml` and into every workload (name -> the build its
    artifact comes from) that pins that build; the files changed, in order."""
    changed = []
    if set_digest(repo / "builds" / f"{build}.yaml", ("digest",), digest):
        changed.append(f"builds/{build}.yaml")
    for name, source in sorted(workloads.items()):
        if source == build and set_digest(
            repo / "workloads" / f"{name}.yaml", ("artifact", "digest"), digest
        ):
            changed.append(f"workloads/{name}.yaml")
    return changed
