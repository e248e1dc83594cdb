"""A live training rank on a simulated GPU runs at the GPU's pace: cutting the GPU's power
limit slows it, in the units the cluster reports (the agent's ShardSample work), by the
ratio the physical model gives, and its energy per sample is the model's at each limit.

A real rank process (a user script calling ``greenllm.job.report``) runs on a ShardHost;
the simulated model is sized so its GPU does ~100 samples/s while the script's CPU work
could do several times that, so the simulated GPU, not this machine, sets the pace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenllm.devices import physics
from greenllm.devices.simulated import SimulatedGPU
from greenllm.jobspec import JobSpec
from workers.agent.core import shard_samples
from workers.shardhost import ShardHost

pytestmark = pytest.mark.timeout(60)

#: Samples per report; the script's CPU work per report is a few milliseconds.
SCRIPT = """
import sys, time
import greenllm.job

end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    sum(i * i for i in range(5000))  # this rank's real work
    greenllm.job.report(samples=4)
"""
#: Simulated model size: an H100 trains ~100 samples/s of 128 tokens uncapped.
PARAMS = 4.5e9
CUT_W = 300.0
PHASE_S = 4.0


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[ShardHost, SimulatedGPU]]:
    gpu = SimulatedGPU("H100-SXM", 0, "node-a")
    made = ShardHost("node-a", [gpu], tmp_path / "node-a")
    yield made, gpu
    made.stop_all(10)


def work_and_energy(host: ShardHost, gpu: SimulatedGPU) -> tuple[float, float, float]:
    """(time, the rank's samples as the agent reports them, the GPU's energy counter)."""
    now_s = time.monotonic()
    [sample] = shard_samples(host, now_s)
    return now_s, sample.work_units, gpu.energy_j()


def measure(host: ShardHost, gpu: SimulatedGPU) -> tuple[float, float]:
    """Samples/s and J/sample over one phase."""
    t0, w0, e0 = work_and_energy(host, gpu)
    time.sleep(PHASE_S)
    t1, w1, e1 = work_and_energy(host, gpu)
    assert w1 > w0
    return (w1 - w0) / (t1 - t0), (e1 - e0) / (w1 - w0)


def test_a_power_cut_slows_training_by_the_physics_ratio(
    tmp_path: Path, host: tuple[ShardHost, SimulatedGPU]
) -> None:
    shards, gpu = host
    (tmp_path / "train.py").write_text(SCRIPT)
    spec = JobSpec.model_validate(
        {"name": "cut", "kind": "train", "simulated_model_params": PARAMS,
         "train": {"entrypoint": ["python", "train.py", "30"], "working_dir": str(tmp_path),
                   "batch_size": 4, "seq_len": 128}}
    )  # fmt: skip
    workload = spec.workload()
    full = physics.operating_point(gpu.spec, workload, gpu.power_limit_w())
    capped = physics.operating_point(gpu.spec, workload, CUT_W)
    assert 50 < full.throughput < 150 and capped.throughput < 0.8 * full.throughput
    shards.start("cut-0", 0, spec.model_dump_json())
    deadline = time.monotonic() + 15
    while not any(s.work_units >= 20 for s in shards.statuses()):  # up and reporting
        assert time.monotonic() < deadline, shards.statuses()
        time.sleep(0.1)
    rate_full, j_full = measure(shards, gpu)
    gpu.set_power_limit_w(CUT_W)  # the controller's cut, as the agent applies it
    time.sleep(0.3)  # the runner rewrites the rank's pace file within 0.1 s
    rate_cut, j_cut = measure(shards, gpu)
    [sample] = shard_samples(shards, time.monotonic())

    predicted = capped.throughput / full.throughput
    measured = rate_cut / rate_full
    print(
        f"\nfull {rate_full:.1f} samples/s (model {full.throughput:.1f}), "
        f"cut to {CUT_W:g} W {rate_cut:.1f} samples/s (model {capped.throughput:.1f}); "
        f"slowdown measured {measured:.3f}, predicted {predicted:.3f}; "
        f"J/sample {j_full:.2f} -> {j_cut:.2f} (model {full.joules_per_unit:.2f} -> "
        f"{capped.joules_per_unit:.2f}); GPU waited {sample.gpu_wait_fraction:.1%}"
    )
    assert measured == pytest.approx(predicted, rel=0.10)
    assert rate_full == pytest.approx(full.throughput, rel=0.10)
    assert j_full == pytest.approx(full.joules_per_unit, rel=0.10)
    assert j_cut == pytest.approx(capped.joules_per_unit, rel=0.10)
    assert sample.HasField("gpu_wait_fraction") and sample.gpu_wait_fraction < 0.1
    assert not sample.cpu_bound


def test_a_rank_slower_than_its_gpu_says_so_and_its_gpu_idles_meanwhile(
    tmp_path: Path, host: tuple[ShardHost, SimulatedGPU]
) -> None:
    shards, gpu = host
    (tmp_path / "train.py").write_text(SCRIPT)
    spec = JobSpec.model_validate(
        {"name": "slow", "kind": "train", "simulated_model_params": 1e7,
         "train": {"entrypoint": ["python", "train.py", "30"], "working_dir": str(tmp_path),
                   "batch_size": 4, "seq_len": 128}}
    )  # fmt: skip
    shards.start("slow-0", 0, spec.model_dump_json())
    deadline = time.monotonic() + 15
    while not any(s.work_units >= 400 for s in shards.statuses()):
        assert time.monotonic() < deadline, shards.statuses()
        time.sleep(0.1)
    rate, _ = measure(shards, gpu)
    [sample] = shard_samples(shards, time.monotonic())
    model = physics.operating_point(gpu.spec, spec.workload(), gpu.power_limit_w())
    assert rate < 0.5 * model.throughput  # the CPU sets the pace here
    assert sample.cpu_bound and sample.gpu_wait_fraction > 0.5
    busy = 1.0 - sample.gpu_wait_fraction
    idle_w = gpu.spec.idle_power_w
    assert gpu.power_w() == pytest.approx(idle_w + busy * (model.power_w - idle_w), rel=0.25)
    assert gpu.power_w() < 0.6 * model.power_w
