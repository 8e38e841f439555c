"""`circle get nodes|workloads|assignments` and `circle events`: the circle as its agents keep it
in the state store, every record verified against the circle's admitted nodes (kubectl's habits:
aligned columns, ages, `-o wide`, `-o json`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler.cli.context import settings
from reconciler.cli.render import print_columns, print_json, stderr, stdout
from reconciler.errors import InputError
from reconciler.humane import age, size
from reconciler.node import tables, view
from reconciler.store import StateStore, open_store, resolve_store_url

F = TypeVar("F", bound=Callable[..., Any])
OUTPUTS = ("text", "wide", "json")


def store_options(function: F) -> F:
    """`--store`, and where the records' keys come from: `--repo` or `--state`."""
    function = click.option(
        "--state",
        "state_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="A node's folder: check signatures against the commit it applied.",
    )(function)
    function = click.option(
        "--repo",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="A clone of the circle: check signatures against its main (default: here).",
    )(function)
    return click.option(
        "--store",
        "store_url",
        default=None,
        metavar="URL",
        help="sqlite:PATH or etcd://HOST:PORT[,HOST:PORT] (default: $CIRCLE_STORE).",
    )(function)


def output_choice(function: F) -> F:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUTS),
        default=None,
        help="text (default), wide (more columns) or json.",
    )(function)


def _open(store_url: str | None) -> StateStore:
    url = resolve_store_url(store_url)
    if url is None:
        raise InputError("no state store: give --store URL or set CIRCLE_STORE")
    return open_store(url)


def _mode(output: str | None) -> str:
    return output or settings().output


@click.group("get")
def group() -> None:
    """Show the circle's nodes, workloads or assignments from the state store."""


@group.command("nodes")
@store_options
@output_choice
def nodes(
    store_url: str | None, repo: Path | None, state_dir: Path | None, output: str | None
) -> int:
    """Admitted nodes: registered (Ready) or not, the leader, domain, seq, capacity, age."""
    circle = view.circle_from(repo, state_dir)
    with _open(store_url) as store:
        seen = view.read(store, circle)
    now = time.time()
    table = tables.nodes(seen)
    rows = table["nodes"]
    mode = _mode(output)
    if mode == "json":
        print_json(table)
        return 0
    columns = ["NAME", "STATUS", "ROLE", "DOMAIN", "SEQ", "CPU", "MEMORY", "GPUS", "AGE"]
    if mode == "wide":
        columns += ["ADDRESS", "COMMIT", "AGENT"]
    lines = []
    for row in rows:
        cells = [
            row["name"], row["status"], "leader" if row["leader"] else "<none>",
            row["failureDomain"], str(row["seq"] or "-"),
            f"{row['cpu'] // 1000}" if row["cpu"] is not None else "-",
            size(row["memory"]) if row["memory"] is not None else "-",
            str(len(row["gpus"])),
            age(now - row["startedAt"]) if row["startedAt"] else "-",
        ]  # fmt: skip
        if mode == "wide":
            cells += [row["address"] or "-", (row["commit"] or "-")[:12], row["agent"] or "-"]
        lines.append(cells)
    print_columns(columns, lines)
    _note_forged(seen.forged)
    return 0


@group.command("assignments")
@store_options
@output_choice
def assignments(
    store_url: str | None, repo: Path | None, state_dir: Path | None, output: str | None
) -> int:
    """Every assignment: workload, slot, node, seq, what its node said (accepted, refused...)."""
    circle = view.circle_from(repo, state_dir)
    with _open(store_url) as store:
        seen = view.read(store, circle)
    table = tables.assignments(seen)
    rows = table["assignments"]
    mode = _mode(output)
    if mode == "json":
        print_json(table)
        return 0
    columns = ["WORKLOAD", "SLOT", "NODE", "SEQ", "STATUS", "REASON", "RESTARTS", "EPOCH"]
    if mode == "wide":
        columns += ["ENDPOINTS", "DIGEST", "CPU", "MEMORY", "GPUS"]
    lines = []
    for row in rows:
        cells = [row["workload"], str(row["slot"]), row["node"], str(row["seq"]),
                 row["phase"] or "Pending", row["reason"] or "-", str(row["restarts"]),
                 str(row["epoch"])]  # fmt: skip
        if mode == "wide":
            cells += [",".join(row["endpoints"]) or "-", row["digest"][:19], f"{row['cpu']}m",
                      size(row["memory"]), ",".join(row["gpus"]) or "-"]  # fmt: skip
        lines.append(cells)
    print_columns(columns, lines)
    _note_forged(seen.forged)
    return 0


