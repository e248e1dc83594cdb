"""The simulated backend: exact energy integral, bounds, clock locks, restore."""

from __future__ import annotations

import pytest

from greenllm.devices import physics
from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import OutOfRangeError


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_energy_is_the_integral_of_power(clock: FakeClock) -> None:
    gpu = SimulatedGPU("A100-SXM4", clock=clock)
    expected = 0.0
    steps = [
        (None, 400.0, 2.0),
        (Workload("train"), 400.0, 3.0),
        (Workload("train"), 250.0, 1.5),
        (Workload("decode", batch=4), 250.0, 4.0),
        (Workload("prefill"), 100.0, 0.25),
    ]
    for workload, limit, dt in steps:
        gpu.set_workload(workload)
        gpu.set_power_limit_w(limit)
        power = gpu.power_w()
        clock.advance(dt)
        expected += power * dt
    assert gpu.energy_j() == pytest.approx(expected, rel=1e-12)


def test_work_is_the_integral_of_throughput(clock: FakeClock) -> None:
    gpu = SimulatedGPU("L4", clock=clock)
    gpu.set_workload(Workload("decode", batch=8))
    rate_full = gpu.throughput()
    clock.advance(2.0)
    gpu.lock_sm_clocks_mhz(210, 1020)
    rate_locked = gpu.throughput()
    clock.advance(3.0)
    assert rate_locked < rate_full
    assert gpu.work_units() == pytest.approx(2.0 * rate_full + 3.0 * rate_locked)


def test_a_partly_busy_gpu_draws_idle_power_while_it_waits(clock: FakeClock) -> None:
    gpu = SimulatedGPU("H100-SXM", clock=clock)
    gpu.set_workload(Workload("train", seq_len=128))
    active_w, rate = gpu.power_w(), gpu.throughput()
    idle_w = gpu.spec.idle_power_w
    clock.advance(1.0)
    gpu.set_busy_fraction(0.25)  # a CPU shard keeps it busy a quarter of the time
    assert gpu.throughput() == rate  # the rate while busy is the workload's
    assert gpu.power_w() == pytest.approx(idle_w + 0.25 * (active_w - idle_w))
    assert gpu.utilization_pct() == pytest.approx(25.0)
    clock.advance(2.0)
    gpu.set_power_limit_w(350)  # a cap while partly busy: the capped draw, a quarter of it
    capped_w = physics.operating_point(gpu.spec, gpu.workload, 350).power_w
    assert gpu.power_w() == pytest.approx(idle_w + 0.25 * (capped_w - idle_w))
    clock.advance(1.0)
    expected_j = active_w + 2.0 * (idle_w + 0.25 * (active_w - idle_w)) + gpu.power_w()
    assert gpu.energy_j() == pytest.approx(expected_j, rel=1e-12)
    capped_rate = gpu.throughput()
    assert gpu.work_units() == pytest.approx(rate + 2.0 * 0.25 * rate + 0.25 * capped_rate)
    gpu.set_workload(None)
    assert gpu.power_w() == idle_w and gpu.utilization_pct() == 0.0
    with pytest.raises(ValueError):
        gpu.set_busy_fraction(1.5)


def test_power_limit_caps_power_and_clock(clock: FakeClock) -> None:
    gpu = SimulatedGPU("H100-SXM", clock=clock)
    gpu.set_workload(Workload("train"))
    free_clock = gpu.sm_clock_mhz()
    gpu.set_power_limit_w(350)
    assert gpu.power_w() <= 350
    assert gpu.sm_clock_mhz() < free_clock
    assert gpu.temperature_c() > 30
    assert gpu.utilization_pct() == 100.0


def test_setters_are_bounded(clock: FakeClock) -> None:
    gpu = SimulatedGPU("V100-SXM2", clock=clock)
    with pytest.raises(OutOfRangeError, match="outside \\[150, 300\\] W"):
        gpu.set_power_limit_w(100)
    with pytest.raises(OutOfRangeError):
        gpu.set_power_limit_w(301)
    with pytest.raises(OutOfRangeError):
        gpu.lock_sm_clocks_mhz(900, 800)
    with pytest.raises(OutOfRangeError):
        gpu.lock_sm_clocks_mhz(100, 1600)
    assert gpu.power_limit_w() == 300


