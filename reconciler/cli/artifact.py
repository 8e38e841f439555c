"""`circle artifact`: serve a chunk store to peers, materialize an artifact from the local store
and peers, verify a tree against an artifact, diff two artifacts (what an update fetches), and
verify a build's signed provenance (`verify-provenance`, in `reconciler.cli.provenance`).

Sources are chunk store folders or `http://` URLs of `circle artifact serve`. A manifest is read
from the local store first, then from the sources in order; whichever answers, its bytes are
checked against the id before anything else is read (`builders.manifest.decode`). Each request
to an HTTP source must be done within `--timeout` seconds; one that stalls is reported and the
next source is tried.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from builders import BuildError
from builders.chunks import ChunkError, ChunkMissing, ChunkSource, ChunkStore, SourceUnavailable
from builders.http_chunks import DEFAULT_TIMEOUT, ChunkServer, HttpChunkSource
from builders.manifest import ArtifactManifest, Entry, decode
from builders.materialize import Progress as FetchProgress
from builders.materialize import materialize as materialize_artifact
from builders.materialize import verify_tree
from reconciler import wiring
from reconciler.cli import provenance
from reconciler.cli.context import output_option, settings
from reconciler.cli.render import print_json, stderr, stdout, transfer_progress
from reconciler.desired.model.types import format_bytes
from reconciler.errors import CheckFailed, InputError

_STORE_HELP = "The local chunk store (default: $XDG_CACHE_HOME/circle/store)."


@contextlib.contextmanager
def build_errors() -> Iterator[None]:
    """Build and chunk errors as the CLI reports them: a failed check, exit 1."""
    try:
        yield
    except BuildError as error:
        raise CheckFailed(str(error)) from error


def check_id(artifact_id: str) -> str:
    hex_part = artifact_id.removeprefix("sha256:")
    if (
        not artifact_id.startswith("sha256:")
        or len(hex_part) != 64
        or hex_part.strip("0123456789abcdef")
    ):
        raise InputError(f"{artifact_id[:80]!r} is not an artifact id (sha256:<64 hex>)")
    return artifact_id


class _Sources:
    """The chunk sources a command reads from, in order; closes the HTTP ones at the end."""

    def __init__(
        self, store: ChunkStore | None, specs: Sequence[str], timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.store = store
        self.remote: list[ChunkSource] = []
        self._http: list[HttpChunkSource] = []
        self.problems: list[str] = []  # sources that stalled or could not be reached
        for spec in specs:
            if spec.startswith(("http://", "https://")):
                try:
                    source = HttpChunkSource(spec, timeout)
                except ChunkError as error:
                    raise InputError(str(error)) from error
                self._http.append(source)
                self.remote.append(source)
            else:
                try:
                    self.remote.append(ChunkStore(Path(spec), create=False))
                except ChunkError as error:
                    raise InputError(f"--source {error}") from error

    @property
    def all(self) -> list[ChunkSource]:
        return ([self.store] if self.store is not None else []) + self.remote

    def manifest_bytes(self, artifact_id: str) -> bytes:
        """The manifest of `artifact_id` from the first source that has it."""
        problems: list[str] = []
        for source in self.all:
            if not isinstance(source, (ChunkStore, HttpChunkSource)):
                continue
            try:
                return source.get_manifest(artifact_id)
            except ChunkMissing:
                problems.append(f"{source.name}: missing")
            except SourceUnavailable as error:
                problems.append(str(error))
                self.report(f"{error}; trying the next source")
            except ChunkError as error:
                problems.append(str(error))
        tried = "; ".join(problems) or "no store or source given"
        raise CheckFailed(f"no manifest of {artifact_id} found: {tried}")

    def manifest(self, artifact_id: str) -> ArtifactManifest:
        data = self.manifest_bytes(artifact_id)
        with build_errors():
            return decode(data, artifact_id, allow_symlinks=True)

    def report(self, problem: str) -> None:
        """A source that stalled or could not be reached: a warning now, and in the JSON."""
        self.problems.append(problem)
        stderr.print(f"warning: {problem}", markup=False)

    def close(self) -> None:
        for source in self._http:
            source.close()


@contextlib.contextmanager
def open_sources(
    store: ChunkStore | None, specs: Sequence[str], timeout: float = DEFAULT_TIMEOUT
) -> Iterator[_Sources]:
    sources = _Sources(store, specs, timeout)
    try:
        yield sources
    finally:
        sources.close()


def _local_store(store_dir: Path | None, *, create: bool) -> ChunkStore:
    try:
        return ChunkStore(store_dir or wiring.default_chunk_store(), create=create)
    except ChunkError as error:
        raise InputError(str(error)) from error


@click.group("artifact")
def group() -> None:
    """Serve, materialize, verify and compare artifacts; verify their provenance."""


group.add_command(provenance.command)


store_option = click.option(
    "--store",
    "store_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help=_STORE_HELP,
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="The most one request to an http source may take in all, however slowly it answers; "
    "past it the next source is tried.",
)


@group.command("serve")
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8740, show_default=True, type=int, help="Port (0: any free).")
def serve(store_dir: Path | None, host: str, port: int) -> int:
    """Serve a chunk store's chunks and manifests to peers over HTTP until SIGTERM."""
    store = _local_store(store_dir, create=False)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with build_errors(), ChunkServer(store, host=host, port=port) as server:
            stdout.print(f"serving {store.root} at {server.url}", markup=False)
            stdout.file.flush()
            stop.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[FetchProgress], None]]:
    with transfer_progress(enabled) as progress:
        task = progress.add_task("fetching", total=None)

        def update(report: FetchProgress) -> None:
            progress.update(task, total=report.bytes_total, completed=report.bytes_done)

        yield update


