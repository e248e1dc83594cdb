"""(e) Energy-counter windows: short windows flagged; a counter going back is rebased."""

from __future__ import annotations

import pynvml
import pytest
from test_nvml import ManualClock, Patched, fake_nvml  # noqa: F401 - fixtures

from greenllm.devices.nvml import NVMLGPU
from greenllm.devices.nvml_counter import EnergyCounter
from greenllm.energy.measurement import (
    COUNTER_UPDATE_PERIOD_S,
    SOURCE_NVML,
    SOURCE_SIMULATED,
    Measurement,
)


def test_counter_reset_is_rebased_never_negative(fake_nvml: Patched) -> None:  # noqa: F811
    dev = fake_nvml.fake.devices[0]
    clock = ManualClock()
    gpu = NVMLGPU(0, power_poll_interval_s=None, clock=clock)
    try:
        clock.now_s, dev.energy_mj = 1.0, dev.energy_mj + 300_000  # 300 J in 1 s
        assert gpu.energy_j() == pytest.approx(300.0)
        clock.now_s, dev.energy_mj = 2.0, 250_000  # driver reloaded: restarts from 0
        assert gpu.energy_j() == pytest.approx(550.0)
        clock.now_s, dev.energy_mj = 3.0, 550_000
        assert gpu.energy_j() == pytest.approx(850.0)
        assert gpu.energy_counter_resets == 1
    finally:
        gpu.close()


def test_implausible_reading_after_going_back_counts_nothing() -> None:
    counter = EnergyCounter(first_mj=10_000_000, first_s=0.0, max_power_w=700.0, where="GPU 0")
    assert counter.update(10_100_000, 1.0) == pytest.approx(100.0)
    # Back, but to a value no GPU could have drawn since a restart 1 s ago: count nothing.
    assert counter.update(9_000_000, 2.0) == pytest.approx(100.0)
    assert counter.update(9_000_500, 3.0) == pytest.approx(100.5)
    assert counter.resets == 1


def _window(duration_s: float, source: str) -> Measurement:
    return Measurement(
        name="w",
        start_s=10.0,
        end_s=10.0 + duration_s,
        start_unix_s=0.0,
        end_unix_s=duration_s,
        gpu_energy_j={"GPU-a": 0.0},
        gpu_sources={"GPU-a": source},
        gpu_labels={"GPU-a": "gpu0 H100-SXM"},
    )


def test_window_shorter_than_the_counter_update_is_flagged() -> None:
    short = _window(0.03, SOURCE_NVML)
    assert short.short_window
    assert short.to_dict()["short_window"] is True
    (row,) = short.devices()
    assert row.short_window and row.to_dict()["short_window"] is True
    long = _window(COUNTER_UPDATE_PERIOD_S * 2, SOURCE_NVML)
    assert not long.short_window and not long.devices()[0].short_window


def test_simulated_counter_is_exact_so_never_short() -> None:
    assert not _window(0.001, SOURCE_SIMULATED).short_window


def test_counter_not_supported_after_start_holds_in_sample(fake_nvml: Patched) -> None:  # noqa: F811
    dev = fake_nvml.fake.devices[0]
    gpu = NVMLGPU(0, power_poll_interval_s=None)
    try:
        dev.energy_mj += 2_000
        assert gpu.sample().energy_j == pytest.approx(2.0)
        dev.errors["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVML_ERROR_NOT_SUPPORTED
        assert gpu.sample().energy_j == pytest.approx(2.0)
    finally:
        gpu.close()
