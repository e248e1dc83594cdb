"""Property tests of the safety invariant over random clusters, jobs, budgets, acks, failures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.devices.catalog import CATALOG, get_spec
from greenllm.devices.physics import Workload
from scheduler.core.decide import decide
from scheduler.core.types import DecideConfig, GPUState, JobState, ObservedState
from scheduler.policies import load_policy

POLICIES = ["uniform", "tdp-proportional", "max-throughput", "min-energy", "priority"]
TYPES = sorted(CATALOG)

workloads = st.sampled_from(
    [
        Workload("train", batch=8, model_params=1.3e9),
        Workload("prefill", batch=4, model_params=7e9),
        Workload("decode", batch=32, model_params=7e9),
    ]
)


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    nodes = draw(
        st.lists(st.tuples(st.sampled_from(TYPES), st.integers(1, 4)), min_size=1, max_size=4)
    )
    gpus = []
    for n, (t, count) in enumerate(nodes):
        for i in range(count):
            gpus.append(
                GPUState(f"n{n}", i, t, 0.0, 0.0, acked_limit_w=get_spec(t).max_power_limit_w)
            )
    jobs = []
    for j in range(draw(st.integers(0, 4))):
        wl = draw(workloads)
        jobs.append(
            JobState(
                f"j{j}",
                "train" if wl.kind == "train" else "infer",
                "pending",
                wl,
                shards=draw(st.integers(1, 4)),
                priority=draw(st.sampled_from([0.5, 1.0, 2.0])),
                slo_units_per_s=draw(st.sampled_from([0.0, 10.0, 1e4])),
                floor_w=draw(st.sampled_from([0.0, 150.0])),
            )
        )
    steps = draw(
        st.lists(
            st.tuples(
                st.floats(0.0, 1.2),  # budget position between sum of mins and sum of maxes
                st.floats(0.0, 1.0),  # ack probability this step
                st.integers(-1, len(nodes) - 1),  # node that goes stale (-1: none)
            ),
            min_size=2,
            max_size=8,
        )
    )
    return {
        "gpus": gpus,
        "jobs": jobs,
        "steps": steps,
        "policy": draw(st.sampled_from(POLICIES)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_commanded_sum_within_budget_and_cuts_lower_first(sc: dict) -> None:
    rng = np.random.default_rng(sc["seed"])
    policy = load_policy(sc["policy"])
    gpus: list[GPUState] = sc["gpus"]
    jobs: list[JobState] = sc["jobs"]
    outstanding: dict[tuple[str, int], list[float]] = {g.key: [] for g in gpus}
    sum_min = sum(get_spec(g.gpu_type).min_power_limit_w for g in gpus)
    sum_max = sum(get_spec(g.gpu_type).max_power_limit_w for g in gpus)
    reserve = 50.0
    for pos, ack_p, stale_node in sc["steps"]:
        budget = reserve + sum_min + pos * (sum_max - sum_min)
        gpus = [replace(g, stale=g.node == f"n{stale_node}") for g in gpus]
        obs = ObservedState(0.0, budget, reserve, tuple(gpus), tuple(jobs))
        acts = decide(obs, DecideConfig(), policy)
        usable = budget - reserve
        by_key = {g.key: g for g in gpus}
        new = {(c.node, c.index): c.power_limit_w for c in acts.power_limits}
        stale_acc = sum(g.accounted_limit_w for g in gpus if g.stale)
        live_min = sum(get_spec(g.gpu_type).min_power_limit_w for g in gpus if not g.stale)
        feasible = usable >= stale_acc + live_min
        # 1. once every command lands, limits sum within budget - reserve
        after = sum(new.get(g.key, g.commanded_limit_w) for g in gpus)
        if feasible:
            assert after <= usable + 1e-6
        # 2. no command to stale GPUs; every limit inside its range
        for key, limit in new.items():
            g = by_key[key]
            spec = get_spec(g.gpu_type)
            assert not g.stale
            assert spec.min_power_limit_w - 1e-9 <= limit <= spec.max_power_limit_w + 1e-9
        # 3. raises only when nothing is being lowered, and they fit even before acks
        rises = [k for k, v in new.items() if v > by_key[k].commanded_limit_w + 1e-9]
        lowers = [k for k, v in new.items() if v < by_key[k].commanded_limit_w - 1e-9]
        if rises:
            assert not lowers
            assert not any(
                g.pending_limit_w is not None and g.pending_limit_w < g.acked_limit_w - 1e-9
                for g in gpus
                if not g.stale
            )
            accounted = sum(max(g.accounted_limit_w, new.get(g.key, 0.0)) for g in gpus)
            assert accounted <= usable + 1e-6
        # 4. the order sent: lowerings before raises
        kinds = [
            c.power_limit_w < by_key[(c.node, c.index)].commanded_limit_w for c in acts.power_limits
        ]
        assert kinds == sorted(kinds, reverse=True)
        # 5. gang placement on free, allowed GPUs; training on one type unless no single
        # allowed type had room for it (not even before the other jobs placed now)
        placed: dict[str, list[tuple[str, int]]] = {}
        for p in acts.placements:
            placed.setdefault(p.job_id, []).append((p.node, p.index))
        taken = [k for ks in placed.values() for k in ks]
        assert len(taken) == len(set(taken))
        for job in jobs:
            if job.job_id in placed:
                keys = placed[job.job_id]
                assert len(keys) == job.shards
                assert all(by_key[k].job_id is None and not by_key[k].stale for k in keys)
                types = {by_key[k].gpu_type for k in keys}
                if job.allowed_gpu_types:
                    assert types <= set(job.allowed_gpu_types)
                if job.kind == "train" and len(types) > 1:
                    others = {k for j, ks in placed.items() if j != job.job_id for k in ks}
                    for t in job.allowed_gpu_types or {g.gpu_type for g in gpus}:
                        room = [
                            g
                            for g in gpus
                            if g.gpu_type == t
                            and g.job_id is None
                            and not g.stale
                            and g.key not in others
                        ]
                        assert len(room) < job.shards, (job.job_id, t, types)
        # carry out: record commands as pending, start shards, ack some
        for key, limit in new.items():
            outstanding[key].append(limit)
        assign = {(p.node, p.index): (p.job_id, p.shard) for p in acts.placements}
        jobs = [replace(j, phase="running") if j.job_id in placed else j for j in jobs]
        nxt = []
        for g in gpus:
            acked = g.acked_limit_w
            if outstanding[g.key] and not g.stale and rng.random() < ack_p:
                acked = outstanding[g.key][-1]
                outstanding[g.key] = []
            pending = max(outstanding[g.key]) if outstanding[g.key] else None
            job_id, shard = assign.get(g.key, (g.job_id, g.shard))
            nxt.append(
                replace(g, acked_limit_w=acked, pending_limit_w=pending, job_id=job_id, shard=shard)
            )
        gpus = nxt
