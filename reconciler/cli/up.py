"""`circle up`, `circle status`, `circle down`: a whole circle on this machine.

`circle up [REPO]` makes the circle in DIR (`reconciler.local.make`), starts one detached
agent per node and shows the circle converging until every replica is Ready; run again, it
starts only the agents that stopped and reports. `circle status` says what runs; `circle down`
stops it all (`--purge` removes DIR too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import click
import pygit2
from rich.live import Live
from rich.table import Table

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import console_of, plural, print_columns, print_json, stderr, stdout
from reconciler.desired.shipped import shipped_dir
from reconciler.errors import InputError
from reconciler.files import remove_tree
from reconciler.local import agents
from reconciler.local.make import MAX_NODES, make_circle
from reconciler.local.progress import Snapshot, snapshot
from reconciler.local.site import MAKING, Record, Site, default_dir
from reconciler.node import sandbox, view
from reconciler.store import StoreError, open_store

EXAMPLE = "example-circle-repo"
# The example service's admin endpoint, which answers only with the API key the owners hold.
ADMIN_WORKLOAD, ADMIN_SECRET, ADMIN_PATH = "langid", "langid-api-key", "/v1/usage"


def dir_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "folder",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=f"Where the circle lives (default: {default_dir()}).",
    )(function)


@click.command("up")
@click.argument("repo", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--nodes", type=click.IntRange(1, MAX_NODES), default=None,
              help="How many nodes (default: the repository's nodes/).")  # fmt: skip
@dir_option
@click.option("--ttl", type=click.IntRange(2, 3600), default=10, show_default=True,
              help="Seconds a node's lease lasts: how soon a lost node is noticed.")  # fmt: skip
@click.option("--progress-deadline", type=click.FloatRange(1, 86400), default=600,
              show_default=True,
              help="Seconds a rolling update may wait for a new replica before it is said "
              "to have stalled.")  # fmt: skip
@click.option("--scrub-interval", type=click.FloatRange(1, 86400), default=30,
              show_default=True,
              help="Seconds between the leader's scrubs (and repairs) of the volumes.")  # fmt: skip
@click.option("--wait", type=click.FloatRange(0, 3600), default=300, show_default=True,
              help="Seconds to wait for every replica to be Ready (0: do not wait).")  # fmt: skip
@output_option
def up_command(
    repo: Path | None, nodes: int | None, folder: Path | None, ttl: int,
    progress_deadline: float, scrub_interval: float, wait: float, output: str | None,
) -> int:  # fmt: skip
    """Bring a whole circle up on this machine (default: the example circle): demo owners'
    and nodes' keys, its repository with the genesis approved by the owners' quorum, the
    builds, the volumes in local Quantum Safe Storage folders, a SQLite store, and one node
    agent per node as a detached process. Shows the circle converging and how to talk to it.

    Exits 0 once every replica is Ready, 1 when they are not within --wait (the agents keep
    running: `circle status`), 2 for bad input.
    """
    as_json = settings(output).json
    source = (repo or shipped_dir(EXAMPLE)).resolve()
    site = Site((folder or default_dir()).absolute())
    _can_run_sandboxes()
    with site.locked():
        record = site.read_record()
        if record is not None and repo is not None and record.source != str(source):
            raise InputError(
                f"{site.root} holds circle {record.circle} made from {record.source}: "
                f"`circle down --purge --dir {site.root}` first, or give another --dir"
            )
        started: list[str] = []
        if record is None:
            record = _make(
                source, site, nodes, ttl, (progress_deadline, scrub_interval), quiet=as_json
            )
            started = [agents.start(site, record, node).node for node in record.nodes]
        else:
            given = [
                f"--{name.replace('_', '-')}"
                for name in ("nodes", "ttl", "progress_deadline", "scrub_interval")
                if click.get_current_context().get_parameter_source(name)
                is not click.core.ParameterSource.DEFAULT
            ]
            if given:
                stderr.print(
                    f"{site.root} holds a circle made already; {', '.join(given)} "
                    "ignored (`circle down --purge` first to make it again)",
                    markup=False,
                )
            for node in record.nodes:
                if agents.find(site, node) is None:
                    agents.start(site, record, node)
                    started.append(node)
        if not as_json:
            already = len(record.nodes) - len(started)
            said = f"started {', '.join(started)}" if started else "nothing to start"
            stdout.print(
                f"circle {record.circle} in {site.root}: {said}"
                + (f" ({already} already running)" if started and already else ""),
                markup=False,
            )
    seen = _watch(site, record, wait, live=not as_json and stdout.is_terminal)
    if as_json:
        print_json(_status_json(site, record, seen))
    else:
        _tell(site, record, seen)
    return 0 if seen is not None and seen.converged else 1


@click.command("status")
@dir_option
@output_option
def status_command(folder: Path | None, output: str | None) -> int:
    """What the local circle in DIR runs: its agents, nodes, leader, replicas and endpoints.
    Exits 0 when every agent runs and every replica is Ready, 1 otherwise."""
    site = Site((folder or default_dir()).absolute())
    record = _record(site)
    seen = _look(site, record)
    if settings(output).json:
        print_json(_status_json(site, record, seen))
    else:
        _tell(site, record, seen)
    running = all(agents.find(site, node) is not None for node in record.nodes)
    return 0 if running and seen is not None and seen.converged else 1


@click.command("down")
@dir_option
@click.option("--purge", is_flag=True, help="Remove DIR too: keys, repository, store, logs.")
@output_option
def down_command(folder: Path | None, purge: bool, output: str | None) -> int:
    """Stop the local circle in DIR: every agent (SIGTERM; each stops its replicas), then
    whatever still runs in the circle's control groups. Its files stay unless --purge."""
    site = Site((folder or default_dir()).absolute())
    with site.locked():
        try:
            record = site.read_record()
        except InputError:
            if not purge:
                raise
            record = None  # damaged: what its pid files name is stopped, and it all goes
        if record is None and not site.interrupted() and not (purge and site.record_file.exists()):
            raise InputError(f"{site.root}: no circle is up here (circle up makes one)")
        nodes = record.nodes if record else agents.recorded_nodes(site)
        running = [a for n in nodes if (a := agents.find(site, n))]
        killed = agents.stop(site, running, timeout=agents.GRACE + 15)
        released = agents.release_replicas(record) if record is not None else 0
        agents.release_secrets(site, nodes)  # the values go with the replicas that had them
        if purge:
            remove_tree(site.root)
    if settings(output).json:
        print_json(
            {
                "stopped": [a.node for a in running],
                "killed": killed,
                "releasedGroups": released,
                "purged": purge,
            }
        )
        return 0
    what = ", ".join(a.node for a in running) or "no agent was running"
    stdout.print(f"stopped {what}" + (f" (killed: {', '.join(killed)})" if killed else ""),
                 markup=False)  # fmt: skip
    if released:
        stdout.print(f"released {plural(released, 'leftover replica group')}", markup=False)
    stdout.print(f"removed {site.root}" if purge else f"kept {site.root} (--purge removes it)",
                 markup=False)  # fmt: skip
    return 0