@group.command("workloads")
@store_options
@output_choice
def workloads(
    store_url: str | None, repo: Path | None, state_dir: Path | None, output: str | None
) -> int:
    """Approved workloads: replicas wanted, placed, accepted and ready, per node."""
    circle = view.circle_from(repo, state_dir)
    with _open(store_url) as store:
        seen = view.read(store, circle)
    table = tables.workloads(seen)
    rows = table["workloads"]
    mode = _mode(output)
    if mode == "json":
        print_json(table)
        return 0
    columns = ["NAME", "REPLICAS", "DESIRED", "PLACED", "ACCEPTED", "READY", "NODES"]
    if mode == "wide":
        columns += ["AUTOSCALE", "LOAD", "DIGEST"]
    lines = []
    for row in rows:
        cells = [row["name"], str(row["replicas"]), str(row["desired"]), str(row["placed"]),
                 str(row["accepted"]), f"{row['ready']}/{row['desired']}",
                 ",".join(row["nodes"]) or "-"]  # fmt: skip
        if mode == "wide":
            bounds = row["autoscale"]
            scale = (f"{bounds['min']}..{bounds['max']} {bounds['metric']} {bounds['target']:g}"
                     if bounds else "-")  # fmt: skip
            load = "-" if row["load"] is None else f"{row['load']:g}"
            cells += [scale, load, (row["digest"] or "-")[:19]]
        lines.append(cells)
    print_columns(columns, lines)
    _note_forged(seen.forged)
    return 0


@group.command("volumes")
@store_options
@output_choice
def volumes(
    store_url: str | None, repo: Path | None, state_dir: Path | None, output: str | None
) -> int:
    """Volume objects as the leader last scrubbed them: shares healthy, margin, repairs."""
    circle = view.circle_from(repo, state_dir)
    with _open(store_url) as store:
        seen = view.read(store, circle)
    now = time.time()
    table = tables.volumes(seen)
    mode = _mode(output)
    if mode == "json":
        print_json(table)
        return 0
    columns = ["VOLUME", "OBJECT", "STATUS", "SHARES", "MARGIN", "REPAIRS", "SCRUBBED"]
    if mode == "wide":
        columns += ["ID", "BY", "DOMAINS"]
    lines = []
    for volume in table["volumes"]:
        if not volume["objects"]:
            lines.append([volume["name"], "-", "NotScrubbed", "-", "-", "-", "-"]
                         + (["-", "-", "-"] if mode == "wide" else []))  # fmt: skip
        for row in volume["objects"]:
            cells = [volume["name"], row["name"], row["status"], f"{row['healthy']}/{row['n']}",
                     str(row["margin"]), str(row["repairs"]),
                     age(now - row["scrubbedAt"])]  # fmt: skip
            if mode == "wide":
                domains = ",".join(f"{name}:{d['healthy']}/{d['shares']}"
                                   for name, d in row["failureDomains"].items())  # fmt: skip
                cells += [row["object"][:12], row["scrubbedBy"], domains]
            lines.append(cells)
    print_columns(columns, lines)
    _note_forged(seen.forged)
    return 0


def _note_forged(count: int) -> None:
    if count:
        stderr.print(
            f"warning: {count} record(s) in the store did not verify against the circle's "
            "nodes and are not shown",
            markup=False,
        )


_SINCE = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    unit = value[-1:]
    if unit not in _SINCE or not value[:-1].isdigit():
        raise click.BadParameter(f"{value!r}: expected a duration such as 30s, 10m, 2h, 1d")
    return int(value[:-1]) * _SINCE[unit]


@click.command("events")
@store_options
@click.option("--since", default=None, metavar="DURATION", help="Only the last 30s, 10m, 2h...")
@click.option("--follow", "-f", "keep", is_flag=True, help="Keep printing new events.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default=None)
def events_command(
    store_url: str | None,
    repo: Path | None,
    state_dir: Path | None,
    since: str | None,
    keep: bool,
    output: str | None,
) -> int:
    """The circle's events, oldest first, as `kubectl get events`: age, type, reason, object."""
    circle = view.circle_from(repo, state_dir)
    window = _since(since)
    mode = _mode(output)
    shown: set[tuple[int, str, str]] = set()
    with _open(store_url) as store:
        while True:
            found, forged = view.events(store, circle)
            now = time.time()
            fresh = [
                e for e in found
                if (window is None or now - e.time_ms / 1000 <= window)
                and (e.time_ms, e.node or "", e.reason) not in shown
            ]  # fmt: skip
            if mode == "json" and not keep:
                print_json([e.to_body() for e in fresh])
            else:
                for event in fresh:
                    line = (
                        f"{age(now - event.time_ms / 1000):>5}   {event.type.value:<8} "
                        f"{event.reason:<20} {event.object:<28} {event.message}"
                    )
                    stdout.print(line, markup=False)
            shown |= {(e.time_ms, e.node or "", e.reason) for e in fresh}
            if not keep:
                break
            time.sleep(1)
    if forged and not keep:
        _note_forged(forged)
    return 0
