"""(d) Instant power where the driver has it (Hopper's GetPowerUsage is a 1 s average)."""

from __future__ import annotations

import pynvml
from test_nvml import Patched, fake_nvml, gpu  # noqa: F401 - fixtures

from greenllm.devices.nvml import NVMLGPU


def test_instant_power_field_is_read_where_the_driver_has_it(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.instant_power_mw, dev.power_mw = 650_000, 300_000  # the average lags a step up
    assert gpu.power_w() == 650.0
    assert gpu.sample().power_w == 650.0
    assert gpu.power_source == "instant"
    assert gpu.average_power_w() == 300.0
    (call,) = {c.args[1][0] for c in fake_nvml["nvmlDeviceGetFieldValues"].call_args_list}
    assert call == pynvml.NVML_FI_DEV_POWER_INSTANT  # GPU scope: no module (CPU+GPU) scope


def test_driver_without_the_field_falls_back_to_the_average_for_good(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    assert fake_nvml.fake.devices[0].instant_power_mw is None  # NOT_SUPPORTED
    assert gpu.power_w() == 300.0
    assert gpu.power_w() == 300.0
    assert gpu.power_source == "average"
    assert fake_nvml["nvmlDeviceGetFieldValues"].call_count == 1  # not asked again


def test_field_call_missing_in_an_old_driver_falls_back(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.errors["nvmlDeviceGetFieldValues"] = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert gpu.power_w() == 300.0 and gpu.power_source == "average"


def test_a_transient_field_error_gives_the_average_once(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.instant_power_mw = 650_000
    dev.instant_error = pynvml.NVML_ERROR_UNKNOWN
    assert gpu.power_w() == 300.0
    dev.instant_error = None
    assert gpu.power_w() == 650.0 and gpu.power_source == "instant"