# -- up, step by step -------------------------------------------------------------------------


def _can_run_sandboxes() -> None:
    if os.geteuid() != 0:
        raise InputError(
            "circle up runs each replica in a sandbox under a uid of its own, which needs root: "
            "run it as root (sudo)"
        )
    if not os.access(sandbox.BWRAP, os.X_OK):
        raise InputError(f"{sandbox.BWRAP} is missing: apt-get install bubblewrap")


def _make(
    source: Path,
    site: Site,
    nodes: int | None,
    ttl: int,
    intervals: tuple[float, float],
    *,
    quiet: bool,
) -> Record:
    started = time.monotonic()

    def say(step: str) -> None:
        if not quiet:
            stdout.print(f"[{time.monotonic() - started:5.1f}s] {step}", markup=False)

    made = make_circle(source, site, nodes, say)
    # Two circles on one machine never share control groups or uids: both follow from DIR.
    tag = hashlib.sha256(str(site.root).encode()).hexdigest()
    parent = f"circle-up-{made.circle[:40]}-{tag[:8]}"
    record = Record(
        circle=made.circle,
        source=str(source),
        nodes=made.nodes,
        owners=made.owners,
        ttl=ttl,
        uid_base=agents.uid_base(int(tag[8:16], 16)),
        cgroup_parent=parent,
        cgroup_bases=agents.cgroup_bases(parent),
        created_at=int(time.time()),
        progress_deadline=intervals[0],
        scrub_interval=intervals[1],
        secrets=made.secrets,
    )
    site.write_record(record)
    (site.root / MAKING).unlink()
    say(f"genesis approved by {', '.join(made.approved_by)}; starting {len(made.nodes)} agents")
    return record


