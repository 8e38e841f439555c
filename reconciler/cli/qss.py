"""`circle qss`: Quantum Safe Storage from the command line.

Backends come from `--backend [NAME[@DOMAIN]=]URL` (repeatable; `dir:/path`,
`redis://host:port/db`, `http://host:port`) or from a `Volume` of a circle repository
(`--volume NAME [--repo DIR]`), which also gives k, n and the segment size. `--timeout` bounds
each call to a network backend, from connecting to the last byte of its answer.

A command over every backend (`ls`, `scrub`, `rm`) names each backend that failed, with why,
reports what the others hold, and exits 1.

Recipients (`--recipient NAME=KEY`, KEY an `x-wing ...` line or the file holding one, and with
`--volume` the nodes its `recipients` names) get the object's data key wrapped for their X-Wing
key (`qss.recipients`): `get --kem-key KEY.x-wing --as NAME` then reads it without the storage
key. `share` adds recipients (with the storage key), `unshare` removes them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.table import Table

from qss.backends import open_backend
from qss.backends.base import Backend
from qss.backends.http import BlobServer
from qss.codec import DEFAULT_SEGMENT
from qss.errors import InvalidParameters, PlacementError, StorageError
from qss.keys import KeyFileError, generate_key_file, read_key_file, read_token_file
from qss.manifest import Manifest
from qss.recipients import Recipient, RecipientKey, check_recipient_name
from qss.reports import BackendFailure, ObjectHealth, ShareStatus
from qss.store import Store
from reconciler import wiring
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import (
    ProblemsFound,
    plural,
    print_error,
    print_json,
    stderr,
    stdout,
    transfer_progress,
)
from reconciler.desired.folder import check_circle_dir
from reconciler.desired.model.types import format_bytes
from reconciler.errors import CheckFailed, InputError
from reconciler.files import read_bounded
from reconciler.node.volumes import volume_recipients
from reconciler.secrets import keys as kem_keys
from reconciler.secrets import xwing
from reconciler.secrets.errors import KemError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_K = 4
DEFAULT_N = 6
MAX_KEY_LINE = 4096


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """Storage errors as the CLI reports them: bad input exits 2, a failed check 1."""
    try:
        yield
    except (InvalidParameters, PlacementError, KeyFileError) as error:
        raise InputError(str(error)) from error
    except StorageError as error:
        raise CheckFailed(str(error)) from error


@dataclass(frozen=True)
class Target:
    store: Store
    k: int
    n: int
    segment_size: int
    # the nodes a --volume is shared with (asked only by put and share, so that a volume whose
    # recipients the check refuses is still read, listed and scrubbed)
    recipients: Callable[[], tuple[Recipient, ...]] = tuple


def parse_recipient(spec: str) -> Recipient:
    """`NAME=KEY`: KEY an `x-wing BASE64 [comment]` line, or a file whose first line is one."""
    name, separator, value = spec.partition("=")
    if not separator or not value:
        raise InputError(f"--recipient {spec[:40]!r}: expected NAME=KEY (an x-wing line or file)")
    try:
        check_recipient_name(name)
    except InvalidParameters as error:
        raise InputError(f"--recipient {name[:40]!r}: {error}") from None
    where = f"--recipient {name}"
    if not value.startswith(f"{xwing.KEY_TYPE} "):
        path = Path(value)
        data = read_bounded(path, MAX_KEY_LINE)
        if len(data) > MAX_KEY_LINE:
            raise InputError(f"{path}: over {MAX_KEY_LINE} bytes; not an X-Wing public key")
        lines = data.decode("utf-8", "replace").splitlines()
        value, where = (lines[0] if lines else ""), f"{path}"
    try:
        return Recipient(name, xwing.parse_public_key(value))
    except KemError as error:
        raise InputError(f"{where}: {error}") from None


def parse_recipients(specs: Sequence[str], implied: Sequence[Recipient] = ()) -> list[Recipient]:
    """The recipients given, then those `implied` (a volume's) that are not named again."""
    given = [parse_recipient(spec) for spec in specs]
    names = [r.name for r in given]
    if len(set(names)) != len(names):
        raise InputError(f"--recipient names a recipient twice: {', '.join(sorted(names))}")
    return given + [r for r in implied if r.name not in set(names)]


def recipient_key(name: str, key: xwing.XWingPrivateKey) -> RecipientKey:
    """What opens an entry as recipient `name`: the X-Wing decapsulation under `key`."""
    return RecipientKey(name, key.public_bytes, functools.partial(xwing.decapsulate, key))


def parse_backend(spec: str, timeout: float | None = None) -> Backend:
    """`[NAME[@DOMAIN]=]URL` -> an open backend."""
    label, separator, url = spec.partition("=")
    if not separator or "://" in label or label.startswith("dir:"):
        label, url = "", spec
    name, _, domain = label.partition("@")
    return open_backend(url, name=name or None, failure_domain=domain or None, timeout=timeout)


@dataclass(frozen=True)
class Selection:
    """Where the objects are, as the command line says: backends, or a circle's volume."""

    backends: tuple[str, ...]
    volume: str | None
    repo: Path
    workers: int
    timeout: float | None = None

    def open(self) -> Target:
        return open_target(self.backends, self.volume, self.repo, self.workers, self.timeout)


def backend_options(function: F) -> F:
    """Add --backend/--volume/--repo/--workers/--timeout; the command receives them as `where`."""

    @functools.wraps(function)
    def command(
        *args: Any,
        backends: tuple[str, ...],
        volume: str | None,
        repo: Path,
        workers: int,
        timeout: float | None,
        **kwargs: Any,
    ) -> Any:
        where = Selection(backends, volume, repo, workers, timeout)
        return function(*args, where=where, **kwargs)

    options = [
        click.option(
            "--backend",
            "-b",
            "backends",
            multiple=True,
            metavar="[NAME[@DOMAIN]=]URL",
            help="A backend: dir:/path, redis://host:port/db or http://host:port. Repeat it.",
        ),
        click.option("--volume", help="Use the backends, k and n of this Volume of a circle."),
        click.option(
            "--repo",
            type=click.Path(path_type=Path, file_okay=False),
            default=Path("."),
            show_default=True,
            help="The circle repository holding --volume.",
        ),
        click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True),
        click.option(
            "--timeout",
            type=click.FloatRange(0, min_open=True),
            default=None,
            metavar="SECONDS",
            help="The most one call to a redis or http backend may take in all, however slowly "
            "it answers (default: 30).",
        ),
    ]
    decorated: Any = command
    for option in reversed(options):
        decorated = option(decorated)
    return cast(F, decorated)


