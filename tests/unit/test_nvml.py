"""The NVML backend against a fake NVML: the real pynvml functions, patched with autospec."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml
import pytest

from greenllm import config as config_module
from greenllm.config import load_cluster_config
from greenllm.devices.discovery import get_gpus
from greenllm.devices.nvml import NVMLGPU, catalog_type, discover_nvml_gpus
from greenllm.errors import (
    DeviceError,
    DeviceNotFoundError,
    DeviceNotSupportedError,
    DevicePermissionError,
    OutOfRangeError,
)

MIB = 1024 * 1024


@dataclass
class FakeDevice:
    """One GPU as the fake NVML sees it, in NVML's units (mW, mJ, bytes, MHz)."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-0000"
    architecture: int = pynvml.NVML_DEVICE_ARCH_HOPPER
    energy_mj: int = 5_000_000
    power_mw: int = 300_000
    limit_mw: int = 700_000
    min_limit_mw: int = 200_000
    max_limit_mw: int = 700_000
    default_limit_mw: int = 700_000
    sm_clock_mhz: int = 1980
    memory_clocks_mhz: list[int] = field(default_factory=lambda: [1593, 2619])
    graphics_clocks_mhz: dict[int, list[int]] = field(
        default_factory=lambda: {2619: [1980, 1500, 900, 210], 1593: [1200, 210]}
    )
    locked_mhz: tuple[int, int] | None = None
    #: The instant power field, mW (None: the driver lacks it, the field is NOT_SUPPORTED).
    instant_power_mw: int | None = None
    #: Return code of the instant power field this time (None: success).
    instant_error: int | None = None
    #: NVML function name -> error code it fails with.
    errors: dict[str, int] = field(default_factory=dict)


