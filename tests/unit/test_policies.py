"""Each policy on hand-made problems, and the oracle against max-throughput."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from scheduler.core.decide import _groups
from scheduler.core.powermodel import PowerModel
from scheduler.core.problem import Problem
from scheduler.core.types import GPUState, JobState
from scheduler.policies import load_policy
from scheduler.policies.planning import group_values
from scheduler.sim.oracle import OraclePolicy

TRAIN = Workload("train", batch=8, model_params=1.3e9)
DECODE = Workload("decode", batch=32, model_params=7e9)


def problem(layout: list[tuple[str, str | None]], jobs: list[JobState], budget_w: float) -> Problem:
    """GPUs given as (type, job id or None); shards in order."""
    live = [
        GPUState("n", i, t, 0.0, 0.0, get_spec(t).max_power_limit_w, job_id=j, shard=i)
        for i, (t, j) in enumerate(layout)
    ]
    specs = [get_spec(t) for t, _ in layout]
    groups = _groups(live, {}, {j.job_id: j for j in jobs}, PowerModel(), 48)
    busy = np.array([j is not None for _, j in layout])
    return Problem(
        budget_w=budget_w,
        min_w=np.array([s.min_power_limit_w for s in specs], dtype=float),
        max_w=np.array([s.max_power_limit_w for s in specs], dtype=float),
        tdp_w=np.array([s.tdp_w for s in specs], dtype=float),
        busy=busy,
        groups=groups,
        model=PowerModel(),
    )


def objective(p: Problem, limits: np.ndarray) -> float:
    """max-throughput's objective at the true (physics) curves."""
    rates = []
    for g in p.groups:
        spec = get_spec(g.gpu_type)
        rates.append(
            np.array([physics.operating_point(spec, g.job.workload, limits[g.rows[0]]).throughput])
        )
    full = group_values(p)
    total = 0.0
    for g, r, v in zip(p.groups, rates, full, strict=True):
        top = float(np.max(g.curve.rate))
        total += float(v[-1]) * min(1.0, float(r[0]) / top)
    return total


def test_uniform_splits_equally_and_tdp_proportionally() -> None:
    jobs = [JobState("t", "train", "running", TRAIN, shards=2)]
    p = problem([("H100-SXM", "t"), ("A100-SXM4", "t"), ("L4", None)], jobs, 840)
    uni = load_policy("uniform").allocate(p).limits_w
    assert uni[2] == 40 and uni[0] == pytest.approx(400) and uni[1] == pytest.approx(400)
    tdp = load_policy("tdp-proportional").allocate(p).limits_w
    assert tdp[0] / tdp[1] == pytest.approx(700 / 400)
    assert tdp[0] + tdp[1] == pytest.approx(800)


def test_max_throughput_gives_no_watts_past_the_plateau() -> None:
    jobs = [
        JobState("d", "infer", "running", DECODE, shards=1),
        JobState("t", "train", "running", TRAIN, shards=1),
    ]
    p = problem([("H100-SXM", "d"), ("H100-SXM", "t")], jobs, 1400)
    lim = load_policy("max-throughput").allocate(p).limits_w
    draw = physics.power_w(get_spec("H100-SXM"), DECODE, 1980)
    assert lim[0] <= draw + 20  # decode never draws more: no watts for nothing
    assert lim[1] >= 0.85 * 700 * 0.99


def test_max_throughput_plans_training_per_job_and_beats_uniform() -> None:
    jobs = [
        JobState(
            "t7", "train", "running", Workload("train", model_params=7e9), shards=2, priority=3
        ),
        JobState("d", "infer", "running", DECODE, shards=2, priority=1),
    ]
    layout = [("H100-SXM", "t7"), ("H100-SXM", "t7"), ("A100-SXM4", "d"), ("A100-SXM4", "d")]
    p = problem(layout, jobs, 1300)
    mt = load_policy("max-throughput").allocate(p).limits_w
    assert mt[0] == mt[1]  # one limit for the whole synchronous job
    assert float(np.sum(mt)) <= 1300 + 1e-6
    uni = load_policy("uniform").allocate(p).limits_w
    assert objective(p, mt) > objective(p, uni)


def test_priority_caps_lowest_first_never_below_floor() -> None:
    jobs = [
        JobState("hi", "train", "running", TRAIN, shards=1, priority=3),
        JobState("lo", "train", "running", TRAIN, shards=1, priority=1, floor_w=300),
    ]
    p = problem([("H100-SXM", "hi"), ("H100-SXM", "lo")], jobs, 1000)
    lim = load_policy("priority").allocate(p).limits_w
    assert lim[1] == pytest.approx(1000 - lim[0])
    assert lim[1] >= 300 - 1e-9
    assert lim[0] > 0.85 * 700 * 0.99  # the high priority is not capped
    tight = problem([("H100-SXM", "hi"), ("H100-SXM", "lo")], jobs, 800)
    lim = load_policy("priority").allocate(tight).limits_w
    assert lim[1] == pytest.approx(300) and lim[0] == pytest.approx(500)


def test_min_energy_locks_decode_clocks_and_meets_slo() -> None:
    spec = get_spec("H100-SXM")
    top_rate = physics.throughput(spec, DECODE, spec.max_sm_clock_mhz)
    jobs = [JobState("d", "infer", "running", DECODE, shards=1, slo_units_per_s=0.9 * top_rate)]
    p = problem([("H100-SXM", "d")], jobs, 700)
    alloc = load_policy("min-energy").allocate(p)
    lock = int(alloc.lock_max_sm_clock_mhz[0])
    assert 0 < lock < spec.max_sm_clock_mhz
    point = physics.operating_point(spec, DECODE, alloc.limits_w[0], lock)
    full = physics.operating_point(spec, DECODE, 700)
    assert point.throughput >= 0.9 * top_rate
    assert point.joules_per_unit < 0.8 * full.joules_per_unit
    assert not alloc.unmet_slos


