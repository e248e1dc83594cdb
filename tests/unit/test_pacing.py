"""Absolute pacing: a paced step lasts as long as its simulated GPU would take (fake clock,
no sleeping); a CPU slower than the GPU says how long the GPU waited."""

from __future__ import annotations

import threading

import pytest

from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from greenllm.pacing import Pacer, WaitWindow
from workers.shards.pacing import for_gpu, sync_busy_fraction

TRAIN = Workload("train", batch=8, model_params=1.3e9, seq_len=128)


class FakeTime:
    """A clock and a sleep that advances it; ``hooks`` act mid-wait."""

    def __init__(self) -> None:
        self.t = 0.0
        self.hooks: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt
        for when, hook in list(self.hooks):
            if self.t >= when:
                self.hooks.remove((when, hook))
                hook()  # type: ignore[operator]

    def step(self, pacer: Pacer, units: float, step_s: float) -> float:
        """A real step of ``step_s`` on the CPU, then its pacing; returns seconds waited."""
        self.t += step_s
        return pacer.pace(units, step_s)


def make(gpu_type: str = "H100-SXM") -> tuple[SimulatedGPU, FakeTime, Pacer]:
    fake = FakeTime()
    gpu = SimulatedGPU(gpu_type, clock=fake.clock)
    gpu.set_workload(TRAIN)
    return gpu, fake, Pacer(gpu.throughput, clock=fake.clock, sleep=fake.sleep)


def test_gpu_bound_rate_is_the_simulated_throughput() -> None:
    gpu, fake, pacer = make()
    rate = gpu.throughput()
    for _ in range(20):  # each CPU step takes a tenth of the GPU's time for 8 samples
        fake.step(pacer, 8, 0.1 * 8 / rate)
    assert pacer.rate_per_s() == pytest.approx(rate, rel=1e-9)
    assert fake.t == pytest.approx(20 * 8 / rate, rel=1e-9)
    assert pacer.wait_fraction() == pytest.approx(0.0, abs=1e-9)
    assert not pacer.cpu_bound()


def test_a_power_cut_slows_the_rate_by_the_physics_ratio() -> None:
    gpu, fake, pacer = make()
    full = gpu.throughput()
    gpu.set_power_limit_w(300)
    capped = gpu.throughput()
    assert 0.2 < capped / full < 0.9
    for _ in range(10):
        fake.step(pacer, 8, 0.001)
    assert pacer.rate_per_s() == pytest.approx(capped, rel=1e-9)


def test_cpu_bound_steps_do_not_wait_and_report_the_gpu_wait() -> None:
    gpu, fake, pacer = make()
    target_s = 8 / gpu.throughput()
    for _ in range(10):  # the CPU takes 4x the GPU's time: the GPU waits 3/4 of it
        assert fake.step(pacer, 8, 4 * target_s) == 0.0
    assert pacer.wait_fraction() == pytest.approx(0.75, rel=1e-9)
    assert pacer.busy_fraction() == pytest.approx(0.25, rel=1e-9)
    assert pacer.cpu_bound()
    assert pacer.rate_per_s() == pytest.approx(gpu.throughput() / 4, rel=1e-9)


def test_a_mid_step_limit_change_takes_effect_at_once() -> None:
    gpu, fake, pacer = make()
    gpu.set_power_limit_w(200)
    slow = gpu.throughput()
    units = 8.0
    lifted_at: list[float] = []

    def lift() -> None:
        lifted_at.append(fake.t)
        gpu.set_power_limit_w(700)

    # Half-way through the step's time at the slow rate, the cap is lifted.
    fake.hooks.append((units / slow / 2, lift))
    waited = pacer.pace(units, 0.0)
    t1 = lifted_at[0]
    # The work left at t1 runs at the full rate from there.
    expected = t1 + (units - t1 * slow) / gpu.throughput()
    assert waited == pytest.approx(expected, rel=1e-9)
    assert waited < units / slow
    assert pacer.wait_fraction() == pytest.approx(0.0, abs=1e-9)


def test_a_mid_step_cut_slows_the_rest_of_the_step() -> None:
    gpu, fake, pacer = make()
    full = gpu.throughput()
    fake.hooks.append((0.1, lambda: gpu.set_power_limit_w(200)))  # after two 50 ms slices
    waited = pacer.pace(80, 0.0)
    slow = gpu.throughput()
    assert slow < full
    assert waited == pytest.approx(0.1 + (80 - 0.1 * full) / slow, rel=1e-6)


