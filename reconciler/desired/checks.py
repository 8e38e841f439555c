"""Checks that relate the fields of one document: what a schema alone cannot say.

`check_document` yields `Finding`s (errors and warnings) with the path of the offending value;
the caller locates them in the file. Checks that need other documents live in
`reconciler.desired.repository`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Sequence
from functools import singledispatch
from typing import Any

from builders.paths import matches_any
from reconciler.desired.model import (
    Build,
    BuilderKind,
    Circle,
    ConsensusTemplate,
    Document,
    Node,
    Secret,
    Volume,
    Workload,
)
from reconciler.desired.model.circle import (
    CLASSIC_KEYS,
    GOVERNANCE_RULE,
    POLICY_FILE,
    Member,
    MlDsaKey,
    Rule,
    SshKey,
)
from reconciler.desired.model.types import ed25519_key_blob, format_bytes, mldsa65_key_blob
from reconciler.desired.problems import DocPath, Finding, Severity

# Set by the node agent for every workload; a workload cannot choose them.
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HOME", "PATH"})
MIN_SEGMENT = 4 * 1024
MAX_SEGMENT = 64 * 1024 * 1024


def check_document(document: Document) -> Iterator[Finding]:
    yield from _check(document)


@singledispatch
def _check(document: Document) -> Iterator[Finding]:
    return iter(())


def duplicates(
    items: Sequence[Any],
    key: Callable[[Any], Hashable | None],
    path: Callable[[int], DocPath],
    what: str,
) -> Iterator[Finding]:
    """One finding for each item whose key an earlier item already had."""
    first: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        value = key(item)
        if value is None:
            continue
        if value in first:
            yield Finding(
                path(index),
                f"duplicate {what} {value!r} (also at item {first[value] + 1})",
                "duplicate",
            )
        else:
            first[value] = index


# -- Circle --------------------------------------------------------------------------------------


def _key_identity(key: Any) -> Hashable:
    if isinstance(key, SshKey):
        return ("ssh-ed25519", ed25519_key_blob(key.key))
    if isinstance(key, MlDsaKey):
        return ("ml-dsa-65", mldsa65_key_blob(key.key))
    return ("sigstore", key.identity, key.issuer)


def can_sign_for(member: Member, rule: Rule) -> bool:
    """Whether `member` holds the keys `rule`'s `signatures` setting counts: any key (classic),
    an ML-DSA key (post-quantum), or both an ML-DSA and a classic key (hybrid)."""
    quantum_safe = any(isinstance(key, MlDsaKey) for key in member.keys)
    classic = any(isinstance(key, CLASSIC_KEYS) for key in member.keys)
    if rule.signatures == "post-quantum":
        return quantum_safe
    if rule.signatures == "hybrid":
        return quantum_safe and classic
    return True


@_check.register
def _check_circle(circle: Circle) -> Iterator[Finding]:
    yield from duplicates(
        circle.members, lambda m: m.id, lambda i: ("members", i, "id"), "member id"
    )
    owners: dict[Hashable, str] = {}
    for index, member in enumerate(circle.members):
        for key_index, key in enumerate(member.keys):
            identity = _key_identity(key)
            path: DocPath = ("members", index, "keys", key_index)
            if identity in owners and owners[identity] == member.id:
                yield Finding(path, f"member {member.id} lists the same key twice", "key.duplicate")
            elif identity in owners:
                yield Finding(
                    path,
                    f"member {member.id} uses a key that belongs to member {owners[identity]}; "
                    "a key may belong to one member only",
                    "key.shared",
                )
            else:
                owners[identity] = member.id

    if circle.version == 1 and circle.previous is not None:
        yield Finding(
            ("previous",), "version 1 has no previous policy; remove 'previous'", "policy.previous"
        )
    if circle.version > 1 and circle.previous is None:
        yield Finding(
            ("version",),
            f"version {circle.version} must name the sha256 of the previous circle.yaml "
            "in 'previous'",
            "policy.previous",
        )

    yield from _check_rules(circle)
    yield from duplicates(
        circle.admission.presets,
        lambda name: name,
        lambda i: ("admission", "presets", i),
        "admission preset",
    )


def _same(name: str) -> str:
    return name


def _at(base: DocPath, index: int) -> DocPath:
    return (*base, index)


def _check_rules(circle: Circle) -> Iterator[Finding]:
    rules = circle.consensus.rules
    yield from duplicates(
        rules, lambda r: r.name, lambda i: ("consensus", "rules", i, "name"), "rule name"
    )
    weights = {member.id: member.weight for member in circle.members}
    for index, rule in enumerate(rules):
        base: DocPath = ("consensus", "rules", index)
        names = rule.members if rule.members is not None else list(weights)
        for field, listed in (("members", rule.members or []), ("required", rule.required)):
            yield from duplicates(
                listed, _same, functools.partial(_at, (*base, field)), f"member of rule {rule.name}"
            )
        for member_index, member_id in enumerate(rule.members or []):
            if member_id not in weights:
                yield Finding(
                    (*base, "members", member_index),
                    f"rule {rule.name} names unknown member {member_id!r} "
                    f"(members: {', '.join(weights)})",
                    "rule.unknown-member",
                )
        for member_index, member_id in enumerate(rule.required):
            if member_id not in names:
                yield Finding(
                    (*base, "required", member_index),
                    f"rule {rule.name} requires {member_id!r}, who is not among its members",
                    "rule.unknown-member",
                )
        total = sum(weights.get(member_id, 0) for member_id in set(names))
        if rule.threshold > total:
            yield Finding(
                (*base, "threshold"),
                f"rule {rule.name} needs weight {rule.threshold} but its members hold only "
                f"{total}: it could never be satisfied",
                "rule.unsatisfiable",
            )
        elif rule.signatures != "classic":
            yield from _check_signature_mode(circle, rule, base, set(names))
    if not any("**" in rule.paths for rule in rules):
        yield Finding(
            ("consensus", "rules"),
            "no catch-all rule: one rule must cover every path with the pattern '**'",
            "rule.no-catch-all",
        )
    governance = circle.rule(GOVERNANCE_RULE)
    if governance is not None and governance.signatures == "classic":
        for index, rule in enumerate(rules):
            if rule.signatures != "classic":
                yield Finding(
                    ("consensus", "rules", index, "signatures"),
                    f"rule {rule.name} counts {rule.signatures} signatures, but rule "
                    f"{GOVERNANCE_RULE} counts classic ones: whoever forges a classic signature "
                    f"(with a quantum computer) can rewrite {POLICY_FILE}, this rule with it",
                    "rule.weaker-governance",
                    Severity.WARNING,
                )
    if governance is None:
        yield Finding(
            ("consensus", "rules"),
            f"no rule named '{GOVERNANCE_RULE}': circle.yaml changes need one",
            "rule.no-governance",
        )
    elif not matches_any(governance.paths, POLICY_FILE):
        index = rules.index(governance)
        yield Finding(
            ("consensus", "rules", index, "paths"),
            f"rule '{GOVERNANCE_RULE}' must cover {POLICY_FILE}",
            "rule.no-governance",
        )


def _check_signature_mode(
    circle: Circle, rule: Rule, base: DocPath, names: set[str]
) -> Iterator[Finding]:
    """A hybrid or post-quantum rule must be satisfiable by the members holding the keys it
    counts, and every member it requires must hold them."""
    needs = "an ML-DSA key" if rule.signatures == "post-quantum" else "a classic and an ML-DSA key"
    able = {m.id: m.weight for m in circle.members if m.id in names and can_sign_for(m, rule)}
    if rule.threshold > sum(able.values()):
        yield Finding(
            (*base, "threshold"),
            f"rule {rule.name} counts {rule.signatures} signatures and needs weight "
            f"{rule.threshold}, but its members with {needs} hold only {sum(able.values())} "
            f"({', '.join(sorted(able)) or 'none'}): it could never be satisfied",
            "rule.unsatisfiable",
        )
    for member_index, member_id in enumerate(rule.required):
        if member_id in names and member_id not in able:
            yield Finding(
                (*base, "required", member_index),
                f"rule {rule.name} counts {rule.signatures} signatures and requires "
                f"{member_id!r}, who lacks {needs}",
                "rule.unsatisfiable",
            )


@_check.register
def _check_template(template: ConsensusTemplate) -> Iterator[Finding]:
    rules = template.rules
    yield from duplicates(rules, lambda r: r.name, lambda i: ("rules", i, "name"), "rule name")
    if not any("**" in rule.paths for rule in rules):
        yield Finding(("rules",), "no catch-all rule with the pattern '**'", "rule.no-catch-all")
    if not any(r.name == GOVERNANCE_RULE and matches_any(r.paths, POLICY_FILE) for r in rules):
        yield Finding(
            ("rules",), f"no rule '{GOVERNANCE_RULE}' covering {POLICY_FILE}", "rule.no-governance"
        )
    for index, rule in enumerate(rules):
        if isinstance(rule.threshold, int) and rule.threshold < 1:
            yield Finding(
                ("rules", index, "threshold"), "threshold must be at least 1", "rule.threshold"
            )
    if template.members.max is not None and template.members.max < template.members.min:
        yield Finding(("members", "max"), "members.max is below members.min", "template.members")


# -- Node ----------------------------------------------------------------------------------------


@_check.register
def _check_node(node: Node) -> Iterator[Finding]:
    gpus = node.capacity.gpus
    yield from duplicates(
        gpus, lambda g: g.uuid, lambda i: ("capacity", "gpus", i, "uuid"), "GPU uuid"
    )
    if node.capacity.cpu == 0:
        yield Finding(("capacity", "cpu"), "a node with no CPU can run nothing", "node.capacity")
    if node.capacity.memory == 0:
        yield Finding(
            ("capacity", "memory"), "a node with no memory can run nothing", "node.capacity"
        )


# -- Secret --------------------------------------------------------------------------------------


@_check.register
def _check_secret(secret: Secret) -> Iterator[Finding]:
    yield from duplicates(secret.workloads, lambda w: w, lambda i: ("workloads", i), "workload")
    yield from duplicates(secret.digests, lambda d: d, lambda i: ("digests", i), "digest")
    yield from duplicates(
        secret.recipients, lambda r: r.node, lambda i: ("recipients", i, "node"), "recipient"
    )


# -- Workload ------------------------------------------------------------------------------------


@_check.register
def _check_workload(workload: Workload) -> Iterator[Finding]:
    autoscale = workload.autoscale
    if autoscale is not None:
        if autoscale.min > autoscale.max:
            yield Finding(
                ("autoscale", "min"),
                f"autoscale.min ({autoscale.min}) is above autoscale.max ({autoscale.max})",
                "workload.autoscale",
            )
        elif not autoscale.min <= workload.replicas <= autoscale.max:
            yield Finding(
                ("replicas",),
                f"replicas ({workload.replicas}) must lie within autoscale bounds "
                f"[{autoscale.min}, {autoscale.max}]",
                "workload.autoscale",
            )
        scraped = autoscale.metric in ("requests-per-second", "gauge")
        if scraped and autoscale.source is None:
            yield Finding(
                ("autoscale", "source"),
                f"autoscale on {autoscale.metric} needs a source: the port, path and series "
                "of the replicas' Prometheus metrics",
                "workload.autoscale",
            )
        elif autoscale.source is not None and not scraped:
            yield Finding(
                ("autoscale", "source"),
                f"autoscale on {autoscale.metric} is measured by the node; source applies to "
                "requests-per-second and gauge only",
                "workload.autoscale",
            )
        elif autoscale.source is not None and all(
            p.port != autoscale.source.port for p in workload.ports
        ):
            yield Finding(
                ("autoscale", "source", "port"),
                f"port {autoscale.source.port} is not one of the workload's ports",
                "workload.autoscale",
            )
        if autoscale.metric == "gpu" and workload.resources.gpu is None:
            yield Finding(
                ("autoscale", "metric"),
                "autoscale on gpu needs a gpu request in resources",
                "workload.autoscale",
            )
    if workload.resources.cpu == 0:
        yield Finding(("resources", "cpu"), "expected a CPU request above 0", "workload.resources")
    if workload.resources.memory == 0:
        yield Finding(
            ("resources", "memory"), "expected a memory request above 0", "workload.resources"
        )
    if workload.placement.min_failure_domains > max(workload.max_replicas, 1):
        yield Finding(
            ("placement", "minFailureDomains"),
            f"cannot spread at most {workload.max_replicas} replica(s) over "
            f"{workload.placement.min_failure_domains} failure domains",
            "workload.placement",
        )

    ports = workload.ports
    yield from duplicates(ports, lambda p: p.name, lambda i: ("ports", i, "name"), "port name")
    yield from duplicates(
        ports, lambda p: (p.port, p.protocol), lambda i: ("ports", i, "port"), "port"
    )
    yield from _check_health(workload)

    for name in workload.env:
        if name in RESERVED_ENV:
            yield Finding(
                ("env", name),
                f"{name} is set by the node agent; a workload cannot choose it",
                "workload.env",
                at_key=True,
            )
    for index, secret in enumerate(workload.secrets):
        if secret.env is None:
            continue
        if secret.env in workload.env:
            yield Finding(
                ("secrets", index, "env"),
                f"{secret.env} is set both in env and from secret {secret.secret}",
                "workload.env",
            )
        if secret.env in RESERVED_ENV:
            yield Finding(
                ("secrets", index, "env"),
                f"{secret.env} is set by the node agent; a workload cannot choose it",
                "workload.env",
            )
    yield from duplicates(
        workload.secrets, lambda s: s.env, lambda i: ("secrets", i, "env"), "secret variable"
    )
    yield from duplicates(
        workload.secrets, lambda s: s.secret, lambda i: ("secrets", i, "secret"), "secret"
    )

    mounts = workload.volumes
    yield from duplicates(mounts, lambda m: m.volume, lambda i: ("volumes", i, "volume"), "volume")
    for index, mount in enumerate(mounts):
        for other in mounts[:index]:
            if _nested(mount.path, other.path):
                yield Finding(
                    ("volumes", index, "path"),
                    f"mount path {mount.path!r} overlaps {other.path!r} (volume {other.volume})",
                    "workload.volumes",
                )


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _check_health(workload: Workload) -> Iterator[Finding]:
    health = workload.health
    if health is None:
        return
    if (health.http is None) == (health.command is None):
        yield Finding(
            ("health",),
            "a health check has exactly one of 'http' or 'command'",
            "workload.health",
        )
    if health.http is not None and health.http.port not in {p.port for p in workload.ports}:
        declared = ", ".join(str(p.port) for p in workload.ports) or "none"
        yield Finding(
            ("health", "http", "port"),
            f"health check port {health.http.port} is not one of the workload's ports ({declared})",
            "workload.health",
        )
    if health.timeout >= health.interval:
        yield Finding(
            ("health", "timeout"),
            f"health check timeout ({health.timeout}s) is not shorter than its interval "
            f"({health.interval}s)",
            "workload.health",
            Severity.WARNING,
        )


# -- Build ---------------------------------------------------------------------------------------


@_check.register
def _check_build(build: Build) -> Iterator[Finding]:
    if build.builder is BuilderKind.PYTHON_APP and build.python is None:
        yield Finding(
            ("builder",), "the python-app builder needs a 'python' section", "build.options"
        )
    if build.builder is not BuilderKind.PYTHON_APP and build.python is not None:
        yield Finding(
            ("python",),
            f"'python' is for the python-app builder, not {build.builder}",
            "build.options",
        )
    if build.builder is not BuilderKind.MODEL and build.chunking is not None:
        yield Finding(
            ("chunking",),
            f"'chunking' is for the model builder, not {build.builder}",
            "build.options",
        )
    chunking = build.chunking
    if chunking is not None and not 64 <= chunking.min <= chunking.avg <= chunking.max:
        yield Finding(
            ("chunking",),
            "chunk sizes must satisfy 64 <= min <= avg <= max; found "
            f"min {format_bytes(chunking.min)}, avg {format_bytes(chunking.avg)}, "
            f"max {format_bytes(chunking.max)}",
            "build.chunking",
        )
    yield from duplicates(build.inputs, lambda i: i.path, lambda i: ("inputs", i, "path"), "input")


# -- Volume --------------------------------------------------------------------------------------


@_check.register
def _check_volume(volume: Volume) -> Iterator[Finding]:
    if volume.k > volume.n:
        yield Finding(("k",), f"k ({volume.k}) must not exceed n ({volume.n})", "volume.k-of-n")
    if volume.n > len(volume.backends):
        yield Finding(
            ("n",),
            f"n is {volume.n} but there are {len(volume.backends)} backends: "
            "every share needs a backend of its own",
            "volume.backends",
        )
    if not MIN_SEGMENT <= volume.segment_size <= MAX_SEGMENT:
        yield Finding(
            ("segmentSize",),
            f"segment size {format_bytes(volume.segment_size)} is outside "
            f"[{format_bytes(MIN_SEGMENT)}, {format_bytes(MAX_SEGMENT)}]",
            "volume.segment-size",
        )
    backends = volume.backends
    yield from duplicates(
        backends, lambda b: b.name, lambda i: ("backends", i, "name"), "backend name"
    )
    yield from duplicates(
        backends, lambda b: b.url, lambda i: ("backends", i, "url"), "backend url"
    )
    for index, backend in enumerate(backends):
        if backend.node is None and backend.failure_domain is None:
            yield Finding(
                ("backends", index),
                f"backend {backend.name} needs a 'node' or a 'failureDomain'",
                "volume.failure-domain",
            )
    yield from duplicates(
        volume.objects, lambda o: o.name, lambda i: ("objects", i, "name"), "object name"
    )
    yield from duplicates(
        volume.objects, lambda o: o.id, lambda i: ("objects", i, "id"), "object id"
    )
