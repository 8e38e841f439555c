"""A whole circle repository: which files are documents, and whether they fit together.

`analyse` takes the repository as data (document bytes by path, and the set of every file
path in the tree) and returns the desired state plus every problem found. It reports all
problems, not just the first: each document is parsed on its own, then cross-document checks
run over the documents that parsed. The same core serves a working directory and a Git tree.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from reconciler.desired import admission
from reconciler.desired.documents import Loaded, parse_document
from reconciler.desired.model import (
    REPOSITORY_KINDS,
    AdmissionPolicy,
    Build,
    Circle,
    Document,
    Kind,
    Node,
    Secret,
    Volume,
    Workload,
)
from reconciler.desired.model.circle import POLICY_FILE, MlDsaKey, SshKey
from reconciler.desired.model.secret import xwing_public_key_bytes
from reconciler.desired.model.types import (
    ed25519_key_blob,
    format_bytes,
    format_cpu,
    mldsa65_key_blob,
)
from reconciler.desired.model.workload import GpuRequest
from reconciler.desired.problems import (
    START,
    DocumentError,
    Finding,
    Problem,
    Severity,
    Stage,
    sort_key,
)

DOCUMENT_SUFFIX = ".yaml"
FOLDERS: dict[str, Kind] = {kind.folder: kind for kind in REPOSITORY_KINDS if kind.folder}
CIRCLE_KIND = REPOSITORY_KINDS[0]

T = TypeVar("T", bound=Document)


class PathRole(enum.Enum):
    DOCUMENT = "document"
    WRONG_SUFFIX = "wrong-suffix"  # nodes/a.yml: almost certainly meant as a document
    OTHER = "other"  # README.md, src/...: not a document


def classify(path: str) -> tuple[PathRole, Kind | None]:
    """What a repository path is: a document of which kind, a near miss, or something else."""
    if path == POLICY_FILE:
        return PathRole.DOCUMENT, CIRCLE_KIND
    folder, _, rest = path.partition("/")
    kind = FOLDERS.get(folder)
    if kind is None or "/" in rest or rest.startswith("."):
        return PathRole.OTHER, None
    if rest.endswith(DOCUMENT_SUFFIX):
        return PathRole.DOCUMENT, kind
    if rest.endswith((".yml", ".json")):
        return PathRole.WRONG_SUFFIX, kind
    return PathRole.OTHER, None


def _stem(path: str) -> str:
    return path.rpartition("/")[2].removesuffix(DOCUMENT_SUFFIX)


@dataclass(frozen=True)
class DesiredState:
    """The valid documents of a circle repository, by kind and name."""

    circle: Loaded[Circle] | None = None
    nodes: dict[str, Loaded[Node]] = field(default_factory=dict)
    workloads: dict[str, Loaded[Workload]] = field(default_factory=dict)
    builds: dict[str, Loaded[Build]] = field(default_factory=dict)
    volumes: dict[str, Loaded[Volume]] = field(default_factory=dict)
    secrets: dict[str, Loaded[Secret]] = field(default_factory=dict)
    # Documents that exist but could not be read, by kind: their problems are reported
    # already, so references to them are not reported again as unknown.
    unreadable: dict[str, set[str]] = field(default_factory=dict)

    def unknown(self, kind: str, name: str) -> bool:
        """Whether `name` of `kind` is referenced but no document of that name exists."""
        by_kind: dict[str, Mapping[str, object]] = {
            "Node": self.nodes,
            "Build": self.builds,
            "Volume": self.volumes,
            "Workload": self.workloads,
            "Secret": self.secrets,
        }
        return name not in by_kind[kind] and name not in self.unreadable.get(kind, set())


@dataclass(frozen=True)
class Report:
    state: DesiredState
    problems: tuple[Problem, ...]
    documents: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def exit_code(self) -> int:
        """0 valid; 2 a document cannot be read (bad input); 1 documents do not fit together."""
        errors = self.errors
        if any(p.stage is Stage.DOCUMENT for p in errors):
            return 2
        return 1 if errors else 0


def analyse(
    documents: Mapping[str, bytes],
    tree: Set[str],
    presets: Mapping[str, Loaded[AdmissionPolicy]],
    *,
    display_prefix: str = "",
    refused: Mapping[str, str] | None = None,
) -> Report:
    """Parse every document and check the repository as a whole.

    `documents` maps repository paths that `classify` calls documents to their bytes; `tree`
    holds every file path of the repository (for checks that sources exist); `refused` maps
    document paths the caller would not read (a symbolic link, say) to the reason. File names
    in problems are `display_prefix + path`.
    """
    refused = refused or {}
    problems = [
        Problem(display_prefix + path, START, reason, "file.refused")
        for path, reason in sorted(refused.items())
    ]
    by_kind: dict[str, dict[str, Loaded[Any]]] = {kind.name: {} for kind in REPOSITORY_KINDS}
    unreadable: dict[str, set[str]] = {kind.name: set() for kind in REPOSITORY_KINDS}
    for path in refused:
        _, kind = classify(path)
        if kind is not None:
            unreadable[kind.name].add(_stem(path))
    for path in sorted(documents):
        role, kind = classify(path)
        file = display_prefix + path
        if role is not PathRole.DOCUMENT or kind is None:
            raise ValueError(f"{path} is not a circle document path")
        stem = _stem(path)
        try:
            loaded = parse_document(documents[path], file, [kind])
        except DocumentError as error:
            problems.extend(error.problems)
            unreadable[kind.name].add(stem)
            continue
        problems.extend(loaded.warnings)
        name = getattr(loaded.document, "name", None)
        if kind.folder is not None and name != stem:
            problems.append(
                loaded.problem(
                    Finding(
                        ("name",),
                        f"name {name!r} does not match the file name {stem!r}",
                        "name.file",
                    )
                )
            )
            unreadable[kind.name].add(stem)
            continue
        by_kind[kind.name][stem] = loaded

    for path in sorted(tree):
        role, kind = classify(path)
        if role is PathRole.WRONG_SUFFIX and kind is not None:
            problems.append(
                Problem(
                    display_prefix + path,
                    START,
                    f"ignored: {kind.name} documents in {kind.folder}/ end in {DOCUMENT_SUFFIX}",
                    "file.suffix",
                    Severity.WARNING,
                    Stage.REPOSITORY,
                )
            )

    state = DesiredState(
        circle=by_kind["Circle"].get("circle"),
        nodes=cast(dict[str, Loaded[Node]], by_kind["Node"]),
        workloads=cast(dict[str, Loaded[Workload]], by_kind["Workload"]),
        builds=cast(dict[str, Loaded[Build]], by_kind["Build"]),
        volumes=cast(dict[str, Loaded[Volume]], by_kind["Volume"]),
        secrets=cast(dict[str, Loaded[Secret]], by_kind["Secret"]),
        unreadable=unreadable,
    )
    if POLICY_FILE not in documents and POLICY_FILE not in refused:
        problems.append(
            Problem(
                display_prefix + POLICY_FILE,
                START,
                "missing: a circle repository has circle.yaml at its top",
                "circle.missing",
            )
        )
    problems.extend(_cross_checks(state, tree))
    if state.circle is not None:
        problems.extend(admission.check(state, presets))
    problems.sort(key=sort_key)
    return Report(state, tuple(problems), len(documents))


def _cross_checks(state: DesiredState, tree: Set[str]) -> Iterator[Problem]:
    for workload in state.workloads.values():
        yield from (workload.problem(f) for f in _check_workload_refs(workload.document, state))
        yield from (workload.problem(f) for f in _check_fit(workload.document, state))
        yield from (workload.problem(f) for f in _check_secret_refs(workload.document, state))
    for build in state.builds.values():
        yield from (build.problem(f) for f in _check_build_paths(build.document, tree))
    for volume in state.volumes.values():
        yield from (volume.problem(f) for f in _check_volume(volume.document, state))
    for secret in state.secrets.values():
        yield from (secret.problem(f) for f in _check_secret(secret.document, state))
    yield from _check_node_keys(state)
    yield from _check_kem_keys(state)
    yield from _check_node_mldsa_keys(state)


def _names(items: Mapping[str, Any]) -> str:
    return ", ".join(sorted(items)) or "none"


def _check_workload_refs(workload: Workload, state: DesiredState) -> Iterator[Finding]:
    build = state.builds.get(workload.artifact.build)
    if state.unknown("Build", workload.artifact.build):
        yield Finding(
            ("artifact", "build"),
            f"unknown build {workload.artifact.build!r} (builds: {_names(state.builds)})",
            "ref.build",
        )
    elif (
        build is not None
        and build.document.digest is not None
        and workload.artifact.digest is not None
        and build.document.digest != workload.artifact.digest
    ):
        yield Finding(
            ("artifact", "digest"),
            f"pins {workload.artifact.digest} but builds/{build.document.name}.yaml locks "
            f"{build.document.digest}",
            "ref.digest",
        )
    for index, mount in enumerate(workload.volumes):
        if state.unknown("Volume", mount.volume):
            yield Finding(
                ("volumes", index, "volume"),
                f"unknown volume {mount.volume!r} (volumes: {_names(state.volumes)})",
                "ref.volume",
            )


def gpus_fitting(node: Node, request: GpuRequest) -> int:
    """How many of the node's GPUs satisfy one GPU of `request`."""
    return sum(
        1
        for gpu in node.capacity.gpus
        if (request.min_memory is None or gpu.memory >= request.min_memory)
        and (not request.models or gpu.model in request.models)
    )


