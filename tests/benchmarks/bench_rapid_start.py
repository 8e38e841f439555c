"""Benchmark: start a new version of a large model by moving only what changed.

One run, on loopback, every chunk server throttled to 100 MB/s (a 1 Gbit/s link), the three
peers' servers in a process of their own (other machines in a deployment: they must not share
the node's interpreter):

- v1: a 1 GiB model-like file (a JSON header and weights), built with the `model` builder
  (content-defined chunks, 512 KiB on average by default) and materialized on an empty node
  from one peer: time and bytes;
- v2: the header edited and 1% of the weights changed, materialized on the node that holds v1
  (reusing v1's unchanged ranges in the kernel): time, bytes (its chunks and its manifest),
  and how its bytes were got;
- v1 cold on another empty node from three peers at once, each throttled to 100 MB/s (each
  chunk hashed once on arrival and written straight into the tree, not into the store);
  once into memory the VM has not used yet, then again into the pages that first tree held
  (freed a moment before): on a node that has run a while, its memory is page cache that
  gets reused, and that second figure is the one compared;
- v1's chunks alone (into an empty store, no tree) from one peer and from three: the fetching,
  where the node's own disk and CPU are not the limit;
- v2 pre-staged on that node (`switch=False`, as while a proposal waits for its quorum), then
  switched: the time from "start v2" to `current` pointing at it;
- the baselines: a full download of v2 through one throttled server, written to disk and
  flushed (the same end state as a materialization), and a plain local copy of the file (page
  cache, not flushed: the floor of local work).

Materializations run as a node runs them: seals with the boot id, nothing flushed byte by byte
(`durable=False`; a tree from another boot is hashed in full before it is used). What setting
up wrote (the models, the peers' store) is written back (`sync`) before each cold start, and
v1's pages before v2 starts, as they would be on a node that has held v1 for more than half a
minute.

On a VM whose host backs guest memory only when it is first touched, and takes back what the
guest frees (a balloon with free page reporting, as on the 2-core VM of ADR 0008), writing a
gigabyte into pages the guest has not used lately costs seconds of system time: the "plain
local copy" row shows it. A cold start from three peers has 3.6 s of network for 1 GiB;
into such memory, that cost, not the fetching, bounds it (the "memory new to the VM's host"
row). Getting those pages ready in the fetching threads, outside the file's write lock
(madvise MADV_POPULATE_READ on a mapping of the sized file), was tried: it moved the cost
between threads and did not lower it.

Where the scratch folder's filesystem has reflinks (`--dir` on XFS with reflink=1 or btrfs),
v2's unchanged ranges share v1's blocks; elsewhere the kernel copies them, through the page
cache (`copy_file_range`) or, where a probe found it faster, from v1's cached pages straight
to the disk (`O_DIRECT`): the "v2's bytes" line says which.

    .venv/bin/python tests/benchmarks/bench_rapid_start.py [--size-mib 1024] [--rate-mbps 100]
        [--dir SCRATCH] [--avg-kib 512]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from builders.chunks import MAX_CHUNK, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.manifest import ArtifactManifest, Chunking
from builders.materialize import Assembly, materialize
from builders.swarm import Swarm
from builders.tree import MODEL_CHUNKING, TreeBuild, build_tree

MiB = 1024 * 1024


def write_model(path: Path, size: int, header: dict[str, object], seed: int) -> None:
    """A JSON header, then `size` bytes of weights from a seeded generator."""
    generator = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    with open(path, "wb") as sink:
        text = json.dumps(header, sort_keys=True).encode()
        sink.write(len(text).to_bytes(8, "little") + text)
        remaining = size
        while remaining:
            block = min(remaining, 8 * MiB)
            sink.write(generator.randbytes(block))
            remaining -= block


def change_weights(path: Path, fraction: float, seed: int) -> int:
    """Overwrite `fraction` of the file in 16 regions (the layers a fine-tune touched)."""
    size = path.stat().st_size
    generator = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    region = int(size * fraction / 16)
    with open(path, "r+b") as handle:
        for index in range(16):
            handle.seek(int(size * (index + 0.5) / 16))
            handle.write(generator.randbytes(region))
    return 16 * region


class Counting:
    """A ChunkSource wrapper that counts the bytes it hands out."""

    def __init__(self, source: HttpChunkSource) -> None:
        self.source = source
        self.name = source.name
        self.bytes = 0

    def get(self, digest: str, limit: int = MAX_CHUNK) -> bytes:
        data = self.source.get(digest, limit)
        self.bytes += len(data)
        return data

    def has(self, digest: str) -> bool:
        return self.source.has(digest)


def serve(root: str, rate: float, channel: Connection) -> None:
    """In a peer's process: a throttled chunk server of the store at `root`."""
    store = ChunkStore(Path(root), create=False)
    server = ChunkServer(store, rate_limit=rate).start()
    channel.send(server.url)
    channel.recv()  # until the benchmark is done with it
    server.stop()


