"""FakeNvml: a stand-in for the `pynvml` module, because this machine has no GPU.

It offers exactly the NVML functions `reconciler.node.inventory` calls (a test keeps the two
lists equal, and the names and arguments those of the real module), answers with the real
module's ctypes structures, and fails the way the real library does: by raising
`pynvml.NVMLError(code)`, which the real module turns into the subclass for that code
(`NVMLError_GpuIsLost`, `NVMLError_NotSupported`, ...). Device queries before `nvmlInit` or
after the last `nvmlShutdown` raise `NVMLError_Uninitialized`, as the real library does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pynvml  # type: ignore[import-untyped]

GIB = 2**30


@dataclass
class FakeGpu:
    """One device. `failing`: NVML function name -> the NVML error code that call returns."""

    uuid: str
    name: str = "NVIDIA L4"
    memory_total: int = 24 * GIB
    memory_used: int = 0
    utilization: int = 0
    retired_pages_pending: bool = False
    # corrected, uncorrected, pending, failed: what nvmlDeviceGetRemappedRows returns
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    minor: int | None = None  # /dev/nvidia<minor>; the device's index unless given
    failing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Handle:
    index: int


class FakeNvml:
    """What `pynvml` would answer on a machine with `gpus`. `init_error` etc.: the NVML error
    code that call returns (`pynvml.NVML_ERROR_DRIVER_NOT_LOADED`, ...). `calls` records every
    call by name, in order."""

    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: tuple[FakeGpu, ...] = (),
        *,
        init_error: int | None = None,
        count_error: int | None = None,
        shutdown_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.count_error = count_error
        self.shutdown_error = shutdown_error
        self.initialized = 0  # the real library counts inits and shutdowns
        self.calls: list[str] = []

    # --- library ---------------------------------------------------------------------------

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("nvmlShutdown")
        self._need_init()
        self.initialized -= 1
        if self.shutdown_error is not None:
            raise pynvml.NVMLError(self.shutdown_error)

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self.calls.append("nvmlDeviceGetCount")
        self._need_init()
        if self.count_error is not None:
            raise pynvml.NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:  # noqa: N802
        self.calls.append("nvmlDeviceGetHandleByIndex")
        self._need_init()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._fail(self.gpus[index], "nvmlDeviceGetHandleByIndex")
        return _Handle(index)

    # --- device queries --------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:  # noqa: N802
        return str(self._device(handle, "nvmlDeviceGetUUID").uuid)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:  # noqa: N802
        return str(self._device(handle, "nvmlDeviceGetName").name)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:  # noqa: N802
        gpu = self._device(handle, "nvmlDeviceGetMemoryInfo")
        return pynvml.c_nvmlMemory_t(
            total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used, used=gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:  # noqa: N802
        gpu = self._device(handle, "nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: _Handle) -> int:  # noqa: N802
        gpu = self._device(handle, "nvmlDeviceGetRetiredPagesPendingStatus")
        pending = gpu.retired_pages_pending
        return int(pynvml.NVML_FEATURE_ENABLED if pending else pynvml.NVML_FEATURE_DISABLED)

    def nvmlDeviceGetRemappedRows(self, handle: _Handle) -> tuple[int, int, int, int]:  # noqa: N802
        return self._device(handle, "nvmlDeviceGetRemappedRows").remapped_rows

    def nvmlDeviceGetMinorNumber(self, handle: _Handle) -> int:  # noqa: N802
        gpu = self._device(handle, "nvmlDeviceGetMinorNumber")
        return handle.index if gpu.minor is None else gpu.minor

    # --- the library's rules ---------------------------------------------------------------

    def _need_init(self) -> None:
        if self.initialized <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: _Handle, function: str) -> FakeGpu:
        self.calls.append(function)
        self._need_init()
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        self._fail(gpu, function)
        return gpu

    @staticmethod
    def _fail(gpu: FakeGpu, function: str) -> None:
        code = gpu.failing.get(function)
        if code is not None:
            raise pynvml.NVMLError(code)
