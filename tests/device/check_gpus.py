"""The GPU machine check: the GPUs a node agent sees here and gives its workloads.

Every step goes through the real code paths, on the real driver. Run as root on the GPU machine:

    python3 tests/device/check_gpus.py [--fake] [--keep]

(a) inventory: `reconciler.node.inventory.read_inventory` with the real `pynvml` lists every
    GPU (UUID, model, memory, healthy, utilization), each healthy, the same as `nvidia-smi`
    lists (UUIDs, names, memory) when it is installed;
(b) device nodes: `gpu_device_nodes(None, [uuid])` names `/dev/nvidia<minor>` (a character
    device, major 195, its NVML minor) and the NVIDIA control devices the host has, and
    refuses a UUID that is not there;
(c) isolation: a workload started through a real `Runtime` (bubblewrap, setpriv, control
    groups, the shim) with an assignment of one GPU sees exactly that GPU: only its device
    node and the control devices under /dev, CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES
    equal to its UUID, and `nvidia-smi -L` inside (when nvidia-smi is under /usr, which the
    sandbox shows) lists that one GPU; a workload given no GPU sees no NVIDIA device, an empty
    CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES=void.

It reads and never changes GPU settings (no reset, no clocks, no persistence mode, no module
loading). What it needs and lacks it says plainly: Python packages (installed into a private
folder from the wheels `tests/device/prepare.sh` carried), bubblewrap (from the carried .deb,
else `apt-get install`), root, cgroups.

`--fake` runs every step on a machine without a GPU: `FakeNvml` (tests/reconciler/node/
fake_nvml.py) stands in for the driver and two stand-in device nodes plus /dev/nvidiactl are
made for the run (character devices with /dev/null's numbers) and removed after. A fake run
exercises this script and the runtime's GPU plumbing, and says nothing about any GPU.

Exit status: 0 when every check passed, 1 when one failed, 2 when something it needs is
missing (it did not get to check everything).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CARRIED = REPO / ".ci" / "cache" / "device"  # what prepare.sh fetched (git ignores it)
SITE = Path(tempfile.gettempdir()) / "circle-device-site"
# The third-party modules the runtime, the inventory and the test harness import.
MODULES = (
    "annotated_types", "bcrypt", "cffi", "cryptography", "psutil", "pydantic", "pydantic_core",
    "pyfastcdc", "pynvml", "pytest", "rfc8785", "ruamel.yaml", "typing_extensions",
    "typing_inspection", "zfec",
)  # fmt: skip
NVIDIA_MAJOR = 195
MIB = 1 << 20
GIB = 1 << 30
UIDS = (430_000, 430_999)
DONE = "== done"
SMI_LINE = re.compile(r"GPU (\d+): (.*) \(UUID: (GPU-[0-9a-fA-F-]+)\)")
FAKE_UUIDS = (
    "GPU-fa4e0000-0000-4000-8000-000000000001",
    "GPU-fa4e0000-0000-4000-8000-000000000002",
)
FAKE_MINORS = (250, 251)  # far from any real board's minor


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, verdict: str, name: str, detail: str = "") -> None:
        self.lines.append((verdict, name, detail))
        text = f"{verdict:7} {name}"
        print(f"{text}: {detail}" if detail else text, flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.add("PASS" if ok else "FAIL", name, detail)
        return ok

    def note(self, text: str) -> None:
        print(f"        {text}", flush=True)

    def count(self, verdict: str) -> int:
        return sum(1 for line in self.lines if line[0] == verdict)

    def status(self) -> int:
        if self.count("MISSING"):
            return 2
        return 1 if self.count("FAIL") else 0


# -- what it needs -------------------------------------------------------------------------------


def python_modules(report: Report) -> bool:
    """The project's third-party modules, from the carried wheels when they are missing."""
    sys.path.insert(0, str(REPO))
    missing = [name for name in MODULES if not _importable(name)]
    wheels = sorted((CARRIED / "wheels").glob("*.whl"))
    if missing and wheels:
        print(f"installing {len(wheels)} carried wheels into {SITE} ({', '.join(missing)} missing)")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             "--no-compile", "--upgrade", "--target", str(SITE), *map(str, wheels)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            report.note(f"pip said: {done.stderr.strip()[-400:]}")
        sys.path.insert(0, str(SITE))
        importlib.invalidate_caches()
        missing = [name for name in MODULES if not _importable(name)]
    if missing:
        report.add(
            "MISSING",
            "Python modules",
            f"{', '.join(missing)} cannot be imported by {sys.executable} "
            f"({sys.version.split()[0]}); run `bash tests/device/prepare.sh` on a machine with "
            "a network and carry .ci/cache/device",
        )
        return False
    return True


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def sandbox_tools(report: Report) -> bool:
    """Root, bubblewrap (installed when it can be), setpriv: what the runtime runs."""
    from reconciler.node.sandbox import BWRAP, SETPRIV

    if os.geteuid() != 0:
        report.add("MISSING", "root", "the runtime runs sandboxes as root (bubblewrap, cgroups)")
        return False
    tried = [] if os.access(BWRAP, os.X_OK) else _install_bubblewrap()
    if not os.access(BWRAP, os.X_OK):
        report.add(
            "MISSING",
            "bubblewrap",
            f"{BWRAP} is not installed ({'; '.join(tried) or 'nothing to install it with'}); "
            "carry .ci/cache/device/bubblewrap_*.deb (tests/device/prepare.sh fetches it)",
        )
        return False
    if tried:
        report.note(f"bubblewrap installed: {tried[-1]}")
    if not os.access(SETPRIV, os.X_OK):
        report.add("MISSING", "setpriv", f"{SETPRIV} (util-linux) is not installed")
        return False
    return True


