"""`circle secret seal|reseal`: write `secrets/NAME.yaml`, a value sealed to the circle's nodes.

The recipients are the nodes admitted at the approved head (the chain verified from the
introduction, as `circle policy` reads it), or with `--nodes working-tree` those of the working
tree's nodes/ (a node being added in the same change; its admission is then approved with the
secret). Every one of them must publish `kemPublicKey`. The value is read from a file or from
standard input and is never printed, logged or written anywhere but sealed. Nothing is
committed: commit the file, and the owners approve it as any change.

`reseal` seals the value again for the nodes admitted now, keeping the document's binding
(workloads, digests, description): it needs the value again. Owners hold values, nodes hold
node keys; no node key ever leaves its node to reseal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import pygit2
from pydantic import TypeAdapter, ValidationError

from qss.durable import write_atomically
from reconciler.chain.trees import desired_at
from reconciler.chain.values import IdentityVerifier
from reconciler.cli.chain_options import identities_option, introduction_option
from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.policy import NotApprovedYet, approved_policy
from reconciler.cli.render import print_json, stdout
from reconciler.desired.documents import parse_document
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model import KINDS, Node, Secret
from reconciler.desired.model.secret import MAX_VALUE_BYTES
from reconciler.desired.model.types import Digest, Name
from reconciler.desired.problems import DocumentError
from reconciler.desired.repository import Report, kem_key_digest
from reconciler.errors import InputError
from reconciler.files import read_bounded
from reconciler.secrets import seal as sealing
from reconciler.secrets.errors import SecretError

NODES_FROM = ("approved", "working-tree")


def _value(from_file: Path | None, from_stdin: bool) -> bytes:
    if (from_file is None) == (not from_stdin):
        raise InputError("give the value with exactly one of --from-file FILE or --from-stdin")
    if from_file is not None:
        data = read_bounded(from_file, MAX_VALUE_BYTES)
    else:
        data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
        if len(data) > MAX_VALUE_BYTES:
            raise InputError(f"standard input: over {MAX_VALUE_BYTES} bytes; a secret holds less")
    if not data:
        raise InputError("the value is empty; refusing to seal nothing")
    return data


def _recipients(
    repo: Path, nodes_from: str, identities: IdentityVerifier | None, intro: Path | None
) -> tuple[str, dict[str, Node], dict[str, Any]]:
    """The circle id, the admitted nodes and where they were read (for the output)."""
    if nodes_from == "working-tree":
        report = check_circle_dir(repo)
        source: dict[str, Any] = {"source": "working-tree"}
    else:
        try:
            head, _ = approved_policy(repo, int(time.time()), identities, intro)
        except NotApprovedYet as error:
            raise NotApprovedYet(
                f"{error}; or seal for the working tree's nodes/ (--nodes working-tree)"
            ) from None
        report = desired_at(pygit2.Repository(str(repo)), head.commit)
        source = {"source": "approved-head", "seq": head.seq, "commit": head.commit}
    if report.state.circle is None:
        raise InputError(f"{repo}: circle.yaml cannot be read (circle validate says why)")
    nodes = {name: loaded.document for name, loaded in report.state.nodes.items()}
    if not nodes:
        raise InputError("no node is admitted: nodes/ is empty")
    missing = sorted(name for name, node in nodes.items() if node.kem_public_key is None)
    if missing:
        raise InputError(
            f"node(s) {', '.join(missing)} publish no kemPublicKey in nodes/NAME.yaml ("
            f"{_where(source)}): a secret is sealed to every admitted node; add each node's "
            "PATH.x-wing.pub line (circle node keygen writes it) and have it approved first"
        )
    return report.state.circle.document.id, nodes, source


def _where(source: dict[str, Any]) -> str:
    if source["source"] == "working-tree":
        return "the working tree"
    return f"approved head seq {source['seq']}, commit {str(source['commit'])[:12]}"


def _workloads(report: Report, workloads: tuple[str, ...]) -> None:
    known = report.state.workloads
    unknown = sorted(set(workloads) - set(known))
    if unknown:
        raise InputError(
            f"unknown workload(s) {', '.join(unknown)} (workloads: "
            f"{', '.join(sorted(known)) or 'none'})"
        )


def _valid(kind: Any, value: str) -> None:
    """InputError unless `value` is a valid `kind` (the documents' own rule), saying why."""
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as error:
        raise InputError(str(error.errors()[0]["msg"]).removeprefix("Value error, ")) from None


def _path(repo: Path, name: str) -> Path:
    _valid(Name, name)
    return repo / "secrets" / f"{name}.yaml"


def _write(
    repo: Path,
    path: Path,
    value: bytes,
    binding: sealing.Binding,
    nodes: dict[str, Node],
    source: dict[str, Any],
    description: str | None,
    output: str | None,
) -> int:
    keys = {name: node.kem_public_key for name, node in nodes.items() if node.kem_public_key}
    try:
        secret = sealing.seal(value, binding, keys, description)
    except SecretError as error:
        raise InputError(str(error)) from None
    header = [
        f"Sealed by `circle secret seal` to nodes {', '.join(sorted(keys))}",
        f"({_where(source)}). The value is not in this file: only those nodes can open it,",
        "and release it only to the workloads (and artifacts) below. After nodes change:",
        f"circle secret reseal {binding.secret} --from-file FILE.",
    ]
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, sealing.render(secret, header), mode=0o644)
    recipients = [{"node": r.node, "kemKey": r.kem_key} for r in secret.recipients]
    if settings(output).json:
        print_json(
            {
                "secret": binding.secret,
                "file": str(path.relative_to(repo)),
                "circle": binding.circle,
                "workloads": list(secret.workloads),
                "digests": list(secret.digests),
                "recipients": recipients,
                "nodesFrom": source,
            }
        )
    else:
        stdout.print(
            f"{path.relative_to(repo)}: secret {binding.secret} of circle {binding.circle}, "
            f"for workload(s) {', '.join(secret.workloads)}"
            + (f" running {', '.join(secret.digests)}" if secret.digests else "")
            + f", sealed to {len(recipients)} node(s) ({_where(source)}): "
            + ", ".join(r["node"] for r in recipients),
            markup=False,
        )
        stdout.print(
            f"next: git add {path.relative_to(repo)} && git commit; the owners approve it",
            markup=False,
        )
    return 0


