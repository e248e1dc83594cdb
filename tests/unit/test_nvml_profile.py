"""(b) ``profile --gpu N`` loads the GPU it measures (matched by UUID); (f) it restores on
SIGTERM; (g) it reads the SM clock while the load runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_nvml import FakeDevice, Patched, fake_nvml  # noqa: F401 - fixtures

from greenllm.cli import profile_cmd
from greenllm.devices import cuda
from greenllm.devices.nvml import NVMLGPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import DeviceNotFoundError
from greenllm.profiling import profile_device


class FakeTorch:
    """Stand-in for ``torch``: CUDA numbers the GPUs in its own order."""

    def __init__(self, uuids: list[str]) -> None:
        self.cuda = SimpleNamespace(
            is_available=lambda: bool(uuids),
            device_count=lambda: len(uuids),
            get_device_properties=lambda i: SimpleNamespace(uuid=uuids[i]),
        )


def test_torch_index_is_found_by_uuid_not_by_number() -> None:
    torch = FakeTorch(["bbbb-2222", "aaaa-1111"])  # torch prints UUIDs without "GPU-"
    assert cuda.torch_device_index("GPU-aaaa-1111", torch) == 1
    assert cuda.torch_device_index("GPU-BBBB-2222", torch) == 0
    with pytest.raises(DeviceNotFoundError, match="GPU-cccc is not among the 2 CUDA device"):
        cuda.torch_device_index("GPU-cccc", torch)
    with pytest.raises(DeviceNotFoundError, match="no CUDA device"):
        cuda.torch_device_index("GPU-aaaa-1111", FakeTorch([]))


def test_nvml_gpu_of_a_cuda_device_is_found_by_uuid() -> None:
    torch = FakeTorch(["bbbb-2222", "aaaa-1111"])
    gpus = [SimulatedGPU("L4", index=i) for i in range(2)]
    gpus[0].uuid, gpus[1].uuid = "GPU-aaaa-1111", "GPU-bbbb-2222"
    assert cuda.cuda_device_uuid(1, torch) == "GPU-aaaa-1111"
    assert cuda.gpu_with_uuid(gpus, cuda.cuda_device_uuid(0, torch)) is gpus[1]
    assert cuda.gpu_with_uuid(gpus, "GPU-cccc") is None
    with pytest.raises(DeviceNotFoundError, match="cuda:2"):
        cuda.cuda_device_uuid(2, torch)


def test_cuda_env_names_the_gpus_by_uuid(fake_nvml: Patched) -> None:  # noqa: F811
    fake_nvml.fake.devices = [FakeDevice(uuid="GPU-a"), FakeDevice(uuid="GPU-b")]
    gpus = [NVMLGPU(i, power_poll_interval_s=None) for i in range(2)]
    try:
        assert cuda.cuda_env([gpus[1]]) == {
            "CUDA_VISIBLE_DEVICES": "GPU-b",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        assert cuda.cuda_env(gpus)["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    finally:
        for g in gpus:
            g.close()
    assert cuda.cuda_env([SimulatedGPU("L4")]) == {}


def test_profile_gpu_n_loads_the_cuda_device_with_its_uuid(
    fake_nvml: Patched,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_nvml.fake.devices = [FakeDevice(uuid="GPU-aaaa"), FakeDevice(uuid="GPU-bbbb")]
    import torch

    props = {0: "bbbb", 1: "aaaa"}  # CUDA's order differs from NVML's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=props[i])
    )
    loaded: list[int] = []

    def fake_torch_runner(kind: str, batch: int, device_index: int = 0) -> Any:
        loaded.append(device_index)

        def run(duration_s: float) -> float:
            time.sleep(max(duration_s, 0.01))
            fake_nvml.fake.devices[1].energy_mj += 5_000
            return 10.0

        return run

    monkeypatch.setattr("greenllm.gpu_load.torch_runner", fake_torch_runner)
    work = profile_cmd.physics.Workload("train")
    rows, gpu_type = profile_cmd._profile_real(1, work, "power_limit", [300.0], 0.0, 0.02)
    assert loaded == [0]  # NVML GPU 1 (GPU-bbbb) is cuda:0 here
    assert rows[0].power_limit_w == 300.0
    assert gpu_type == "H100-SXM"  # what the GPU reports, matched to the catalog
    assert fake_nvml.fake.devices[1].limit_mw == 700_000  # restored
    assert fake_nvml.fake.devices[0].limit_mw == 700_000  # never touched


def test_profile_reads_the_sm_clock_while_the_load_runs(fake_nvml: Patched) -> None:  # noqa: F811
    dev = fake_nvml.fake.devices[0]
    dev.sm_clock_mhz = 345  # idle

    def runner(duration_s: float) -> float:
        dev.sm_clock_mhz = 1755 if dev.limit_mw < 700_000 else 1980  # under load
        time.sleep(max(duration_s, 0.0))
        dev.energy_mj += 50_000
        dev.sm_clock_mhz = 345  # the load stopped: the clock falls at once
        return 100.0

    gpu = NVMLGPU(0, power_poll_interval_s=None)
    try:
        (row,) = profile_device(gpu, runner, "power_limit", [300.0], warmup_s=0.0, measure_s=0.3)
    finally:
        gpu.close()
    assert row.sm_clock_mhz == 1755


SIGTERM_SCRIPT = """
import atexit, sys, time
from unittest import mock
sys.path.insert(0, {test_dir!r})
import pynvml
from test_nvml import PATCHED, FakeNVML, FakeDevice

fake = FakeNVML([FakeDevice(limit_mw=500_000)])  # the operator's own cap: 500 W
for name in PATCHED:
    mock.patch.object(pynvml, name, autospec=True, side_effect=getattr(fake, name)).start()
dev = fake.devices[0]
atexit.register(lambda: print("at exit:", dev.limit_mw, dev.locked_mhz, flush=True))


def torch_runner(kind, batch, device_index=0):
    def run(duration_s):
        print("running", dev.limit_mw, dev.locked_mhz, flush=True)
        time.sleep(duration_s if dev.locked_mhz else 0.05)  # blocks once the clocks are locked
        dev.energy_mj += 5_000
        return 10.0
    return run


mock.patch("greenllm.gpu_load.torch_runner", torch_runner).start()
mock.patch("greenllm.devices.cuda.torch_device_index", lambda uuid: 0).start()
from greenllm.cli.profile_cmd import profile
profile.main(
    ["--gpu", "0", "--workload", "train", "--sm-clocks", "900:900:15",
     "--warmup-s", "0", "--measure-s", "30"],
    prog_name="greenllm profile",
)
"""


@pytest.mark.timeout(90)
def test_profile_restores_the_settings_on_sigterm() -> None:
    script = SIGTERM_SCRIPT.format(test_dir=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.startswith("running 700000 (900, 900)"):  # clocks locked, limit raised
            proc.terminate()  # SIGTERM
            break
    out, err = proc.communicate(timeout=60)
    seen += out.splitlines()
    assert proc.returncode == 143, err
    assert seen[-1] == "at exit: 500000 None", (seen, err)
