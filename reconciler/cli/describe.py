"""`circle describe [--repo DIR]`: the desired state of a circle, as people read it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from reconciler.cli.context import output_option, repo_option, settings
from reconciler.cli.policy import checked, chosen_repo, head_json
from reconciler.cli.render import print_json, print_problems, report_json, stdout, summary_line
from reconciler.desired.documents import Loaded
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model import Circle, Node, Volume, Workload
from reconciler.desired.model.circle import MlDsaKey, SshKey
from reconciler.desired.model.types import (
    format_bytes,
    format_cpu,
    format_duration,
    key_fingerprint,
    ssh_fingerprint,
)
from reconciler.desired.repository import DesiredState


def _dump(documents: Mapping[str, Loaded[Any]]) -> dict[str, Any]:
    return {
        name: loaded.document.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name, loaded in sorted(documents.items())
    }


def state_json(state: DesiredState) -> dict[str, Any]:
    circle = state.circle
    return {
        "circle": circle.document.model_dump(mode="json", by_alias=True, exclude_none=True)
        if circle
        else None,
        "nodes": _dump(state.nodes),
        "workloads": _dump(state.workloads),
        "builds": _dump(state.builds),
        "volumes": _dump(state.volumes),
    }


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        table.add_column(column)  # rich's default: a too-long word ends in "…", never folded
    return table


def _members(circle: Circle) -> Table:
    table = _table("Members (the Human Chain)", "member", "weight", "keys")
    for member in circle.members:
        keys = [
            ssh_fingerprint(key.key)
            if isinstance(key, SshKey)
            else f"ml-dsa-65 {key_fingerprint(key.key)}"
            if isinstance(key, MlDsaKey)
            else f"sigstore {key.identity} ({key.issuer})"
            for key in member.keys
        ]
        table.add_row(member.id, str(member.weight), "\n".join(keys))
    return table


def _rules(circle: Circle) -> Table:
    table = _table(
        f"Consensus rules (approvals valid {format_duration(circle.consensus.approval_lifetime)})",
        "rule",
        "paths",
        "signers",
        "needs",
    )
    total = {m.id: m.weight for m in circle.members}
    for rule in circle.consensus.rules:
        members = rule.members or list(total)
        weight = sum(total.get(m, 0) for m in members)
        needs = f"weight {rule.threshold} of {weight}"
        if rule.required:
            needs += f", including {', '.join(rule.required)}"
        table.add_row(rule.name, "\n".join(rule.paths), ", ".join(members), needs)
    return table


def _nodes(nodes: Mapping[str, Loaded[Node]]) -> Table:
    # Which nodes sign with an ML-DSA-65 half too: a column only once one does.
    hybrid = any(loaded.document.mldsa_public_key is not None for loaded in nodes.values())
    signs = ("signs",) if hybrid else ()
    table = _table("Nodes", "node", "failure domain", *signs, "cpu", "memory", "GPUs", "labels")
    for name, loaded in sorted(nodes.items()):
        node = loaded.document
        gpus = "\n".join(f"{gpu.model} {format_bytes(gpu.memory)}" for gpu in node.capacity.gpus)
        labels = ", ".join(f"{key}={value}" for key, value in sorted(node.labels.items()))
        kind = ("classic" if node.mldsa_public_key is None else "hybrid",) if hybrid else ()
        table.add_row(
            name,
            node.failure_domain,
            *kind,
            format_cpu(node.capacity.cpu),
            format_bytes(node.capacity.memory),
            gpus or "-",
            labels or "-",
        )
    return table


def _replicas(workload: Workload) -> str:
    scale = workload.autoscale
    if scale is None:
        return str(workload.replicas)
    return f"{workload.replicas} ({scale.min}-{scale.max} on {scale.metric} {scale.target:g})"


def _workloads(workloads: Mapping[str, Loaded[Workload]]) -> Table:
    table = _table(
        "Workloads", "workload", "artifact", "replicas", "per replica", "spread", "ports"
    )
    for name, loaded in sorted(workloads.items()):
        workload = loaded.document
        resources = workload.resources
        request = f"cpu {format_cpu(resources.cpu)}, memory {format_bytes(resources.memory)}"
        if resources.gpu is not None:
            optional = " (optional)" if resources.gpu.optional else ""
            request += f", {resources.gpu.count} GPU{optional}"
        digest = workload.artifact.digest
        artifact = f"{workload.artifact.build} @ {digest[:19] + '...' if digest else 'unpinned'}"
        ports = ", ".join(f"{p.name} {p.port}/{p.protocol}" for p in workload.ports)
        table.add_row(
            name,
            artifact,
            _replicas(workload),
            request,
            f">= {workload.placement.min_failure_domains} domains",
            ports or "-",
        )
    return table


def _volumes(volumes: Mapping[str, Loaded[Volume]], state: DesiredState) -> Table:
    table = _table("Volumes (Quantum Safe Storage)", "volume", "k-of-n", "backends", "objects")
    for name, loaded in sorted(volumes.items()):
        volume = loaded.document
        backends = []
        for backend in volume.backends:
            node = state.nodes.get(backend.node) if backend.node else None
            domain = backend.failure_domain or (node.document.failure_domain if node else "?")
            backends.append(f"{backend.name} ({domain})")
        table.add_row(
            name,
            f"{volume.k}-of-{volume.n}",
            "\n".join(backends),
            "\n".join(o.name for o in volume.objects) or "-",
        )
    return table


@click.command("describe")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@repo_option
@output_option
def command(directory: Path | None, repo: Path, output: str | None) -> int:
    """Describe the desired state of the circle repository in DIRECTORY or --repo.

    Shows the owners and their rules, the approved head, the admitted nodes, the workloads,
    builds and volumes. Problems are listed first; the exit code is that of `circle validate`.
    """
    directory = chosen_repo(directory, repo)
    report, head = checked(directory, check_circle_dir(directory))
    if settings(output).json:
        print_json(
            {
                **report_json(directory, report),
                "approvedHead": head_json(head),
                "state": state_json(report.state),
            }
        )
        return report.exit_code
    print_problems(report.problems)
    state = report.state
    if state.circle is not None:
        circle = state.circle.document
        stdout.print(
            f"[bold]Circle {circle.id}[/bold], policy version {circle.version}, "
            f"circle.yaml sha256 {state.circle.sha256}"
        )
        if head is not None:
            stdout.print(
                f"Approved head: seq {head.seq} ({head.commit[:12]}), policy version "
                f"{head.version}, circle.yaml sha256 {head.sha256}",
                markup=False,
            )
        if circle.description:
            stdout.print(circle.description.strip(), markup=False)
        stdout.print(_members(circle))
        stdout.print(_rules(circle))
        presets = ", ".join(circle.admission.presets) or "none"
        own = "yes" if circle.admission.rules else "no"
        stdout.print(f"Admission: presets {presets}; own rules: {own}\n")
    stdout.print(_nodes(state.nodes))
    stdout.print(_workloads(state.workloads))
    builds = _table("Builds", "build", "builder", "source", "locked digest")
    for name, loaded in sorted(state.builds.items()):
        build = loaded.document
        builds.add_row(name, build.builder.value, build.source, build.digest or "not locked")
    stdout.print(builds)
    stdout.print(_volumes(state.volumes, state))
    stdout.print(summary_line(directory, report), markup=False)
    return report.exit_code