def open_target(
    backends: tuple[str, ...],
    volume: str | None,
    repo: Path,
    workers: int,
    timeout: float | None = None,
) -> Target:
    if volume and backends:
        raise InputError("give --volume or --backend, not both")
    if volume:
        report = check_circle_dir(repo)
        broken = [p for p in report.errors if p.file.endswith(f"volumes/{volume}.yaml")]
        if broken and volume not in report.state.volumes:
            raise ProblemsFound(f"{repo}: volume {volume} cannot be read", broken)
        try:
            found = wiring.volume_store(report.state, volume, workers=workers, timeout=timeout)
        except InputError as error:
            raise InputError(f"{repo}: {error}") from None
        state, name = report.state, volume

        def recipients() -> tuple[Recipient, ...]:
            try:
                return volume_recipients(state, name)
            except InputError as error:
                raise InputError(f"{repo}: {error}") from None

        return Target(found.store, found.k, found.n, found.segment_size, recipients)
    if not backends:
        raise InputError("no backends: give --backend URL (repeatable) or --volume NAME")
    opened = [parse_backend(spec, timeout) for spec in backends]
    return Target(Store(opened, workers=workers), DEFAULT_K, DEFAULT_N, DEFAULT_SEGMENT)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    with transfer_progress(enabled) as progress:
        task = progress.add_task(description, total=total)
        yield lambda size: progress.advance(task, size)


