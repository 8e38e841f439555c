"""Benchmark: verify a long Human Chain, cold and one step at a time.

A real circle repository (pygit2) with N transitions (default 10,000), each changing a workload
and approved by all three owners (3 SSHSIG approvals per transition, filed in the approvals ref
as `circle approve` files them). Printed, from one run:

- baseline: raw Ed25519 verification of the same 3N signatures (OpenSSL through `cryptography`,
  the signed data and key objects prepared beforehand: only the verify calls are timed);
- cold: the whole chain verified from the introduction (what a new node does);
- incremental: one new transition verified from the persisted node state (what a node does
  on every push), including loading and saving the state file.

Targets (issue 3): cold <= 2x the raw verification; incremental <= 50 ms.

Then the same N transitions in a circle whose rules are all `signatures: hybrid` (issue 16):
each owner also holds an ML-DSA-65 key, and each transition carries 3 SSHSIG and 3 ML-DSA-65
approvals of the same statements (6N signatures). Its baseline is raw Ed25519 verification of
the 3N SSHSIG signatures plus raw ML-DSA-65 verification of the 3N envelopes' signatures (the
statement bytes, context and key objects prepared beforehand), its cold walk and incremental
step are measured as above; same targets. `--no-hybrid` skips it.

Each figure is given in wall-clock seconds and in CPU seconds of this process (every thread:
the cold walk checks signatures ahead on the other cores, the raw baseline runs on one), so
that a machine busy with other work shows how much of a ratio is the walk's own work.

Then the owners' commands on the classic chain's repository (issue 14), as processes an owner
runs:
`circle log`, `circle verify` and `circle review` of a pending change (one unapproved commit
on main), each a first call (no verified-head cache: a cold walk) and a next call (the cache
in the clone's Git folder), beside `git log --oneline | wc -l` on the same repository and the
bare start of the `circle` command (`circle --version`). Target: a next call <= 100 ms.

    .venv/bin/python tests/benchmarks/bench_chain.py [--transitions 10000] [--no-hybrid]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from builders import sshsig
from reconciler.chain import approvals, mldsa, node_state
from reconciler.chain.statements import NAMESPACE
from reconciler.chain.values import NodeState
from reconciler.chain.walk import Chain, Step
from tests.chainsim import NOW, ChainSimulator
from tests.conftest import EXAMPLE

OWNERS = ("alice", "bob", "carol")
# Every rule of the example's policy counts hybrid signatures only.
HYBRID = dict.fromkeys(
    re.findall(r"^    - name: (\S+)$", (EXAMPLE / "circle.yaml").read_text(), re.M), "hybrid"
)


def build(sim: ChainSimulator, transitions: int, *, hybrid: bool) -> list[tuple[bytes, str]]:
    """Commit and approve `transitions` steps (by every owner's SSH key, and with `hybrid` by
    their ML-DSA key too); returns every (statement, signature) filed."""
    filed: list[tuple[bytes, str]] = []
    previous: str | None = None
    batch: list[tuple[bytes, str]] = []
    started = time.perf_counter()
    for seq in range(1, transitions + 1):
        to = sim.first if seq == 1 else sim.scale(seq + 2)
        statement = sim.statement(seq, previous, to)
        batch += sim.sign(statement, *OWNERS)
        if hybrid:
            batch += sim.sign_mldsa(statement, *OWNERS)
        previous = to
        if len(batch) >= 3000 or seq == transitions:
            approvals.add_many(sim.repo, batch)
            filed += batch
            batch = []
            print(f"\r  built {seq}/{transitions} transitions", end="", file=sys.stderr)
    # A node's clone holds packed objects (what a fetch brings), not one file per object.
    subprocess.run(["git", "-C", sim.repo.path, "repack", "-a", "-d", "-q"], check=True)
    print(
        f"\r  built {transitions} transitions in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return filed


@dataclass(frozen=True)
class Timing:
    """Seconds of wall clock, and of CPU (this process's threads together)."""

    wall: float
    cpu: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def timing(run: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass(frozen=True)
class Raw:
    """Raw verification of every filed signature, by kind."""

    ed25519: Timing
    mldsa: Timing
    ed25519_count: int
    mldsa_count: int

    @property
    def total(self) -> Timing:
        return self.ed25519 + self.mldsa


def raw_verify(filed: list[tuple[bytes, str]]) -> Raw:
    """Each signature verified once by `cryptography` (OpenSSL), on this thread: SSHSIG's
    signed data and every key object made beforehand, only the verify calls timed."""
    classic: list[Callable[[], None]] = []
    post_quantum: list[Callable[[], None]] = []
    ed_keys: dict[bytes, Ed25519PublicKey] = {}
    pq_keys: dict[bytes, MLDSA65PublicKey] = {}
    context = NAMESPACE.encode()
    for statement, armored in filed:
        if mldsa.is_envelope(armored):
            envelope = mldsa.parse(armored)
            pq_key = pq_keys.get(envelope.raw_key)
            if pq_key is None:
                pq_key = pq_keys[envelope.raw_key] = MLDSA65PublicKey.from_public_bytes(
                    envelope.raw_key
                )
            post_quantum.append(
                functools.partial(pq_key.verify, envelope.signature, statement, context)
            )
            continue
        parsed = sshsig.parse(armored)
        key = ed_keys.get(parsed.public_key)
        if key is None:
            key = ed_keys[parsed.public_key] = Ed25519PublicKey.from_public_bytes(
                parsed.public_key[-32:]
            )
        signed = b"".join(
            [
                b"SSHSIG",
                len(NAMESPACE).to_bytes(4, "big") + NAMESPACE.encode(),
                (0).to_bytes(4, "big"),
                (6).to_bytes(4, "big") + b"sha512",
                (64).to_bytes(4, "big") + hashlib.sha512(statement).digest(),
            ]
        )
        classic.append(functools.partial(key.verify, parsed.signature, signed))
    return Raw(_timed(classic), _timed(post_quantum), len(classic), len(post_quantum))


def _timed(calls: list[Callable[[], None]]) -> Timing:
    def run() -> None:
        for call in calls:
            call()

    return timing(run)


@dataclass(frozen=True)
class Run:
    """One chain's figures."""

    raw: Raw
    cold: Timing
    incremental: list[float]  # seconds


def measure(sim: ChainSimulator, folder: Path, transitions: int, repeat: int, hybrid: bool) -> Run:
    """Build the chain in `sim`, then time its cold walk and `repeat` incremental steps."""
    filed = build(sim, transitions, hybrid=hybrid)
    intro = sim.intro
    raw = raw_verify(filed)

    walked: list[tuple[list[Step], NodeState | None]] = []
    cold = timing(lambda: walked.append(Chain(sim.repo, intro).walk(NOW)))
    steps, state = walked[0]
    assert state is not None, state
    assert len(steps) == transitions, len(steps)

    state_file = folder / "state.json"
    node_state.save(state_file, state)
    incremental: list[float] = []
    for extra in range(repeat):
        current = node_state.load(state_file)
        assert current is not None
        to = sim.scale(transitions + 10 + extra)
        sim.approve(current.seq + 1, current.commit, to, OWNERS, pq=OWNERS if hybrid else ())
        started = time.perf_counter()
        found = Chain(sim.repo, intro).next(node_state.load(state_file), NOW)
        assert found is not None
        node_state.save(state_file, found[1])
        incremental.append(time.perf_counter() - started)
    return Run(raw, cold, incremental)


def report(title: str, run: Run, transitions: int) -> None:
    raw = run.raw.total
    print(f"\n{title}")
    print(f"{'':44}{'time':>10}{'per transition':>16}{'vs raw':>9}{'cpu':>10}{'vs raw':>9}")
    rows = [("baseline: raw Ed25519 verify of every sig", run.raw.ed25519)]
    if run.raw.mldsa_count:
        rows = [
            ("baseline: raw Ed25519 verify, classic sigs", run.raw.ed25519),
            ("baseline: raw ML-DSA-65 verify, PQ sigs", run.raw.mldsa),
            ("baseline: both (the raw cost)", raw),
        ]
    rows.append(("cold: verify the chain from introduction", run.cold))
    for name, spent in rows:
        print(
            f"{name:44}{spent.wall:>9.2f}s{spent.wall / transitions * 1e6:>13.0f} us"
            f"{spent.wall / raw.wall:>8.2f}x{spent.cpu:>9.2f}s{spent.cpu / raw.cpu:>8.2f}x"
        )
    middle = statistics.median(run.incremental)
    print(f"{'incremental: one new transition (median)':44}{middle * 1000:>8.1f}ms")
    print(
        f"  targets: cold <= 2.00x raw ({run.cold.wall / raw.wall:.2f}x); "
        f"incremental <= 50 ms ({middle * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="incremental measurements")
    parser.add_argument("--no-hybrid", action="store_true", help="skip the hybrid chain")
    arguments = parser.parse_args()
    transitions = arguments.transitions
    with tempfile.TemporaryDirectory() as folder:
        sim = ChainSimulator(Path(folder) / "circle.git")
        classic = measure(sim, Path(folder), transitions, arguments.repeat, hybrid=False)
        owners = owner_commands(Path(folder) / "circle.git", sim)
    hybrid = None
    if not arguments.no_hybrid:
        with tempfile.TemporaryDirectory() as folder:
            sim = ChainSimulator(Path(folder) / "circle.git", pq=OWNERS, signatures=HYBRID)
            hybrid = measure(sim, Path(folder), transitions, arguments.repeat, hybrid=True)

    signatures = classic.raw.ed25519_count
    report(
        f"Human Chain: {transitions} transitions x 3 approvals ({signatures} signatures)",
        classic,
        transitions,
    )
    if hybrid is not None:
        report(
            f"Hybrid Human Chain (every rule `signatures: hybrid`): {transitions} transitions "
            f"x 3 members x (Ed25519 + ML-DSA-65) ({hybrid.raw.ed25519_count} + "
            f"{hybrid.raw.mldsa_count} signatures)",
            hybrid,
            transitions,
        )
    print("  (time: wall clock; cpu: this process's CPU, every thread; the cold walk checks")
    print(f"   signatures on {len(os.sched_getaffinity(0))} cores, the raw baseline on one)")
    print(f"\nOwner commands on the classic chain{'':9}{'first call':>12}{'next call':>12}")
    for name, first, after in owners:
        shown = f"{after * 1000:>10.0f}ms" if after is not None else ""
        print(f"{name:44}{first * 1000:>10.0f}ms{shown:>12}")
    nexts = [after for _, _, after in owners if after is not None]
    print("  (first call: no cache; next call: the kept answer; after a new approval: the")
    print("   verified-head cache walks on, the answer is made afresh)")
    print(f"  target: next call <= 100 ms (slowest: {max(nexts) * 1000:.0f} ms)")


def owner_commands(repo: Path, sim: ChainSimulator) -> list[tuple[str, float, float | None]]:
    """Each command's first call (no cache), its median next call (the kept answer) and, for
    verify and review, the call after an approval was filed (the head cache, no kept answer),
    as a process."""
    sim.scale(99_999)  # a pending change on main: what verify and review judge

    def run(*argv: str) -> float:
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, timeout=600)
        return time.perf_counter() - started

    circle = [sys.executable, "-m", "reconciler"]
    caches = [Path(sim.repo.path) / "circle" / name for name in ("verified.json", "answers.json")]
    rows: list[tuple[str, float, float | None]] = []
    git_log = f"git -C {repo} log --oneline main | wc -l"
    rows.append(("baseline: git log --oneline | wc -l", run("sh", "-c", git_log), None))
    rows.append(("baseline: circle --version (start-up)", run(*circle, "--version"), None))
    for name in ("log", "verify", "review"):
        argv = [*circle, name, "--repo", str(repo), "--sigstore-root", "none"]
        for cache in caches:
            cache.unlink(missing_ok=True)
        first = run(*argv)
        after = statistics.median(run(*argv) for _ in range(5))
        rows.append((f"circle {name}", first, after))
    head = sim.chain().walk(NOW)[1]
    assert head is not None
    pending = str(sim.repo.references["refs/heads/main"].target)
    for index, name in enumerate(("verify", "review")):
        sim.approve(head.seq + 1, head.commit, pending, [OWNERS[index]])  # the answers change
        argv = [*circle, name, "--repo", str(repo), "--sigstore-root", "none"]
        rows.append((f"circle {name}, after a new approval", run(*argv), None))
    key = Path(sim.repo.path) / "carol.key"
    key.write_bytes(
        sim.keys["carol"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    argv = [*circle, "approve", "--repo", str(repo), "--key", str(key), "--sigstore-root", "none"]
    rows.append(("circle approve (signs and files)", run(*argv), None))
    return rows


if __name__ == "__main__":
    main()