class FakeNVML:
    """Side effects for the patched pynvml functions; a handle is the device's index."""

    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices
        self.init_error: int | None = None
        self.open_sessions = 0

    def _dev(self, fn: str, handle: int) -> FakeDevice:
        dev = self.devices[handle]
        if fn in dev.errors:
            raise pynvml.NVMLError(dev.errors[fn])
        return dev

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.open_sessions += 1

    def nvmlShutdown(self) -> None:
        assert self.open_sessions > 0, "nvmlShutdown without nvmlInit"
        self.open_sessions -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._dev("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._dev("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetArchitecture(self, device: int) -> int:
        return self._dev("nvmlDeviceGetArchitecture", device).architecture

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self._dev("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._dev("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._dev("nvmlDeviceGetEnforcedPowerLimit", handle).limit_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return self._dev("nvmlDeviceGetPowerManagementLimit", handle).limit_mw

    def nvmlDeviceGetFieldValues(self, handle: int, fieldIds: list[Any]) -> list[SimpleNamespace]:
        dev = self._dev("nvmlDeviceGetFieldValues", handle)
        values = []
        for field_id in fieldIds:
            code = pynvml.NVML_ERROR_NOT_SUPPORTED
            value = SimpleNamespace(uiVal=0)
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and dev.instant_power_mw is not None:
                code = dev.instant_error or pynvml.NVML_SUCCESS
                value = SimpleNamespace(uiVal=dev.instant_power_mw)
            values.append(
                SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=code,
                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    value=value,
                )
            )
        return values

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: int) -> list[int]:
        dev = self._dev("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return [dev.min_limit_mw, dev.max_limit_mw]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: int) -> int:
        return self._dev("nvmlDeviceGetPowerManagementDefaultLimit", handle).default_limit_mw

    def nvmlDeviceSetPowerManagementLimit(self, handle: int, limit: int) -> None:
        self._dev("nvmlDeviceSetPowerManagementLimit", handle).limit_mw = limit

    def nvmlDeviceGetClockInfo(self, handle: int, type: int) -> int:
        assert type == pynvml.NVML_CLOCK_SM
        return self._dev("nvmlDeviceGetClockInfo", handle).sm_clock_mhz

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: int) -> list[int]:
        return self._dev("nvmlDeviceGetSupportedMemoryClocks", handle).memory_clocks_mhz

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: int, memoryClockMHz: int) -> list[int]:
        dev = self._dev("nvmlDeviceGetSupportedGraphicsClocks", handle)
        return dev.graphics_clocks_mhz[memoryClockMHz]

    def nvmlDeviceSetGpuLockedClocks(
        self, handle: int, minGpuClockMHz: int, maxGpuClockMHz: int
    ) -> None:
        dev = self._dev("nvmlDeviceSetGpuLockedClocks", handle)
        dev.locked_mhz = (minGpuClockMHz, maxGpuClockMHz)

    def nvmlDeviceResetGpuLockedClocks(self, handle: int) -> None:
        self._dev("nvmlDeviceResetGpuLockedClocks", handle).locked_mhz = None

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        self._dev("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._dev("nvmlDeviceGetTemperature", handle)
        return 61

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        self._dev("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(used=2048 * MIB, total=81559 * MIB, free=79511 * MIB)


PATCHED = [name for name in vars(FakeNVML) if name.startswith("nvml")]


class Patched:
    """The fake and the autospec mocks that stand in for pynvml's functions."""

    def __init__(self, fake: FakeNVML, mocks: dict[str, mock.MagicMock]) -> None:
        self.fake = fake
        self.mocks = mocks

    def __getitem__(self, name: str) -> mock.MagicMock:
        return self.mocks[name]


@pytest.fixture
def fake_nvml() -> Iterator[Patched]:
    fake = FakeNVML([FakeDevice()])
    with ExitStack() as stack:
        mocks = {
            name: stack.enter_context(
                mock.patch.object(pynvml, name, autospec=True, side_effect=getattr(fake, name))
            )
            for name in PATCHED
        }
        yield Patched(fake, mocks)
        assert fake.open_sessions == 0, "an NVML session was left open"


class ManualClock:
    """A clock the test moves by hand, seconds."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def gpu(fake_nvml: Patched) -> Iterator[NVMLGPU]:
    g = NVMLGPU(0, power_poll_interval_s=None)
    yield g
    if not g.closed:
        g.restore_defaults()
        g.close()


# -- names, discovery ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("product_name", "gpu_type"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("NVIDIA H100-SXM5-80GB", "H100-SXM"),
        ("NVIDIA A100-SXM4-40GB", "A100-SXM4"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4"),
        ("NVIDIA A100 80GB PCIe", "A100-PCIe"),
        ("NVIDIA A100-PCIE-40GB", "A100-PCIe"),
        ("Tesla V100-SXM2-16GB", "V100-SXM2"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A40", "A40"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA H200", "H200-SXM"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
        ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),
        ("NVIDIA GH200 480GB", "NVIDIA GH200 480GB"),
        ("NVIDIA GB200", "NVIDIA GB200"),
        ("NVIDIA L40", "NVIDIA L40"),
        ("NVIDIA Future GPU", "NVIDIA Future GPU"),
        ("NVIDIA A400", "NVIDIA A400"),
        ("Tesla V100-PCIE-32GB", "Tesla V100-PCIE-32GB"),
    ],
)
def test_catalog_type_maps_product_names(product_name: str, gpu_type: str) -> None:
    assert catalog_type(product_name) == gpu_type


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_UNKNOWN, "Unknown Error"),
    ],
)
def test_discover_without_nvml_raises_device_not_found(
    fake_nvml: Patched, code: int, hint: str
) -> None:
    fake_nvml.fake.init_error = code
    with pytest.raises(DeviceNotFoundError, match=hint) as info:
        discover_nvml_gpus()
    assert "\n" not in str(info.value)
    fake_nvml["nvmlDeviceGetCount"].assert_not_called()


def test_discover_with_no_devices_raises_and_shuts_nvml_down(fake_nvml: Patched) -> None:
    fake_nvml.fake.devices = []
    with pytest.raises(DeviceNotFoundError, match="no NVIDIA GPU"):
        discover_nvml_gpus()
    assert fake_nvml["nvmlShutdown"].call_count == 1


def test_discover_opens_every_gpu_in_one_session(fake_nvml: Patched) -> None:
    fake_nvml.fake.devices = [
        FakeDevice(name="NVIDIA A100-SXM4-40GB", uuid="GPU-a"),
        FakeDevice(name="NVIDIA L4", uuid="GPU-b"),
    ]
    gpus = discover_nvml_gpus(power_poll_interval_s=None)
    assert [(g.index, g.gpu_type, g.uuid) for g in gpus] == [
        (0, "A100-SXM4", "GPU-a"),
        (1, "L4", "GPU-b"),
    ]
    gpus[0].close()
    assert fake_nvml["nvmlShutdown"].call_count == 0  # the other GPU still uses NVML
    gpus[1].close()
    assert fake_nvml["nvmlInit"].call_count == fake_nvml["nvmlShutdown"].call_count == 1


# -- readings -----------------------------------------------------------------------------
def test_readings_convert_units(gpu: NVMLGPU, fake_nvml: Patched) -> None:
    c = gpu.power_limit_constraints()
    assert (c.min_power_limit_w, c.max_power_limit_w, c.default_power_limit_w) == (200, 700, 700)
    assert gpu.power_w() == 300.0
    assert gpu.power_limit_w() == 700.0
    assert gpu.sm_clock_mhz() == 1980.0
    assert gpu.utilization_pct() == 87.0
    assert gpu.temperature_c() == 61.0
    assert gpu.memory_used_mib() == 2048.0
    assert gpu.memory_total_mib() == 81559.0
    sample = gpu.sample()
    assert (sample.power_w, sample.energy_j, sample.memory_used_mib) == (300.0, 0.0, 2048.0)


def test_supported_clocks_at_highest_memory_clock_ascending(
    gpu: NVMLGPU, fake_nvml: Patched
) -> None:
    assert gpu.supported_sm_clocks_mhz() == [210, 900, 1500, 1980]
    fake_nvml["nvmlDeviceGetSupportedGraphicsClocks"].assert_called_with(0, 2619)


def test_energy_from_counter_starts_at_zero(gpu: NVMLGPU, fake_nvml: Patched) -> None:
    assert gpu.uses_energy_counter
    assert gpu.energy_j() == 0.0
    fake_nvml.fake.devices[0].energy_mj += 12_345
    assert gpu.energy_j() == pytest.approx(12.345)
    assert gpu.poll_power() == pytest.approx(12.345)
    fake_nvml["nvmlDeviceGetPowerUsage"].assert_not_called()  # no poller behind it


@pytest.mark.parametrize("pre_volta", [True, False])
def test_energy_falls_back_to_integrated_power(fake_nvml: Patched, pre_volta: bool) -> None:
    dev = fake_nvml.fake.devices[0]
    if pre_volta:
        dev.architecture = pynvml.NVML_DEVICE_ARCH_PASCAL
    else:
        dev.errors["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    clock = ManualClock()
    dev.power_mw = 100_000
    gpu = NVMLGPU(0, power_poll_interval_s=None, clock=clock)
    assert not gpu.uses_energy_counter
    if pre_volta:
        fake_nvml["nvmlDeviceGetTotalEnergyConsumption"].assert_not_called()
    # Readings (t, W): (0, 100), (1, 300), (3, 200), (4, 100): trapezoids 200 + 500 + 150 J.
    for t_s, power_w in ((1.0, 300), (3.0, 200)):
        clock.now_s, dev.power_mw = t_s, power_w * 1000
        gpu.poll_power()
    clock.now_s, dev.power_mw = 4.0, 100_000
    assert gpu.energy_j() == pytest.approx(850.0)
    gpu.close()


@pytest.mark.timeout(10)
def test_power_poller_runs_until_close(fake_nvml: Patched) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.errors["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    dev.power_mw = 250_000
    clock = ManualClock()
    reads = fake_nvml["nvmlDeviceGetPowerUsage"]

    def advancing_clock() -> float:  # one virtual second per reading
        clock.now_s += 1.0
        return clock.now_s

    gpu = NVMLGPU(0, power_poll_interval_s=0.001, clock=advancing_clock)
    deadline_s = time.monotonic() + 5.0
    while reads.call_count < 5 and time.monotonic() < deadline_s:
        time.sleep(0.001)
    gpu.close()
    polled = reads.call_count
    assert polled >= 5
    time.sleep(0.01)
    assert reads.call_count == polled  # the thread has stopped
    start_s = 1.0  # the first reading, in the constructor
    assert gpu.energy_j() == pytest.approx(250.0 * (clock.now_s - start_s))


# -- settings -----------------------------------------------------------------------------
def test_set_power_limit_in_range_calls_nvml_in_milliwatts(
    gpu: NVMLGPU, fake_nvml: Patched
) -> None:
    gpu.set_power_limit_w(250.5)
    fake_nvml["nvmlDeviceSetPowerManagementLimit"].assert_called_once_with(0, 250_500)
    assert gpu.power_limit_w() == 250.5


@pytest.mark.parametrize("power_limit_w", [199.0, 700.5, -1.0])
def test_set_power_limit_out_of_range_never_calls_nvml(
    gpu: NVMLGPU, fake_nvml: Patched, power_limit_w: float
) -> None:
    with pytest.raises(OutOfRangeError, match=rf"{power_limit_w:g} W.*\[200, 700\] W"):
        gpu.set_power_limit_w(power_limit_w)
    fake_nvml["nvmlDeviceSetPowerManagementLimit"].assert_not_called()


def test_lock_clocks_in_range_then_reset(gpu: NVMLGPU, fake_nvml: Patched) -> None:
    gpu.lock_sm_clocks_mhz(900, 1500)
    fake_nvml["nvmlDeviceSetGpuLockedClocks"].assert_called_once_with(0, 900, 1500)
    gpu.reset_sm_clocks()
    fake_nvml["nvmlDeviceResetGpuLockedClocks"].assert_called_once_with(0)
    assert fake_nvml.fake.devices[0].locked_mhz is None


@pytest.mark.parametrize(("lo_mhz", "hi_mhz"), [(100, 1500), (900, 2500), (1500, 900)])
def test_lock_clocks_out_of_range_never_calls_nvml(
    gpu: NVMLGPU, fake_nvml: Patched, lo_mhz: int, hi_mhz: int
) -> None:
    with pytest.raises(OutOfRangeError, match=r"\[210, 1980\] MHz"):
        gpu.lock_sm_clocks_mhz(lo_mhz, hi_mhz)
    fake_nvml["nvmlDeviceSetGpuLockedClocks"].assert_not_called()


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "action"),
    [
        ("nvmlDeviceSetPowerManagementLimit", lambda g: g.set_power_limit_w(300)),
        ("nvmlDeviceSetGpuLockedClocks", lambda g: g.lock_sm_clocks_mhz(900, 1500)),
    ],
)
def test_no_permission_names_the_missing_privilege(
    gpu: NVMLGPU, fake_nvml: Patched, fn: str, action: Callable[[NVMLGPU], None]
) -> None:
    fake_nvml.fake.devices[0].errors[fn] = pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(DevicePermissionError) as info:
        action(gpu)
    message = str(info.value)
    for needed in (
        "GPU 0 (H100-SXM)",
        "root",
        "CAP_SYS_ADMIN",
        "examples/systemd/greenllm-agent.service",
        "--cap-add SYS_ADMIN",
    ):
        assert needed in message
    assert "setcap" not in message  # never SYS_ADMIN for every Python program
    assert "\n" not in message
    calls_before = fake_nvml[fn].call_count
    gpu.restore_defaults()  # a change that failed is not "undone"
    fake_nvml["nvmlDeviceResetGpuLockedClocks"].assert_not_called()
    assert fake_nvml[fn].call_count == calls_before


def test_not_supported_and_other_errors_are_mapped(gpu: NVMLGPU, fake_nvml: Patched) -> None:
    errors = fake_nvml.fake.devices[0].errors
    errors["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    with pytest.raises(DeviceNotSupportedError, match="read the temperature"):
        gpu.temperature_c()
    errors["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(DeviceError, match=r"read power.*GPU is lost") as info:
        gpu.power_w()
    assert type(info.value) is DeviceError
    assert isinstance(info.value.__cause__, pynvml.NVMLError_GpuIsLost)


# -- restore on exit ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("set_limit", "lock_clocks"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_restore_defaults_undoes_only_what_changed(
    gpu: NVMLGPU, fake_nvml: Patched, set_limit: bool, lock_clocks: bool
) -> None:
    if set_limit:
        gpu.set_power_limit_w(300)
    if lock_clocks:
        gpu.lock_sm_clocks_mhz(210, 900)
    set_limit_mock = fake_nvml["nvmlDeviceSetPowerManagementLimit"]
    set_limit_mock.reset_mock()
    gpu.restore_defaults()
    if set_limit:
        set_limit_mock.assert_called_once_with(0, 700_000)
    else:
        set_limit_mock.assert_not_called()
    assert fake_nvml["nvmlDeviceResetGpuLockedClocks"].call_count == int(lock_clocks)
    dev = fake_nvml.fake.devices[0]
    assert (dev.limit_mw, dev.locked_mhz) == (700_000, None)


def test_close_keeps_settings_and_lets_go_of_nvml(gpu: NVMLGPU, fake_nvml: Patched) -> None:
    gpu.set_power_limit_w(300)
    gpu.lock_sm_clocks_mhz(900, 1500)
    gpu.close()
    fake_nvml["nvmlShutdown"].assert_called_once()
    dev = fake_nvml.fake.devices[0]
    assert (dev.limit_mw, dev.locked_mhz) == (300_000, (900, 1500))
    with pytest.raises(DeviceError, match="closed"):
        gpu.restore_defaults()


# -- discovery as the CLI uses it -----------------------------------------------------------
def test_get_gpus_without_nvml_falls_back_only_in_auto(fake_nvml: Patched) -> None:
    fake_nvml.fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    config = load_cluster_config(Path(config_module.__file__).parent / "data" / "cluster.yaml")
    with pytest.raises(DeviceNotFoundError, match=r"libnvidia-ml\.so\.1"):
        get_gpus(config, backend="nvml")
    gpus = get_gpus(config, backend="auto")
    assert gpus and all(g.uuid.startswith("sim-") for g in gpus)


def test_get_gpus_prefers_nvml_when_present(fake_nvml: Patched) -> None:
    gpus = get_gpus(None, backend="auto")
    assert [type(g) for g in gpus] == [NVMLGPU]
    for g in gpus:
        g.close()
