"""(f) Restore puts back what was in force before greenllm, and only when asked to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pynvml
import pytest
from test_nvml import Patched, fake_nvml, gpu  # noqa: F401 - fixtures

from greenllm.devices.nvml import NVMLGPU
from greenllm.devices.nvml_restore import load_record, record_path
from greenllm.errors import DevicePermissionError


def test_restore_puts_back_the_operators_limit_not_the_default(
    fake_nvml: Patched,  # noqa: F811
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.limit_mw = 500_000  # the operator capped the GPU at 500 W before greenllm started
    g = NVMLGPU(0, power_poll_interval_s=None)
    try:
        g.set_power_limit_w(300)
        g.set_power_limit_w(250)
        assert g.power_limit_before_w == 500.0
        g.lock_sm_clocks_mhz(900, 1500)
        g.restore_defaults()
        assert (dev.limit_mw, dev.locked_mhz) == (500_000, None)
        assert g.power_limit_before_w is None
    finally:
        g.close()


def test_restore_without_changes_touches_nothing(
    gpu: NVMLGPU,  # noqa: F811
    fake_nvml: Patched,  # noqa: F811
) -> None:
    gpu.restore_defaults()
    fake_nvml["nvmlDeviceSetPowerManagementLimit"].assert_not_called()
    fake_nvml["nvmlDeviceResetGpuLockedClocks"].assert_not_called()


def test_a_killed_process_leaves_the_original_limit_for_the_next(
    fake_nvml: Patched,  # noqa: F811
    tmp_path: Path,
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.limit_mw = 500_000
    first = NVMLGPU(0, power_poll_interval_s=None, restore_dir=tmp_path)
    first.set_power_limit_w(300)
    first.lock_sm_clocks_mhz(900, 1500)
    first.close()  # then SIGKILL: nothing restored, the record stays
    record = load_record(tmp_path, dev.uuid)
    assert record is not None
    assert (record.power_limit_w, record.clocks_locked) == (500.0, True)
    second = NVMLGPU(0, power_poll_interval_s=None, restore_dir=tmp_path)
    try:
        second.set_power_limit_w(200)  # its own "before" is still the operator's 500 W
        second.restore_defaults()
        assert (dev.limit_mw, dev.locked_mhz) == (500_000, None)
        assert not record_path(tmp_path, dev.uuid).exists()
    finally:
        second.close()


def test_a_refused_first_change_leaves_no_record(
    fake_nvml: Patched,  # noqa: F811
    tmp_path: Path,
) -> None:
    dev = fake_nvml.fake.devices[0]
    dev.errors["nvmlDeviceSetPowerManagementLimit"] = pynvml.NVML_ERROR_NO_PERMISSION
    g = NVMLGPU(0, power_poll_interval_s=None, restore_dir=tmp_path)
    try:
        with pytest.raises(DevicePermissionError):
            g.set_power_limit_w(300)
        assert not record_path(tmp_path, dev.uuid).exists()
        assert g.power_limit_before_w is None
    finally:
        g.close()


EXIT_SCRIPT = """
import atexit, sys
from unittest import mock
sys.path.insert(0, {test_dir!r})
import pynvml
from test_nvml import PATCHED, FakeNVML, FakeDevice
from greenllm.devices.nvml import NVMLGPU

fake = FakeNVML([FakeDevice()])
for name in PATCHED:
    mock.patch.object(pynvml, name, autospec=True, side_effect=getattr(fake, name)).start()
dev = fake.devices[0]
atexit.register(lambda: print("at exit:", dev.limit_mw, dev.locked_mhz))
gpu = NVMLGPU(0, power_poll_interval_s=None)
gpu.set_power_limit_w(300)
gpu.lock_sm_clocks_mhz(900, 1500)
print("before exit:", dev.limit_mw, dev.locked_mhz)
{ending}
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "ending",
    [
        "raise SystemExit(0)  # what Ray makes of SIGTERM",
        "gpu.close()",
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    ],
)
def test_exit_and_sigterm_leave_the_cap_in_place(ending: str) -> None:
    """The controller still counts the node at its capped limits: uncapping here would
    break the budget, so nothing is restored unless greenllm is stopped on purpose."""
    script = EXIT_SCRIPT.format(test_dir=str(Path(__file__).parent), ending=ending)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "before exit: 300000 (900, 1500)"
    assert all(line == "at exit: 300000 (900, 1500)" for line in lines[1:]), done.stderr
