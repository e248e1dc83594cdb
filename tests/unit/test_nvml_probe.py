"""scripts/gpu_probe.py stays read-only and its parts run against the fake NVML; without a
GPU it fails with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest
from test_nvml import FakeDevice, Patched, fake_nvml  # noqa: F401 - fixtures

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import gpu_probe  # noqa: E402
import gpu_probe_nvml  # noqa: E402

from greenllm.devices.nvml_discovery import discover_nvml  # noqa: E402


def test_every_setter_is_refused_and_no_reader() -> None:
    module = SimpleNamespace(**{n: getattr(pynvml, n) for n in dir(pynvml) if n.startswith("nvml")})
    refused = set(gpu_probe_nvml.forbid_setters(module))
    for setter in (
        "nvmlDeviceSetPowerManagementLimit",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceSetApplicationsClocks",
        "nvmlDeviceSetPersistenceMode",
        "nvmlDeviceSetMigMode",
        "nvmlDeviceCreateGpuInstance",
        "nvmlDeviceClearEccErrorCounts",
    ):
        assert setter in refused
        with pytest.raises(RuntimeError, match="read-only"):
            getattr(module, setter)(0, 1)
    used = {
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetPowerManagementLimit",
        "nvmlDeviceGetHandleByIndex",
        "nvmlInit",
        "nvmlShutdown",
    }
    assert not used & refused


def test_probe_parts_run_on_the_fake(fake_nvml: Patched) -> None:  # noqa: F811
    fake_nvml.fake.devices = [
        FakeDevice(name="NVIDIA H200", uuid="GPU-h200", instant_power_mw=450_000)
    ]
    found = discover_nvml(power_poll_interval_s=None)
    try:
        (row,) = gpu_probe.gpu_list(found.gpus)
        assert (row["type"], row["uuid"], row["power_w"], row["power_source"]) == (
            "H200-SXM",
            "GPU-h200",
            450.0,
            "instant",
        )
        check = gpu_probe.catalog_check(row)
        assert check["known"] and "memory_mib" in check["mismatches"]  # the fake has 80 GB
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        assert gpu_probe_nvml.counter_period(handle, 0.02)["updates"] == 0
        window = gpu_probe_nvml.power_window(handle, 0.05, every_s=0.01)
        assert window["instant_w"]["mean"] == 450.0 and window["average_w"]["mean"] == 300.0
        short = gpu_probe_nvml.short_windows(handle, 450.0, repeats=2, windows_s=(0.005,))
        assert short["5ms"]["zero_fraction"] == 1.0  # the fake counter never moves
        assert gpu_probe_nvml.decay(handle, duration_s=0.02)[0]["instant_w"] == 450.0
        unknown = dict(row, type="NVIDIA Future GPU")
        assert gpu_probe.catalog_check(unknown)["reported_prior"]["origin"] == "reported"
    finally:
        for g in found.gpus:
            g.close()


def test_without_a_gpu_it_fails_with_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "gpu_probe.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/nonexistent"},
    )
    if done.returncode == 0:
        pytest.skip("this machine has a usable NVIDIA GPU")
    assert done.returncode == 2
    assert done.stderr.startswith("gpu_probe: no usable NVIDIA GPU")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