@contextlib.contextmanager
def peers(store: Path, count: int, rate: float) -> Iterator[list[str]]:
    """The URLs of `count` peers serving `store`, each in a process of its own: other
    machines in a deployment, they share neither the node's interpreter (its GIL) nor each
    other's."""
    context = multiprocessing.get_context("spawn")
    channels, processes = [], []
    try:
        for _ in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=serve, args=(str(store), rate, theirs), daemon=True)
            process.start()
            channels.append(ours)
            processes.append(process)
        yield [channel.recv() for channel in channels]
    finally:
        for channel in channels:
            channel.send(None)
        for process in processes:
            process.join(30)


def node_materialize(
    manifest: ArtifactManifest, urls: list[str], node: Path, *, switch: bool = True
) -> tuple[float, int, Assembly]:
    """Materialize as a node does (seals, no flush); (seconds, bytes moved, how)."""
    sources = [Counting(HttpChunkSource(url)) for url in urls]
    assemblies: list[Assembly] = []
    started = time.perf_counter()
    materialize(
        manifest.artifact_id,
        manifest.encode(),
        sources=sources,
        store=ChunkStore(node / "chunks", durable=False),
        artifacts_root=node / "artifacts",
        workers=4,
        seals=node / "seals",
        durable=False,
        on_assembled=assemblies.append,
        switch=switch,
    )
    elapsed = time.perf_counter() - started
    for source in sources:
        source.source.close()
    return (
        elapsed,
        sum(source.bytes for source in sources),
        (assemblies or [Assembly()])[0],
    )  # none: it was installed