def manifest_json(manifest: Manifest) -> dict[str, Any]:
    content = manifest.content
    return {
        "objectId": manifest.object_id,
        "name": content.name,
        "size": content.size,
        "k": content.k,
        "n": content.n,
        "segmentSize": content.segment_size,
        "version": manifest.version,
        "keyId": content.key_id,
        "placement": [
            {"share": p.share, "backend": p.backend, "failureDomain": p.failure_domain}
            for p in manifest.placement
        ],
        "recipients": [{"name": e.name, "kemKey": e.kem_key} for e in manifest.recipients],
    }


def recipient_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--recipient",
        "recipient_specs",
        multiple=True,
        metavar="NAME=KEY",
        help=help_text,
    )


storage_key_option = click.option(
    "--key",
    "keyfile",
    type=click.Path(path_type=Path),
    required=True,
    help="The circle's storage key file (it opens the data key).",
)


@click.group("qss")
def group() -> None:
    """Quantum Safe Storage: encrypted, erasure-coded, dispersed, self-repairing objects."""


@group.command("keygen")
@click.argument("keyfile", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
@output_option
def keygen(keyfile: Path, force: bool, output: str | None) -> int:
    """Write a new random storage key to KEYFILE (mode 0600)."""
    with storage_errors():
        identity = generate_key_file(keyfile, overwrite=force)
    if settings(output).json:
        print_json({"keyFile": str(keyfile), "keyId": identity})
    else:
        stdout.print(f"{keyfile}: storage key {identity}", markup=False)
    return 0


@group.command("put")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@storage_key_option
@click.option("-k", "k", type=int, help="Shares needed to read (default: the volume's, or 4).")
@click.option("-n", "n", type=int, help="Shares written (default: the volume's, or 6).")
@click.option("--name", help="The object's name (default: the file name).")
@click.option(
    "--min-domains",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Refuse unless the shares span at least this many failure domains.",
)
@recipient_option(
    "Share it with NAME, whose X-Wing key KEY is an `x-wing ...` line or a file holding one "
    "(NODE.x-wing.pub). Repeat it. With --volume, the volume's recipients are added."
)
@backend_options
@output_option
def put(
    path: Path,
    keyfile: Path,
    k: int | None,
    n: int | None,
    name: str | None,
    min_domains: int,
    recipient_specs: tuple[str, ...],
    where: Selection,
    output: str | None,
) -> int:
    """Encrypt, erasure-code and spread the file PATH; print its object id."""
    as_json = settings(output).json
    with storage_errors():
        storage_key = read_key_file(keyfile)
        target = where.open()
        recipients = parse_recipients(recipient_specs, target.recipients())
        size = path.stat().st_size
        with progress_bar(f"put {path.name}", size, not as_json) as advance:
            result = target.store.put(
                path,
                storage_key=storage_key,
                k=k or target.k,
                n=n or target.n,
                name=name,
                segment_size=target.segment_size,
                min_domains=min_domains,
                progress=advance,
                recipients=recipients,
                encapsulate=xwing.encapsulate,
            )
    if as_json:
        print_json({**manifest_json(result.manifest), "warnings": list(result.warnings)})
    else:
        for warning in result.warnings:
            stderr.print(f"warning: {warning}", markup=False)
        stdout.print(result.manifest.object_id, markup=False)
    return 0


@group.command("get")
@click.argument("object_id")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key", "keyfile", type=click.Path(path_type=Path), help="The circle's storage key file."
)
@click.option(
    "--kem-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read as a recipient instead: this X-Wing private key file (KEY.x-wing); with --as.",
)
@click.option("--as", "as_name", metavar="NAME", help="The recipient name --kem-key reads as.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@backend_options
@output_option
def get(
    object_id: str,
    out: Path,
    keyfile: Path | None,
    kem_key: Path | None,
    as_name: str | None,
    force: bool,
    where: Selection,
    output: str | None,
) -> int:
    """Read object OBJECT_ID (or a unique prefix of 8+ digits) into the file OUT (never over
    an existing file without --force), with the storage key (--key) or as a recipient it is
    shared with (--kem-key KEY.x-wing --as NAME)."""
    as_json = settings(output).json
    if (keyfile is None) == (kem_key is None):
        raise InputError("give --key STORAGE_KEY, or --kem-key KEY.x-wing --as NAME")
    if (kem_key is None) != (as_name is None):
        raise InputError("--kem-key and --as go together: the key, and the recipient it is")
    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist")
    if os.path.lexists(out) and not force:
        raise InputError(f"{out}: exists; refusing to overwrite it (use --force)")
    with storage_errors():
        storage_key = read_key_file(keyfile) if keyfile is not None else None
        recipient = None
        if kem_key is not None and as_name is not None:
            check_recipient_name(as_name)
            recipient = recipient_key(as_name, kem_keys.read(kem_key))
        target = where.open()
        resolved = target.store.resolve(object_id)
        manifest = target.store.find_manifest(resolved)
        with progress_bar(
            f"get {manifest.content.name}", manifest.content.size, not as_json
        ) as advance:
            result = target.store.get(
                resolved, out, storage_key=storage_key, recipient=recipient, progress=advance
            )
    damaged = sorted({(p.share, p.backend, p.status.value) for p in result.problems})
    if as_json:
        print_json(
            {
                **manifest_json(result.manifest),
                "out": str(out),
                "needsRepair": [
                    {"share": share, "backend": backend, "status": status}
                    for share, backend, status in damaged
                ],
            }
        )
    else:
        for share, backend, status in damaged:
            stderr.print(f"warning: share {share} on {backend} is {status}", markup=False)
        if damaged:
            stderr.print(
                f"run `circle qss scrub --repair {resolved[:16]}` to restore it", markup=False
            )
        stdout.print(f"{out}: {result.manifest.content.size} bytes written", markup=False)
    return 0


@group.command("ls")
@backend_options
@output_option
def ls(where: Selection, output: str | None) -> int:
    """List the objects the backends hold.

    Exits 1 when a backend cannot be listed or a listed object's manifest cannot be read (each
    is named, with why), after listing what the others hold.
    """
    with storage_errors():
        listing = where.open().store.list_objects()
    failed = bool(listing.failed or listing.unreadable)
    if settings(output).json:
        print_json(
            {
                "objects": [manifest_json(m) for m in listing.manifests],
                "failedBackends": _failures_json(listing.failed),
                "unreadableObjects": [
                    {"objectId": object_id, "reason": reason}
                    for object_id, reason in listing.unreadable
                ],
            }
        )
        return 1 if failed else 0
    table = Table("object", "name", "size", "k-of-n", "version", "recipients")
    for manifest in listing.manifests:
        content = manifest.content
        table.add_row(
            manifest.object_id[:16],
            content.name,
            format_bytes(content.size),
            f"{content.k}-of-{content.n}",
            str(manifest.version),
            ", ".join(entry.name for entry in manifest.recipients) or "-",
        )
    stdout.print(table)
    _print_failures(listing.failed, "could not be listed")
    for object_id, reason in listing.unreadable:
        print_error(f"object {object_id[:16]} cannot be read: {reason}", False)
    return 1 if failed else 0


def _failures_json(failures: Sequence[BackendFailure]) -> list[dict[str, str]]:
    return [{"backend": failure.backend, "reason": failure.reason} for failure in failures]


def _print_failures(failures: Sequence[BackendFailure], what: str) -> None:
    for failure in failures:
        print_error(f"backend {failure.backend} {what}: {failure.reason}", False)


def _health_json(health: ObjectHealth) -> dict[str, Any]:
    return {
        "objectId": health.manifest.object_id,
        "name": health.manifest.content.name,
        "k": health.manifest.content.k,
        "n": health.manifest.content.n,
        "healthy": health.healthy,
        "margin": health.margin,
        "shares": [
            {
                "share": s.share,
                "backend": s.backend,
                "failureDomain": s.failure_domain,
                "status": s.status.value,
                "badSegments": list(s.bad_segments),
            }
            for s in health.shares
        ],
    }


@group.command("scrub")
@click.argument("object_id", required=False)
@click.option("--repair", is_flag=True, help="Re-create every share that is not healthy.")
@backend_options
@output_option
def scrub(
    object_id: str | None,
    repair: bool,
    where: Selection,
    output: str | None,
) -> int:
    """Check every share of OBJECT_ID (default: of every object); with --repair, restore them.

    Exits 1 when an object is left with a share that is not healthy.
    """
    as_json = settings(output).json
    results = []
    failed: tuple[BackendFailure, ...] = ()
    with storage_errors():
        store = where.open().store
        if object_id:
            ids = [store.resolve(object_id)]
        else:
            inventory = store.object_ids()
            ids, failed = sorted(inventory.ids), inventory.failed
        for oid in ids:
            health = store.scrub(oid)
            after = health
            repaired = {}
            if repair and health.lost:
                manifest = health.manifest
                with progress_bar(
                    f"repair {manifest.content.name}", manifest.content.size, not as_json
                ) as advance:
                    result = store.repair(oid, health, progress=advance)
                repaired = {share: site.backend for share, site in result.repaired.items()}
                after = store.scrub(oid)
            results.append((health, repaired, after))
    unhealthy = [after for _, _, after in results if after.lost]
    code = 1 if unhealthy or failed else 0
    if as_json:
        print_json(
            {
                "objects": [
                    {
                        **_health_json(before),
                        "repaired": {str(share): backend for share, backend in repaired.items()},
                        "after": _health_json(after) if repaired else None,
                    }
                    for before, repaired, after in results
                ],
                "failedBackends": _failures_json(failed),
            }
        )
        return code
    for before, repaired, after in results:
        content = before.manifest.content
        counts = dict.fromkeys(ShareStatus, 0)
        for share in before.shares:
            counts[share.status] += 1
        summary = ", ".join(f"{count} {status.value}" for status, count in counts.items() if count)
        stdout.print(
            f"{before.manifest.object_id[:16]} {content.name}: {content.k}-of-{content.n}, "
            f"{summary}; margin {before.margin}",
            markup=False,
        )
        for share in before.shares:
            if share.status is not ShareStatus.HEALTHY:
                stdout.print(
                    f"  share {share.share} on {share.backend} ({share.failure_domain}): "
                    f"{share.status.value}",
                    markup=False,
                )
        if repaired:
            moved = ", ".join(
                f"share {share} -> {backend}" for share, backend in sorted(repaired.items())
            )
            stdout.print(
                f"  repaired: {moved}; now {after.healthy} of {content.n} healthy, "
                f"manifest version {after.manifest.version}",
                markup=False,
            )
    stdout.print(
        f"{plural(len(results), 'object')} scrubbed, {len(unhealthy)} not fully healthy",
        markup=False,
    )
    _print_failures(failed, "could not be listed (its objects were not scrubbed)")
    return code


@group.command("share")
@click.argument("object_id")
@storage_key_option
@recipient_option(
    "Share it with NAME, whose X-Wing key KEY is an `x-wing ...` line or a file holding one "
    "(NODE.x-wing.pub). Repeat it. With --volume and no --recipient: the volume's recipients."
)
@backend_options
@output_option
def share(
    object_id: str,
    keyfile: Path,
    recipient_specs: tuple[str, ...],
    where: Selection,
    output: str | None,
) -> int:
    """Share object OBJECT_ID with more recipients: its data key, opened with the storage key,
    is wrapped for each one's X-Wing key in a new manifest version (the object id stays).
    A recipient already there gets a new entry (after a key rotation)."""
    with storage_errors():
        storage_key = read_key_file(keyfile)
        target = where.open()
        implied = () if recipient_specs else target.recipients()
        recipients = parse_recipients(recipient_specs, implied)
        if not recipients:
            raise InputError("no recipient: give --recipient NAME=KEY, or a --volume with some")
        store = target.store
        result = store.share(
            store.resolve(object_id),
            storage_key=storage_key,
            recipients=recipients,
            encapsulate=xwing.encapsulate,
        )
    manifest = result.manifest
    if settings(output).json:
        print_json({**manifest_json(manifest), "shared": sorted(r.name for r in recipients)})
    else:
        stdout.print(
            f"{manifest.object_id[:16]} {manifest.content.name}: shared with "
            f"{', '.join(sorted(r.name for r in recipients))} (manifest version "
            f"{manifest.version})",
            markup=False,
        )
    return 0


@group.command("unshare")
@click.argument("object_id")
@click.option(
    "--recipient",
    "names",
    multiple=True,
    required=True,
    metavar="NAME",
    help="The recipient whose entry is removed. Repeat it.",
)
@backend_options
@output_option
def unshare(
    object_id: str,
    names: tuple[str, ...],
    where: Selection,
    output: str | None,
) -> int:
    """Stop sharing object OBJECT_ID with the recipients named: a new manifest version without
    their entries, and the older versions (which hold them) deleted from every backend.

    A recipient that read the object before may have kept its data key: to revoke that as
    well, put the object again (a new data key) and rm this one. Exits 1 naming each backend
    that failed (it may still hold an older version: run it again once it is back).
    """
    with storage_errors():
        store = where.open().store
        result = store.unshare(store.resolve(object_id), sorted(set(names)))
    manifest = result.manifest
    if settings(output).json:
        print_json(
            {
                **manifest_json(manifest),
                "unshared": sorted(set(names)),
                "failedBackends": _failures_json(result.failed),
            }
        )
    else:
        stdout.print(
            f"{manifest.object_id[:16]} {manifest.content.name}: no longer shared with "
            f"{', '.join(sorted(set(names)))} (manifest version {manifest.version})",
            markup=False,
        )
        _print_failures(result.failed, "may still hold an older version (run unshare again)")
    return 1 if result.failed else 0


@group.command("rm")
@click.argument("object_id")
@backend_options
@output_option
def rm(
    object_id: str,
    where: Selection,
    output: str | None,
) -> int:
    """Delete object OBJECT_ID: every share and manifest on every backend.

    Exits 1 naming each backend that failed (it may still hold part of the object: run `rm`
    again once it is back).
    """
    with storage_errors():
        store = where.open().store
        result = store.remove(store.resolve(object_id))
    manifest = result.manifest
    if settings(output).json:
        print_json(
            {
                "removed": manifest.object_id,
                "name": manifest.content.name,
                "failedBackends": _failures_json(result.failed),
            }
        )
    elif result.failed:
        stdout.print(
            f"removed {manifest.object_id[:16]} {manifest.content.name} from "
            f"{len(store.backends) - len(result.failed)} of {len(store.backends)} backends",
            markup=False,
        )
        _print_failures(result.failed, "may still hold part of it (run rm again once it is back)")
    else:
        stdout.print(f"removed {manifest.object_id[:16]} {manifest.content.name}", markup=False)
    return 1 if result.failed else 0


@group.command("serve")
@click.argument("backend_url", metavar="[NAME[@DOMAIN]=]URL")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=7400, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Require `Authorization: Bearer <the file's first line>` on every request.",
)
def serve(backend_url: str, host: str, port: int, token_file: Path | None) -> int:
    """Serve one backend over HTTP, for other nodes' `http://` backends, until SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with storage_errors():
        token = read_token_file(token_file) if token_file else None
        backend = parse_backend(backend_url)
        with BlobServer(backend, host=host, port=port, token=token) as server:
            stdout.print(f"serving {backend.name} at {server.url}", markup=False)
            stdout.file.flush()
            stop.wait()
    return 0
