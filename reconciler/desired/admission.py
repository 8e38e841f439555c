"""Admission: the limits a circle sets on its own desired state.

Each rule set (every shipped preset that `circle.yaml` names, and the circle's own rules)
is applied on its own; the desired state is admitted only if it passes all of them. Problems
name the rule set they come from, so a user knows which limit to raise or which preset to drop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.desired.documents import Loaded
from reconciler.desired.model import AdmissionPolicy, AdmissionRules
from reconciler.desired.problems import Finding, Problem

if TYPE_CHECKING:
    from reconciler.desired.repository import DesiredState


def check(state: DesiredState, presets: Mapping[str, Loaded[AdmissionPolicy]]) -> Iterator[Problem]:
    """Every admission problem of `state`; `state.circle` must be present."""
    assert state.circle is not None
    circle = state.circle
    rule_sets: list[tuple[str, AdmissionRules]] = []
    for index, name in enumerate(circle.document.admission.presets):
        preset = presets.get(name)
        if preset is None:
            yield circle.problem(
                Finding(
                    ("admission", "presets", index),
                    f"unknown admission preset {name!r} "
                    f"(shipped: {', '.join(sorted(presets)) or 'none'})",
                    "admission.unknown-preset",
                )
            )
        else:
            rule_sets.append((f"admission preset {name}", preset.document.rules))
    own = circle.document.admission.rules
    if own is not None:
        rule_sets.append(("circle admission rules", own))
    for source, rules in rule_sets:
        yield from _apply(source, rules, state)


def _apply(source: str, rules: AdmissionRules, state: DesiredState) -> Iterator[Problem]:
    def problem(loaded: Loaded[Any], path: tuple[str | int, ...], message: str) -> Problem:
        return loaded.problem(Finding(path, f"{source}: {message}", "admission"))

    total_gpus = 0
    for loaded in state.workloads.values():
        workload = loaded.document
        if rules.require_pinned_artifacts and workload.artifact.digest is None:
            yield problem(loaded, ("artifact",), "artifact is not pinned; expected a sha256 digest")
        if rules.require_health_checks and workload.ports and workload.health is None:
            yield problem(loaded, ("ports",), "a workload that serves ports needs a health check")
        if rules.max_replicas is not None and workload.max_replicas > rules.max_replicas:
            where = ("autoscale", "max") if workload.autoscale else ("replicas",)
            yield problem(
                loaded,
                where,
                f"{workload.max_replicas} replicas exceed the cap of {rules.max_replicas}",
            )
        gpu = workload.resources.gpu
        if gpu is not None:
            total_gpus += gpu.count * workload.max_replicas
            if rules.max_gpus_per_replica is not None and gpu.count > rules.max_gpus_per_replica:
                yield problem(
                    loaded,
                    ("resources", "gpu", "count"),
                    f"{gpu.count} GPUs per replica exceed the cap of {rules.max_gpus_per_replica}",
                )
        wanted = rules.min_failure_domains
        if (
            wanted is not None
            and workload.max_replicas >= 2
            and workload.placement.min_failure_domains < wanted
        ):
            yield problem(
                loaded,
                ("placement",),
                f"a workload of {workload.max_replicas} replicas must spread over at least "
                f"{wanted} failure domains (placement.minFailureDomains is "
                f"{workload.placement.min_failure_domains})",
            )
        if rules.min_port is not None:
            for index, port in enumerate(workload.ports):
                if port.port < rules.min_port:
                    yield problem(
                        loaded,
                        ("ports", index, "port"),
                        f"port {port.port} is below the lowest allowed port {rules.min_port}",
                    )
    if rules.max_total_gpus is not None and total_gpus > rules.max_total_gpus:
        assert state.circle is not None
        yield problem(
            state.circle,
            ("admission",),
            f"workloads claim {total_gpus} GPUs at full scale; the cap is {rules.max_total_gpus}",
        )
    for build_doc in state.builds.values():
        build = build_doc.document
        if rules.require_locked_builds and build.digest is None:
            yield problem(
                build_doc, ("builder",), "the build records no digest; run `circle build`"
            )
        if rules.allowed_builders is not None and build.builder not in rules.allowed_builders:
            allowed = ", ".join(rules.allowed_builders)
            yield problem(
                loaded, ("builder",), f"builder {build.builder} is not allowed ({allowed})"
            )
    for volume_doc in state.volumes.values():
        volume = volume_doc.document
        spare = volume.n - volume.k
        if rules.min_volume_redundancy is not None and spare < rules.min_volume_redundancy:
            yield problem(
                volume_doc,
                ("n",),
                f"{volume.k}-of-{volume.n} tolerates {spare} lost share(s); at least "
                f"{rules.min_volume_redundancy} required",
            )
