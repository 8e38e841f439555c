"""Benchmark: Quantum Safe Storage put and get against the floor of the same work.

For each shape (4-of-6 and 16-of-20) on local directory backends, in one run:

- floor: AES-256-GCM + zfec encode + sha256 of every block (put) and sha256 of k blocks +
  zfec decode + AES-GCM (get), single-threaded, in memory, same bytes and segment size;
- `Store.put` and `Store.get` with 1 and 2 workers, get healthy and with n-k backends lost;
- the peak RSS of a put, measured in a child process that does nothing else;
- opening an object's data key as a recipient (X-Wing decapsulation + AES-GCM unwrap + the key
  commitment) beside opening it with the storage key (AES-KW + the commitment), and sharing
  it with one more recipient (`--keys-only` runs this part alone).

Targets (issue 5): single-threaded put and get >= 80% of the floor's throughput; 2 workers
>= 1.5x single-threaded; peak RSS of a put under 256 MiB for a 1 GiB object.

    .venv/bin/python tests/benchmarks/bench_qss.py [--size-mib 1024] [--dir /tmp/...]

This is not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import zfec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qss.backends.directory import DirectoryBackend
from qss.codec import DEFAULT_SEGMENT
from qss.keys import generate_key_file, read_key_file
from qss.recipients import Recipient, RecipientKey, seal
from qss.store import Store, open_data_key
from reconciler.secrets import xwing

MiB = 1024 * 1024
SHAPES = [(4, 6), (16, 20)]


def make_input(path: Path, size: int) -> None:
    with open(path, "wb") as sink:
        remaining = size
        while remaining:
            chunk = min(remaining, 16 * MiB)
            sink.write(secrets.token_bytes(chunk))
            remaining -= chunk


def floor(path: Path, k: int, n: int, segment: int) -> tuple[float, float]:
    """Seconds for the pure put and get work, single-threaded, reading the file in segments."""
    aead = AESGCM(secrets.token_bytes(32))
    encoder, decoder = zfec.Encoder(k, n), zfec.Decoder(k, n)
    nonce = bytes(12)
    put_time = get_time = 0.0
    with open(path, "rb") as source:
        while plaintext := source.read(segment):
            started = time.perf_counter()
            ciphertext = aead.encrypt(nonce, plaintext, b"aad")
            size = -(-len(ciphertext) // k)
            padded = ciphertext.ljust(size * k, b"\0")
            primary = tuple(padded[i * size : (i + 1) * size] for i in range(k))
            blocks = encoder.encode(primary)
            hashes = [hashlib.sha256(block).digest() for block in blocks]
            put_time += time.perf_counter() - started

            started = time.perf_counter()
            # As a get after losing n-k backends: the last k blocks, all but one redundant.
            chosen = tuple(range(n - k, n))
            for number in chosen:
                assert hashlib.sha256(blocks[number]).digest() == hashes[number]
            decoded = decoder.decode(tuple(blocks[i] for i in chosen), chosen)
            aead.decrypt(nonce, b"".join(decoded)[: len(ciphertext)], b"aad")
            get_time += time.perf_counter() - started
    return put_time, get_time


def copy_floor(path: Path, root: Path, k: int, n: int, segment: int) -> float:
    """Seconds to write the bytes a put writes (n/k x the object) as plain files, one per
    block, into n folders, then flush them: the disk's share of a put, with no computing."""
    started = time.perf_counter()
    folders = [root / f"copy{index:02d}" for index in range(n)]
    for folder in folders:
        folder.mkdir(parents=True)
    with open(path, "rb") as source:
        index = 0
        while plaintext := source.read(segment):
            size = -(-(len(plaintext) + 16) // k)
            for folder in folders:
                (folder / str(index)).write_bytes(plaintext[:size].ljust(size, b"\0"))
            index += 1
    os.sync()
    elapsed = time.perf_counter() - started
    for folder in folders:
        shutil.rmtree(folder)
    return elapsed


def backends(root: Path, n: int) -> list[DirectoryBackend]:
    found = []
    for index in range(n):
        folder = root / f"b{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        found.append(DirectoryBackend(folder, name=f"b{index:02d}", failure_domain=f"d{index % 3}"))
    return found


def child_put(args: argparse.Namespace) -> None:
    """Run one put in this process and report its time and peak RSS as JSON."""
    store = Store(backends(Path(args.root), args.n), workers=args.workers)
    started = time.perf_counter()
    result = store.put(
        Path(args.input), storage_key=read_key_file(Path(args.key)), k=args.k, n=args.n
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "peak": peak, "object": result.manifest.object_id}))