def test_min_energy_reports_unmet_slos_and_priorities_decide() -> None:
    spec = get_spec("H100-SXM")
    top = physics.throughput(spec, TRAIN, spec.max_sm_clock_mhz)
    jobs = [
        JobState("hi", "train", "running", TRAIN, shards=1, priority=2, slo_units_per_s=0.98 * top),
        JobState("lo", "train", "running", TRAIN, shards=1, priority=1, slo_units_per_s=0.98 * top),
        JobState("x", "train", "running", TRAIN, shards=1, slo_units_per_s=10 * top),
    ]
    p = problem([("H100-SXM", "hi"), ("H100-SXM", "lo"), ("H100-SXM", "x")], jobs, 1500)
    alloc = load_policy("min-energy").allocate(p)
    reasons = {r.job_id: r.reason for r in alloc.unmet_slos}
    assert "capacity" in reasons["x"]
    assert "lo" in reasons and "priority 1" in reasons["lo"]
    assert "hi" not in reasons


def test_min_energy_gives_what_the_budget_still_holds_to_the_job_that_gave_way() -> None:
    spec = get_spec("H100-SXM")
    top = physics.throughput(spec, TRAIN, spec.max_sm_clock_mhz)
    jobs = [
        JobState("hi", "train", "running", TRAIN, shards=1, priority=2, slo_units_per_s=0.98 * top),
        JobState("lo", "train", "running", TRAIN, shards=1, priority=1, slo_units_per_s=0.98 * top),
    ]
    p = problem([("H100-SXM", "hi"), ("H100-SXM", "lo")], jobs, 1100)
    alloc = load_policy("min-energy").allocate(p)
    assert [r.job_id for r in alloc.unmet_slos] == ["lo"]
    # "lo" is not left at its least-energy clock: it runs as fast as the rest of the budget
    # allows (within one clock step of it), and the budget holds
    cheapest = p.groups[1].clock_curve
    per_unit = cheapest.power_w / np.maximum(cheapest.rate, 1e-12)
    assert alloc.lock_max_sm_clock_mhz[1] > cheapest.sm_clock_mhz[int(np.argmin(per_unit))]
    assert 1100 - 40 < float(np.sum(alloc.limits_w)) <= 1100 + 1e-6


def test_min_energy_top_up_jumps_a_stretch_of_its_curve_that_adds_no_rate() -> None:
    # a learned curve is kept non-decreasing: a bin measured fast at a low clock leaves a
    # flat stretch above it, which the top-up must cross to spend what the budget holds
    spec = get_spec("H100-SXM")
    jobs = [JobState("t", "train", "running", TRAIN, shards=1, slo_units_per_s=1e6)]
    p = problem([("H100-SXM", "t")], jobs, 600)
    g = p.groups[0]
    c = g.clock_curve
    rate = np.array(c.rate, dtype=float)
    cheap = int(np.argmin(c.power_w / np.maximum(c.rate, 1e-12)))
    flat = slice(cheap, cheap + 8)
    rate[flat] = rate[cheap]  # flat for eight clock steps above the least-energy clock
    p.groups[0] = replace(g, clock_curve=replace(c, rate=rate))
    alloc = load_policy("min-energy").allocate(p)
    assert float(alloc.limits_w[0]) > 600 - 40
    assert alloc.lock_max_sm_clock_mhz[0] > c.sm_clock_mhz[cheap + 7]
    assert spec.min_power_limit_w <= float(alloc.limits_w[0]) <= 600


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["H100-SXM", "A100-SXM4", "L4", "A40"]), st.sampled_from([0, 1, 2])
        ),
        min_size=1,
        max_size=6,
    ),
    st.floats(0.3, 1.0),
)
def test_oracle_is_never_worse_than_max_throughput(
    layout: list[tuple[str, int]], frac: float
) -> None:
    wls = [TRAIN, DECODE, Workload("prefill", batch=4, model_params=7e9)]
    kinds = ["train", "infer", "infer"]
    jobs = [
        JobState(f"j{k}", kinds[k], "running", wls[k], shards=1, priority=1 + k) for k in range(3)
    ]
    gpus = [(t, f"j{k}") for t, k in layout]
    lo = sum(get_spec(t).min_power_limit_w for t, _ in gpus)
    hi = sum(get_spec(t).max_power_limit_w for t, _ in gpus)
    p = problem(
        gpus, [j for j in jobs if any(g[1] == j.job_id for g in gpus)], lo + frac * (hi - lo)
    )
    oracle = OraclePolicy({}).allocate(p).limits_w
    mt = load_policy("max-throughput").allocate(p).limits_w
    assert float(np.sum(oracle)) <= p.budget_w + 1e-6
    assert objective(p, oracle) >= objective(p, mt) - 1e-9
    assert objective(p, mt) >= 0.95 * objective(p, oracle)


def test_distinct_rows_are_exact_even_when_projections_collide() -> None:
    from scheduler.policies.planning import _distinct_rows

    keys = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0]])
    first, inverse = _distinct_rows(keys)
    assert sorted(first.tolist()) == [0, 2, 4]
    assert (keys[first[inverse]] == keys).all()
    first, inverse = _distinct_rows(keys, projection=np.zeros(2))  # every row collides
    assert (keys[first[inverse]] == keys).all() and len(first) == 3