def fetch_only(manifest: ArtifactManifest, urls: list[str], folder: Path) -> float:
    """Seconds to fetch every chunk of `manifest` into an empty store, from `urls` at once."""
    sources = [HttpChunkSource(url) for url in urls]
    started = time.perf_counter()
    with Swarm(sources, ChunkStore(folder, durable=False), workers=4) as swarm:
        swarm.want([chunk for entry in manifest.files() for chunk in entry.chunks])
        swarm.finish()
    elapsed = time.perf_counter() - started
    for source in sources:
        source.close()
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mbps", type=float, default=100.0, help="MB/s (10^6 bytes)")
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: temp).")
    parser.add_argument(
        "--avg-kib",
        type=int,
        default=MODEL_CHUNKING.avg // 1024,
        help="The model builder's average chunk (min a quarter, max four times it).",
    )
    args = parser.parse_args()
    size = args.size_mib * MiB
    average = args.avg_kib * 1024
    chunking = Chunking("fastcdc", average // 4, average, average * 4)
    rate = args.rate_mbps * 1e6
    scratch = Path(tempfile.mkdtemp(prefix="bench-rapid-", dir=args.dir))
    try:
        server_store = ChunkStore(scratch / "server-store")
        versions = {}
        for version in ("v1", "v2"):
            folder = scratch / version
            folder.mkdir()
            write_model(folder / "model.bin", size, {"model": "bench", "version": 1}, seed=1)
        write_model(scratch / "v2/model.bin", size, {"model": "bench", "version": 2}, seed=1)
        changed = change_weights(scratch / "v2/model.bin", 0.01, seed=2)
        for version in ("v1", "v2"):
            started = time.perf_counter()
            manifest = build_tree(
                TreeBuild(scratch / version, chunking=chunking, prefetch=("model.bin",)),
                server_store,
            )
            server_store.put_manifest(manifest.artifact_id, manifest.encode())
            versions[version] = (manifest, time.perf_counter() - started)
        v1, v2 = versions["v1"][0], versions["v2"][0]
        reused = v1.chunk_digests() & v2.chunk_digests()
        manifest_bytes = len(v2.encode())  # a node fetches it too, before any chunk
        print(
            f"model: {args.size_mib} MiB, v2 changes its header and {changed / MiB:.1f} MiB of "
            f"weights; {len(v2.chunk_digests())} chunks, {len(reused)} shared with v1; "
            f"v2's manifest {manifest_bytes / 1024:.0f} KiB"
        )
        print(
            f"build v1 {versions['v1'][1]:.1f} s, v2 {versions['v2'][1]:.1f} s (model builder, "
            f"chunks of {average // 1024} KiB on average)"
        )
        print(f"link: each chunk server on loopback throttled to {args.rate_mbps:g} MB/s\n")
        print(f"{'':46}{'time':>8} {'bytes moved':>14}")

        with peers(scratch / "server-store", 3, rate) as urls:
            server = urls[0]
            node = scratch / "node"
            # What setting up wrote (the models, the peers' store) is written back first: on
            # separate machines, the peers' writes are not the node's to flush.
            os.sync()
            v1_time, _, _ = node_materialize(v1, [server], node)
            # A node holds v1 for longer than the kernel keeps pages dirty (30 s): written
            # back by the time v2 comes. A reflink of a dirty range waits for that writeback.
            os.sync()
            v2_time, v2_bytes, assembly = node_materialize(v2, [server], node)
            v2_bytes += manifest_bytes
            os.sync()  # as before v1 from one peer: no other writeback in the way
            fresh_time, _, _ = node_materialize(v1, urls, scratch / "node-3-fresh")
            # Again, into the pages that tree held (freed a moment ago, still backed by the
            # host): as on a node that has run a while, whose memory is all page cache.
            shutil.rmtree(scratch / "node-3-fresh")
            three_time, three_bytes, three = node_materialize(v1, urls, scratch / "node-3")
            # The fetching alone (into an empty store, no tree written): what the swarm does
            # where the node's own disk and CPU are not the limit.
            fetch_one = fetch_only(v1, [server], scratch / "fetch-1")
            fetch_three = fetch_only(v1, urls, scratch / "fetch-3")
            # Pre-staged while the proposal waited for its quorum (not timed), then switched.
            os.sync()
            node_materialize(v2, [server], scratch / "node-3", switch=False)
            switch_time, switch_bytes, _ = node_materialize(v2, [server], scratch / "node-3")

            # The same end state as a materialization: the bytes on disk, flushed, hashed.
            full = Counting(HttpChunkSource(server))
            started = time.perf_counter()
            whole = hashlib.sha256()
            with open(scratch / "download.bin", "wb") as sink:
                for entry in v2.files():
                    for chunk in entry.chunks:
                        data = full.get(chunk.sha256)
                        whole.update(data)
                        sink.write(data)
                sink.flush()
                os.fsync(sink.fileno())
            download_time = time.perf_counter() - started

        started = time.perf_counter()
        shutil.copyfile(scratch / "v2/model.bin", scratch / "copy.bin")
        copy_time = time.perf_counter() - started

        def row(label: str, seconds: float, moved: float, note: str = "") -> None:
            print(f"  {label:44}{seconds:7.2f}s {moved / MiB:10.1f} MiB  {note}")

        row("v1 on an empty node, from 1 peer", v1_time, size)
        row(
            "v2 on the node holding v1",
            v2_time,
            v2_bytes,
            f"{download_time / v2_time:.1f}x sooner than the full download, "
            f"{100 * v2_bytes / size:.2f}% of the bytes",
        )
        row(
            "v1 on an empty node, from 3 peers",
            three_time,
            three_bytes,
            f"{v1_time / three_time:.2f}x sooner than from 1 peer",
        )
        row(
            "  ...into memory new to the VM's host",
            fresh_time,
            size,
            f"{v1_time / fresh_time:.2f}x (each fresh page costs the host: see the copy row)",
        )
        row("v1's chunks only, from 1 peer (no tree)", fetch_one, size)
        row(
            "v1's chunks only, from 3 peers (no tree)",
            fetch_three,
            size,
            f"{fetch_one / fetch_three:.2f}x sooner than from 1 peer",
        )
        row(
            "v2 pre-staged, then switched",
            switch_time,
            switch_bytes,
            f"{1000 * switch_time:.0f} ms: the seal checked, `current` renamed",
        )
        row("baseline: full download of v2 to disk", download_time, full.bytes)
        row("baseline: plain local copy of v2", copy_time, size)
        kernel = assembly.reused
        print(
            f"\nv2's bytes: {kernel.cloned / MiB:.1f} MiB reflinked, {kernel.copied / MiB:.1f} "
            f"MiB copied in the kernel, {kernel.direct / MiB:.1f} MiB written past the page "
            f"cache, {kernel.written / MiB:.1f} MiB read and written, "
            f"{assembly.from_store / MiB:.1f} MiB written from the store, "
            f"{assembly.direct / MiB:.1f} MiB written as they arrived, "
            f"{assembly.linked_files} files hard-linked"
        )
        shares = ", ".join(
            f"{stats.bytes / MiB:.0f} MiB ({stats.duplicates} duplicate)" for stats in three.sources
        )
        print(f"v1 from 3 peers, by peer: {shares}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
