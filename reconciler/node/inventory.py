"""What this machine offers the circle, measured now: CPUs, memory, disk and GPUs.

- CPU: the logical CPUs this process may run on (`sched_getaffinity`, so a taskset or cpuset
  narrows it; all of them where the system cannot say), in millicores.
- Memory: total bytes (psutil). Disk: total bytes of the file system holding the state folder,
  where artifacts and QSS shares go.
- GPUs through NVML (nvidia-ml-py, `pynvml`): per device its UUID, name, memory total and used,
  and utilization. No NVML library, no driver or any NVML error at init means no GPUs, which is
  not an error. A device whose UUID cannot be read cannot be named in an assignment, so it is
  left out (with a warning). Every other failing query makes that GPU unhealthy, not the call.

A GPU is healthy when it answers every query (utilization, retired pages and remapped rows
may be "not supported": older or smaller boards do not have them), has no retired memory pages
pending (`nvmlDeviceGetRetiredPagesPendingStatus`: they need a reset first) and no pending or
failed row remapping (`nvmlDeviceGetRemappedRows`, Ampere and later). XID errors are not read:
NVML delivers them only as events to a waiting listener, which this one-shot reading is not.
`nvmlShutdown` follows every successful `nvmlInit`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, cast

import psutil
import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type information

from reconciler.errors import InputError
from reconciler.node.records import GpuInfo, Inventory
from reconciler.node.sandbox import NVIDIA_CONTROL, SandboxError
from reconciler.plan.inputs import GpuUuid

__all__ = [
    "GpuInfo",
    "Inventory",
    "InventoryError",
    "Nvml",
    "gpu_device_nodes",
    "read_gpus",
    "read_inventory",
]

log = logging.getLogger(__name__)

_GPU_UUID = re.compile(r"GPU-[0-9a-fA-F-]{8,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Queries a device may lack without being unwell.
_NOT_APPLICABLE = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
_T = TypeVar("_T")


class InventoryError(InputError):
    """The machine cannot be measured (the state folder is missing or unreadable)."""


class _Memory(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def used(self) -> int: ...


class _Utilization(Protocol):
    @property
    def gpu(self) -> int: ...


class Nvml(Protocol):
    """The part of `pynvml` read here (so a fake can stand in where no GPU is). The names
    are NVML's own."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: object) -> str: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: object) -> str: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory: ...  # noqa: N802
    def nvmlDeviceGetUtilizationRates(self, handle: object) -> _Utilization: ...  # noqa: N802
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: object) -> int: ...  # noqa: N802
    def nvmlDeviceGetRemappedRows(self, handle: object) -> tuple[int, int, int, int]: ...  # noqa: N802
    def nvmlDeviceGetMinorNumber(self, handle: object) -> int: ...  # noqa: N802


def read_inventory(state_dir: Path, nvml: object | None = None) -> Inventory:
    """Measure this machine. `nvml`: the `pynvml` module unless given (a stand-in offers what
    `Nvml` names)."""
    try:
        disk = psutil.disk_usage(os.fspath(state_dir)).total
    except OSError as error:
        raise InventoryError(f"{state_dir}: cannot measure its disk: {error.strerror}") from None
    return Inventory(
        cpu=_usable_cpus() * 1000,
        memory=int(psutil.virtual_memory().total),
        disk=int(disk),
        gpus=read_gpus(cast(Nvml, pynvml if nvml is None else nvml)),
    )


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return psutil.cpu_count(logical=True) or 1


