"""(c) Readings fall back field by field; one bad GPU does not abort discovery."""

from __future__ import annotations

import pynvml
import pytest
from test_nvml import FakeDevice, Patched, fake_nvml, gpu  # noqa: F401 - fixtures

from greenllm.devices.base import UNAVAILABLE, is_available
from greenllm.devices.nvml import NVMLGPU, discover_nvml_gpus
from greenllm.devices.nvml_discovery import discover_nvml
from greenllm.errors import DeviceNotFoundError, DeviceNotSupportedError
from workers.agent import devices


def test_unavailable_convention() -> None:
    assert UNAVAILABLE < 0
    assert not is_available(UNAVAILABLE)
    assert not is_available(float("nan"))
    assert is_available(0.0) and is_available(61.0)


def test_mig_utilization_not_supported_reads_unavailable(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    fake_nvml.fake.devices[0].errors["nvmlDeviceGetUtilizationRates"] = (
        pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    s = gpu.sample()
    assert s.utilization_pct == UNAVAILABLE
    assert s.unavailable == ("utilization_pct",)
    assert (s.power_w, s.power_limit_w, s.temperature_c, s.memory_used_mib) == (
        300.0,
        700.0,
        61.0,
        2048.0,
    )


def test_transient_error_is_one_unavailable_reading(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    errors = fake_nvml.fake.devices[0].errors
    errors["nvmlDeviceGetTemperature"] = pynvml.NVML_ERROR_UNKNOWN
    errors["nvmlDeviceGetClockInfo"] = pynvml.NVML_ERROR_TIMEOUT
    s = gpu.sample()
    assert (s.temperature_c, s.sm_clock_mhz) == (UNAVAILABLE, UNAVAILABLE)
    assert set(s.unavailable) == {"temperature_c", "sm_clock_mhz"}
    errors.clear()
    s = gpu.sample()
    assert (s.temperature_c, s.sm_clock_mhz, s.unavailable) == (61.0, 1980.0, ())


def test_energy_counter_error_holds_the_last_good_value(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.energy_mj += 4_000
    assert gpu.sample().energy_j == pytest.approx(4.0)
    dev.errors["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_UNKNOWN
    s = gpu.sample()
    assert s.energy_j == pytest.approx(4.0) and "energy_j" in s.unavailable
    del dev.errors["nvmlDeviceGetTotalEnergyConsumption"]
    dev.energy_mj += 1_000
    assert gpu.sample().energy_j == pytest.approx(5.0)


def test_every_field_failing_still_gives_a_sample(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    for fn in (
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetMemoryInfo",
    ):
        dev.errors[fn] = pynvml.NVML_ERROR_GPU_IS_LOST
    s = gpu.sample()
    assert len(s.unavailable) == 7
    assert s.power_w == s.power_limit_w == s.memory_used_mib == UNAVAILABLE


@pytest.mark.parametrize("memory_clocks", [[], "not supported"])
def test_no_memory_clocks_means_no_lockable_clocks_not_a_crash(
    fake_nvml: Patched,  # noqa: F811
    memory_clocks: list[int] | str,
) -> None:
    dev = fake_nvml.fake.devices[0]
    if memory_clocks == "not supported":
        dev.errors["nvmlDeviceGetSupportedMemoryClocks"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    else:
        dev.memory_clocks_mhz = []
    g = NVMLGPU(0, power_poll_interval_s=None)
    try:
        assert g.supported_sm_clocks_mhz() == []
        with pytest.raises(DeviceNotSupportedError, match="cannot be locked"):
            g.lock_sm_clocks_mhz(900, 1500)
        (info,) = devices.inventory([g])
        assert (info.min_sm_clock_mhz, info.max_sm_clock_mhz) == (0, 0)
    finally:
        g.close()


def test_a_gpu_that_cannot_be_opened_is_skipped(fake_nvml: Patched) -> None:  # noqa: F811
    fake_nvml.fake.devices = [
        FakeDevice(uuid="GPU-a"),
        FakeDevice(uuid="GPU-b", errors={"nvmlDeviceGetName": pynvml.NVML_ERROR_NO_PERMISSION}),
        FakeDevice(uuid="GPU-c"),
    ]
    found = discover_nvml(power_poll_interval_s=None)
    try:
        assert [(g.index, g.nvml_index, g.uuid) for g in found.gpus] == [
            (0, 0, "GPU-a"),
            (1, 2, "GPU-c"),
        ]
        (skipped,) = found.unavailable
        assert skipped.nvml_index == 1 and "Insufficient Permissions" in skipped.reason
    finally:
        for g in found.gpus:
            g.close()


def test_no_gpu_that_can_be_opened_is_not_found(fake_nvml: Patched) -> None:  # noqa: F811
    fake_nvml.fake.devices[0].errors["nvmlDeviceGetUUID"] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(DeviceNotFoundError, match=r"none could be opened \(GPU 0:"):
        discover_nvml_gpus(power_poll_interval_s=None)


class _BrokenGPU:
    """A backend whose sample() has a bug (raises something other than DeviceError)."""

    index = 1
    last_energy_j = 12.0

    def sample(self) -> None:
        raise RuntimeError("backend bug")


def test_agent_telemetry_survives_a_device_error_and_a_backend_bug(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    fake_nvml.fake.devices[0].errors["nvmlDeviceGetUtilizationRates"] = (
        pynvml.NVML_ERROR_NOT_SUPPORTED
    )
    cols = devices.sample([gpu, _BrokenGPU()])  # type: ignore[list-item]
    assert list(cols.index) == [0, 1]
    assert list(cols.utilization_pct) == [UNAVAILABLE, UNAVAILABLE]
    assert list(cols.power_w) == [300.0, UNAVAILABLE]
    assert list(cols.energy_j) == [0.0, 12.0]
