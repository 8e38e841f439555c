"""Hypothesis strategies for valid circle documents of every kind, and for their value types.

"Valid" means what `parse_document` accepts: the model validates *and* the per-document checks
of `reconciler.desired.checks` find no error (unique ids, distinct keys, satisfiable rules, ...).
"""

from __future__ import annotations

import base64
import string
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import strategies as st

from reconciler.desired.checks import MAX_SEGMENT, MIN_SEGMENT, RESERVED_ENV
from reconciler.desired.model import (
    API_VERSION,
    AdmissionPolicy,
    AdmissionRules,
    Build,
    BuilderKind,
    Circle,
    ConsensusTemplate,
    Document,
    Member,
    Node,
    Rule,
    Volume,
    Workload,
)
from reconciler.desired.model.build import Chunking, PinnedInput, PythonApp
from reconciler.desired.model.circle import (
    GOVERNANCE_RULE,
    Admission,
    Consensus,
    SigstoreIdentity,
    SshKey,
)
from reconciler.desired.model.node import Capacity, Gpu
from reconciler.desired.model.presets import MemberCount, TemplateRule
from reconciler.desired.model.secret import Recipient, Secret
from reconciler.desired.model.volume import BACKEND_URL, Backend, VolumeObject
from reconciler.desired.model.workload import (
    ArtifactRef,
    Autoscale,
    GpuRequest,
    HealthCheck,
    HttpCheck,
    Metric,
    MetricSource,
    Placement,
    Port,
    Resources,
    SecretRef,
    VolumeMount,
)

# -- value types -----------------------------------------------------------------------------


def _regex(pattern: str) -> st.SearchStrategy[str]:
    # Pydantic patterns are anchored with ^...$; Python's `$` would also admit a trailing "\n".
    return st.from_regex(pattern.removeprefix("^").removesuffix("$"), fullmatch=True)