def fits(node: Node, workload: Workload) -> bool:
    """Whether one replica fits the node's declared capacity and carries the selected labels."""
    selector = workload.placement.node_selector
    if any(node.labels.get(key) != value for key, value in selector.items()):
        return False
    resources = workload.resources
    if resources.cpu > node.capacity.cpu or resources.memory > node.capacity.memory:
        return False
    gpu = resources.gpu
    return gpu is None or gpu.optional or gpus_fitting(node, gpu) >= gpu.count


def _describe_request(workload: Workload) -> str:
    resources = workload.resources
    text = f"cpu {format_cpu(resources.cpu)}, memory {format_bytes(resources.memory)}"
    gpu = resources.gpu
    if gpu is not None and not gpu.optional:
        memory = f" with at least {format_bytes(gpu.min_memory)}" if gpu.min_memory else ""
        models = f" ({' or '.join(gpu.models)})" if gpu.models else ""
        text += f", {gpu.count} GPU(s){memory}{models}"
    return text


def _check_fit(workload: Workload, state: DesiredState) -> Iterator[Finding]:
    if not state.nodes:
        yield Finding(
            ("resources",), "no node is admitted to run it (nodes/ is empty)", "fit.no-nodes"
        )
        return
    selector = workload.placement.node_selector
    selected = [
        loaded.document
        for loaded in state.nodes.values()
        if all(loaded.document.labels.get(key) == value for key, value in selector.items())
    ]
    if not selected:
        labels = ", ".join(f"{key}={value}" for key, value in selector.items())
        yield Finding(
            ("placement", "nodeSelector"), f"no node carries the labels {labels}", "fit.selector"
        )
        return
    fitting = [node for node in selected if fits(node, workload)]
    if not fitting:
        largest = max(
            selected, key=lambda n: (n.capacity.cpu, n.capacity.memory, len(n.capacity.gpus))
        )
        yield Finding(
            ("resources",),
            f"no node can hold one replica ({_describe_request(workload)}); the largest, "
            f"{largest.name}, has cpu {format_cpu(largest.capacity.cpu)}, memory "
            f"{format_bytes(largest.capacity.memory)} and {len(largest.capacity.gpus)} GPU(s)",
            "fit.capacity",
        )
        return
    domains = sorted({node.failure_domain for node in fitting})
    wanted = workload.placement.min_failure_domains
    if len(domains) < wanted:
        yield Finding(
            ("placement", "minFailureDomains"),
            f"needs {wanted} failure domains, but the nodes that fit span {len(domains)} "
            f"({', '.join(domains)})",
            "fit.spread",
        )
    per_node = workload.placement.max_replicas_per_node
    if per_node is not None and per_node * len(fitting) < workload.max_replicas:
        yield Finding(
            ("placement", "maxReplicasPerNode"),
            f"{workload.max_replicas} replicas at most {per_node} per node need "
            f"{-(-workload.max_replicas // per_node)} nodes; {len(fitting)} fit",
            "fit.spread",
        )


