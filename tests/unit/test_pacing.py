"""Pacing: a CPU shard's real rate follows its simulated GPU (fake clock, no sleeping)."""

from __future__ import annotations

import threading

import pytest

from greenllm.devices import physics
from greenllm.devices.catalog import CATALOG
from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from workers.shards.pacing import Pacer, reference_throughput

TRAIN = Workload("train", batch=8, model_params=1.3e9, seq_len=128)


class FakeTime:
    """A clock and a sleep that advances it; ``on_sleep`` may act mid-wait."""

    def __init__(self) -> None:
        self.t = 0.0
        self.on_sleep: list[tuple[float, object]] = []
        self.hooks: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt
        for when, hook in list(self.hooks):
            if self.t >= when:
                self.hooks.remove((when, hook))
                hook()  # type: ignore[operator]


def make_pacer(gpu: SimulatedGPU, fake: FakeTime) -> Pacer:
    gpu.set_workload(TRAIN)
    return Pacer(gpu.throughput, reference_throughput(TRAIN), clock=fake.clock, sleep=fake.sleep)


def test_reference_is_the_fastest_type_uncapped() -> None:
    rates = {name: physics.peak_throughput(spec, TRAIN) for name, spec in CATALOG.items()}
    assert reference_throughput(TRAIN) == rates["H100-SXM"]


def test_fastest_type_uncapped_runs_at_cpu_speed() -> None:
    fake = FakeTime()
    pacer = make_pacer(SimulatedGPU("H100-SXM"), fake)
    assert pacer.pace(units=8, step_s=0.1) == 0.0
    assert pacer.paced_rate_per_s() == pytest.approx(80.0)


def test_power_cut_slows_real_rate_in_proportion() -> None:
    fake = FakeTime()
    gpu = SimulatedGPU("H100-SXM")
    pacer = make_pacer(gpu, fake)
    full = gpu.throughput()
    gpu.set_power_limit_w(300)
    ratio = gpu.throughput() / full
    assert 0.2 < ratio < 0.9
    for _ in range(5):
        pacer.pace(units=8, step_s=0.1)
    # Rate = CPU capacity (80/s) x sim ratio; the paced step lasts step_s / ratio.
    assert pacer.cpu_capacity_per_s() == pytest.approx(80.0)
    assert pacer.paced_rate_per_s() == pytest.approx(80.0 * ratio, rel=1e-9)
    assert fake.t == pytest.approx(5 * (0.1 / ratio - 0.1), rel=1e-9)


def test_slower_type_and_clock_lock_slow_by_the_model_ratio() -> None:
    fake = FakeTime()
    gpu = SimulatedGPU("A100-SXM4")
    pacer = make_pacer(gpu, fake)
    gpu.lock_sm_clocks_mhz(210, 900)
    ratio = gpu.throughput() / reference_throughput(TRAIN)
    waited = pacer.pace(units=8, step_s=0.2)
    assert waited == pytest.approx(0.2 / ratio - 0.2, rel=1e-9)


def test_limit_raised_mid_wait_finishes_the_step_sooner() -> None:
    fake = FakeTime()
    gpu = SimulatedGPU("H100-SXM")
    pacer = make_pacer(gpu, fake)
    gpu.set_power_limit_w(200)
    slow = pacer.ratio()
    full_wait_s = 0.1 / slow - 0.1
    lifted_at: list[float] = []

    def lift() -> None:
        lifted_at.append(fake.t)
        gpu.set_power_limit_w(700)

    # Part-way through the wait the cap is lifted: the rest of the work runs at full speed.
    fake.hooks.append((full_wait_s / 2, lift))
    waited = pacer.pace(units=8, step_s=0.1)
    t1 = lifted_at[0]
    assert waited == pytest.approx(t1 + (0.1 - 0.1 * slow - t1 * slow), rel=1e-9)
    assert waited < full_wait_s


def test_idle_gpu_waits_until_it_runs_again() -> None:
    fake = FakeTime()
    gpu = SimulatedGPU("H100-SXM")
    pacer = make_pacer(gpu, fake)
    gpu.set_workload(None)
    fake.hooks.append((1.0, lambda: gpu.set_workload(TRAIN)))
    waited = pacer.pace(units=8, step_s=0.1)
    # Nothing progresses while idle; once running, the whole step's work is still due.
    assert waited == pytest.approx(1.0 + 0.1, abs=0.051)


def test_stop_event_cuts_the_wait_short() -> None:
    stop = threading.Event()
    gpu = SimulatedGPU("L4")
    gpu.set_workload(TRAIN)
    pacer = Pacer(gpu.throughput, reference_throughput(TRAIN), stop_event=stop)
    stop.set()
    assert pacer.pace(units=8, step_s=10.0) < 0.05


def test_for_gpu_starts_the_workload_on_an_idle_gpu() -> None:
    gpu = SimulatedGPU("L4")
    pacer = Pacer.for_gpu(gpu, TRAIN)
    assert gpu.workload == TRAIN
    assert pacer.ratio() == pytest.approx(
        physics.peak_throughput(CATALOG["L4"], TRAIN) / reference_throughput(TRAIN)
    )


def test_rejects_non_positive_reference() -> None:
    with pytest.raises(ValueError):
        Pacer(lambda: 1.0, 0.0)


def test_short_waits_are_carried_and_the_long_run_rate_stays_exact() -> None:
    fake = FakeTime()
    gpu = SimulatedGPU("H100-SXM")
    gpu.set_workload(TRAIN)
    gpu.set_power_limit_w(250)
    sleeps: list[float] = []

    def late_sleep(dt: float) -> None:
        sleeps.append(dt)
        fake.sleep(dt * 1.5 + 0.0005)  # every wake-up comes late

    pacer = Pacer(gpu.throughput, reference_throughput(TRAIN), fake.clock, late_sleep)
    for _ in range(2000):
        fake.t += 0.0005  # a real step of half a millisecond
        pacer.pace(units=1, step_s=0.0005)
    assert min(sleeps) >= 0.002  # no sleep shorter than the minimum wait
    # Overruns are paid back by later steps: the whole run lasts CPU time / ratio.
    assert fake.t == pytest.approx(2000 * 0.0005 / pacer.ratio(), rel=0.01)
