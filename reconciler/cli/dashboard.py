"""`circle dashboard`: the circle in a browser, read-only and live (`reconciler.dashboard`).

Next to `circle up` it needs no option: it reads the local circle in DIR (its store and its
owners' repository). Otherwise `--store` and `--repo` name them, as for `circle get`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from reconciler.cli.context import output_option, settings
from reconciler.cli.render import stderr, stdout
from reconciler.dashboard.app import make_app
from reconciler.dashboard.collect import Collector, Sources
from reconciler.dashboard.serve import allowed_hosts, bind, is_loopback, serve, url_of
from reconciler.errors import InputError
from reconciler.files import read_bounded
from reconciler.local.site import Site, default_dir
from reconciler.node import view
from reconciler.store import ENV_VAR

MIN_TOKEN = 16  # characters


def _token(path: Path | None) -> str | None:
    if path is None:
        return None
    data = read_bounded(path, 4096)
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{path}: the token is not UTF-8 text") from None
    if len(token) < MIN_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise InputError(
            f"{path}: expected one token of at least {MIN_TOKEN} printable characters without "
            "spaces (for example: openssl rand -hex 32)"
        )
    return token


def _sources(folder: Path | None, store_url: str | None, repo: Path | None) -> Sources:
    if store_url is None and repo is None and not os.environ.get(ENV_VAR):
        site = Site((folder or default_dir()).absolute())
        if site.read_record() is None:
            raise InputError(
                f"{site.root}: no circle is up here: run `circle up`, or give --store and --repo"
            )
        return Sources(site.store_url, site.repo)
    url = store_url or os.environ.get(ENV_VAR)
    if url is None:
        raise InputError(f"no state store: give --store URL or set {ENV_VAR}")
    return Sources(url, repo or Path("."))


@click.command("dashboard")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=f"The local circle of `circle up` (default: {default_dir()}).",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="sqlite:PATH or etcd://HOST:PORT[,HOST:PORT] (default: $CIRCLE_STORE).",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="An owner's clone of the circle: its chain, and the nodes' keys.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Where to listen; anything but loopback needs --token-file.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=7480,
    show_default=True,
    help="0: any free port (printed).",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A file holding the bearer token every request must carry.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between two reads of the circle.",
)
@output_option
def command(
    folder: Path | None,
    store_url: str | None,
    repo: Path | None,
    host: str,
    port: int,
    token_file: Path | None,
    interval: float,
    output: str | None,
) -> int:
    """Serve a read-only, live web dashboard of the circle: the chain with its pending
    proposals, nodes, workloads, volumes and events, each page with a JSON twin under /api/."""
    token = _token(token_file)
    loopback = is_loopback(host)
    if not loopback and token is None:
        raise InputError(
            f"--host {host} is reachable from other machines: give --token-file (a bearer "
            "token every request must carry), or keep the default 127.0.0.1"
        )
    sources = _sources(folder, store_url, repo)
    view.circle_from(sources.repo, None)  # a clear error now rather than a page later
    sock = bind(host, port)
    collector = Collector(sources, interval=interval).start()
    try:
        app = make_app(collector, token=token, hosts=allowed_hosts(sock) if loopback else None)
        url = url_of(sock)

        def ready() -> None:
            if settings(output).json:  # one line, at once: a script reads it while we serve
                said = {"url": url, "circle": collector.snapshot().get("circle"),
                        "store": sources.store_url, "repo": str(sources.repo)}  # fmt: skip
                sys.stdout.write(json.dumps(said) + "\n")
                sys.stdout.flush()
            else:
                stdout.print(f"dashboard of {collector.snapshot().get('circle')}: {url}",
                             markup=False)  # fmt: skip
                stderr.print("read-only; Ctrl-C stops it", markup=False)

        serve(app, sock, ready)
    finally:
        collector.stop()
        sock.close()
    return 0