def read_gpus(nvml: Nvml) -> tuple[GpuInfo, ...]:
    """The GPUs NVML sees, sorted by UUID; none when NVML cannot start."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as error:
        log.info("no GPUs: NVML did not start (%s)", error)
        return ()
    try:
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as error:
            log.warning("no GPUs: NVML cannot count the devices (%s)", error)
            return ()
        gpus = [gpu for index in range(count) if (gpu := _read_gpu(nvml, index)) is not None]
        return tuple(sorted(gpus, key=lambda gpu: gpu.uuid))
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            log.warning("NVML did not shut down cleanly (%s)", error)


def _read_gpu(nvml: Nvml, index: int) -> GpuInfo | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _decoded(nvml.nvmlDeviceGetUUID(handle))
    except nvml.NVMLError as error:
        log.warning("GPU %d left out: its UUID cannot be read (%s)", index, error)
        return None
    if _GPU_UUID.fullmatch(uuid) is None:
        log.warning("GPU %d left out: NVML names it %r, not GPU-...", index, uuid[:80])
        return None
    problems: list[str] = []

    def ask(what: str, query: Callable[[object], _T], *, optional: bool = False) -> _T | None:
        try:
            return query(handle)
        except nvml.NVMLError as error:
            if not (optional and getattr(error, "value", None) in _NOT_APPLICABLE):
                problems.append(f"{what}: {error}")
            return None

    name = ask("name", nvml.nvmlDeviceGetName)
    memory = ask("memory", nvml.nvmlDeviceGetMemoryInfo)
    utilization = ask("utilization", nvml.nvmlDeviceGetUtilizationRates, optional=True)
    pending = ask("retired pages", nvml.nvmlDeviceGetRetiredPagesPendingStatus, optional=True)
    rows = ask("remapped rows", nvml.nvmlDeviceGetRemappedRows, optional=True)
    if pending:
        problems.append("retired memory pages are pending (the GPU needs a reset)")
    if rows is not None and (rows[2] or rows[3]):
        problems.append("row remapping is pending or has failed")
    if problems:
        log.warning("GPU %s is unhealthy: %s", uuid, "; ".join(problems))
    return GpuInfo(
        uuid=GpuUuid(uuid),
        model=_model(name),
        memory=int(memory.total) if memory is not None else 0,
        healthy=not problems,
        utilization=None if utilization is None else max(0, min(int(utilization.gpu), 100)),
        memory_used=None if memory is None else int(memory.used),
    )


def gpu_device_nodes(nvml: object | None, uuids: Sequence[str]) -> tuple[str, ...]:
    """The device nodes a replica given the GPUs `uuids` needs: `/dev/nvidia<minor>` of each
    (NVML's minor number) and the NVIDIA control devices this host has. SandboxError when a
    GPU is not there (or NVML cannot say where)."""
    if not uuids:
        return ()
    library = cast(Nvml, pynvml if nvml is None else nvml)
    wanted = set(uuids)
    found: dict[str, str] = {}
    try:
        library.nvmlInit()
    except library.NVMLError as error:
        raise SandboxError(f"NVML did not start, so GPUs cannot be given: {error}") from None
    try:
        for index in range(library.nvmlDeviceGetCount()):
            handle = library.nvmlDeviceGetHandleByIndex(index)
            uuid = _decoded(library.nvmlDeviceGetUUID(handle))
            if uuid in wanted:
                found[uuid] = f"/dev/nvidia{int(library.nvmlDeviceGetMinorNumber(handle))}"
    except library.NVMLError as error:
        raise SandboxError(f"NVML cannot say where the GPUs are: {error}") from None
    finally:
        with contextlib.suppress(library.NVMLError):
            library.nvmlShutdown()
    missing = sorted(wanted - set(found))
    if missing:
        raise SandboxError(f"GPU {', '.join(missing)} is not on this node")
    control = tuple(path for path in NVIDIA_CONTROL if os.path.exists(path))
    return (*(found[uuid] for uuid in sorted(found)), *control)


def _decoded(value: str | bytes) -> str:
    # nvidia-ml-py returns str; older pynvml releases returned bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _model(name: str | bytes | None) -> str:
    """A model name fit for a record: one line, at most 128 bytes of UTF-8."""
    text = "" if name is None else _CONTROL.sub("", _decoded(name)).strip()
    return text.encode()[:128].decode("utf-8", "ignore").strip() or "unknown"