def _common(function: Any) -> Any:
    function = click.option(
        "--from-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help="Read the value from FILE (at most 64 KiB).",
    )(function)  # fmt: skip
    function = click.option(
        "--from-stdin", is_flag=True, help="Read the value from standard input."
    )(function)
    function = click.option(
        "--nodes", "nodes_from", type=click.Choice(NODES_FROM), default="approved",
        show_default=True,
        help="Seal to the nodes admitted at the approved head, or to the working tree's "
        "nodes/ (a node added in the same change).",
    )(function)  # fmt: skip
    return repo_option(introduction_option(identities_option(output_option(function))))


@click.group("secret")
def group() -> None:
    """Seal values to the circle's nodes: secrets/NAME.yaml, released only to its workloads."""


@group.command("seal")
@click.argument("name")
@click.option("--workload", "workloads", multiple=True, required=True,
              help="A workload whose replicas may receive it (repeatable).")  # fmt: skip
@click.option("--digest", "digests", multiple=True,
              help="Only replicas running this artifact (sha256:...) receive it "
              "(repeatable; default: any the workload pins at the applied commit).")  # fmt: skip
@click.option("--description", default=None, help="Free text for humans (not secret).")
@click.option("--replace", is_flag=True, help="Replace an existing secrets/NAME.yaml.")
@_common
def seal_command(
    name: str,
    workloads: tuple[str, ...],
    digests: tuple[str, ...],
    description: str | None,
    replace: bool,
    from_file: Path | None,
    from_stdin: bool,
    nodes_from: str,
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Seal a value as secret NAME for the admitted nodes: writes secrets/NAME.yaml."""
    path = _path(repo, name)
    if path.exists() and not replace:
        raise InputError(
            f"{path}: exists; circle secret reseal {name} seals it again for the nodes, "
            "--replace replaces it"
        )
    for item in (*workloads, *digests):
        _valid(Digest if item in digests else Name, item)
    value = _value(from_file, from_stdin)
    circle_id, nodes, source = _recipients(repo, nodes_from, identities, introduction_file)
    _workloads(check_circle_dir(repo), workloads)
    binding = sealing.Binding(circle_id, name, tuple(workloads), tuple(digests))
    return _write(repo, path, value, binding, nodes, source, description, output)


@group.command("reseal")
@click.argument("name")
@_common
def reseal_command(
    name: str,
    from_file: Path | None,
    from_stdin: bool,
    nodes_from: str,
    repo: Path,
    introduction_file: Path | None,
    identities: IdentityVerifier | None,
    output: str | None,
) -> int:
    """Seal secret NAME again for the nodes admitted now, keeping its binding: needs the
    value again (--from-file or --from-stdin). Change the value itself too when a removed
    node's key may be in other hands."""
    path = _path(repo, name)
    if not path.is_file():
        raise InputError(f"{path}: no such secret; circle secret seal {name} makes it")
    data = read_bounded(path, 1024 * 1024)
    try:
        loaded = parse_document(data, f"secrets/{name}.yaml", [KINDS["Secret"]])
    except DocumentError as error:
        raise InputError(f"secrets/{name}.yaml cannot be read: {error}") from None
    old = loaded.document
    assert isinstance(old, Secret)
    value = _value(from_file, from_stdin)
    circle_id, nodes, source = _recipients(repo, nodes_from, identities, introduction_file)
    if old.circle != circle_id:
        raise InputError(
            f"secrets/{name}.yaml is bound to circle {old.circle!r}, this is {circle_id!r}"
        )
    sealed_before = {r.node: r.kem_key for r in old.recipients}
    now = {n: kem_key_digest(node) for n, node in nodes.items()}
    if sealed_before == now and not settings(output).json:
        stdout.print(f"secret {name}: the same nodes and keys; sealed again anyway", markup=False)
    binding = sealing.Binding.of(old)
    return _write(repo, path, value, binding, nodes, source, old.description, output)