def test_idle_gpu_waits_until_it_runs_again() -> None:
    gpu, fake, pacer = make()
    gpu.set_workload(None)
    fake.hooks.append((1.0, lambda: gpu.set_workload(TRAIN)))
    waited = pacer.pace(8, 0.0)
    # Nothing progresses while idle; once running, the whole step's work is still due.
    assert waited == pytest.approx(1.0 + 8 / gpu.throughput(), abs=0.051)
    assert not pacer.cpu_bound()  # the GPU held it up, not the CPU


def test_stop_event_cuts_the_wait_short() -> None:
    stop = threading.Event()
    gpu = SimulatedGPU("L4")
    gpu.set_workload(TRAIN)
    pacer = Pacer(gpu.throughput, stop_event=stop)
    stop.set()
    assert pacer.pace(1e6, 0.0) < 0.05


def test_short_waits_are_carried_and_the_long_run_rate_stays_exact() -> None:
    gpu, fake, _ = make()
    gpu.set_power_limit_w(250)
    sleeps: list[float] = []

    def late_sleep(dt: float) -> None:
        sleeps.append(dt)
        fake.sleep(dt * 1.5 + 0.0005)  # every wake-up comes late

    pacer = Pacer(gpu.throughput, clock=fake.clock, sleep=late_sleep)
    units = 0.0005 * gpu.throughput() * 1.6  # each step's target: 0.8 ms, its CPU: 0.5 ms
    for _ in range(2000):
        fake.step(pacer, units, 0.0005)
    assert min(sleeps) >= 0.002  # no sleep shorter than the minimum wait
    # Short rests and overruns are carried: the run lasts its units at the GPU's rate.
    assert fake.t == pytest.approx(2000 * units / gpu.throughput(), rel=0.01)
    assert pacer.wait_fraction() == pytest.approx(0.0, abs=0.02)


def test_cpu_bound_steps_leave_no_credit_for_later_ones() -> None:
    gpu, fake, pacer = make()
    target_s = 8 / gpu.throughput()
    fake.step(pacer, 8, 10 * target_s)  # one very slow step
    assert fake.step(pacer, 8, 0.0) == pytest.approx(target_s, rel=1e-9)  # full wait


def test_wait_window_keeps_the_recent_steps() -> None:
    window = WaitWindow(window_s=10.0)
    assert window.wait_fraction() is None
    window.add(1.0, 1.0, 0.0)  # an old step that only waited
    for end in range(20, 31):
        window.add(float(end), 1.0, 1.0)
    assert window.wait_fraction() == pytest.approx(0.0)
    window.add(31.0, 1.0, 0.5)
    assert window.wait_fraction() == pytest.approx(0.5 / 11)


def test_the_gpu_draws_idle_power_while_it_waits() -> None:
    gpu, fake, pacer = make()
    active_w = gpu.power_w()
    target_s = 8 / gpu.throughput()
    for _ in range(5):
        fake.step(pacer, 8, 2 * target_s)  # the GPU is busy half the time
    sync_busy_fraction(gpu, pacer)
    idle_w = gpu.spec.idle_power_w
    assert gpu.power_w() == pytest.approx(idle_w + 0.5 * (active_w - idle_w), rel=1e-9)
    assert gpu.utilization_pct() == pytest.approx(50.0)


def test_for_gpu_starts_the_workload_on_an_idle_gpu() -> None:
    gpu = SimulatedGPU("L4")
    pacer = for_gpu(gpu, TRAIN)
    assert gpu.workload == TRAIN
    assert pacer.throughput() == gpu.throughput() > 0


def test_a_rest_carried_between_workloads_is_owed_in_seconds_not_units() -> None:
    """A prefill leaves a rest too short to sleep (prompt tokens at thousands per second);
    the next step decodes at tens of tokens per second: it owes that rest's seconds, not
    its token count (which made a decode after each prefill ~100x too long)."""
    rates = {"prefill": 6000.0, "decode": 60.0}
    kind = ["prefill"]
    fake = FakeTime()
    pacer = Pacer(lambda: rates[kind[0]], clock=fake.clock, sleep=fake.sleep, min_wait_s=0.002)
    fake.step(pacer, 10, 0.0)  # 10 prompt tokens: 1.67 ms, too short to sleep: carried
    assert fake.t == pytest.approx(0.0)
    kind[0] = "decode"
    waited = fake.step(pacer, 2, 0.0)  # 2 output tokens: 33.3 ms, plus the 1.67 ms rest
    assert waited == pytest.approx(2 / 60 + 10 / 6000, rel=1e-9)