def _install_bubblewrap() -> list[str]:
    """Try the carried .deb, then apt-get; what each attempt said."""
    tried = []
    for deb in sorted(CARRIED.glob("bubblewrap_*.deb")):
        if shutil.which("dpkg"):
            tried.append(_attempt(["dpkg", "-i", str(deb)], f"dpkg -i {deb.name}"))
    if not tried and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "bubblewrap"]
        tried.append(_attempt(argv, "apt-get install -y bubblewrap", env))
    return tried


def _attempt(argv: list[str], label: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        return f"{label}: no answer in 60 s"
    said = (done.stderr or done.stdout).strip().splitlines()
    return f"{label}: exit {done.returncode}" + (f" ({said[-1][:160]})" if said else "")


# -- the fake ------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_devices(report: Report) -> Iterator[Any]:
    """FakeNvml with two GPUs, and stand-in device nodes for them and /dev/nvidiactl."""
    from tests.reconciler.node.fake_nvml import FakeGpu, FakeNvml

    present = sorted(str(path) for path in Path("/dev").glob("nvidia*"))
    if present:
        raise SystemExit(f"--fake refused: this machine has NVIDIA devices ({', '.join(present)})")
    made = [f"/dev/nvidia{minor}" for minor in FAKE_MINORS] + ["/dev/nvidiactl"]
    gpus = tuple(
        FakeGpu(uuid, "NVIDIA H200 (fake)", 141 * GIB, 1 * GIB, 3, minor=minor)
        for uuid, minor in zip(FAKE_UUIDS, FAKE_MINORS, strict=True)
    )
    print("FAKE RUN: NVML is FakeNvml (tests/reconciler/node/fake_nvml.py); stand-in devices")
    print(f"{', '.join(made)} (char 1:3, /dev/null's numbers) exist for this run only.\n")
    try:
        for path in made:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        yield FakeNvml(gpus)
    finally:
        for path in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# -- (a) the inventory ---------------------------------------------------------------------------


def inventory(report: Report, nvml: Any, state: Path) -> list[Any]:
    """(a): the GPUs as the agent registers them, beside nvidia-smi's list."""
    import pynvml

    from reconciler.node.inventory import read_inventory

    if nvml is None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            report.check("(a) NVML starts", False, f"no GPU: {error} (no driver or libnvidia-ml)")
            return []
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        report.check("(a) NVML starts", True, f"driver {driver}")
    gpus = list(read_inventory(state, nvml).gpus)
    if not report.check("(a) read_inventory finds GPUs", bool(gpus), f"{len(gpus)} GPU(s)"):
        return []
    for gpu in gpus:
        used = "?" if gpu.memory_used is None else f"{gpu.memory_used / GIB:.1f}"
        util = "not reported" if gpu.utilization is None else f"{gpu.utilization}%"
        report.check(
            f"(a) {gpu.uuid}",
            gpu.healthy and gpu.memory > 0 and gpu.model != "unknown",
            f"{gpu.model}, {gpu.memory / GIB:.1f} GiB ({used} GiB used), utilization {util}, "
            f"{'healthy' if gpu.healthy else 'UNHEALTHY (the agent log says why)'}",
        )
    if nvml is not None:
        report.add("SKIP", "(a) nvidia-smi agrees", "a fake run: nvidia-smi describes no fake")
    else:
        _compare_with_smi(report, gpus)
    return gpus


def _compare_with_smi(report: Report, gpus: list[Any]) -> None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        report.add("SKIP", "(a) nvidia-smi agrees", "nvidia-smi is not on PATH")
        return
    listed = _smi(smi, ["-L"])
    found = {m.group(3): m.group(2) for m in map(SMI_LINE.match, listed.splitlines()) if m}
    ours = {gpu.uuid: gpu.model for gpu in gpus}
    report.check(
        "(a) nvidia-smi -L lists the same GPUs", found == ours, f"nvidia-smi {found}, ours {ours}"
    )
    query = _smi(smi, ["--query-gpu=uuid,memory.total", "--format=csv,noheader,nounits"])
    totals = {}
    for line in query.splitlines():
        uuid, _, total = (part.strip() for part in line.partition(","))
        if total.isdigit():
            totals[uuid] = int(total)
    far = [
        f"{gpu.uuid}: {totals.get(gpu.uuid)} MiB vs {gpu.memory // MIB} MiB"
        for gpu in gpus
        if gpu.uuid not in totals or abs(totals[gpu.uuid] - gpu.memory // MIB) > 1
    ]
    report.check("(a) nvidia-smi memory.total agrees", not far, "; ".join(far) or "within 1 MiB")


def _smi(smi: str, arguments: list[str]) -> str:
    try:
        done = subprocess.run([smi, *arguments], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


# -- (b) the device nodes ------------------------------------------------------------------------


def device_nodes(report: Report, nvml: Any, gpus: list[Any]) -> dict[str, tuple[str, ...]]:
    """(b): each GPU's device nodes as the runtime binds them."""
    from reconciler.node.inventory import gpu_device_nodes
    from reconciler.node.sandbox import NVIDIA_CONTROL, SandboxError

    control = tuple(path for path in NVIDIA_CONTROL if os.path.exists(path))
    here = ", ".join(control) or "none"
    report.check("(b) /dev/nvidiactl exists", "/dev/nvidiactl" in control, f"control: {here}")
    if "/dev/nvidia-uvm" not in control:
        report.add(
            "WARN",
            "(b) /dev/nvidia-uvm is missing",
            "CUDA programs need it; it appears once the nvidia-uvm module is loaded "
            "(this check loads nothing)",
        )
    nodes: dict[str, tuple[str, ...]] = {}
    for gpu in gpus:
        try:
            given = gpu_device_nodes(nvml, [gpu.uuid])
        except SandboxError as error:
            report.check(f"(b) gpu_device_nodes({gpu.uuid})", False, str(error))
            continue
        main, rest = given[0], given[1:]
        problems = [] if re.fullmatch(r"/dev/nvidia\d+", main) else [f"{main} is not /dev/nvidiaN"]
        problems += [f"{path} does not exist" for path in given if not os.path.exists(path)]
        if not problems:
            mode = os.stat(main)
            if not stat.S_ISCHR(mode.st_mode):
                problems.append(f"{main} is not a character device")
            else:
                numbers = (os.major(mode.st_rdev), os.minor(mode.st_rdev))
                wanted = (NVIDIA_MAJOR, int(main.removeprefix("/dev/nvidia")))
                if nvml is None and numbers != wanted:  # a fake's stand-ins are /dev/null's
                    problems.append(
                        f"{main} is {numbers[0]}:{numbers[1]}, not {wanted[0]}:{wanted[1]}"
                    )
        if rest != control:
            problems.append(f"control devices {rest}, the host has {control}")
        detail = "; ".join(problems) or ", ".join(given)
        if report.check(f"(b) gpu_device_nodes({gpu.uuid})", not problems, detail):
            nodes[gpu.uuid] = given
    absent = "GPU-00000000-0000-4000-8000-00000000dead"
    try:
        gpu_device_nodes(nvml, [absent])
        report.check("(b) a GPU not on this node is refused", False, "no SandboxError")
    except SandboxError as error:
        report.check("(b) a GPU not on this node is refused", True, str(error))
    return nodes


# -- (c) isolation, through a real runtime -------------------------------------------------------


# Run inside each sandbox: what it sees of the GPUs, then it waits to be stopped.
PROBE = """\
for f in /dev/nvidia*; do [ -e "$f" ] && echo "device: $f"; done
echo "uid: $(id -u)"
echo "cuda: [$CUDA_VISIBLE_DEVICES]"
echo "nvidia: [$NVIDIA_VISIBLE_DEVICES]"
if [ -n "$SMI" ]; then
    out=$("$SMI" -L 2>&1); code=$?
    printf '%s\\n' "$out" | sed 's/^/smi: /'
    echo "smi-exit: $code"
fi
echo "{done}"
exec sleep 3600
"""


@dataclass(frozen=True)
class Seen:
    devices: tuple[str, ...]
    cuda: str
    nvidia: str
    smi: tuple[str, ...] | None  # nvidia-smi -L's lines, None when it was not run
    smi_exit: int | None
    uid: str


def isolation(report: Report, nvml: Any, nodes: dict[str, tuple[str, ...]], root: Path) -> None:
    """(c): one workload given one GPU, one given none, each through a real Runtime."""
    from builders.chunks import ChunkStore
    from builders.tree import TreeBuild, build_tree
    from reconciler.desired.repository import DesiredState
    from reconciler.node.artifacts import Artifacts
    from reconciler.node.cgroups import CgroupError, Cgroups
    from reconciler.node.inventory import gpu_device_nodes
    from reconciler.node.runtime import Runtime, RuntimeConfig, Work
    from reconciler.node.uids import UidTable
    from reconciler.node.volumes import Volumes
    from reconciler.plan import (
        ArtifactDigest,
        Assignment,
        CommitId,
        GpuUuid,
        NodeName,
        WorkloadName,
    )
    from tests.reconciler.node.runtime_world import NODE, release_cgroups, workload_document

    if not nodes:
        report.add("SKIP", "(c) isolation", "no GPU passed (b)")
        return
    uuid, expected = next(iter(nodes.items()))
    smi, env = _smi_inside(report, nvml)
    source = ChunkStore(root / "source")
    (root / "probe").mkdir()
    (root / "probe" / "probe.sh").write_text(PROBE.format(done=DONE))
    manifest = build_tree(TreeBuild(root / "probe", labels={"builder": "archive"}), source)
    source.put_manifest(manifest.artifact_id, manifest.encode())
    state = root / "state"
    state.mkdir(mode=0o700)
    parent = f"circle-gpu-check-{secrets.token_hex(4)}"
    try:
        cgroups = Cgroups.detect(parent)
    except CgroupError as error:
        report.add("MISSING", "cgroups", str(error))
        return
    artifacts = Artifacts(state, lambda: [source])
    runtime = Runtime(
        RuntimeConfig(state, NODE, grace=2.0),
        artifacts=artifacts,
        volumes=Volumes(state, None, artifacts),
        cgroups=cgroups,
        uids=UidTable(state / "uids.json", UIDS),
        gpu_devices=lambda uuids: gpu_device_nodes(nvml, uuids),
    )
    works = {}
    for name, gpus in (("gpu-check", (uuid,)), ("no-gpu-check", ())):
        resources: dict[str, Any] = {"cpu": "500m", "memory": 256 * MIB}
        if gpus:
            resources["gpu"] = {"count": 1}
        workload = workload_document(
            name, manifest.artifact_id, ["/bin/sh", "/artifact/probe.sh"],
            env={"SMI": smi or "", **env}, resources=resources,
        )  # fmt: skip
        assignment = Assignment(
            WorkloadName(name), 0, NodeName(NODE), CommitId("c0" * 20), 1,
            ArtifactDigest(manifest.artifact_id), 500, 256 * MIB,
            tuple(GpuUuid(g) for g in gpus), 1,
        )  # fmt: skip
        works[(name, 0)] = Work(assignment, workload, DesiredState())
    try:
        runtime.sync(works)
        given = _seen(report, runtime, state, "gpu-check")
        bare = _seen(report, runtime, state, "no-gpu-check")
    finally:
        runtime.close(stop=True)
        release_cgroups(parent)
    if given is not None:
        _judge_given(report, given, uuid, expected, smi)
    if bare is not None:
        _judge_bare(report, bare, smi)


def _smi_inside(report: Report, nvml: Any) -> tuple[str | None, dict[str, str]]:
    """nvidia-smi's path if the sandbox shows it (under /usr), and the library path it needs
    there (the host's LD_LIBRARY_PATH folders under /usr, declared as the workload's env)."""
    if nvml is not None:
        report.add("SKIP", "(c) nvidia-smi inside", "a fake run: no driver to ask")
        return None, {}
    found = shutil.which("nvidia-smi")
    path = os.path.realpath(found) if found else None
    if path is None or not path.startswith("/usr/"):
        where = path or "not installed"
        report.add("SKIP", "(c) nvidia-smi inside", f"nvidia-smi is {where}: only /usr is inside")
        return None, {}
    host = os.environ.get("LD_LIBRARY_PATH", "")
    folders = [folder for folder in host.split(":") if folder.startswith("/usr/")]
    if folders:
        report.note(f"the workloads declare LD_LIBRARY_PATH={':'.join(folders)} (as the host has)")
    return path, {"LD_LIBRARY_PATH": ":".join(folders)} if folders else {}


def _seen(report: Report, runtime: Any, state: Path, name: str) -> Seen | None:
    """What the probe in `name`'s sandbox printed (its log), once it is done."""
    from reconciler.node.logs import read_log, replica_log_dir

    folder = replica_log_dir(state, name, 0)
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while time.monotonic() < deadline:
        if folder.is_dir():
            lines = [line.text for line in read_log(folder)]
            if DONE in lines:
                break
        time.sleep(0.05)
    else:
        statuses = [s for s in runtime.statuses() if s.workload == name]
        events = [f"{e.reason}: {e.message}" for e in runtime.take_events()]
        detail = f"no probe output in 30 s; status {statuses}; events {events}; log {lines[-5:]}"
        report.check(f"(c) {name} runs", False, detail)
        return None
    lines = lines[: lines.index(DONE)]

    def value(key: str) -> str:
        found = [line.removeprefix(key) for line in lines if line.startswith(key)]
        return found[-1] if found else ""

    def every(key: str) -> tuple[str, ...]:
        return tuple(line.removeprefix(key) for line in lines if line.startswith(key))

    exit_text = value("smi-exit: ")
    smi = every("smi: ")
    seen = Seen(
        devices=every("device: "),
        cuda=value("cuda: ").strip("[]"),
        nvidia=value("nvidia: ").strip("[]"),
        smi=smi if exit_text else None,
        smi_exit=int(exit_text) if exit_text.isdigit() else None,
        uid=value("uid: "),
    )
    ok = seen.uid.isdigit() and seen.uid != "0"
    report.check(f"(c) {name} runs in its sandbox", ok, f"as uid {seen.uid}")
    return seen


def _judge_given(
    report: Report, seen: Seen, uuid: str, expected: tuple[str, ...], smi: str | None
) -> None:
    sees = ", ".join(seen.devices) or "none"
    report.check(
        "(c) the GPU workload sees only its device nodes",
        sorted(seen.devices) == sorted(expected),
        f"sees {sees}; given {', '.join(expected)}",
    )
    report.check("(c) its CUDA_VISIBLE_DEVICES is its GPU", seen.cuda == uuid, seen.cuda)
    report.check("(c) its NVIDIA_VISIBLE_DEVICES is its GPU", seen.nvidia == uuid, seen.nvidia)
    if smi is not None and seen.smi is not None:
        listed = [m.group(3) for m in map(SMI_LINE.match, seen.smi) if m]
        said = f"exit {seen.smi_exit}: {' | '.join(seen.smi)[:300]}"
        ok = seen.smi_exit == 0 and listed == [uuid]
        report.check("(c) nvidia-smi -L inside lists exactly its GPU", ok, said)


def _judge_bare(report: Report, seen: Seen, smi: str | None) -> None:
    sees = ", ".join(seen.devices) or "none"
    report.check("(c) the workload without a GPU sees no NVIDIA device", not seen.devices, sees)
    report.check("(c) its CUDA_VISIBLE_DEVICES is empty", seen.cuda == "", repr(seen.cuda))
    report.check("(c) its NVIDIA_VISIBLE_DEVICES is void", seen.nvidia == "void", seen.nvidia)
    if smi is not None and seen.smi is not None:
        listed = [m.group(3) for m in map(SMI_LINE.match, seen.smi) if m]
        said = f"exit {seen.smi_exit}: {' | '.join(seen.smi)[:300]}"
        report.check("(c) nvidia-smi -L inside lists no GPU", not listed, said)


# -- the run -------------------------------------------------------------------------------------


def run(report: Report, fake: bool, root: Path) -> None:
    if not python_modules(report):
        return
    with fake_devices(report) if fake else contextlib.nullcontext() as nvml:
        gpus = inventory(report, nvml, root)
        if not gpus:
            return
        nodes = device_nodes(report, nvml, gpus)
        if sandbox_tools(report):
            isolation(report, nvml, nodes, root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fake", action="store_true", help="a fake GPU and stand-in devices, where none is"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    report = Report()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="circle-gpu-check-"))
    try:
        run(report, args.fake, root)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    status = report.status()
    verdicts = ("PASS", "FAIL", "WARN", "SKIP", "MISSING")
    counts = ", ".join(f"{report.count(v)} {v.lower()}" for v in verdicts if report.count(v))
    verdict = {0: "all checks passed", 1: "CHECKS FAILED", 2: "INCOMPLETE: something is missing"}
    fake = " (FAKE RUN: no real GPU was checked)" if args.fake else ""
    took = time.monotonic() - started
    print(
        f"\n{verdict[status]}{fake}: {counts or 'nothing checked'} in {took:.1f} s; exit {status}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
