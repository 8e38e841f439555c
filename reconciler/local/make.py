"""Making a local circle in DIR from a circle repository, step by step (each step is said
through `say` before it runs; the first failure stops the making, and the next `circle up`
starts over):

1. check the repository (`circle validate`'s rules): a circle that does not validate is refused
   with its problems;
2. keys: one demo key per owner (members of `circle.yaml`) and one node key and one X-Wing
   KEM key per node, never the repository's own public keys;
3. the desired state: a copy of the repository's files with those keys written into
   `circle.yaml` and `nodes/` (comments kept), the node set cut or grown to `--nodes`, every
   secret sealed anew to those nodes with a new random value that the owners hold (DIR/keys/
   owners/NAME.secret: the repository's own copies are sealed to keys DIR never has), and each
   volume backend moved to a folder of its own in DIR/qss; the copy is validated again;
4. the repository: DIR/circle, one commit on main, whose genesis the demo owners approve one by
   one until the policy's own quorum is met; the introduction the nodes pin;
5. the builds, into DIR/chunks, each checked against the digest its document locks;
6. the volumes: a storage key, and every object a build makes put into its volume's backends,
   shared with the nodes its `recipients` names (their KEM keys open it: the agents are given
   no storage key).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
from ruamel.yaml import YAML

from builders.chunks import ChunkStore
from builders.materialize import materialize
from qss.durable import write_atomically
from qss.keys import generate_key_file, read_key_file
from reconciler import wiring
from reconciler.chain import signing
from reconciler.chain.propose import approve, judge, propose, statement, trusted_introduction
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.repository import DesiredState
from reconciler.errors import InputError
from reconciler.files import remove_tree
from reconciler.local.site import MAKING, Site
from reconciler.node.identity import NodeKey
from reconciler.node.volumes import volume_recipients
from reconciler.secrets import keys as kem_keys
from reconciler.secrets import seal as sealing
from reconciler.secrets import xwing

Say = Callable[[str], None]
MAX_NODES = 26
_IGNORED = shutil.ignore_patterns(".git", "__pycache__", ".*cache", ".venv")
_SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class Made:
    circle: str
    nodes: tuple[str, ...]
    owners: tuple[str, ...]
    approved_by: tuple[str, ...]
    secrets: tuple[str, ...] = ()  # sealed anew; the owners hold each value (Site.secret_value)


def make_circle(source: Path, site: Site, nodes: int | None, say: Say) -> Made:
    """Make the local circle of `source` in `site` (see the module); DIR must hold nothing of
    another circle (the caller checks)."""
    say(f"checking {source}")
    original = _checked(source, "the circle")
    wanted = _node_names(sorted(original.nodes), nodes)
    assert original.circle is not None  # _checked refuses a circle without one
    owners = tuple(member.id for member in original.circle.document.members)
    if site.root.exists():
        remove_tree(site.root)  # an interrupted making: start over
    site.root.mkdir(parents=True, mode=0o700)
    os.chmod(site.root, 0o700)
    (site.root / MAKING).touch()

    say(f"keys for {len(owners)} owners and {len(wanted)} nodes")
    owner_lines = {name: _new_key(site.owner_key(name), f"{name}@circle-up") for name in owners}
    node_lines = {name: _new_key(site.node_key(name), f"{name}@circle-up") for name in wanted}
    kem_lines = {name: _new_kem_key(site.node_key(name), f"{name}@circle-up") for name in wanted}

    say("the desired state, with the demo keys")
    shutil.copytree(source, site.repo, ignore=_IGNORED, symlinks=True)
    _write_owner_keys(site.repo / "circle.yaml", owner_lines)
    _write_nodes(site.repo / "nodes", sorted(original.nodes), wanted, node_lines, kem_lines)
    sealed = seal_anew(site.repo, original, kem_lines, site.secret_value)
    _move_backends(site.repo / "volumes", site.qss, wanted)
    state = _checked(site.repo, "the demo copy")

    say("the repository, its genesis approved by the owners' quorum")
    _commit(site.repo)
    signers = approve_by_quorum(site.repo, {name: site.owner_key(name) for name in owners})
    intro = trusted_introduction(pygit2.Repository(str(site.repo)), None, int(time.time())).intro
    pinned = {"circle": intro.circle, "commit": intro.commit, "policySha256": intro.policy_sha256}
    write_atomically(site.intro, json.dumps(pinned) + "\n")

    chunks = ChunkStore(site.chunks)
    for name, loaded in sorted(state.builds.items()):
        say(f"build {name}")
        built = wiring.run_build(loaded.document, site.repo, chunks)
        locked = loaded.document.digest
        if locked is not None and built.artifact_id != locked:
            raise InputError(
                f"builds/{name}.yaml: the build made {built.artifact_id}, the document locks "
                f"{locked}; run `circle build {name}` in {source} and commit the lock"
            )
    generate_key_file(site.storage_key)
    for name in sorted(state.volumes):
        say(f"volume {name}: objects into Quantum Safe Storage")
        _fill_volume(state, name, site, chunks)
    assert state.circle is not None
    return Made(state.circle.document.id, tuple(wanted), owners, signers, sealed)


def approve_by_quorum(repo_dir: Path, keys: dict[str, Path]) -> tuple[str, ...]:
    """Approve main's tip with `keys` (member -> private key file), one after the other, until
    the transition has its quorum; the members who signed. Raises InputError when all of them
    together do not reach it."""
    repo = pygit2.Repository(str(repo_dir))
    signed: list[str] = []
    for member, key_file in keys.items():
        now = int(time.time())
        intro = trusted_introduction(repo, None, now).intro
        found = propose(repo, "main", now, None, intro)
        if found.approved:
            break
        data = statement(found, now)
        approve(repo, found, data, _signer(key_file), member)
        signed.append(member)
    now = int(time.time())
    found = propose(repo, "main", now, None, trusted_introduction(repo, None, now).intro)
    verdict = judge(found, now)
    if not verdict.approved:
        raise InputError(f"{repo_dir}: every demo owner signed and {verdict.unmet}")
    return tuple(signed)


def _signer(key_file: Path) -> Callable[[bytes], tuple[str, str]]:
    return lambda data: signing.with_key_file(data, key_file, None)


# -- the steps --------------------------------------------------------------------------------


def _checked(root: Path, what: str) -> DesiredState:
    report = check_circle_dir(root)
    if report.errors or report.state.circle is None:
        shown = [str(problem) for problem in report.errors[:_SHOWN_PROBLEMS]]
        more = len(report.errors) - len(shown)
        lines = "\n  ".join(shown + ([f"... and {more} more"] if more > 0 else []))
        raise InputError(f"{root}: {what} does not validate (`circle validate {root}`):\n  {lines}")
    return report.state


def _node_names(existing: list[str], count: int | None) -> list[str]:
    if count is None:
        return existing
    if not 1 <= count <= MAX_NODES:
        raise InputError(f"--nodes {count}: expected 1 to {MAX_NODES}")
    names = existing[:count]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    while len(names) < count:
        name = f"node-{next(letters)}"
        if name not in names:
            names.append(name)
    return names


def _new_key(path: Path, comment: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return NodeKey.generate(path, comment).public_key_line


def _new_kem_key(node_key: Path, comment: str) -> str:
    """The X-Wing key beside the node key (NAME.x-wing, 0600): its `kemPublicKey` line."""
    return kem_keys.generate(node_key, comment).public_key_line(comment)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines such as public keys
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _edit(path: Path, change: Callable[[Any], None]) -> None:
    yaml = _yaml()
    document = yaml.load(path.read_text(encoding="utf-8"))
    change(document)
    out = io.StringIO()
    yaml.dump(document, out)
    write_atomically(path, out.getvalue())


def _write_owner_keys(policy: Path, lines: dict[str, str]) -> None:
    """Each member's SSH keys become their one demo key; other kinds (sigstore) stay."""

    def change(document: Any) -> None:
        for member in document["members"]:
            keys = member["keys"]
            others = [key for key in keys if key.get("type") != "ssh-ed25519"]
            keys.clear()
            keys.append({"type": "ssh-ed25519", "key": lines[member["id"]]})
            keys.extend(others)

    _edit(policy, change)