def run_put(root: Path, data: Path, key: Path, k: int, n: int, workers: int) -> dict[str, float]:
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-put",
            "--root",
            str(root),
            "--input",
            str(data),
            "--key",
            str(key),
            "--k",
            str(k),
            "--n",
            str(n),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def key_opening(scratch: Path, rounds: int = 500) -> None:
    """Per call, the cost of opening a data key each way, and of sealing one entry."""
    root = scratch / "keys"
    store = Store(backends(root, 3))
    source = scratch / "small.bin"
    source.write_bytes(secrets.token_bytes(4096))
    storage_key = secrets.token_bytes(32)
    key = xwing.generate()
    recipient = Recipient("node-a", key.public_bytes)
    manifest = store.put(
        source, storage_key=storage_key, k=2, n=3, recipients=[recipient],
        encapsulate=xwing.encapsulate,
    ).manifest  # fmt: skip
    opener = RecipientKey("node-a", key.public_bytes, partial(xwing.decapsulate, key))
    figures: dict[str, Callable[[], object]] = {
        "open by storage key": lambda: open_data_key(manifest, storage_key=storage_key),
        "open as a recipient": lambda: open_data_key(manifest, recipient=opener),
        "seal one entry": lambda: seal(manifest.object_id, bytes(32), recipient, xwing.encapsulate),
    }
    print(f"data key, {rounds} rounds each:")
    for label, work in figures.items():
        started = time.perf_counter()
        for _ in range(rounds):
            work()
        each = (time.perf_counter() - started) / rounds
        print(f"  {label:26}{each * 1e6:8.1f} us")
    shutil.rmtree(root)


def rate(size: int, seconds: float) -> str:
    return f"{size / MiB / seconds:8.1f} MiB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None, help="Scratch folder (default: temp).")
    parser.add_argument("--keys-only", action="store_true", help="Only the data key figures.")
    parser.add_argument("--child-put", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_put:
        child_put(args)
        return

    size = args.size_mib * MiB
    scratch = Path(tempfile.mkdtemp(prefix="bench-qss-", dir=args.dir))
    try:
        key_opening(scratch)
        if args.keys_only:
            return
        data = scratch / "object.bin"
        make_input(data, size)
        key = scratch / "storage.key"
        generate_key_file(key)
        print(
            f"object: {args.size_mib} MiB, segments of {DEFAULT_SEGMENT // MiB} MiB, "
            f"{os.cpu_count()} CPUs, directory backends under {scratch}"
        )
        print(f"{'':28}{'time':>9} {'throughput':>15} {'vs floor':>9} {'peak RSS':>10}")
        for k, n in SHAPES:
            put_floor, get_floor = floor(data, k, n, DEFAULT_SEGMENT)
            print(f"{k}-of-{n}")
            print(f"  {'floor put (1 thread)':26}{put_floor:8.2f}s {rate(size, put_floor)}")
            print(f"  {'floor get, n-k lost':26}{get_floor:8.2f}s {rate(size, get_floor)}")
            disk = copy_floor(data, scratch, k, n, DEFAULT_SEGMENT)
            print(f"  {'plain copy of the shares':26}{disk:8.2f}s {rate(size, disk)}")
            single_put = 0.0
            for workers in (1, 2):
                root = scratch / f"{k}-of-{n}-w{workers}"
                put = run_put(root, data, key, k, n, workers)
                seconds = put["seconds"]
                single_put = single_put or seconds
                label = f"put, {workers} worker(s)"
                speedup = f"  {single_put / seconds:.2f}x single" if workers == 2 else ""
                print(
                    f"  {label:26}{seconds:8.2f}s {rate(size, seconds)} "
                    f"{put_floor / seconds:8.0%} {put['peak'] / MiB:8.0f} MiB{speedup}"
                )
                store = Store(backends(root, n), workers=workers)
                storage_key = read_key_file(key)
                for lost in (0, n - k):
                    for victim in range(lost):
                        shutil.rmtree(root / f"b{victim:02d}")
                        (root / f"b{victim:02d}").mkdir()
                    out = scratch / "out.bin"
                    started = time.perf_counter()
                    store.get(put["object"], out, storage_key=storage_key)
                    seconds = time.perf_counter() - started
                    label = f"get, {workers} worker(s), {lost} lost"
                    share = get_floor / seconds
                    print(f"  {label:26}{seconds:8.2f}s {rate(size, seconds)} {share:8.0%}")
                    out.unlink()
                shutil.rmtree(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
