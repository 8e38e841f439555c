"""Benchmark: what sealing and releasing a secret costs, beside the raw primitives in the same run.

A secret value (an API key, 64 bytes; `--value-bytes` for another size) sealed with
`reconciler.secrets.seal` for 3 and for 10 nodes (X-Wing: X25519 + ML-KEM-768, AES-256-GCM;
the whole Secret document made and validated, as `circle secret seal` makes it), and released
on a node as the agent does when it starts a replica: `reconciler.node.secrets.Releaser` (the
pinned-artifact check, the binding checks, X-Wing decapsulation and both AES-256-GCM opens)
and, when run as root, the hand-over too (`mount_secrets`: the replica's private tmpfs and its
0400 file, then `unmount_secrets`). Printed beside, measured in the same run with
`cryptography`'s key objects made beforehand (only the operation timed):

- raw ML-KEM-768 encapsulation and decapsulation, and raw X25519 (an ephemeral key made and
  exchanged, as an encapsulation does; an exchange alone, as a decapsulation does);
- X-Wing encapsulation and decapsulation (`reconciler.secrets.xwing`: both halves and the
  SHA3-256 combiner);
- raw ML-DSA-65 sign and verify beside Ed25519 sign and verify (a 600-byte message, the size
  of an approval statement), what a hybrid approval costs over a classic one.

Each figure is the median of `--rounds` rounds, a round the mean of `--count` operations.

    .venv/bin/python tests/benchmarks/bench_secrets.py [--count 200] [--rounds 5]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reconciler.desired.documents import Loaded
from reconciler.desired.model import Secret, Workload
from reconciler.desired.model.circle import Circle
from reconciler.desired.repository import DesiredState
from reconciler.node.runtime import Work
from reconciler.node.secrets import Releaser, mount_secrets, unmount_secrets
from reconciler.plan import ArtifactDigest, Assignment, CommitId, NodeName, WorkloadName
from reconciler.secrets import seal, xwing

CIRCLE = "bench-circle"
WORKLOAD = "langid"
SECRET = "api-key"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "c0" * 20
UID = 431_000  # the replica's uid: only owns the tmpfs and its file
US = 1e6


def timed(operation: Callable[[], object], count: int, rounds: int) -> float:
    """The median over `rounds` of the mean seconds of one `operation` (of `count` in a row)."""
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            operation()
        means.append((time.perf_counter() - started) / count)
    return statistics.median(means)


def nodes(count: int) -> dict[str, xwing.XWingPrivateKey]:
    return {f"node-{index:02d}": xwing.generate() for index in range(count)}


def work_for(secret: Secret, node: str) -> Work:
    """The agent's view of one replica of the secret's workload at the applied commit: the
    workload names the secret, runs the pinned artifact, on `node`."""
    workload = Workload.model_validate(
        {
            "apiVersion": "circle/v1",
            "kind": "Workload",
            "name": WORKLOAD,
            "artifact": {"build": WORKLOAD, "digest": DIGEST},
            "command": ["true"],
            "replicas": 1,
            "resources": {"cpu": "500m", "memory": 64 << 20},
            "secrets": [{"secret": SECRET, "env": "API_KEY_FILE"}],
        }
    )
    circle = cast(Any, Circle).model_construct(id=CIRCLE)
    desired = DesiredState(
        circle=cast(Any, Loaded)("circle.yaml", circle, None, ""),
        secrets={SECRET: cast(Any, Loaded)(f"secrets/{SECRET}.yaml", secret, None, "")},
    )
    assignment = Assignment(
        WorkloadName(WORKLOAD), 0, NodeName(node), CommitId(COMMIT), 1,
        ArtifactDigest(DIGEST), 500, 64 << 20, (), 1,
    )  # fmt: skip
    return Work(assignment, workload, desired)


Row = tuple[str, float, str]  # figure, seconds per operation, what it is measured beside


def measure(count: int, rounds: int, value_bytes: int, scratch: Path) -> list[Row]:
    value = secrets.token_bytes(value_bytes)
    binding = seal.Binding(CIRCLE, SECRET, (WORKLOAD,), (DIGEST,))
    rows: list[Row] = []

    # -- the raw primitives: key objects made beforehand, only the operation timed -----------
    mlkem_private = MLKEM768PrivateKey.generate()
    mlkem_public = mlkem_private.public_key()
    _, mlkem_ciphertext = mlkem_public.encapsulate()
    x_private, x_peer = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    rows += [
        ("raw ML-KEM-768 encapsulate", timed(mlkem_public.encapsulate, count, rounds), ""),
        (
            "raw ML-KEM-768 decapsulate",
            timed(lambda: mlkem_private.decapsulate(mlkem_ciphertext), count, rounds),
            "",
        ),
        (
            "raw X25519 ephemeral key + exchange",
            timed(lambda: X25519PrivateKey.generate().exchange(x_peer), count, rounds),
            "",
        ),
        ("raw X25519 exchange", timed(lambda: x_private.exchange(x_peer), count, rounds), ""),
    ]
    kem = xwing.generate()
    _, kem_ciphertext = xwing.encapsulate(kem.public_bytes)
    rows += [
        (
            "X-Wing encapsulate (ML-KEM + X25519 + SHA3)",
            timed(lambda: xwing.encapsulate(kem.public_bytes), count, rounds),
            "ML-KEM encapsulate + X25519 ephemeral",
        ),
        (
            "X-Wing decapsulate",
            timed(lambda: xwing.decapsulate(kem, kem_ciphertext), count, rounds),
            "ML-KEM decapsulate + X25519 exchange",
        ),
    ]

    # -- seal: the whole Secret document, for 3 and for 10 nodes -----------------------------
    for size in (3, 10):
        keys = nodes(size)
        lines = {name: key.public_key_line(name) for name, key in keys.items()}
        per_seal = timed(functools.partial(seal.seal, value, binding, lines), count, rounds)
        rows.append((f"seal for {size} nodes", per_seal, f"{size} x X-Wing encapsulate"))
        rows.append((f"  per node, sealing for {size}", per_seal / size, "X-Wing encapsulate"))

    # -- release on one node of ten, as the agent does when it starts the replica ------------
    keys = nodes(10)
    secret = seal.seal(
        value, binding, {name: key.public_key_line(name) for name, key in keys.items()}
    )
    node, key = next(iter(keys.items()))
    release = Releaser(node, key)
    work = work_for(secret, node)
    assert release(work) == {SECRET: value}
    rows.append(
        ("release: checks + decrypt (Releaser)", timed(lambda: release(work), count, rounds),
         "X-Wing decapsulate")
    )  # fmt: skip
    if os.geteuid() == 0:
        folder = scratch / "secrets" / WORKLOAD / "0"

        def hand_over() -> None:
            mount_secrets(folder, UID, release(work))
            unmount_secrets(folder)

        rows.append(
            ("release + tmpfs mount, 0400 file, unmount", timed(hand_over, count, rounds),
             "X-Wing decapsulate")
        )  # fmt: skip

    # -- signatures: ML-DSA-65 beside Ed25519 -----------------------------------------------
    message = secrets.token_bytes(600)
    context = b"circle-approval-v1"
    mldsa_key, ed_key = MLDSA65PrivateKey.generate(), Ed25519PrivateKey.generate()
    mldsa_public, ed_public = mldsa_key.public_key(), ed_key.public_key()
    mldsa_signature = mldsa_key.sign(message, context)
    ed_signature = ed_key.sign(message)
    rows += [
        ("raw Ed25519 sign", timed(lambda: ed_key.sign(message), count, rounds), ""),
        (
            "raw ML-DSA-65 sign",
            timed(lambda: mldsa_key.sign(message, context), count, rounds),
            "Ed25519 sign",
        ),
        (
            "raw Ed25519 verify",
            timed(lambda: ed_public.verify(ed_signature, message), count, rounds),
            "",
        ),
        (
            "raw ML-DSA-65 verify",
            timed(lambda: mldsa_public.verify(mldsa_signature, message, context), count, rounds),
            "Ed25519 verify",
        ),
    ]
    return rows


def report(rows: list[Row], count: int, rounds: int, value_bytes: int) -> None:
    by_name = {name.strip(): seconds for name, seconds, _ in rows}
    baselines = {
        "ML-KEM encapsulate + X25519 ephemeral": by_name["raw ML-KEM-768 encapsulate"]
        + by_name["raw X25519 ephemeral key + exchange"],
        "ML-KEM decapsulate + X25519 exchange": by_name["raw ML-KEM-768 decapsulate"]
        + by_name["raw X25519 exchange"],
        "X-Wing encapsulate": by_name["X-Wing encapsulate (ML-KEM + X25519 + SHA3)"],
        "X-Wing decapsulate": by_name["X-Wing decapsulate"],
        "3 x X-Wing encapsulate": 3 * by_name["X-Wing encapsulate (ML-KEM + X25519 + SHA3)"],
        "10 x X-Wing encapsulate": 10 * by_name["X-Wing encapsulate (ML-KEM + X25519 + SHA3)"],
        "Ed25519 sign": by_name["raw Ed25519 sign"],
        "Ed25519 verify": by_name["raw Ed25519 verify"],
    }
    print(
        f"Sealed secrets ({value_bytes}-byte value) and post-quantum signatures: medians of "
        f"{rounds} rounds of {count}\n"
    )
    print(f"{'figure':46}{'time':>11}  {'vs':10}baseline")
    for name, seconds, beside in rows:
        ratio = f"{seconds / baselines[beside]:>7.2f}x" if beside else ""
        print(f"{name:46}{seconds * US:>8.1f} us  {ratio:10}{beside}")
    print(
        "\nseal: the Secret document for every node (AES-256-GCM of the value, one X-Wing "
        "encapsulation\nand key wrap a node, the document validated); release: what the agent "
        "does as the replica starts"
    )
    if os.geteuid() != 0:
        print("(not root: the tmpfs hand-over is not measured)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="operations a round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each figure")
    parser.add_argument("--value-bytes", type=int, default=64, help="size of the secret")
    args = parser.parse_args()
    if not 1 <= args.value_bytes <= 64 * 1024:
        print("bench_secrets: --value-bytes must be 1 to 65536", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-secrets-") as scratch:
        rows = measure(max(1, args.count), max(1, args.rounds), args.value_bytes, Path(scratch))
    report(rows, max(1, args.count), max(1, args.rounds), args.value_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