def _record(site: Site) -> Record:
    record = site.read_record()
    if record is None:
        raise InputError(f"{site.root}: no circle is up here (circle up makes one)")
    return record


def _look(site: Site, record: Record) -> Snapshot | None:
    """The circle now, or None while nothing can be read yet."""
    try:
        repo = pygit2.Repository(str(site.repo))
        circle = view.circle_from(site.repo, None)
        with open_store(site.store_url, timeout=5) as store:
            return snapshot(store, repo, circle)
    except (StoreError, InputError, pygit2.GitError):
        return None


def _watch(site: Site, record: Record, wait: float, *, live: bool) -> Snapshot | None:
    """Look until every replica is Ready or `wait` passed; live, a table that updates."""
    started = time.monotonic()
    seen = _look(site, record)
    if wait <= 0:
        return seen
    said = ""
    with (
        Live(console=console_of(stdout), auto_refresh=False, transient=False)
        if live
        else _Quiet() as shown
    ):
        while True:
            elapsed = time.monotonic() - started
            if live:
                shown.update(_progress_table(record, seen, elapsed), refresh=True)
            else:
                line = _progress_line(record, seen)
                if line != said:
                    stderr.print(f"[{elapsed:5.1f}s] {line}", markup=False)
                    said = line
            if (seen is not None and seen.converged) or elapsed >= wait:
                return seen
            time.sleep(0.25)
            seen = _look(site, record)


class _Quiet:
    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def _progress_line(record: Record, seen: Snapshot | None) -> str:
    if seen is None:
        return "waiting for the first node to register"
    parts = [f"nodes {len(seen.nodes)}/{len(seen.expected)}", f"leader {seen.leader or '-'}"]
    parts += [f"{w.name} {w.ready}/{w.wanted} Ready" for w in seen.workloads]
    problems = [w.problem for w in seen.workloads if w.problem]
    return "   ".join(parts) + (f"   ({problems[0]})" if problems else "")


def _progress_table(record: Record, seen: Snapshot | None, elapsed: float) -> Table:
    table = Table(title=f"circle {record.circle}   {elapsed:4.1f}s", title_justify="left",
                  box=None, pad_edge=False)  # fmt: skip
    table.add_column("")
    table.add_column("")
    if seen is None:
        table.add_row("nodes", "waiting for the first node to register")
        return table
    joined = ", ".join(seen.nodes) or "-"
    mark = "✓" if set(seen.expected) <= set(seen.nodes) else "…"
    table.add_row("nodes", f"{mark} {len(seen.nodes)}/{len(seen.expected)} joined ({joined})")
    table.add_row("leader", f"{'✓' if seen.leader else '…'} {seen.leader or '-'}"
                  + (f" (epoch {seen.epoch})" if seen.epoch else ""))  # fmt: skip
    table.add_row("approved", f"seq {seen.seq}" if seen.seq is not None else "-")
    for workload in seen.workloads:
        mark = "✓" if workload.ready >= workload.wanted else "…"
        text = (f"{mark} {workload.ready}/{workload.wanted} Ready, "
                f"{workload.placed}/{workload.wanted} placed")  # fmt: skip
        if workload.problem and workload.ready < workload.wanted:
            text += f"\n  {workload.problem}"
        table.add_row(workload.name, text)
    return table


# -- what a person is told --------------------------------------------------------------------


def _circle_command() -> str:
    found = shutil.which("circle")
    mine = Path(sys.executable).with_name("circle")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "circle"
    return str(mine) if mine.exists() else f"{sys.executable} -m reconciler"