def _check_build_paths(build: Build, tree: Set[str]) -> Iterator[Finding]:
    prefix = build.source + "/"
    if not any(path.startswith(prefix) for path in tree):
        yield Finding(("source",), f"source folder {build.source!r} holds no files", "build.source")
    for index, item in enumerate(build.inputs):
        if item.path not in tree:
            yield Finding(
                ("inputs", index, "path"),
                f"pinned input {item.path!r} does not exist",
                "build.input",
            )
    if build.python is not None:
        if build.python.requirements not in tree:
            yield Finding(
                ("python", "requirements"),
                f"requirements file {build.python.requirements!r} does not exist",
                "build.input",
            )
        wheelhouse = build.python.wheelhouse
        if wheelhouse is not None and not any(p.startswith(wheelhouse + "/") for p in tree):
            yield Finding(
                ("python", "wheelhouse"), f"wheelhouse {wheelhouse!r} holds no files", "build.input"
            )


def share_spread(volume: Volume, domains: list[str]) -> dict[str, int]:
    """Shares per failure domain when n shares go to distinct backends as evenly as possible.

    `domains[i]` is the failure domain of backend i. Filling the emptiest domain that still has
    a free backend minimizes the largest count, which is what decides whether the loss of one
    whole domain is survivable.
    """
    free: dict[str, int] = {}
    for domain in domains:
        free[domain] = free.get(domain, 0) + 1
    placed = dict.fromkeys(free, 0)
    for _ in range(min(volume.n, len(domains))):
        domain = min((d for d in free if free[d] > 0), key=lambda d: (placed[d], d))
        placed[domain] += 1
        free[domain] -= 1
    return {domain: count for domain, count in placed.items() if count}