@group.command("materialize")
@click.argument("artifact_id", metavar="ID")
@click.option(
    "--dest",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The artifacts folder: the artifact goes to DEST/<hex>, DEST/current points at it.",
)
@click.option(
    "--source",
    "source_specs",
    multiple=True,
    metavar="STORE_DIR|URL",
    help="Where missing chunks come from, in order (repeatable).",
)
@store_option
@click.option("--allow-symlinks", is_flag=True, help="Accept symlinks inside the artifact.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 256))
@timeout_option
@output_option
def materialize(
    artifact_id: str,
    dest: Path,
    source_specs: tuple[str, ...],
    store_dir: Path | None,
    allow_symlinks: bool,
    workers: int,
    timeout: float,
    output: str | None,
) -> int:
    """Materialize artifact ID under DEST from the local store and SOURCEs; print its path."""
    check_id(artifact_id)
    as_json = settings(output).json
    store = _local_store(store_dir, create=True)
    fetched: list[FetchProgress] = []
    with open_sources(store, source_specs, timeout) as sources:
        data = sources.manifest_bytes(artifact_id)
        with _progress_bar(not as_json) as show, build_errors():

            def report(progress: FetchProgress) -> None:
                fetched[:] = [progress]
                show(progress)

            path = materialize_artifact(
                artifact_id,
                data,
                sources=sources.all,
                store=store,
                artifacts_root=dest,
                workers=workers,
                allow_symlinks=allow_symlinks,
                progress=report,
                on_problem=sources.report,
            )
            store.put_manifest(artifact_id, data)
    done = fetched[0] if fetched else FetchProgress(0, 0, 0, 0)
    if as_json:
        print_json(
            {
                "artifact": artifact_id,
                "path": str(path),
                "fetchedChunks": done.chunks_done,
                "fetchedBytes": done.bytes_done,
                "sourceProblems": sources.problems,
            }
        )
    else:
        stdout.print(str(path), markup=False)
    return 0


@group.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--id", "artifact_id", required=True, help="The artifact the tree must equal.")
@store_option
@click.option("--source", "source_specs", multiple=True, metavar="STORE_DIR|URL")
@timeout_option
@output_option
def verify(
    directory: Path,
    artifact_id: str,
    store_dir: Path | None,
    source_specs: tuple[str, ...],
    timeout: float,
    output: str | None,
) -> int:
    """Exit 0 when the tree at DIRECTORY is exactly artifact ID, 1 naming the first difference."""
    check_id(artifact_id)
    store = _local_store(store_dir, create=False) if store_dir or not source_specs else None
    with open_sources(store, source_specs, timeout) as sources:
        manifest = sources.manifest(artifact_id)
    with build_errors():
        verify_tree(directory, manifest)
    if settings(output).json:
        print_json({"artifact": artifact_id, "path": str(directory), "verified": True})
    else:
        stdout.print(f"{directory} is {artifact_id}", markup=False)
    return 0


def _changes(old: ArtifactManifest, new: ArtifactManifest) -> list[tuple[str, Entry]]:
    before = {entry.path: entry for entry in old.entries}
    after = {entry.path: entry for entry in new.entries}
    changes: list[tuple[str, Entry]] = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            changes.append(("added", after[path]))
        elif path not in after:
            changes.append(("removed", before[path]))
        elif before[path] != after[path]:
            changes.append(("changed", after[path]))
    return changes


@group.command("diff")
@click.argument("old_id", metavar="ID1")
@click.argument("new_id", metavar="ID2")
@store_option
@click.option("--source", "source_specs", multiple=True, metavar="STORE_DIR|URL")
@timeout_option
@output_option
def diff(
    old_id: str,
    new_id: str,
    store_dir: Path | None,
    source_specs: tuple[str, ...],
    timeout: float,
    output: str | None,
) -> int:
    """Files added, removed and changed from ID1 to ID2, and what a node holding ID1 fetches."""
    check_id(old_id)
    check_id(new_id)
    store = _local_store(store_dir, create=False) if store_dir or not source_specs else None
    with open_sources(store, source_specs, timeout) as sources:
        old, new = sources.manifest(old_id), sources.manifest(new_id)
    changes = _changes(old, new)
    held = old.chunk_digests()
    sizes = {c.sha256: c.size for entry in new.files() for c in entry.chunks}
    fetch = {digest: size for digest, size in sizes.items() if digest not in held}
    summary: dict[str, Any] = {
        "from": old_id,
        "to": new_id,
        "added": [entry.path for kind, entry in changes if kind == "added"],
        "removed": [entry.path for kind, entry in changes if kind == "removed"],
        "changed": [entry.path for kind, entry in changes if kind == "changed"],
        "fetchChunks": len(fetch),
        "fetchBytes": sum(fetch.values()),
        "totalChunks": len(sizes),
        "totalBytes": sum(sizes.values()),
    }
    if settings(output).json:
        print_json(summary)
        return 0
    if changes:
        table = Table("change", "path", "size", box=None, pad_edge=False)
        for kind, entry in changes:
            size = format_bytes(entry.size) if entry.type == "file" else entry.type
            table.add_row(kind, Text(entry.path), size)
        stdout.print(table)
    else:
        stdout.print("no files differ", markup=False)
    stdout.print(
        f"fetch {format_bytes(summary['fetchBytes'])} in {len(fetch)} of {len(sizes)} chunks "
        f"({format_bytes(summary['totalBytes'])} in all)",
        markup=False,
    )
    return 0