def _write_nodes(
    folder: Path,
    existing: list[str],
    wanted: list[str],
    lines: dict[str, str],
    kem_lines: dict[str, str],
) -> None:
    """Keep the wanted nodes' documents (with their demo keys), remove the others, and make
    new ones like the last existing node, each in a failure domain of its own."""
    template = (folder / f"{existing[-1]}.yaml").read_text(encoding="utf-8")
    for name in existing:
        if name not in wanted:
            (folder / f"{name}.yaml").unlink()
    for name in wanted:
        path = folder / f"{name}.yaml"
        if name not in existing:
            path.write_text(template, encoding="utf-8")

        def change(document: Any, name: str = name, new: bool = name not in existing) -> None:
            document["publicKey"] = lines[name]
            document["kemPublicKey"] = kem_lines[name]
            if new:
                document["name"] = name
                document["failureDomain"] = f"site-{name}"
                document["description"] = f"A node added by circle up --nodes ({name})."

        _edit(path, change)


def seal_anew(
    repo: Path, state: DesiredState, kem_lines: dict[str, str], value_file: Callable[[str], Path]
) -> tuple[str, ...]:
    """Seal every secret of `state` again in `repo` (secrets/NAME.yaml, its binding and
    description kept) to the nodes whose KEM keys are `kem_lines` (node -> `x-wing ...` line),
    each with a new random value written 0600 to `value_file(NAME)` (which must not exist):
    the names. A repository's own sealed values are for its own nodes' keys, which a copy with
    new node keys can never open."""
    for name, loaded in sorted(state.secrets.items()):
        value = secrets.token_hex(32).encode("ascii")
        target = value_file(name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(target, value, mode=0o600, exclusive=True)
        document = loaded.document
        sealed = sealing.seal(value, sealing.Binding.of(document), kem_lines, document.description)
        del value  # from here on, in the value file and sealed alone
        header = [
            f"Sealed by circle up to nodes {', '.join(sorted(kem_lines))}, with a new value that",
            "the owners hold; released only to the workloads (and artifacts) below.",
        ]
        write_atomically(repo / "secrets" / f"{name}.yaml", sealing.render(sealed, header))
    return tuple(sorted(state.secrets))


def _move_backends(folder: Path, qss: Path, nodes: list[str]) -> None:
    """Every backend a folder of its own in DIR/qss; a backend on a node that is not part of
    this circle moves to one that is (round robin)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.yaml")):

        def change(document: Any) -> None:
            spare = itertools.cycle(nodes)
            for backend in document.get("backends") or []:
                backend["url"] = f"dir:{qss / str(backend['name'])}"
                if backend.get("node") is not None and backend["node"] not in nodes:
                    backend["node"] = next(spare)
                (qss / str(backend["name"])).mkdir(parents=True, exist_ok=True)

        _edit(path, change)


def _commit(repo_dir: Path) -> None:
    repo = pygit2.init_repository(str(repo_dir), initial_head="main")
    repo.config["user.name"] = "Demo owner"
    repo.config["user.email"] = "owner@circle-up.invalid"
    repo.index.add_all()
    repo.index.write()
    tree = repo.index.write_tree()
    author = pygit2.Signature("circle up", "circle-up@circle-up.invalid")
    repo.create_commit("refs/heads/main", author, author, "the circle", tree, [])


def _fill_volume(state: DesiredState, name: str, site: Site, chunks: ChunkStore) -> None:
    """Put each object of volume `name` that a build makes; refuse the others, which only
    their owners hold."""
    volume = wiring.volume_store(state, name)
    key = read_key_file(site.storage_key)
    shared_with = volume_recipients(state, name)  # its nodes read it with their KEM keys
    staging = site.root / "staging"
    for item in state.volumes[name].document.objects:
        build = state.builds.get(item.build) if item.build is not None else None
        digest = build.document.digest if build is not None else None
        if build is None or digest is None:
            raise InputError(
                f"volumes/{name}.yaml: object {item.name} is not made by a locked build; "
                "circle up can put only objects it builds"
            )
        manifest = chunks.get_manifest(digest)
        folder = materialize(
            digest, manifest, sources=[], store=chunks, artifacts_root=staging, switch=False
        )
        files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
        chosen = [p for p in files if p.name == item.name] or (files if len(files) == 1 else [])
        if len(chosen) != 1:
            raise InputError(
                f"volumes/{name}.yaml: object {item.name}: build {item.build}'s artifact has "
                f"no one file of that name"
            )
        volume.store.put(
            chosen[0], storage_key=key, k=volume.k, n=volume.n, name=item.name,
            recipients=shared_with, encapsulate=xwing.encapsulate,
        )  # fmt: skip
    remove_tree(staging)