def _check_volume(volume: Volume, state: DesiredState) -> Iterator[Finding]:
    for index, item in enumerate(volume.objects):
        if item.build is not None and state.unknown("Build", item.build):
            yield Finding(
                ("objects", index, "build"),
                f"unknown build {item.build!r} (builds: {_names(state.builds)})",
                "ref.build",
            )
    yield from _check_volume_recipients(volume, state)
    domains: list[str] = []
    for index, backend in enumerate(volume.backends):
        domain = backend.failure_domain
        if backend.node is not None:
            node = state.nodes.get(backend.node)
            if node is None:
                if state.unknown("Node", backend.node):
                    yield Finding(
                        ("backends", index, "node"),
                        f"unknown node {backend.node!r} (nodes: {_names(state.nodes)})",
                        "ref.node",
                    )
                continue
            node_domain = node.document.failure_domain
            if domain is not None and domain != node_domain:
                yield Finding(
                    ("backends", index, "failureDomain"),
                    f"backend {backend.name} says failure domain {domain!r}, but its node "
                    f"{node.document.name} is in {node_domain!r}",
                    "volume.failure-domain",
                )
            domain = node_domain
        if domain is not None:
            domains.append(domain)
    if len(domains) != len(volume.backends) or volume.k > volume.n or volume.n > len(domains):
        return  # reported already; the spread below would be meaningless
    spread = share_spread(volume, domains)
    worst, count = max(spread.items(), key=lambda item: (item[1], item[0]))
    if count > volume.n - volume.k:
        yield Finding(
            ("backends",),
            f"losing failure domain {worst!r} loses {count} of {volume.n} shares, more than the "
            f"{volume.n - volume.k} a {volume.k}-of-{volume.n} volume can spare: the data would "
            "not survive the loss of one failure domain",
            "volume.spread",
            Severity.WARNING,
        )


def _check_volume_recipients(volume: Volume, state: DesiredState) -> Iterator[Finding]:
    """Every recipient of a volume is an admitted node with a kemPublicKey to share with."""
    named: list[tuple[tuple[str | int, ...], str]]
    if isinstance(volume.recipients, list):
        named = [(("recipients", i), name) for i, name in enumerate(volume.recipients)]
    else:  # admitted-nodes
        named = [(("recipients",), name) for name in sorted(state.nodes)]
    for where, name in named:
        node = state.nodes.get(name)
        if node is None:
            if state.unknown("Node", name):
                yield Finding(
                    where, f"unknown node {name!r} (nodes: {_names(state.nodes)})", "ref.node"
                )
        elif node.document.kem_public_key is None:
            yield Finding(
                where,
                f"node {name} has no kemPublicKey: the volume cannot be shared with it "
                f"(circle node keygen writes one; add it to nodes/{name}.yaml)",
                "volume.recipient",
            )


def _check_node_keys(state: DesiredState) -> Iterator[Problem]:
    """A node key is no member's key (a node must never approve) and no other node's (a node
    speaks only for itself)."""
    yield from _distinct_node_keys(
        state, SshKey, ed25519_key_blob, "publicKey", lambda node: node.public_key, ""
    )


def _check_node_mldsa_keys(state: DesiredState) -> Iterator[Problem]:
    """The ML-DSA half of a node key is held to the Ed25519 half's rules."""
    yield from _distinct_node_keys(
        state,
        MlDsaKey,
        mldsa65_key_blob,
        "mldsaPublicKey",
        lambda node: node.mldsa_public_key,
        "ML-DSA ",
    )