# Any character a str can hold in UTF-8 (no surrogates), except U+0085 (NEL): ruamel.yaml's
# emitter writes it raw inside single-quoted scalars, where ruamel's own reader then folds it,
# a limit of the dumper these tests use.
text_characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x85")
free_text = st.text(text_characters, max_size=30)
names = _regex(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
label_keys = _regex(
    r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
)
label_values = _regex(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
labels = st.dictionaries(label_keys, label_values, max_size=3)
sha256_hex = st.binary(min_size=32, max_size=32).map(bytes.hex)
digests = sha256_hex.map(lambda hex_digest: f"sha256:{hex_digest}")
env_names = _regex(r"[A-Za-z_][A-Za-z0-9_]{0,127}").filter(lambda name: name not in RESERVED_ENV)

PATH_CHARACTERS = string.ascii_letters + string.digits + "._+@=-"
path_components = st.text(PATH_CHARACTERS, min_size=1, max_size=8).filter(
    lambda component: component not in (".", "..")
)
relative_paths = st.lists(path_components, min_size=1, max_size=4).map("/".join)
"""Valid `RelPath`s: normalized, relative, '/'-separated."""

pattern_components = st.just("**") | st.text(PATH_CHARACTERS + "*?", min_size=1, max_size=8).filter(
    lambda component: component not in (".", "..") and "**" not in component
)
path_patterns = st.lists(pattern_components, min_size=1, max_size=4).map("/".join)
"""Valid `PathPattern`s: like paths, with `*`, `?` and whole-component `**`."""

millicores = st.integers(min_value=1, max_value=512_000)
byte_counts = st.integers(min_value=0, max_value=2**62) | st.builds(
    lambda count, unit: count * unit,
    st.integers(min_value=0, max_value=4096),
    st.sampled_from([10**3, 10**6, 10**9, 2**10, 2**20, 2**30]),
)
positive_byte_counts = byte_counts.filter(lambda size: size > 0)
seconds = st.integers(min_value=0, max_value=10**9) | st.builds(
    lambda count, unit: count * unit,
    st.integers(min_value=0, max_value=1000),
    st.sampled_from([60, 3600, 86400]),
)
ports_numbers = st.integers(min_value=1, max_value=65535)


def cores(millis: int) -> str:
    """The spelling a model is given for `millis` millicores: a bare int would mean cores."""
    return f"{millis}m"


def ssh_public_key_line(seed: bytes, comment: str | None = None) -> str:
    """The OpenSSH `ssh-ed25519 AAAA... [comment]` line of the key made from `seed`."""
    public_key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    line = public_key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}" if comment else line


key_comments = st.none() | _regex(r"[A-Za-z0-9._-]{1,12}@[A-Za-z0-9.-]{1,12}")
ed25519_seeds = st.binary(min_size=32, max_size=32)
ssh_public_keys = st.builds(ssh_public_key_line, ed25519_seeds, key_comments)


# -- Circle ----------------------------------------------------------------------------------

ssh_keys = st.builds(SshKey, type=st.just("ssh-ed25519"), key=ssh_public_keys)
sigstore_identities = st.builds(
    SigstoreIdentity,
    type=st.just("sigstore"),
    identity=st.emails() | _regex(r"https://[a-z]{1,10}\.example/[a-z/]{0,20}"),
    issuer=_regex(r"https://[^\s/]+(/\S*)?"),
)


def key_identity(key: SshKey | SigstoreIdentity) -> object:
    """What makes two keys the same key (an SSH key's comment does not)."""
    if isinstance(key, SshKey):
        return key.key.split()[1]
    return (key.identity, key.issuer)


# Patterns that cover circle.yaml, as the governance rule must.
governance_patterns = st.sampled_from(
    ["circle.yaml", "*.yaml", "circle.*", "c?rcle.yaml", "*", "**", "**/circle.yaml"]
)


@st.composite
def rule_paths(draw: st.DrawFn, *, governance: bool, catch_all: bool) -> list[str]:
    required = ([draw(governance_patterns)] if governance else []) + (["**"] if catch_all else [])
    others = draw(st.lists(path_patterns, min_size=0 if required else 1, max_size=3))
    return draw(st.permutations(required + others))


@st.composite
def rule_layouts(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    """Rule names and paths: unique names, one named governance, one holding '**'."""
    other_names = draw(
        st.lists(names.filter(lambda name: name != GOVERNANCE_RULE), max_size=3, unique=True)
    )
    rule_names = draw(st.permutations([GOVERNANCE_RULE, *other_names]))
    catch_all = draw(st.sampled_from(rule_names))
    return [
        (
            name,
            draw(rule_paths(governance=name == GOVERNANCE_RULE, catch_all=name == catch_all)),
        )
        for name in rule_names
    ]


@st.composite
def rules_for(draw: st.DrawFn, name: str, paths: list[str], members: list[Member]) -> Rule:
    """A rule over `members` that some set of signers can satisfy."""
    ids = [member.id for member in members]
    rule_members = draw(st.none() | st.lists(st.sampled_from(ids), min_size=1, unique=True))
    eligible = rule_members if rule_members is not None else ids
    required = draw(st.lists(st.sampled_from(eligible), unique=True))
    total = sum(member.weight for member in members if member.id in eligible)
    return Rule(
        name=name,
        paths=paths,
        members=rule_members,
        threshold=draw(st.integers(min_value=1, max_value=total)),
        required=required,
    )


admission_rules = st.builds(
    AdmissionRules,
    requirePinnedArtifacts=st.booleans(),
    requireLockedBuilds=st.booleans(),
    requireHealthChecks=st.booleans(),
    maxReplicas=st.none() | st.integers(min_value=0, max_value=10_000),
    maxGpusPerReplica=st.none() | st.integers(min_value=0, max_value=64),
    maxTotalGpus=st.none() | st.integers(min_value=0, max_value=10_000),
    minFailureDomains=st.none() | st.integers(min_value=1, max_value=10),
    allowedBuilders=st.none() | st.lists(st.sampled_from(BuilderKind), unique=True),
    minPort=st.none() | ports_numbers,
    minVolumeRedundancy=st.none() | st.integers(min_value=0, max_value=255),
)


@st.composite
def circles(draw: st.DrawFn) -> Circle:
    ids = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    # Every member gets one key of its own, the extra keys go to any member; no key is shared.
    keys = draw(
        st.lists(
            ssh_keys | sigstore_identities,
            min_size=len(ids),
            max_size=len(ids) + 2,
            unique_by=key_identity,
        )
    )
    keys_of: dict[str, list[Any]] = {
        member_id: [key] for member_id, key in zip(ids, keys, strict=False)
    }
    for key in keys[len(ids) :]:
        keys_of[draw(st.sampled_from(ids))].append(key)
    members = [
        Member(
            id=member_id,
            weight=draw(st.integers(min_value=1, max_value=3) | st.integers(1, 1000)),
            keys=keys_of[member_id],
            contact=draw(st.none() | free_text),
        )
        for member_id in ids
    ]
    rules = [draw(rules_for(name, paths, members)) for name, paths in draw(rule_layouts())]
    version = draw(st.integers(min_value=1, max_value=10_000))
    return Circle(
        api_version=API_VERSION,
        kind="Circle",
        id=draw(names),
        description=draw(st.none() | free_text),
        version=version,
        previous=None if version == 1 else draw(sha256_hex),
        members=members,
        consensus=Consensus(
            rules=rules,
            approval_lifetime=draw(seconds),
            allow_symlinks=draw(st.booleans()),
            allow_submodules=draw(st.booleans()),
        ),
        admission=Admission(
            presets=draw(st.lists(names, max_size=3, unique=True)),
            rules=draw(st.none() | admission_rules),
        ),
    )


# -- ConsensusTemplate, AdmissionPolicy ------------------------------------------------------


@st.composite
def consensus_templates(draw: st.DrawFn) -> ConsensusTemplate:
    thresholds = st.integers(min_value=1, max_value=100) | st.sampled_from(
        ["all", "majority", "two-thirds"]
    )
    least = draw(st.integers(min_value=1, max_value=20))
    return ConsensusTemplate(
        api_version=API_VERSION,
        kind="ConsensusTemplate",
        name=draw(names),
        description=draw(st.none() | free_text),
        members=MemberCount(
            min=least, max=draw(st.none() | st.integers(min_value=least, max_value=100))
        ),
        approval_lifetime=draw(seconds),
        rules=[
            TemplateRule(name=name, paths=paths, threshold=draw(thresholds))
            for name, paths in draw(rule_layouts())
        ],
    )


admission_policies = st.builds(
    AdmissionPolicy,
    apiVersion=st.just(API_VERSION),
    kind=st.just("AdmissionPolicy"),
    name=names,
    description=st.none() | free_text,
    rules=admission_rules,
)


# -- Node ------------------------------------------------------------------------------------

gpus = st.builds(
    Gpu,
    model=st.text(text_characters, min_size=1, max_size=20),
    memory=byte_counts,
    uuid=st.none() | _regex(r"GPU-[0-9a-fA-F-]{8,64}"),
)
nodes = st.builds(
    Node,
    apiVersion=st.just(API_VERSION),
    kind=st.just("Node"),
    name=names,
    description=st.none() | free_text,
    publicKey=ssh_public_keys,
    kemPublicKey=st.none()
    | st.binary(min_size=1216, max_size=1216).map(
        lambda raw: f"x-wing {base64.b64encode(raw).decode()}"
    ),
    failureDomain=names,
    address=st.none() | _regex(r"https?://[^\s/]+(:[0-9]{1,5})?/?"),
    labels=labels,
    capacity=st.builds(
        Capacity,
        cpu=millicores.map(cores),
        memory=positive_byte_counts,
        disk=st.none() | byte_counts,
        # GPUs without a uuid are never duplicates; those with one must differ.
        gpus=st.lists(gpus, max_size=3, unique_by=lambda gpu: gpu.uuid or object()),
    ),
)


# -- Workload --------------------------------------------------------------------------------

port_lists = st.lists(
    st.builds(Port, name=names, port=ports_numbers, protocol=st.sampled_from(["tcp", "udp"])),
    max_size=4,
    unique_by=(lambda port: port.name, lambda port: (port.port, port.protocol)),
)
gpu_requests = st.builds(
    GpuRequest,
    count=st.integers(min_value=1, max_value=64),
    minMemory=st.none() | byte_counts,
    models=st.lists(free_text, max_size=2),
    optional=st.booleans(),
)


@st.composite
def autoscales(draw: st.DrawFn, ports: list[Port]) -> Autoscale:
    """Bounds, a metric and, for the scraped metrics, a source on one of `ports`."""
    least = draw(st.integers(min_value=0, max_value=20))
    scraped = (Metric.REQUESTS_PER_SECOND, Metric.GAUGE)
    metric = draw(st.sampled_from([m for m in Metric if ports or m not in scraped]))
    source = None
    if metric in scraped:
        source = MetricSource(
            port=draw(st.sampled_from([p.port for p in ports])),
            path=draw(_regex(r"/\S*")),
            series=draw(_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]*")),
        )
    return Autoscale(
        min=least,
        max=draw(st.integers(min_value=max(least, 1), max_value=50)),
        metric=metric,
        target=draw(st.floats(min_value=0, max_value=1e6, exclude_min=True, allow_nan=False)),
        source=source,
        cooldown=draw(seconds),
    )


@st.composite
def health_checks(draw: st.DrawFn, ports: list[Port]) -> HealthCheck:
    """Exactly one of http (on one of `ports`) or command."""
    if ports and draw(st.booleans()):
        http = HttpCheck(
            path=draw(_regex(r"/\S*")), port=draw(st.sampled_from([p.port for p in ports]))
        )
        command = None
    else:
        http, command = None, draw(st.lists(free_text, min_size=1, max_size=3))
    return HealthCheck(
        http=http,
        command=command,
        initial_delay=draw(seconds),
        interval=draw(seconds),
        timeout=draw(seconds),
        failure_threshold=draw(st.integers(min_value=1, max_value=10)),
    )


def _overlaps(path: str, other: str) -> bool:
    return path == other or path.startswith(other + "/") or other.startswith(path + "/")


@st.composite
def volume_mounts(draw: st.DrawFn) -> list[VolumeMount]:
    """Mounts of distinct volumes; a mount whose path nests in an earlier one is dropped."""
    candidates = draw(
        st.lists(
            st.builds(VolumeMount, volume=names, path=relative_paths, readOnly=st.booleans()),
            max_size=3,
            unique_by=lambda mount: mount.volume,
        )
    )
    mounts: list[VolumeMount] = []
    for mount in candidates:
        if not any(_overlaps(mount.path, earlier.path) for earlier in mounts):
            mounts.append(mount)
    return mounts


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    ports = draw(port_lists)
    autoscale = draw(st.none() | autoscales(ports))
    if autoscale is None:
        replicas = draw(st.integers(min_value=0, max_value=10_000))
    else:
        replicas = draw(st.integers(min_value=autoscale.min, max_value=autoscale.max))
    max_replicas = max(replicas, autoscale.max) if autoscale else replicas
    needs_gpu = autoscale is not None and autoscale.metric is Metric.GPU
    env = draw(st.dictionaries(env_names, free_text, max_size=3))
    return Workload(
        api_version=API_VERSION,
        kind="Workload",
        name=draw(names),
        description=draw(st.none() | free_text),
        artifact=ArtifactRef(build=draw(names), digest=draw(st.none() | digests)),
        command=draw(st.lists(free_text, min_size=1, max_size=3)),
        args=draw(st.lists(free_text, max_size=3)),
        env=env,
        ports=ports,
        replicas=replicas,
        autoscale=autoscale,
        resources=Resources(
            cpu=cores(draw(millicores)),
            memory=draw(positive_byte_counts),
            gpu=draw(gpu_requests if needs_gpu else st.none() | gpu_requests),
        ),
        placement=Placement(
            min_failure_domains=draw(st.integers(1, min(max(max_replicas, 1), 10))),
            max_replicas_per_node=draw(st.none() | st.integers(min_value=1, max_value=100)),
            node_selector=draw(labels),
        ),
        health=draw(st.none() | health_checks(ports)),
        volumes=draw(volume_mounts()),
        secrets=draw(
            st.lists(
                st.builds(
                    SecretRef, secret=names, env=env_names.filter(lambda name: name not in env)
                ),
                max_size=3,
                unique_by=(lambda secret: secret.env, lambda secret: secret.secret),
            )
        ),
    )


# -- Build -----------------------------------------------------------------------------------

python_apps = st.builds(
    PythonApp,
    requirements=relative_paths,
    wheelhouse=st.none() | relative_paths,
    # ASCII only: Python's `\w` admits characters (such as "²") that pydantic's regex does not.
    entrypoint=st.none() | _regex(r"[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?"),
)


@st.composite
def chunkings(draw: st.DrawFn) -> Chunking:
    sizes = st.integers(min_value=64, max_value=2**32)
    least, average, most = sorted(draw(st.lists(sizes, min_size=3, max_size=3)))
    return Chunking(min=least, avg=average, max=most)


@st.composite
def builds(draw: st.DrawFn) -> Build:
    builder = draw(st.sampled_from(BuilderKind))
    return Build(
        api_version=API_VERSION,
        kind="Build",
        name=draw(names),
        description=draw(st.none() | free_text),
        builder=builder,
        source=draw(relative_paths),
        include=draw(st.lists(path_patterns, max_size=3)),
        exclude=draw(st.lists(path_patterns, max_size=3)),
        inputs=draw(
            st.lists(
                st.builds(PinnedInput, path=relative_paths, sha256=sha256_hex),
                max_size=3,
                unique_by=lambda pinned: pinned.path,
            )
        ),
        python=draw(python_apps) if builder is BuilderKind.PYTHON_APP else None,
        chunking=draw(st.none() | chunkings()) if builder is BuilderKind.MODEL else None,
        prefetch=draw(st.lists(path_patterns, max_size=3)),
        allow_symlinks=draw(st.booleans()),
        digest=draw(st.none() | digests),
    )


# -- Volume ----------------------------------------------------------------------------------


@st.composite
def backends(draw: st.DrawFn) -> Backend:
    node = draw(st.none() | names)
    # A backend needs a node or a failure domain; with a node the domain is optional.
    failure_domain = draw(names if node is None else st.none() | names)
    return Backend(
        name=draw(names), url=draw(_regex(BACKEND_URL)), node=node, failure_domain=failure_domain
    )


volume_objects = st.builds(
    VolumeObject,
    name=st.text(text_characters, min_size=1, max_size=20),
    id=st.none() | sha256_hex,
    build=st.none() | names,
    prefetch=st.booleans(),
)


@st.composite
def volumes(draw: st.DrawFn) -> Volume:
    backend_list = draw(
        st.lists(
            backends(),
            min_size=1,
            max_size=6,
            unique_by=(lambda backend: backend.name, lambda backend: backend.url),
        )
    )
    shares = draw(st.integers(min_value=1, max_value=len(backend_list)))
    return Volume(
        api_version=API_VERSION,
        kind="Volume",
        name=draw(names),
        description=draw(st.none() | free_text),
        k=draw(st.integers(min_value=1, max_value=shares)),
        n=shares,
        segment_size=draw(st.integers(min_value=MIN_SEGMENT, max_value=MAX_SEGMENT)),
        backends=backend_list,
        objects=draw(
            st.lists(
                volume_objects,
                max_size=3,
                # Objects without an id are never duplicates by id.
                unique_by=(lambda obj: obj.name, lambda obj: obj.id or object()),
            )
        ),
    )


# -- every kind ------------------------------------------------------------------------------

# -- Secret ----------------------------------------------------------------------------------


def _b64_of(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(lambda raw: base64.b64encode(raw).decode())


secrets_documents = st.builds(
    Secret,
    apiVersion=st.just(API_VERSION),
    kind=st.just("Secret"),
    name=names,
    description=st.none() | free_text,
    circle=names,
    workloads=st.lists(names, min_size=1, max_size=3, unique=True),
    digests=st.lists(digests, max_size=2, unique=True),
    algorithm=st.just("x-wing+aes-256-gcm"),
    nonce=_b64_of(12),
    ciphertext=st.binary(min_size=16, max_size=64).map(lambda raw: base64.b64encode(raw).decode()),
    recipients=st.lists(
        st.builds(
            Recipient,
            node=names,
            kemKey=digests,
            encapsulation=_b64_of(1120),
            wrappedKey=_b64_of(48),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda recipient: recipient.node,
    ),
)


DOCUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "Circle": circles(),
    "Node": nodes,
    "Workload": workloads(),
    "Build": builds(),
    "Volume": volumes(),
    "Secret": secrets_documents,
    "AdmissionPolicy": admission_policies,
    "ConsensusTemplate": consensus_templates(),
}
"""Valid documents, by their `kind:`."""

any_document: st.SearchStrategy[Document] = st.one_of(list(DOCUMENTS.values()))