def _tell(site: Site, record: Record, seen: Snapshot | None) -> None:
    rows = []
    for node in record.nodes:
        agent = agents.find(site, node)
        joined = seen is not None and node in seen.nodes
        rows.append(
            [
                node,
                "running" if agent else "stopped",
                str(agent.pid) if agent else "-",
                "yes" if joined else "no",
                "yes" if seen is not None and seen.leader == node else "",
                str(site.log_file(node)),
            ]
        )
    stdout.print("")
    print_columns(["NODE", "AGENT", "PID", "REGISTERED", "LEADER", "LOG"], rows)
    if seen is None:
        stdout.print("\nthe state store cannot be read yet", markup=False)
        return
    stdout.print("")
    print_columns(
        ["WORKLOAD", "READY", "ENDPOINTS"],
        [[w.name, f"{w.ready}/{w.wanted}", ",".join(w.endpoints) or "-"] for w in seen.workloads],
    )
    for workload in seen.workloads:
        if workload.problem and workload.ready < workload.wanted:
            stdout.print(f"  {workload.name}: {workload.problem}", markup=False)
    circle = _circle_command()
    if any(w.endpoints for w in seen.workloads):
        stdout.print("\nTalk to the service:", markup=False)
    for workload in seen.workloads:
        for endpoint in workload.endpoints[:1]:
            address = endpoint.split("=", 1)[1]
            if workload.description:
                stdout.print(f"  # {workload.name}: {workload.description}", markup=False)
            stdout.print(f"  curl -s http://{address}{workload.health_path or '/'}", markup=False)
            if workload.name == ADMIN_WORKLOAD and ADMIN_SECRET in record.secrets:
                stdout.print(
                    f'  curl -s -H "Authorization: Bearer $(cat {site.secret_value(ADMIN_SECRET)})"'
                    f" http://{address}{ADMIN_PATH}    # its admin endpoint, with the API key",
                    markup=False,
                )
    if record.secrets:
        stdout.print(
            "\nSecrets sealed to the nodes at genesis (the values only the owners hold; "
            "each release is a SecretReleased event):",
            markup=False,
        )
        for name in record.secrets:
            stdout.print(f"  {name}: {site.secret_value(name)}", markup=False)
    owners = record.owners[:2]
    stdout.print("\nPropose a change and co-sign it with two demo owners' keys:", markup=False)
    stdout.print(f"  cd {site.repo}", markup=False)
    first = seen.workloads[0].name if seen.workloads else "NAME"
    stdout.print(f"  $EDITOR workloads/{first}.yaml    # replicas: 2 -> 3", markup=False)
    stdout.print(f"  git commit -qam '{first}: one more replica'", markup=False)
    for owner in owners:
        stdout.print(f"  {circle} approve --key {site.owner_key(owner)}", markup=False)
    stdout.print(
        f"\nSee it:   {circle} dashboard{_dir_flag(site)}    # http://127.0.0.1:7480/"
        f"\nWatch it: {circle} get workloads --repo {site.repo} --store {site.store_url}"
        f"\nStatus:   {circle} status{_dir_flag(site)}"
        f"\nStop it:  {circle} down{_dir_flag(site)} [--purge]",
        markup=False,
    )


def _dir_flag(site: Site) -> str:
    return "" if site.root == default_dir().absolute() else f" --dir {site.root}"


def _status_json(site: Site, record: Record, seen: Snapshot | None) -> dict[str, object]:
    agents_json = []
    for node in record.nodes:
        agent = agents.find(site, node)
        agents_json.append(
            {
                "node": node,
                "running": agent is not None,
                "pid": agent.pid if agent else None,
                "log": str(site.log_file(node)),
            }
        )
    return {
        "circle": record.circle,
        "dir": str(site.root),
        "source": record.source,
        "repo": str(site.repo),
        "store": site.store_url,
        "owners": {name: str(site.owner_key(name)) for name in record.owners},
        "secrets": {name: str(site.secret_value(name)) for name in record.secrets},
        "agents": agents_json,
        "converged": seen is not None and seen.converged,
        "leader": seen.leader if seen else None,
        "epoch": seen.epoch if seen else None,
        "seq": seen.seq if seen else None,
        "commit": seen.commit if seen else None,
        "nodes": list(seen.nodes) if seen else [],
        "workloads": [
            {
                "name": w.name,
                "wanted": w.wanted,
                "placed": w.placed,
                "ready": w.ready,
                "endpoints": list(w.endpoints),
                "problem": w.problem,
            }
            for w in (seen.workloads if seen else ())
        ],
    }
