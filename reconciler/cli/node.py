"""`circle node keygen|run|status`: a 3Node's identity, its agent, and what the agent says."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from reconciler.chain.follow import load_introduction
from reconciler.cli.context import output_option, settings
from reconciler.cli.keygen import refuse_public_key, refuse_public_name
from reconciler.cli.render import print_json, stdout
from reconciler.errors import InputError
from reconciler.node import prestage, view
from reconciler.node.agent import Agent, AgentConfig
from reconciler.node.identity import MLDSA_SUFFIX, NodeKey
from reconciler.node.uids import parse_range
from reconciler.secrets import keys as kem_keys
from reconciler.store import resolve_store_url


@click.group("node")
def group() -> None:
    """Run this machine as a node of a circle."""


@group.command("keygen")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--comment", "-C", default="", help="The comment of the public key line.")
@click.option(
    "--hybrid",
    is_flag=True,
    help="Also make the key's ML-DSA-65 half (PATH.ml-dsa-65): every record the node signs "
    "then needs both signatures, which a quantum computer cannot forge together.",
)
@output_option
def keygen(path: Path, comment: str, hybrid: bool, output: str | None) -> int:
    """Make a node key: PATH (0600) and PATH.pub, whose line is `publicKey` in nodes/NAME.yaml,
    and its X-Wing KEM key for sealed secrets: PATH.x-wing (0600) and PATH.x-wing.pub, whose
    line is `kemPublicKey`. With --hybrid, also PATH.ml-dsa-65 (0600) and PATH.ml-dsa-65.pub,
    whose line is `mldsaPublicKey`."""
    refuse_public_name(path)
    for target in (kem_keys.private_path(path), kem_keys.public_path(path)):
        if os.path.lexists(target):  # before the node key is made: all of them or none
            raise InputError(f"{target}: exists; refusing to overwrite a key")
    key = NodeKey.generate(path, comment, hybrid=hybrid)
    kem = kem_keys.generate(path, comment)
    kem_line = kem.public_key_line(comment)
    mldsa_path = path.with_name(path.name + MLDSA_SUFFIX)
    if settings(output).json:
        print_json(
            {
                "key": str(path),
                "publicKey": key.public_key_line,
                "fingerprint": key.fingerprint,
                "kemKey": str(kem_keys.private_path(path)),
                "kemPublicKey": kem_line,
                **(
                    {"mldsaKey": str(mldsa_path), "mldsaPublicKey": key.mldsa_public_key_line}
                    if hybrid
                    else {}
                ),
            }
        )
    else:
        stdout.print(f"node key {path}, public key {path}.pub ({key.fingerprint})", markup=False)
        stdout.print(f"publicKey: {key.public_key_line}", markup=False)
        if hybrid:
            stdout.print(
                f"ML-DSA-65 half {mldsa_path}, public key {mldsa_path}.pub: its line is "
                "mldsaPublicKey in nodes/NAME.yaml (records signed with both keys)",
                markup=False,
            )
            stdout.print(f"mldsaPublicKey: {key.mldsa_public_key_line}", markup=False)
        stdout.print(
            f"KEM key {kem_keys.private_path(path)}, public key {kem_keys.public_path(path)}: "
            "its line is kemPublicKey in nodes/NAME.yaml (for sealed secrets)",
            markup=False,
        )
    return 0


@group.command("run")
@click.option("--source", required=True, help="The circle's repository: a path or a Git URL.")
@click.option(
    "--introduction",
    "introduction_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The circle's introduction (JSON from `circle introduction`): the trust anchor.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The node's folder: its chain state, quarantine repository and status.",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The node key (circle node keygen); its public half is in nodes/NAME.yaml.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="sqlite:PATH or etcd://HOST:PORT[,HOST:PORT] (default: $CIRCLE_STORE).",
)
@click.option("--ttl", type=click.IntRange(2, 3600), default=10, show_default=True,
              help="Seconds the node's lease lasts without a keep-alive.")  # fmt: skip
@click.option("--keepalive", type=click.FloatRange(0.1, 600), default=3.0, show_default=True,
              help="Seconds between keep-alives (well under --ttl).")  # fmt: skip
@click.option("--fetch-interval", type=click.FloatRange(0.1, 3600), default=5.0,
              show_default=True, help="Seconds between fetches of --source.")  # fmt: skip
@click.option("--address", default=None,
              help="Where peers reach this node's chunk store (default: its nodes/ address); "
              "port 0 picks a free one.")  # fmt: skip
@click.option("--artifact-source", "artifact_sources", multiple=True, metavar="DIR|URL",
              help="Where artifacts come from after this node's store and its peers: a chunk "
              "store folder or a `circle artifact serve` URL (repeatable).")  # fmt: skip
@click.option("--storage-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The circle's QSS storage key (0600), to read workloads' volumes.")  # fmt: skip
@click.option("--uids", "uid_range", default="420000-429999", show_default=True,
              metavar="START-END",
              help="The uids workloads run as (one per workload; a range per agent).")  # fmt: skip
@click.option("--cgroup-parent", default="circle", show_default=True,
              help="The control group (below the agent's) of its replicas' groups.")  # fmt: skip
@click.option("--publish-address", default="127.0.0.1", show_default=True,
              help="The host address declared ports are published on.")  # fmt: skip
@click.option("--grace", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
              help="Seconds a stopping replica has between SIGTERM and SIGKILL.")  # fmt: skip
@click.option("--progress-deadline", type=click.FloatRange(1, 86400), default=600,
              show_default=True,
              help="Seconds a rolling update may wait for a replacement to be Ready before "
              "the leader says it stalled (the old replicas keep serving).")  # fmt: skip
@click.option("--scrub-interval", type=click.FloatRange(1, 7 * 86400), default=3600,
              show_default=True,
              help="Seconds between the leader's scrubs of every volume (shares read and "
              "hash-checked; lost ones rebuilt without the data key).")  # fmt: skip
@click.option("--prestage-budget", default=prestage.DEFAULT_BUDGET, show_default=True,
              metavar="SIZE|PCT%",
              help="Disk the artifacts of proposals on their way may take before their quorum "
              "lands (staged, verified, never run): a size (20Gi), a share of the free disk "
              "(10%), or 0 for none.")  # fmt: skip
@click.option("--stop-workloads/--leave-workloads", default=False, show_default=True,
              help="When the agent exits: stop its replicas, or let them run for the next "
              "agent to adopt.")  # fmt: skip
def run(
    source: str,
    introduction_file: Path,
    state_dir: Path,
    key_file: Path,
    store_url: str | None,
    ttl: int,
    keepalive: float,
    fetch_interval: float,
    address: str | None,
    artifact_sources: tuple[str, ...],
    storage_key: Path | None,
    uid_range: str,
    cgroup_parent: str,
    publish_address: str,
    grace: float,
    progress_deadline: float,
    scrub_interval: float,
    prestage_budget: str,
    stop_workloads: bool,
) -> int:
    """Run the node agent until SIGTERM or Ctrl-C: follow the chain, register, campaign, lead
    when elected, accept or refuse this node's assignments, and run the accepted ones, each
    replica in its sandbox (bubblewrap; the agent runs as root)."""
    refuse_public_key(key_file)
    if keepalive * 2 > ttl:
        raise InputError(f"--keepalive {keepalive:g} must be at most half of --ttl {ttl}")
    url = resolve_store_url(store_url)
    if url is None:
        raise InputError("no state store: give --store URL or set CIRCLE_STORE")
    config = AgentConfig(
        source=source,
        introduction=load_introduction(introduction_file),
        state_dir=state_dir,
        key_file=key_file,
        store_url=url,
        ttl=ttl,
        keepalive=keepalive,
        fetch_interval=fetch_interval,
        address=address,
        artifact_sources=artifact_sources,
        storage_key=storage_key,
        uids=parse_range(uid_range),
        cgroup_parent=_cgroup_name(cgroup_parent),
        publish_host=publish_address,
        grace=grace,
        stop_workloads=stop_workloads,
        progress_deadline=progress_deadline,
        scrub_interval=scrub_interval,
        prestage_budget=prestage.parse_budget(prestage_budget),
    )
    agent = Agent(config)
    stop = threading.Event()

    def stopping(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    return agent.run(stop)


def _cgroup_name(text: str) -> str:
    parts = text.split("/")
    if not text or any(part in ("", ".", "..") or not part.isprintable() for part in parts):
        raise InputError(f"--cgroup-parent {text!r}: expected a relative group name like circle")
    return text


@group.command("status")
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The node's folder (as given to `circle node run`).",
)
@output_option
def status(state_dir: Path, output: str | None) -> int:
    """What this node's agent last said: its conditions, applied and attempted commit, role."""
    found = view.status_file(state_dir)
    if settings(output).json:
        print_json(found)
        return 0
    applied = found.get("lastApplied") or {}
    assert isinstance(applied, dict)
    stdout.print(f"node:          {found.get('node') or '-'}", markup=False)
    stdout.print(
        f"circle:        {found.get('circle')}   store: {found.get('store')}", markup=False
    )
    stdout.print(
        f"role:          {'leader' if found.get('leader') else 'follower'} "
        f"(epoch {found.get('epoch')})",
        markup=False,
    )
    stdout.print(
        f"last applied:  seq {applied.get('seq', '-')} {str(applied.get('commit') or '-')[:12]}",
        markup=False,
    )
    stdout.print(f"last attempted: {str(found.get('lastAttempted') or '-')[:12]}", markup=False)
    conditions = found.get("conditions") or []
    assert isinstance(conditions, list)
    for condition in conditions:
        stdout.print(
            f"condition:     {condition['type']}={condition['status']} "
            f"{condition['reason']}: {condition['message']}",
            markup=False,
        )
    return 0
