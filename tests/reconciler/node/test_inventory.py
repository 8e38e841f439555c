"""A node measures itself: CPUs it may use, memory, the disk of its state folder, and its GPUs
through NVML. No driver means no GPUs, a failing device is unhealthy rather than fatal, and NVML
is always shut down. This machine has no GPU, so NVML is `FakeNvml` (and once the real
`pynvml`, to show that a machine without a driver has no GPUs)."""

from __future__ import annotations

import ctypes
import inspect
import os
from dataclasses import replace
from pathlib import Path

import psutil
import pynvml  # type: ignore[import-untyped]
import pytest

from reconciler.node import inventory
from reconciler.node.identity import NodeKey
from reconciler.node.inventory import GpuInfo, Inventory, InventoryError, read_inventory
from reconciler.node.records import Registration, open_record, sign_record
from reconciler.plan.inputs import CommitId, GpuUuid, NodeName
from tests.reconciler.node.fake_nvml import GIB, FakeGpu, FakeNvml

L4 = FakeGpu("GPU-6f1c2a7e-0000-4000-8000-000000000002", "NVIDIA L4", 24 * GIB, 3 * GIB, 41)
H100 = FakeGpu("GPU-1b3d5f70-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3", 80 * GIB)


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _required(function: object) -> int:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return sum(parameter.default is inspect.Parameter.empty for parameter in parameters)


def test_cpu_memory_and_disk_are_this_machines(tmp_path: Path) -> None:
    measured = read_inventory(tmp_path, FakeNvml())
    assert measured.cpu == len(os.sched_getaffinity(0)) * 1000
    assert measured.memory == psutil.virtual_memory().total
    assert measured.disk == psutil.disk_usage(str(tmp_path)).total
    assert measured.gpus == ()


def test_gpus_are_reported_sorted_by_uuid(tmp_path: Path) -> None:
    nvml = FakeNvml((L4, H100))
    assert read_inventory(tmp_path, nvml).gpus == (
        GpuInfo(GpuUuid(H100.uuid), "NVIDIA H100 80GB HBM3", 80 * GIB, True, 0, 0),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, 41, 3 * GIB),
    )
    assert nvml.calls[0] == "nvmlInit"
    assert nvml.calls[-1] == "nvmlShutdown"
    assert nvml.initialized == 0


@pytest.mark.parametrize(
    "code",
    [
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    ],
    ids=["no-library", "no-driver", "no-permission", "driver-mismatch"],
)
def test_nvml_that_does_not_start_means_no_gpus(tmp_path: Path, code: int) -> None:
    nvml = FakeNvml((L4,), init_error=code)
    assert read_inventory(tmp_path, nvml).gpus == ()
    assert nvml.calls == ["nvmlInit"]  # nothing to shut down


def test_nvml_that_cannot_count_means_no_gpus_and_is_shut_down(tmp_path: Path) -> None:
    nvml = FakeNvml((L4,), count_error=pynvml.NVML_ERROR_UNKNOWN)
    assert read_inventory(tmp_path, nvml).gpus == ()
    assert nvml.calls == ["nvmlInit", "nvmlDeviceGetCount", "nvmlShutdown"]


def test_a_failing_shutdown_loses_nothing(tmp_path: Path) -> None:
    nvml = FakeNvml((L4,), shutdown_error=pynvml.NVML_ERROR_UNKNOWN)
    assert [gpu.uuid for gpu in read_inventory(tmp_path, nvml).gpus] == [L4.uuid]


LOST = pynvml.NVML_ERROR_GPU_IS_LOST
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED

# (failing or odd device, what is reported for it); the device is L4 otherwise.
DEVICES = {
    "healthy": (L4, GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, 41, 3 * GIB)),
    "name-lost": (
        replace(L4, failing={"nvmlDeviceGetName": LOST}),
        GpuInfo(GpuUuid(L4.uuid), "unknown", 24 * GIB, False, 41, 3 * GIB),
    ),
    "memory-lost": (
        replace(L4, failing={"nvmlDeviceGetMemoryInfo": LOST}),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 0, False, 41, None),
    ),
    "utilization-not-supported": (
        replace(L4, failing={"nvmlDeviceGetUtilizationRates": NOT_SUPPORTED}),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, None, 3 * GIB),
    ),
    "utilization-unknown-error": (
        replace(L4, failing={"nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_UNKNOWN}),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, False, None, 3 * GIB),
    ),
    "no-retired-pages-or-row-remapping": (
        replace(
            L4,
            failing={
                "nvmlDeviceGetRetiredPagesPendingStatus": NOT_SUPPORTED,
                "nvmlDeviceGetRemappedRows": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
            },
        ),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, 41, 3 * GIB),
    ),
    "retired-pages-pending": (
        replace(L4, retired_pages_pending=True),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, False, 41, 3 * GIB),
    ),
    "row-remapping-failed": (
        replace(L4, remapped_rows=(3, 1, 0, 1)),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, False, 41, 3 * GIB),
    ),
    "rows-remapped-corrected": (
        replace(L4, remapped_rows=(3, 0, 0, 0)),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, 41, 3 * GIB),
    ),
    "remapped-rows-lost": (
        replace(L4, failing={"nvmlDeviceGetRemappedRows": LOST}),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, False, 41, 3 * GIB),
    ),
    "odd-name": (
        replace(L4, name="  NVIDIA\x1b[31m L4\n" + "x" * 200),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA[31m L4" + "x" * 115, 24 * GIB, True, 41, 3 * GIB),
    ),
    "utilization-over-100": (
        replace(L4, utilization=250),
        GpuInfo(GpuUuid(L4.uuid), "NVIDIA L4", 24 * GIB, True, 100, 3 * GIB),
    ),
}


