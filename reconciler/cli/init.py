"""`circle init [DIR] --name NAME --member ID=PUBKEY_FILE ...`: a new circle repository.

Writes `circle.yaml` (version 1, the members and their keys, consensus rules expanded from a
preset or from --threshold/--governance, the baseline admission preset), the empty document
folders, commits it as the first commit of `main`, and prints the introduction nodes pin.

All or nothing: circle.yaml is checked before anything is written, a new folder is built beside
DIR and renamed into place, and an existing empty DIR is emptied again if anything fails; so a
failed `init` can be run again as it was.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import click
import pygit2
from click.core import ParameterSource
from ruamel.yaml import YAML

from qss.durable import write_atomically
from reconciler.chain.values import Introduction
from reconciler.chain.walk import introduction
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.render import ProblemsFound, print_json, stdout
from reconciler.desired.folder import display_prefix
from reconciler.desired.model import Member
from reconciler.desired.model.circle import Consensus, Rule
from reconciler.desired.model.types import ed25519_key_blob
from reconciler.desired.presets import PresetError, expand, quota_threshold
from reconciler.desired.repository import analyse
from reconciler.desired.shipped import load_presets
from reconciler.errors import InputError
from reconciler.files import remove_tree

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
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@repo_option
@click.option("--name", "circle_id", required=True, help="The circle id (lowercase, digits, '-').")
@click.option("--member", "members", multiple=True, metavar="ID=PUBKEY_FILE", help="An owner.")
@click.option("--preset", help="A consensus preset (circle presets list).")
@click.option("--threshold", type=click.IntRange(1), help="Weight needed for changes.")
@click.option("--governance", type=click.IntRange(1), help="Weight needed for circle.yaml.")
@output_option
def command(
    directory: Path | None,
    repo: Path,
    circle_id: str,
    members: tuple[str, ...],
    preset: str | None,
    threshold: int | None,
    governance: int | None,
    output: str | None,
) -> int:
    """Create a circle repository in DIRECTORY (or --repo; default: here, if empty) and print
    its introduction. Nothing is left behind when it fails."""
    target = _target(directory, repo)
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{target}: exists and is not empty")
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
    tree = {"circle.yaml", *(f"{folder}/.gitkeep" for folder in FOLDERS)}
    report = analyse(
        {"circle.yaml": text.getvalue().encode()},
        tree,
        load_presets().admission,
        display_prefix=display_prefix(target),
    )
    if report.errors:
        raise ProblemsFound(
            f"{target}: circle.yaml would be invalid; nothing written", report.errors
        )
    intro = _create(target, lambda root: _write_repository(root, circle_id, text.getvalue()))
    found = {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    if settings(output).json:
        print_json(found)
        return 0
    stdout.print(
        f"{target}: circle {circle_id}, first commit {intro.commit[:12]} on main "
        f"({len(owners)} member{'s' if len(owners) != 1 else ''})",
        markup=False,
    )
    stdout.print(
        f"introduction (nodes pin it; `circle introduction --repo {target}` prints it again): "
        + json.dumps(found),
        markup=False,
    )
    return 0


def _target(directory: Path | None, repo: Path) -> Path:
    """DIRECTORY, or --repo (as every command names its repository): not two different ones."""
    given = click.get_current_context().get_parameter_source("repo") is not ParameterSource.DEFAULT
    if directory is not None and given and directory != repo:
        raise InputError(f"give DIR or --repo, not both ({directory}, {repo})")
    return directory if directory is not None else repo


def _write_repository(root: Path, circle_id: str, policy: str) -> Introduction:
    write_atomically(root / "circle.yaml", policy)
    for folder in FOLDERS:
        (root / folder).mkdir()
        (root / folder / ".gitkeep").write_bytes(b"")
    repo = pygit2.init_repository(str(root), initial_head="main")
    repo.index.add_all()
    repo.index.write()
    try:
        author = repo.default_signature
    except (KeyError, pygit2.GitError):
        author = pygit2.Signature("circle", "circle@localhost")
    repo.create_commit("HEAD", author, author, f"circle {circle_id}", repo.index.write_tree(), [])
    return introduction(repo)


def _create(target: Path, write: Callable[[Path], Introduction]) -> Introduction:
    """Run `write` on a folder that becomes `target` only if it succeeds.

    A new `target` is built in a hidden sibling and renamed into place (one step); folders
    made above it are removed again on failure. An existing, empty `target` (perhaps the
    working directory, which must not be swapped under the shell) is written in place and
    emptied again on failure.
    """
    try:
        if target.is_dir():
            try:
                return write(target)
            except BaseException:
                for child in list(target.iterdir()):
                    remove_tree(child)
                raise
        made: list[Path] = []
        scratch = target.parent / f".{target.name}.init-{secrets.token_hex(4)}"
        try:
            _make_parents(target, made)
            scratch.mkdir()
            found = write(scratch)
            os.rename(scratch, target)
            return found
        except BaseException:
            remove_tree(scratch)
            if made:
                remove_tree(made[0])
            raise
    except OSError as error:
        raise InputError(f"{target}: cannot create it: {error.strerror or error}") from None


def _make_parents(target: Path, made: list[Path]) -> None:
    """Make the missing folders above `target`, outermost first, each added to `made`."""
    missing = []
    parent = target.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir()
        made.append(folder)
