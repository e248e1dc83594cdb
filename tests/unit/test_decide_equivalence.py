"""The columnar decide() gives exactly the actions of the per-GPU one it replaced.

``reference_decide.py`` beside this file is decide() as of f6df322 (before the 100,000-GPU
rewrite), kept only as this test's oracle. Random clusters: mixed types, reported limit
ranges, stale GPUs, pending and refused limits, clock locks, training and inference jobs
(prefill mix, floors, replica scaling, latency feedback), jobs to place, learned curves,
every policy; each state is decided twice (the second call reuses cached load weights).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from scheduler.core.decide import decide
from scheduler.core.powermodel import PowerModel
from scheduler.core.types import (
    DecideConfig,
    GPUState,
    JobState,
    LatencyFeedback,
    ObservedState,
)
from scheduler.policies import load_policy
from scheduler.policies.planning import group_costs, group_values
from tests.unit import reference_decide as ref
from tests.unit.reference_decide import decide as reference_decide

TYPES = ["H100-SXM", "A100-SXM4", "L4", "A40"]
POLICIES = ["max-throughput", "min-energy", "priority", "uniform", "tdp-proportional"]


def _workload(rng: np.random.Generator, kind: str) -> Workload:
    if kind == "train":
        return Workload("train", batch=int(rng.choice([8, 16])), model_params=1.3e9)
    return Workload("decode", batch=int(rng.choice([8, 32])), model_params=7e9)


def random_state(seed: int) -> ObservedState:
    """A random cluster with running and pending jobs, as a controller would report it."""
    rng = np.random.default_rng(seed)
    n_nodes = int(rng.integers(1, 12))
    n_jobs = int(rng.integers(0, 10))
    jobs: list[JobState] = []
    for k in range(n_jobs):
        kind = "train" if rng.random() < 0.5 else "infer"
        shards = int(rng.integers(1, 9))
        latency = None
        if kind == "infer" and rng.random() < 0.4:
            latency = LatencyFeedback(
                slo_ttft_s=2.0,
                ttft_p99_s=float(rng.uniform(0, 3)),
                since_scaled_s=float(rng.uniform(0, 30)),
            )
        jobs.append(
            JobState(
                f"j{k}",
                kind,
                "running" if rng.random() < 0.7 else "pending",
                _workload(rng, kind),
                shards=shards,
                priority=float(rng.integers(1, 4)),
                allowed_gpu_types=tuple(rng.choice(TYPES, 2, replace=False))
                if rng.random() < 0.3
                else (),
                slo_units_per_s=float(rng.choice([0.0, 50.0, 5000.0])),
                floor_w=float(rng.choice([0.0, 0.0, 150.0, 300.0])),
                demand_units_per_s=float(rng.uniform(100, 8000)) if kind == "infer" else None,
                min_shards=int(rng.integers(1, shards + 1)) if kind == "infer" else None,
                prompt_tokens_per_output=float(rng.choice([0.0, 4.0])) if kind == "infer" else 0,
                latency=latency,
            )
        )
    running = [j for j in jobs if j.phase == "running"]
    gpus: list[GPUState] = []
    for n in range(n_nodes):
        gpu_type = TYPES[int(rng.integers(len(TYPES)))]
        spec = get_spec(gpu_type)
        for i in range(int(rng.integers(1, 9))):
            acked = float(rng.uniform(spec.min_power_limit_w, spec.max_power_limit_w))
            job = (
                running[int(rng.integers(len(running)))] if running and rng.random() < 0.6 else None
            )
            gpus.append(
                GPUState(
                    f"n{n}",
                    i,
                    gpu_type,
                    0.0,
                    0.0,
                    round(acked),
                    pending_limit_w=round(acked) - 20.0 if rng.random() < 0.1 else None,
                    locked_max_sm_clock_mhz=int(rng.choice([spec.max_sm_clock_mhz, 1200]))
                    if rng.random() < 0.3
                    else None,
                    stale=bool(rng.random() < 0.08),
                    job_id=job.job_id if job else None,
                    min_limit_w=spec.min_power_limit_w + 10.0 if rng.random() < 0.2 else 0.0,
                    max_limit_w=spec.max_power_limit_w - 20.0 if rng.random() < 0.2 else 0.0,
                    refused_below_w=round(acked) if rng.random() < 0.05 else 0.0,
                    reserved=bool(rng.random() < 0.05),
                )
            )
    model = None
    if rng.random() < 0.4:
        model = PowerModel()
        for g in gpus[:6]:
            for j in running[:2]:
                for _ in range(3):
                    model.observe(
                        g.gpu_type,
                        j.workload,
                        g.acked_limit_w,
                        None,
                        g.acked_limit_w * float(rng.uniform(0.6, 0.9)),
                        float(rng.uniform(50, 500)),
                    )
    tdp = sum(get_spec(g.gpu_type).tdp_w for g in gpus)
    budget = float(rng.uniform(0.3, 1.1)) * tdp
    return ObservedState(0.0, budget, 50.0, tuple(gpus), tuple(jobs), model)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(POLICIES))
def test_decide_matches_the_per_gpu_reference(seed: int, policy: str) -> None:
    obs = random_state(seed)
    pol = load_policy(policy)
    old = ref.MaxThroughputPolicy() if policy == "max-throughput" else pol
    want = reference_decide(obs, DecideConfig(), old)
    assert decide(obs, DecideConfig(), pol) == want
    assert decide(obs, DecideConfig(), pol) == want  # cached load weights


@pytest.mark.parametrize("policy", POLICIES)
def test_decide_matches_the_reference_on_a_thousand_gpus(policy: str) -> None:
    from benchmarks.bench_allocation import _cluster

    first, running = _cluster(1000)
    pol = load_policy(policy)
    old = ref.MaxThroughputPolicy() if policy == "max-throughput" else pol
    for obs in (first, running):
        assert decide(obs, DecideConfig(), pol) == reference_decide(obs, DecideConfig(), old)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_group_values_and_costs_match_the_per_group_reference(seed: int) -> None:
    obs = random_state(seed)
    captured = []

    class Capture:
        name = "capture"

        def allocate(self, problem):  # type: ignore[no-untyped-def]
            captured.append(problem)
            return load_policy("uniform").allocate(problem)

    decide(obs, DecideConfig(), Capture())
    problem = captured[0]
    rng = np.random.default_rng(seed)
    # the oracle passes rates of its own, some shared between groups
    own = [g.curve.rate * float(rng.choice([0.5, 1.0])) for g in problem.groups]
    for rates in (None, own):
        got = group_values(problem, rates)
        want = ref.group_values(problem, rates)
        assert len(got) == len(want)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    limits = [g.curve.limits_w for g in problem.groups]
    got = group_costs(problem.groups, limits)
    want = ref.group_costs(problem.groups, limits)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
