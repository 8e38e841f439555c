"""Benchmark: start a new version of a large model by moving only what changed.

One run, on loopback, the chunk server throttled to 100 MB/s (a 1 Gbit/s link):

- v1: a 1 GiB model-like file (a JSON header and weights), built with the `model` builder
  (content-defined chunks) and materialized on an empty node: time and bytes;
- v2: the header edited and 1% of the weights changed, materialized on the node that holds v1:
  time and bytes, against
- the baselines: a full download of v2 through the same throttled server, written to disk and
  flushed (the same end state as a materialization), and a plain local copy of the file (page
  cache, not flushed: the floor of local work).

    .venv/bin/python tests/benchmarks/bench_rapid_start.py [--size-mib 1024] [--rate-mbps 100]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from builders.chunks import MAX_CHUNK, ChunkStore
from builders.http_chunks import ChunkServer, HttpChunkSource
from builders.materialize import materialize
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mbps", type=float, default=100.0, help="MB/s (10^6 bytes)")
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: temp).")
    args = parser.parse_args()
    size = args.size_mib * MiB
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
                TreeBuild(scratch / version, chunking=MODEL_CHUNKING, prefetch=("model.bin",)),
                server_store,
            )
            server_store.put_manifest(manifest.artifact_id, manifest.encode())
            versions[version] = (manifest, time.perf_counter() - started)
        v1, v2 = versions["v1"][0], versions["v2"][0]
        reused = v1.chunk_digests() & v2.chunk_digests()
        print(
            f"model: {args.size_mib} MiB, v2 changes its header and {changed / MiB:.1f} MiB of "
            f"weights; {len(v2.chunk_digests())} chunks, {len(reused)} shared with v1"
        )
        print(f"build v1 {versions['v1'][1]:.1f} s, v2 {versions['v2'][1]:.1f} s (model builder)")
        print(f"link: chunk server on loopback throttled to {args.rate_mbps:g} MB/s\n")
        print(f"{'':44}{'time':>8} {'bytes moved':>14}")

        with ChunkServer(server_store, rate_limit=rate) as server:
            node_store = ChunkStore(scratch / "node-store")
            for label, manifest in (("v1 on an empty node", v1), ("v2 on the node holding v1", v2)):
                source = Counting(HttpChunkSource(server.url))
                started = time.perf_counter()
                materialize(
                    manifest.artifact_id,
                    manifest.encode(),
                    sources=[source],
                    store=node_store,
                    artifacts_root=scratch / "node",
                    workers=4,
                )
                elapsed = time.perf_counter() - started
                print(f"  {label:42}{elapsed:7.2f}s {source.bytes / MiB:10.1f} MiB")

            # The same end state as a materialization: the bytes on disk, flushed, hashed.
            full = Counting(HttpChunkSource(server.url))
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
            elapsed = time.perf_counter() - started
            label = "baseline: full download of v2 to disk"
            print(f"  {label:42}{elapsed:7.2f}s {full.bytes / MiB:10.1f} MiB")

        started = time.perf_counter()
        shutil.copyfile(scratch / "v2/model.bin", scratch / "copy.bin")
        elapsed = time.perf_counter() - started
        print(f"  {'baseline: plain local copy of v2':42}{elapsed:7.2f}s {size / MiB:10.1f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