@pytest.mark.parametrize(("device", "reported"), DEVICES.values(), ids=DEVICES.keys())
def test_a_failing_device_is_unhealthy_not_fatal(
    tmp_path: Path, device: FakeGpu, reported: GpuInfo
) -> None:
    nvml = FakeNvml((device, H100))
    gpus = read_inventory(tmp_path, nvml).gpus
    assert gpus[1] == reported
    assert gpus[0].healthy  # the other device is untouched
    assert nvml.calls[-1] == "nvmlShutdown"
    assert nvml.initialized == 0
    # What was measured is what a registration carries, and what a reader accepts.
    assert Inventory.from_body(Inventory(1000, 1, 1, gpus).to_body()).gpus == gpus


@pytest.mark.parametrize(
    "device",
    [
        replace(L4, failing={"nvmlDeviceGetHandleByIndex": LOST}),
        replace(L4, failing={"nvmlDeviceGetUUID": LOST}),
        replace(L4, uuid="MIG-6f1c2a7e-0000-4000-8000-000000000002"),
        replace(L4, uuid=""),
    ],
    ids=["handle-lost", "uuid-lost", "not-a-gpu-uuid", "empty-uuid"],
)
def test_a_device_that_cannot_be_named_is_left_out(tmp_path: Path, device: FakeGpu) -> None:
    nvml = FakeNvml((device, H100))
    assert [gpu.uuid for gpu in read_inventory(tmp_path, nvml).gpus] == [H100.uuid]
    assert nvml.calls[-1] == "nvmlShutdown"


def test_a_missing_state_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as raised:
        read_inventory(tmp_path / "missing", FakeNvml())
    assert str(raised.value) == (
        f"{tmp_path / 'missing'}: cannot measure its disk: No such file or directory"
    )


def test_the_inventory_is_what_a_registration_carries(tmp_path: Path) -> None:
    measured = read_inventory(tmp_path, FakeNvml((L4, H100)))
    key = NodeKey.generate(tmp_path / "node.key", "a")
    registration = Registration(
        node=NodeName("a"), circle="demo", failure_domain="rack-1", address=None,
        inventory=measured, commit=CommitId("ab" * 20), seq=3, started_at=1_700_000_000,
        heartbeat_at=1_700_000_000, agent="0.1.0",
    )  # fmt: skip
    value = sign_record(key, "a", registration)
    assert open_record(value, Registration, {"a": key.public_key_line}).record == registration


def test_the_fake_offers_exactly_what_inventory_calls_as_pynvml_names_it() -> None:
    used = {name for name in dir(inventory.Nvml) if name.startswith("nvml")}
    offered = {name for name in dir(FakeNvml) if name.startswith("nvml")}
    assert used == offered
    for name in used:  # called with the arguments the real function requires
        assert _required(getattr(pynvml, name)) == _required(getattr(FakeNvml(), name)), name
    assert FakeNvml.NVMLError is pynvml.NVMLError


def test_the_fake_raises_as_the_real_library_does() -> None:
    nvml = FakeNvml((L4,))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)


@pytest.mark.skipif(_driver_present(), reason="this machine has an NVIDIA driver")
def test_the_real_nvml_without_a_driver_gives_no_gpus(tmp_path: Path) -> None:
    measured = read_inventory(tmp_path)
    assert measured.gpus == ()
    assert measured.cpu >= 1000


@pytest.mark.skipif(not _driver_present(), reason="needs an NVIDIA driver")
def test_the_real_nvml_reports_gpus_a_reader_accepts(tmp_path: Path) -> None:
    measured = read_inventory(tmp_path)
    assert measured.gpus
    assert Inventory.from_body(measured.to_body()) == measured