def test_restore_defaults_undoes_limit_and_lock(clock: FakeClock) -> None:
    gpu = SimulatedGPU("A40", clock=clock)
    gpu.set_workload(Workload("train"))
    gpu.set_power_limit_w(150)
    gpu.lock_sm_clocks_mhz(210, 900)
    assert gpu.locked_sm_clocks_mhz() == (210, 900)
    gpu.restore_defaults()
    assert gpu.power_limit_w() == 300
    assert gpu.locked_sm_clocks_mhz() is None
    assert gpu.sm_clock_mhz() == physics.effective_clock_mhz(gpu.spec, Workload("train"), 300)


def test_energy_counter_update_period(clock: FakeClock) -> None:
    gpu = SimulatedGPU("L4", clock=clock, energy_update_period_s=0.1)
    gpu.set_workload(Workload("train"))
    power = gpu.power_w()
    clock.advance(0.25)
    assert gpu.energy_j() == pytest.approx(power * 0.2)
    clock.advance(0.05)
    assert gpu.energy_j() == pytest.approx(power * 0.3)


def test_sensor_noise_is_seeded_and_zero_mean(clock: FakeClock) -> None:
    a = SimulatedGPU("A100-PCIe", clock=clock, power_noise_w=5.0, seed=7)
    b = SimulatedGPU("A100-PCIe", clock=clock, power_noise_w=5.0, seed=7)
    for g in (a, b):
        g.set_workload(Workload("train"))
    readings = [a.power_w() for _ in range(2000)]
    assert readings[:5] == [b.power_w() for _ in range(5)]
    true_w = physics.operating_point(a.spec, Workload("train"), 300).power_w
    assert abs(sum(readings) / len(readings) - true_w) < 1.0
    assert max(readings) - min(readings) > 10


def test_sample_reads_every_field(clock: FakeClock) -> None:
    gpu = SimulatedGPU("H100-SXM", index=2, node="n1", clock=clock)
    gpu.set_workload(Workload("train", model_params=1e9))
    s = gpu.sample()
    assert s.timestamp_s == clock.t
    assert s.power_limit_w == 700
    assert 0 < s.memory_used_mib <= gpu.memory_total_mib()
    assert gpu.uuid == "sim-n1-2"


def test_unknown_type_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="unknown GPU type 'X9000'"):
        SimulatedGPU("X9000")


@pytest.mark.parametrize("gpu_type", ["H200-SXM", "H100-PCIe", "L40S", "B200"])
def test_new_catalog_types_simulate(gpu_type: str) -> None:
    gpu = SimulatedGPU(gpu_type)
    c = gpu.power_limit_constraints()
    assert c.default_power_limit_w == c.max_power_limit_w == gpu.power_limit_w()
    gpu.set_workload(Workload("train"))
    assert gpu.spec.idle_power_w < gpu.power_w() <= c.max_power_limit_w


def test_simulates_a_spec_scaled_from_what_an_unknown_gpu_reports() -> None:
    from greenllm.devices.catalog import spec_from_reported

    spec = spec_from_reported("NVIDIA Future GPU", 300, 900, 800, [210, 1500, 2100], 98304)
    gpu = SimulatedGPU(spec)
    assert gpu.gpu_type == "NVIDIA Future GPU"
    c = gpu.power_limit_constraints()
    assert (c.min_power_limit_w, c.max_power_limit_w, c.default_power_limit_w) == (300, 900, 800)
    assert gpu.power_limit_w() == 800


def test_restore_puts_back_the_limit_before_the_first_change(clock: FakeClock) -> None:
    gpu = SimulatedGPU("A100-SXM4", clock=clock)
    gpu.set_power_limit_w(300)
    gpu.restore_defaults()  # back to the boot limit
    assert gpu.power_limit_w() == 400
    gpu.set_power_limit_w(350)
    gpu.set_power_limit_w(200)
    gpu.lock_sm_clocks_mhz(210, 900)
    gpu.restore_defaults()
    assert (gpu.power_limit_w(), gpu.locked_sm_clocks_mhz()) == (400, None)