def _distinct_node_keys(
    state: DesiredState,
    member_kind: type[SshKey] | type[MlDsaKey],
    blob_of: Callable[[str], bytes],
    field: str,
    key_of: Callable[[Node], str | None],
    kind: str,
) -> Iterator[Problem]:
    owners: dict[bytes, str] = {}
    if state.circle is not None:
        for member in state.circle.document.members:
            for key in member.keys:
                if isinstance(key, member_kind):
                    owners[blob_of(key.key)] = member.id
    seen: dict[bytes, str] = {}
    for name, loaded in sorted(state.nodes.items()):
        line = key_of(loaded.document)
        if line is None:
            continue
        blob = blob_of(line)
        if blob in owners:
            message = (
                f"{kind or 'node '}key is also the key of member {owners[blob]}: node keys and "
                "owner keys must differ (a node must never be able to approve changes)"
            )
        elif blob in seen:
            message = f"{kind or 'node '}key is also the {kind}key of node {seen[blob]}"
        else:
            seen[blob] = name
            continue
        yield loaded.problem(Finding((field,), message, "node.key"))


def kem_key_digest(node: Node) -> str | None:
    """`sha256:HEX` of the node's raw X-Wing key: what a sealed copy names its key by."""
    if node.kem_public_key is None:
        return None
    return "sha256:" + hashlib.sha256(xwing_public_key_bytes(node.kem_public_key)).hexdigest()


def _check_secret_refs(workload: Workload, state: DesiredState) -> Iterator[Finding]:
    for index, ref in enumerate(workload.secrets):
        secret = state.secrets.get(ref.secret)
        if secret is None:
            if state.unknown("Secret", ref.secret):
                yield Finding(
                    ("secrets", index, "secret"),
                    f"unknown secret {ref.secret!r} (secrets: {_names(state.secrets)})",
                    "ref.secret",
                )
        elif workload.name not in secret.document.workloads:
            yield Finding(
                ("secrets", index, "secret"),
                f"secret {ref.secret} is sealed for workloads "
                f"{', '.join(secret.document.workloads)}, not {workload.name}: it would never "
                "be released to it",
                "secret.binding",
            )


def _check_secret(secret: Secret, state: DesiredState) -> Iterator[Finding]:
    if state.circle is not None and secret.circle != state.circle.document.id:
        yield Finding(
            ("circle",),
            f"sealed for circle {secret.circle!r}, but this is circle "
            f"{state.circle.document.id!r}: no node of it would release the value",
            "secret.circle",
        )
    for index, name in enumerate(secret.workloads):
        if state.unknown("Workload", name):
            yield Finding(
                ("workloads", index),
                f"unknown workload {name!r} (workloads: {_names(state.workloads)})",
                "ref.workload",
            )
    reseal = f"circle secret reseal {secret.name}"
    sealed_to = {recipient.node for recipient in secret.recipients}
    for index, recipient in enumerate(secret.recipients):
        node = state.nodes.get(recipient.node)
        if node is None:
            if state.unknown("Node", recipient.node):
                yield Finding(
                    ("recipients", index, "node"),
                    f"sealed to node {recipient.node!r}, which is not admitted: {reseal}, and "
                    "change the value if that node's key may be in other hands",
                    "secret.recipient",
                    Severity.WARNING,
                )
            continue
        current = kem_key_digest(node.document)
        if current != recipient.kem_key:
            now = "has no kemPublicKey" if current is None else f"has KEM key {current}"
            yield Finding(
                ("recipients", index, "kemKey"),
                f"sealed to KEM key {recipient.kem_key} of node {recipient.node}, which now "
                f"{now}: it cannot open this copy ({reseal})",
                "secret.recipient",
                Severity.WARNING,
            )
    missing = sorted(
        name
        for name, node in state.nodes.items()
        if node.document.kem_public_key is not None and name not in sealed_to
    )
    if missing:
        yield Finding(
            ("recipients",),
            f"not sealed to node(s) {', '.join(missing)}: they cannot release it ({reseal})",
            "secret.recipient",
            Severity.WARNING,
        )


def _check_kem_keys(state: DesiredState) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for name, loaded in sorted(state.nodes.items()):
        digest = kem_key_digest(loaded.document)
        if digest is None:
            continue
        if digest in seen:
            yield loaded.problem(
                Finding(
                    ("kemPublicKey",),
                    f"KEM key is also the KEM key of node {seen[digest]}",
                    "node.key",
                )
            )
        else:
            seen[digest] = name
