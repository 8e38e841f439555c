"""`circle init DIR --name NAME --member ID=PUBKEY_FILE ...`: a new circle repository.

Writes `circle.yaml` (version 1, the members and their keys, consensus rules expanded from a
preset or from --threshold/--governance, the baseline admission preset), the empty document
folders, commits it as the first commit of `main`, and prints the introduction nodes pin.
"""

from __future__ import annotations

import io
from pathlib import Path

import click
import pygit2
from ruamel.yaml import YAML

from qss.durable import write_atomically
from reconciler.chain.walk import introduction
from reconciler.cli.render import print_json
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model import Member
from reconciler.desired.model.circle import Consensus, Rule
from reconciler.desired.model.types import ed25519_key_blob
from reconciler.desired.presets import PresetError, expand, quota_threshold
from reconciler.desired.shipped import load_presets
from reconciler.errors import InputError

FOLDERS = ("nodes", "workloads", "builds", "volumes")


def _members(specs: tuple[str, ...]) -> list[Member]:
    members = []
    for spec in specs:
        member_id, separator, key_path = spec.partition("=")
        if not separator:
            raise InputError(f"--member {spec!r}: expected ID=PUBKEY_FILE")
        try:
            line = Path(key_path).read_text(encoding="utf-8").strip()
            ed25519_key_blob(line)
            members.append(
                Member.model_validate(
                    {"id": member_id, "keys": [{"type": "ssh-ed25519", "key": line}]}
                )
            )
        except OSError as error:
            raise InputError(f"{key_path}: cannot read: {error.strerror}") from None
        except ValueError as error:
            raise InputError(f"--member {member_id}: {str(error).splitlines()[0]}") from None
    if not members:
        raise InputError("a circle needs at least one --member ID=PUBKEY_FILE")
    return members


def _consensus(
    members: list[Member], preset: str | None, threshold: int | None, governance: int | None
) -> Consensus:
    total = sum(member.weight for member in members)
    if threshold is not None or governance is not None:
        if preset is not None:
            raise InputError("give --preset or --threshold/--governance, not both")
        return Consensus(
            rules=[
                Rule(name="governance", paths=["circle.yaml"], threshold=governance or total),
                Rule(
                    name="default",
                    paths=["**"],
                    threshold=threshold or quota_threshold("majority", total),
                ),
            ]
        )
    name = preset or ("solo" if len(members) == 1 else "majority-with-unanimous-governance")
    templates = load_presets().consensus
    if name not in templates:
        raise InputError(f"no consensus preset {name!r} (shipped: {', '.join(sorted(templates))})")
    try:
        return expand(templates[name].document, members)
    except PresetError as error:
        raise InputError(str(error)) from None


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", "circle_id", required=True, help="The circle id (lowercase, digits, '-').")
@click.option("--member", "members", multiple=True, metavar="ID=PUBKEY_FILE", help="An owner.")
@click.option("--preset", help="A consensus preset (circle presets list).")
@click.option("--threshold", type=click.IntRange(1), help="Weight needed for changes.")
@click.option("--governance", type=click.IntRange(1), help="Weight needed for circle.yaml.")
def command(
    directory: Path,
    circle_id: str,
    members: tuple[str, ...],
    preset: str | None,
    threshold: int | None,
    governance: int | None,
) -> int:
    """Create a circle repository in DIRECTORY and print its introduction."""
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory}: exists and is not empty")
    owners = _members(members)
    consensus = _consensus(owners, preset, threshold, governance)
    document = {
        "apiVersion": "circle/v1",
        "kind": "Circle",
        "id": circle_id,
        "version": 1,
        "members": [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in owners],
        "consensus": consensus.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "admission": {"presets": ["baseline"]},
    }
    yaml = YAML(typ="rt")
    yaml.width = 4096
    text = io.StringIO()
    yaml.dump(document, text)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / "circle.yaml", text.getvalue())
    for folder in FOLDERS:
        (directory / folder).mkdir(exist_ok=True)
        (directory / folder / ".gitkeep").write_bytes(b"")
    report = check_circle_dir(directory)
    if report.errors:
        raise InputError(f"{report.errors[0]}")
    repo = pygit2.init_repository(str(directory), initial_head="main")
    repo.index.add_all()
    repo.index.write()
    try:
        author = repo.default_signature
    except (KeyError, pygit2.GitError):
        author = pygit2.Signature("circle", "circle@localhost")
    repo.create_commit("HEAD", author, author, f"circle {circle_id}", repo.index.write_tree(), [])
    intro = introduction(repo)
    print_json(
        {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    )
    return 0
