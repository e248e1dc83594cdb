"""EnergyMeter windows over simulated GPUs in virtual time: exact integrals of power."""

from __future__ import annotations

import json

import pytest

from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from greenllm.energy import EnergyMeter, Measurement
from greenllm.energy.cpu_estimate import CpuTimeEstimator


class FakeClock:
    """Virtual time, seconds; advanced by hand."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_gpu(clock: FakeClock, gpu_type: str = "H100-SXM", index: int = 0) -> SimulatedGPU:
    return SimulatedGPU(gpu_type, index=index, node="n", clock=clock)


def make_meter(gpus: list[SimulatedGPU], clock: FakeClock, **kwargs: object) -> EnergyMeter:
    return EnergyMeter(gpus, rapl=None, clock=clock, wall_clock=clock, **kwargs)  # type: ignore[arg-type]


TRAIN = Workload("train", batch=8, model_params=1.3e9, seq_len=2048)


def test_energy_is_power_times_time_under_a_workload(clock: FakeClock) -> None:
    gpu = make_gpu(clock)
    gpu.set_workload(TRAIN)
    power_w = gpu.power_w()
    meter = make_meter([gpu], clock)
    with meter.window("step") as w:
        clock.advance(12.5)
    m = w.result
    assert isinstance(m, Measurement)
    assert m.duration_s == 12.5
    assert m.gpu_energy_j[gpu.uuid] == pytest.approx(power_w * 12.5, rel=1e-12)
    assert m.avg_power_w == pytest.approx(power_w, rel=1e-12)
    assert power_w > gpu.spec.idle_power_w  # the workload really draws more than idle


def test_energy_follows_a_power_change_inside_the_window(clock: FakeClock) -> None:
    gpu = make_gpu(clock)
    idle_w = gpu.power_w()
    meter = make_meter([gpu], clock)
    meter.begin_window("job")
    clock.advance(4.0)
    gpu.set_workload(TRAIN)
    busy_w = gpu.power_w()
    clock.advance(6.0)
    gpu.set_power_limit_w(gpu.spec.min_power_limit_w)
    capped_w = gpu.power_w()
    clock.advance(2.0)
    m = meter.end_window("job")
    expected_j = idle_w * 4.0 + busy_w * 6.0 + capped_w * 2.0
    assert busy_w > capped_w > idle_w
    assert m.gpu_energy_j[gpu.uuid] == pytest.approx(expected_j, rel=1e-12)
    assert m.total_energy_j == pytest.approx(expected_j, rel=1e-12)
    assert m.avg_power_w == pytest.approx(expected_j / 12.0, rel=1e-12)


def test_nested_and_overlapping_windows(clock: FakeClock) -> None:
    gpu = make_gpu(clock)
    gpu.set_workload(TRAIN)
    p = gpu.power_w()
    meter = make_meter([gpu], clock)
    meter.begin_window("outer")  # t = 0
    clock.advance(2.0)
    meter.begin_window("a")  # t = 2
    clock.advance(3.0)
    meter.begin_window("b")  # t = 5, overlaps a
    clock.advance(1.0)
    a = meter.end_window("a")  # t = 6
    assert meter.open_windows() == ["outer", "b"]
    clock.advance(4.0)
    b = meter.end_window("b")  # t = 10
    outer = meter.end_window("outer")
    assert (a.duration_s, b.duration_s, outer.duration_s) == (4.0, 5.0, 10.0)
    assert a.gpu_energy_j[gpu.uuid] == pytest.approx(4.0 * p, rel=1e-12)
    assert b.gpu_energy_j[gpu.uuid] == pytest.approx(5.0 * p, rel=1e-12)
    assert outer.gpu_energy_j[gpu.uuid] == pytest.approx(10.0 * p, rel=1e-12)
    assert meter.open_windows() == []


def test_context_windows_nest_and_the_result_is_set_on_error(clock: FakeClock) -> None:
    gpu = make_gpu(clock)
    meter = make_meter([gpu], clock)
    with meter.window("outer") as outer:
        clock.advance(1.0)
        with pytest.raises(RuntimeError), meter.window("inner") as inner:
            assert inner.result is None
            clock.advance(2.0)
            raise RuntimeError("boom")
        clock.advance(1.0)
    assert inner.result is not None and inner.result.duration_s == 2.0
    assert outer.result is not None and outer.result.duration_s == 4.0


def test_window_names_are_checked(clock: FakeClock) -> None:
    meter = make_meter([make_gpu(clock)], clock)
    meter.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("a")
    with pytest.raises(ValueError, match="not open"):
        meter.end_window("b")


def test_several_gpus_are_keyed_by_uuid(clock: FakeClock) -> None:
    h100 = make_gpu(clock, "H100-SXM", 0)
    l4 = make_gpu(clock, "L4", 1)
    l4.set_workload(Workload("decode", batch=16, model_params=7e9, seq_len=1024))
    meter = make_meter([h100, l4], clock)
    with meter.window("w") as w:
        clock.advance(3.0)
    m = w.result
    assert m is not None
    assert set(m.gpu_energy_j) == {"sim-n-0", "sim-n-1"}
    assert m.gpu_energy_j["sim-n-0"] == pytest.approx(3.0 * h100.power_w(), rel=1e-12)
    assert m.gpu_energy_j["sim-n-1"] == pytest.approx(3.0 * l4.power_w(), rel=1e-12)
    rows = {r.uuid: r for r in m.devices()}
    assert rows["sim-n-1"].source == "simulated"
    assert rows["sim-n-1"].device == "gpu1 L4"
    assert rows["sim-n-1"].avg_power_w == pytest.approx(l4.power_w(), rel=1e-12)


def test_cpu_is_none_with_a_reason_when_rapl_is_off_never_zero(clock: FakeClock) -> None:
    meter = make_meter([make_gpu(clock)], clock)
    with meter.window("w") as w:
        clock.advance(1.0)
    m = w.result
    assert m is not None
    assert m.cpu_energy_j is None
    assert m.cpu_total_j is None
    assert m.cpu_unavailable_reason == "RAPL turned off"
    assert m.cpu_estimate_j is None
    assert m.total_includes == ["gpu"]
    assert [r.kind for r in m.devices()] == ["gpu"]


def test_cpu_estimate_is_cpu_time_times_watts_per_core_and_labelled(clock: FakeClock) -> None:
    cpu_s = [10.0]
    estimator = CpuTimeEstimator(watts_per_core=8.0, cpu_time_s=lambda: cpu_s[0])
    gpu = make_gpu(clock)
    meter = make_meter([gpu], clock, cpu_estimate=estimator)
    with meter.window("w") as w:
        clock.advance(2.0)
        cpu_s[0] += 3.5
    m = w.result
    assert m is not None
    assert m.cpu_time_s == 3.5
    assert m.cpu_estimate_j == 28.0
    assert m.total_includes == ["gpu", "estimate"]
    assert m.total_energy_j == pytest.approx(m.gpu_total_j + 28.0)
    (row,) = [r for r in m.devices() if r.kind == "cpu"]
    assert (row.source, row.energy_j, row.avg_power_w, row.in_total) == (
        "estimate",
        28.0,
        14.0,
        True,
    )
    doc = m.to_dict()
    assert doc["cpu_estimate"] == {
        "source": "estimate",
        "energy_j": 28.0,
        "cpu_time_s": 3.5,
        "watts_per_core": 8.0,
    }
    assert doc["cpu_energy_j"] is None


def test_default_cpu_estimator_counts_real_cpu_time(clock: FakeClock) -> None:
    meter = make_meter([], clock, cpu_estimate=True)
    with meter.window("busy") as w:
        total = 0
        for i in range(2_000_000):
            total += i
    m = w.result
    assert m is not None and m.cpu_time_s is not None and m.cpu_estimate_j is not None
    assert m.cpu_time_s > 0
    assert m.cpu_estimate_j == pytest.approx(m.cpu_time_s * m.watts_per_core)  # type: ignore[operator]


def test_to_dict_is_json_and_names_sources(clock: FakeClock) -> None:
    gpu = make_gpu(clock)
    meter = make_meter([gpu], clock)
    with meter.window("w") as w:
        clock.advance(1.0)
    assert w.result is not None
    doc = json.loads(json.dumps(w.result.to_dict()))
    for key in (
        "name",
        "duration_s",
        "gpu_energy_j",
        "cpu_energy_j",
        "cpu_unavailable_reason",
        "cpu_estimate_j",
        "total_energy_j",
        "avg_power_w",
        "devices",
    ):
        assert key in doc
    assert doc["devices"][0]["source"] == "simulated"
    assert doc["total_energy_j"] == pytest.approx(gpu.power_w())


def test_empty_window_has_no_average_power(clock: FakeClock) -> None:
    meter = make_meter([make_gpu(clock)], clock)
    with meter.window("w") as w:
        pass
    assert w.result is not None
    assert w.result.duration_s == 0.0
    assert w.result.avg_power_w is None


def test_duplicate_gpu_uuids_are_rejected(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unique"):
        make_meter([make_gpu(clock), make_gpu(clock)], clock)


def test_simulated_gpus_can_be_left_out_of_the_total(clock: FakeClock) -> None:
    cpu_s = [0.0]
    estimator = CpuTimeEstimator(watts_per_core=8.0, cpu_time_s=lambda: cpu_s[0])
    gpus = [make_gpu(clock, index=0), make_gpu(clock, "L4", index=1)]
    meter = make_meter(gpus, clock, cpu_estimate=estimator, simulated_in_total=False)
    with meter.window("w") as w:
        clock.advance(2.0)
        cpu_s[0] += 1.0
    m = w.result
    assert m is not None
    assert m.gpus_excluded == tuple(g.uuid for g in gpus)
    assert all(e > 0 for e in m.gpu_energy_j.values())  # still read and shown
    assert m.gpu_total_j == 0.0
    assert m.total_includes == ["estimate"]
    assert m.total_energy_j == pytest.approx(8.0)
    assert [r.in_total for r in m.devices()] == [False, False, True]
    assert m.to_dict()["gpus_excluded"] == [g.uuid for g in gpus]


def test_nothing_counted_leaves_total_includes_empty(clock: FakeClock) -> None:
    meter = make_meter([make_gpu(clock)], clock, simulated_in_total=False)
    with meter.window("w") as w:
        clock.advance(1.0)
    assert w.result is not None and w.result.total_includes == []
