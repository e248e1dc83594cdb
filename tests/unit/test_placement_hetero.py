"""Training jobs that span GPU types, and jobs no placement can hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from scheduler.core.decide import decide
from scheduler.core.powermodel import PowerModel
from scheduler.core.types import DecideConfig, GPUState, JobState, ObservedState
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

TYPES = ("H100-SXM", "A100-SXM4", "V100-SXM2")
WL = Workload("train", batch=8, model_params=1.3e9, seq_len=2048)


def cluster() -> tuple[GPUState, ...]:
    return tuple(
        GPUState(f"{t}-node", i, t, 0.0, 0.0, get_spec(t).min_power_limit_w)
        for t in TYPES
        for i in range(8)
    )


def test_a_job_larger_than_any_type_spans_types_with_equal_step_times() -> None:
    job = JobState("big", "train", "pending", WL, shards=12)
    budget_w = sum(get_spec(t).tdp_w * 8 for t in TYPES)
    first = decide(
        ObservedState(0.0, budget_w, 0.0, cluster(), (job,)),
        DecideConfig(),
        load_policy("max-throughput"),
    )
    assert len(first.placements) == 12 and not first.unplaceable
    placed = {(p.node, p.index): p.shard for p in first.placements}
    types = {node.split("-node")[0] for node, _ in placed}
    assert len(types) >= 2, types
    gpus = tuple(
        GPUState(
            g.node,
            g.index,
            g.gpu_type,
            0.0,
            0.0,
            g.acked_limit_w,
            job_id="big" if g.key in placed else None,
            shard=placed.get(g.key),
        )
        for g in cluster()
    )
    running = JobState("big", "train", "running", WL, shards=12)
    actions = decide(
        ObservedState(1.0, budget_w, 0.0, gpus, (running,)),
        DecideConfig(),
        load_policy("max-throughput"),
    )
    limits = {(c.node, c.index): c.power_limit_w for c in actions.power_limits}
    weights = {(w.node, w.index): w.weight for w in actions.load_weights if w.job_id == "big"}
    assert set(weights) == set(placed) and abs(sum(weights.values()) - 1) < 1e-9
    model = PowerModel()
    step_s = []  # per shard: its share of a step's samples over its rate = the step time
    for key, w in weights.items():
        gpu_type = key[0].split("-node")[0]
        rate = model.limit_curve(
            gpu_type, WL, np.array([limits.get(key, get_spec(gpu_type).max_power_limit_w)])
        ).rate[0]
        step_s.append(w / rate)
    assert max(step_s) / min(step_s) < 1.01, "micro-batch shares equalise predicted step times"


def test_an_unplaceable_job_is_reported_never_slo_met() -> None:
    sc = Scenario.model_validate(
        {
            "duration_s": 6,
            "nodes": [
                {"name": n, "gpus": [{"type": t, "count": 8}]}
                for n, t in (("h", "H100-SXM"), ("a", "A100-SXM4"), ("v", "V100-SXM2"))
            ],
            "budget": {"frac_of_tdp": 0.7},
            "jobs": [
                {"name": "big", "kind": "train", "shards": 12, "train": {"seq_len": 2048}},
                {"name": "nowhere", "kind": "train", "shards": 2, "gpu_types": ["L4"]},
                {"name": "too-big", "kind": "train", "shards": 30},
            ],
        }
    )
    sim = Simulation(sc, Path("."), load_policy("max-throughput"), "max-throughput")
    summary = sim.run().summary(None)
    assert summary["work"]["big"] > 0 and summary["slo_met"]["big"] is True
    for name in ("nowhere", "too-big"):
        assert summary["slo_met"][name] is False
        assert "unplaceable" in summary["slo_detail"][name], summary["slo_detail"][name]
    assert "0 GPUs of L4" in summary["slo_detail"]["nowhere"]
    assert sim.shell is not None
    assert any(e.kind == "unplaceable" for e in sim.store.event_log)
