"""Inference planning that holds on loads nobody tuned to (issue 18).

* chunked prefill: a long prompt delays its batch's decodes by a chunk per step, not by its
  whole prefill;
* demand in GPU time: a prefill-heavy load gets the replicas its prompts need;
* SLO feedback: a measured miss scales up at once, and a count does not shrink while its
  latency is near the SLO;
* a property over random load shapes: min-energy meets every SLO the static peak fleet
  meets, for no more joules per token of the GPUs it holds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from greenllm.serving.chunking import step_token_budget
from greenllm.serving.shapes import SHAPES, random_load, shaped_load, write_load
from greenllm.serving.slo import LATENCY_WINDOW_S
from scheduler.core.decide import _groups
from scheduler.core.powermodel import PowerModel
from scheduler.core.types import GPUState, JobState, LatencyFeedback
from scheduler.policies import load_policy
from scheduler.policies.min_energy import MinEnergyPolicy
from scheduler.policies.scaling import FEEDBACK_COOLDOWN_S, over_slo, replica_count
from scheduler.sim.engine import Simulation
from scheduler.sim.replica import ReplicaModel, Request
from scheduler.sim.scenario import Scenario

PARAMS = 8.0e9
SPEC = get_spec("H100-SXM")


def _op(wl: Workload) -> physics.OperatingPoint:
    return physics.operating_point(SPEC, wl, SPEC.max_power_limit_w)


def _serve(rep: ReplicaModel, until_s: float, dt_s: float = 0.05) -> None:
    prefill = Workload("prefill", batch=8, model_params=PARAMS)

    def decode(b: int) -> Workload:
        return Workload("decode", batch=b, model_params=PARAMS)

    t = 0.0
    while t < until_s - 1e-9:
        rep.serve(
            t, dt_s, lambda: _op(prefill).throughput, lambda b: _op(decode(b)).throughput,
            prefill, decode,
        )  # fmt: skip
        t += dt_s


def test_a_long_prompt_does_not_stall_the_decodes_of_its_batch() -> None:
    """A 60,000-token prompt arrives while a request decodes: with a step budget of 2,048
    tokens each decode waits at most a chunk (~70 ms on an H100 at 8e9 parameters), not
    the whole prefill (~2 s)."""
    rep = ReplicaModel(max_batch=8, token_budget=2048)
    rep.add(Request(0.0, 16, 200))
    rep.add(Request(0.01, 60_000, 4))
    _serve(rep, 8.0)
    short, long_ = sorted(rep.done, key=lambda f: f.arrive_s)
    full_prefill_s = 60_000 / _op(Workload("prefill", batch=8, model_params=PARAMS)).throughput
    chunk_s = 2048 / _op(Workload("prefill", batch=8, model_params=PARAMS)).throughput
    assert full_prefill_s > 1.5
    assert short.tpot_s < chunk_s + 0.02, (short.tpot_s, chunk_s)
    # its own prefill, chunked, plus the decode steps it shared
    assert full_prefill_s <= long_.ttft_s <= 1.25 * full_prefill_s


def test_the_step_budget_defaults_as_vllm_does() -> None:
    assert step_token_budget(get_spec("H100-SXM").memory_mib) == 8192
    assert step_token_budget(get_spec("A100-SXM4").memory_mib) == 2048
    assert step_token_budget(get_spec("A100-SXM4").memory_mib, 512) == 512


def _infer_job(**kw: Any) -> JobState:
    base: dict[str, Any] = {
        "job_id": "j",
        "kind": "infer",
        "phase": "running",
        "workload": Workload("decode", batch=64, model_params=PARAMS),
        "shards": 8,
        "min_shards": 1,
        "active_shards": 2,
    }
    base.update(kw)
    return JobState(**base)


def _groups_of(job: JobState) -> list[Any]:
    gpus = [
        GPUState("n", i, "H100-SXM", 0.0, 0.0, 700.0, None, None, False, "j", i)
        for i in range(job.shards)
    ]
    return _groups(gpus, {}, {"j": job}, PowerModel(), 24)


def test_a_prefill_heavy_load_gets_the_replicas_its_prompts_need() -> None:
    """Code completion (1,500-token prompts, 13-token answers) at 30 requests/s: 390
    output tokens/s, which one H100 decodes with room to spare, but the prompts need
    45,000 prefill tokens/s: more than one H100's prefill rate (~31,000 tokens/s). Planning
    in output tokens alone gives one replica; in GPU time, enough for the prompts."""
    out_per_s, prompt_per_s = 30 * 13.0, 30 * 1500.0
    job = _infer_job(
        demand_units_per_s=out_per_s,
        slo_units_per_s=out_per_s,
        prompt_tokens_per_output=prompt_per_s / out_per_s,
    )
    count = replica_count(job, _groups_of(job))
    prefill_rate = _op(Workload("prefill", batch=64, model_params=PARAMS)).throughput
    decode_rate = _op(Workload("decode", batch=64, model_params=PARAMS)).throughput
    gpu_s_per_s = prompt_per_s / prefill_rate + out_per_s / decode_rate
    assert count is not None and count >= np.ceil(gpu_s_per_s)
    plain = _infer_job(demand_units_per_s=out_per_s, slo_units_per_s=out_per_s)
    assert replica_count(plain, _groups_of(plain)) == 1  # what output tokens alone plan


def test_a_measured_slo_miss_scales_up_at_once() -> None:
    """The demand says two replicas are plenty, but the replicas measure p99 TTFT 3 s on a
    2 s SLO: the count grows now, and again only after the cooldown."""
    miss = LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=3.0, since_scaled_s=LATENCY_WINDOW_S)
    job = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=miss)
    groups = _groups_of(job)
    assert replica_count(job, groups) == 3
    just = LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=3.0, since_scaled_s=1.0)
    held = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=just)
    assert replica_count(held, groups) == 2  # no shrink while it misses, no second step yet
    queue = LatencyFeedback(slo_ttft_s=2.0, oldest_wait_s=2.5, since_scaled_s=60.0)
    waiting = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=queue)
    assert replica_count(waiting, groups) == 3  # a queue heading over the SLO counts too
    calm = LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=0.2, since_scaled_s=60.0)
    quiet = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=calm)
    assert replica_count(quiet, groups) == 1  # well under the SLO: it shrinks


def test_a_ttft_miss_from_before_the_count_changed_is_judged_by_the_queue_now() -> None:
    """Within the latency window after a change, the p99 TTFT still holds the requests the
    old count served: with no queue now it neither scales up nor locks full clocks; a
    queue heading over the SLO does, and so does the p99 once the window turned over. A
    TPOT miss (no live figure) always counts."""
    groups = _groups_of(_infer_job())
    cases = (
        (LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=3.0, since_scaled_s=FEEDBACK_COOLDOWN_S), 2),
        (LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=3.0, since_scaled_s=LATENCY_WINDOW_S), 3),
        (
            LatencyFeedback(
                slo_ttft_s=2.0,
                ttft_p99_s=3.0,
                oldest_wait_s=1.9,
                since_scaled_s=FEEDBACK_COOLDOWN_S,
            ),
            3,
        ),
        (LatencyFeedback(slo_tpot_s=0.25, tpot_p99_s=0.3, since_scaled_s=FEEDBACK_COOLDOWN_S), 3),
    )
    for fb, expected in cases:
        job = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=fb)
        assert replica_count(job, groups) == expected, fb
        assert over_slo(job) == (expected == 3), fb


def test_a_measured_miss_runs_the_job_at_full_clocks() -> None:
    miss = LatencyFeedback(slo_ttft_s=2.0, ttft_p99_s=3.0)
    job = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, latency=miss, min_shards=8)
    groups = _groups_of(job)
    from scheduler.core.problem import Problem

    n = job.shards
    problem = Problem(
        budget_w=n * 700.0,
        min_w=np.full(n, 200.0),
        max_w=np.full(n, 700.0),
        tdp_w=np.full(n, 700.0),
        busy=np.ones(n, dtype=bool),
        groups=groups,
        model=PowerModel(),
    )
    alloc = MinEnergyPolicy().allocate(problem)
    assert (alloc.lock_max_sm_clock_mhz == SPEC.max_sm_clock_mhz).all()
    calm = _infer_job(demand_units_per_s=50.0, slo_units_per_s=50.0, min_shards=8)
    problem.groups = _groups_of(calm)
    assert (MinEnergyPolicy().allocate(problem).lock_max_sm_clock_mhz < SPEC.max_sm_clock_mhz).all()


SLO = {"p99_ttft_s": 2.0, "p99_tpot_s": 0.25}
#: Requests arriving this long after the start are judged (the first control periods place
#: the job and learn its load), seconds.
WARMUP_S = 10.0
#: The transition time after a step change of the rate: requests arriving within it are
#: not judged (the replicas a step needs are added within seconds, but requests already
#: queued at the old ones wait there), seconds.
TRANSITION_S = 10.0


def _scenario(trace: Path, duration_s: float, scale: bool) -> Scenario:
    job: dict[str, Any] = {
        "name": "serve",
        "kind": "infer",
        "shards": 8,
        "gpu_types": ["H100-SXM", "A100-SXM4"],
        "simulated_model_params": PARAMS,
        "slo": dict(SLO),
        "infer": {
            "batch_size": 64,
            "load": {"process": "trace", "trace_file": str(trace), "duration_s": duration_s},
        },
    }
    if scale:
        job["min_shards"] = 1
    return Scenario.model_validate(
        {
            "duration_s": duration_s + 15,
            "seed": 3,
            "nodes": [
                {"name": "h", "gpus": [{"type": "H100-SXM", "count": 4}]},
                {"name": "a", "gpus": [{"type": "A100-SXM4", "count": 4}]},
            ],
            "budget": {"frac_of_tdp": 1.0},
            "jobs": [job],
        }
    )


def _judged(
    trace: Path, duration_s: float, scale: bool, policy: str, steps_every_s: float = 0.0
) -> tuple[bool, float]:
    """Whether the SLO held for requests after the warm-up (and, with ``steps_every_s``,
    outside :data:`TRANSITION_S` after each step change of the rate); J/token of the held
    GPUs."""
    sim = Simulation(_scenario(trace, duration_s, scale), Path("."), load_policy(policy), policy)
    result = sim.run()
    [job] = sim.world.jobs.values()
    late = [f for f in job.finished if f.arrive_s >= WARMUP_S]
    if steps_every_s > 0:
        late = [f for f in late if (f.arrive_s - job.submitted_s) % steps_every_s >= TRANSITION_S]
    ttft = float(np.percentile([f.ttft_s for f in late], 99)) if late else 0.0
    tpots = [f.tpot_s for f in late if f.tokens > 1]
    tpot = float(np.percentile(tpots, 99)) if tpots else 0.0
    met = ttft <= SLO["p99_ttft_s"] and tpot <= SLO["p99_tpot_s"]
    return met, result.joules_per_unit()["serve"]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(SHAPES),
    load=st.floats(0.05, 0.6),
    seed=st.integers(0, 1000),
)
def test_min_energy_meets_what_the_static_fleet_meets_for_fewer_joules(
    shape: str, load: float, seed: int
) -> None:
    """Random shapes at 5-60% of the fleet's capacity for that shape (4 H100 + 4 A100,
    8e9 parameters): every SLO the static peak fleet meets (requests after a 10 s warm-up),
    min-energy meets, and its J/token of held GPUs is no higher."""
    capacity_per_s = {
        "trace": 16.0, "prefill-heavy": 55.0, "decode-heavy": 9.0, "bursty": 16.0, "quiet": 160.0,
    }  # fmt: skip
    duration_s = 90.0
    with tempfile.TemporaryDirectory() as tmp:
        trace = write_load(
            shaped_load(shape, duration_s, load * capacity_per_s[shape], seed=seed),
            Path(tmp) / "load.csv",
        )
        static_met, static_jpt = _judged(trace, duration_s, False, "uniform")
        green_met, green_jpt = _judged(trace, duration_s, True, "min-energy")
    assert green_met or not static_met, f"{shape} at {load:.0%}: static met, min-energy missed"
    assert green_jpt <= static_jpt * 1.001, (shape, load, green_jpt, static_jpt)


def _fleet_rates() -> tuple[float, float]:
    """Prefill and decode (batch 64) rates of the 4 H100 + 4 A100 at full power, tokens/s."""
    prefill = decode = 0.0
    for gpu_type in ("H100-SXM", "A100-SXM4"):
        spec = get_spec(gpu_type)
        for wl in (Workload("prefill", model_params=PARAMS), Workload("decode", 64, PARAMS)):
            rate = 4 * physics.operating_point(spec, wl, spec.max_power_limit_w).throughput
            if wl.kind == "prefill":
                prefill += rate
            else:
                decode += rate
    return prefill, decode


#: Seeds of random loads min-energy is known to miss (static meets): 2 of seeds 2025-2044
#: (long prompts at a 7-8x swing; issue 18 stays open on them). Strict: a fix shows as XPASS.
KNOWN_MISSES = {
    2033: "prompt ~3229 / output ~697 tokens, 0.7/s, 7.3x swing per 114 s: TPOT over SLO",
    2036: "prompt ~2024 / output ~185 tokens, 5.8/s, 8.3x swing per 62 s",
}


@pytest.mark.parametrize(
    "seed",
    [
        *range(2025, 2031),
        *(
            pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=r))
            for s, r in KNOWN_MISSES.items()
        ),
    ],
)
def test_on_random_token_mixes_and_swings_min_energy_keeps_the_static_fleets_slos(
    seed: int,
) -> None:
    """Random loads (:func:`~greenllm.serving.shapes.random_load`: token mixes, rates and
    square-wave swings nobody tuned to) at 5-50% of the 4 H100 + 4 A100's GPU time: beyond
    :data:`TRANSITION_S` after each step change of the rate, every SLO the static peak fleet
    meets min-energy meets, and its J/token of held GPUs is no higher."""
    duration_s = 90.0
    load = random_load(seed, duration_s, *_fleet_rates())
    with tempfile.TemporaryDirectory() as tmp:
        trace = write_load(load.arrivals, Path(tmp) / "load.csv")
        steps = load.period_s / 2 if load.swing > 1.0 else 0.0
        static_met, static_jpt = _judged(trace, duration_s, False, "uniform", steps)
        green_met, green_jpt = _judged(trace, duration_s, True, "min-energy", steps)
    assert green_met or not static_met, f"{load.describe()}: static met, min-energy missed"
    assert green_jpt <= static_jpt * 1.001, (load.describe(), green_jpt, static_jpt)
