"""The simulator's pieces: scenario validation, arrivals, queues, and short runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greenllm.errors import ConfigError
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Arrivals, Scenario, load_scenario
from scheduler.sim.workloads import ArrivalStream, ReplicaQueue

BASE = {
    "duration_s": 20,
    "nodes": [
        {"name": "h", "count": 2, "gpus": [{"type": "H100-SXM", "count": 2}]},
        {"name": "a", "gpus": [{"type": "A100-SXM4", "count": 2}]},
    ],
    "budget": {"frac_of_tdp": 0.7, "reserve_w": 50, "schedule": [{"t_s": 8, "frac_of_tdp": 0.4}]},
    "jobs": [
        {
            "id": "t",
            "kind": "train",
            "shards": 2,
            "allowed_gpu_types": ["H100-SXM"],
            "true_model_params": 2.0e9,
        },
        {
            "id": "i",
            "kind": "infer",
            "shards": 2,
            "allowed_gpu_types": ["A100-SXM4"],
            "model_params": 7e9,
            "batch": 32,
            "arrivals": {"process": "bursty", "rate_rps": 1.0, "burst_s": 2, "period_s": 6},
        },
    ],
    "failures": [{"node": "h-0", "at_s": 12, "recover_s": 16}],
}


def run(policy: str = "max-throughput", **changes: object) -> Simulation:
    sc = Scenario.model_validate({**BASE, **changes})
    sim = Simulation(sc, Path("."), load_policy(policy), policy)
    sim.run()
    return sim


def test_scenario_errors_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "duration_s: 5\nnodes: [{name: n, gpus: [{type: H100-SXM}]}]\n"
        "budget: {budget_w: 500, frac_of_tdp: 0.5}\n"
    )
    with pytest.raises(
        ConfigError, match=r"s\.yaml: budget: give exactly one of budget_w and frac_of_tdp"
    ):
        load_scenario(path)
    path.write_text(
        "duration_s: 5\nnodes: [{name: n, gpus: [{type: B200}]}]\nbudget: {budget_w: 500}\n"
    )
    with pytest.raises(ConfigError, match=r"s\.yaml: nodes\.0\.gpus\.0\.type: unknown GPU type"):
        load_scenario(path)
    path.write_text(
        "duration_s: 5\nnodes: [{name: n, gpus: [{type: L4}]}]\nbudget: {budget_w: 500}\n"
        "failures: [{node: zz, at_s: 1}]\n"
    )
    with pytest.raises(ConfigError, match="unknown node 'zz'"):
        load_scenario(path)
    path.write_text(
        "duration_s: 5\npolicy: fastest\nnodes: [{name: n, gpus: [{type: L4}]}]\n"
        "budget: {budget_w: 500}\n"
    )
    with pytest.raises(ConfigError, match=r"s\.yaml: policy: unknown policy 'fastest'"):
        load_scenario(path)


def test_trace_arrivals_and_queue(tmp_path: Path) -> None:
    trace = tmp_path / "req.csv"
    trace.write_text("t_s,prompt_tokens,output_tokens\n0.5,100,10\n0.7,50,5\n2.0,10,1\n")
    stream = ArrivalStream(
        Arrivals(process="trace", trace_file=Path("req.csv")), tmp_path, np.random.default_rng(0)
    )
    assert stream.take(0.0, 1.0) == (150.0, 15.0)
    assert stream.take(1.0, 3.0) == (10.0, 1.0)
    q = ReplicaQueue()
    q.add(100.0, 40.0)
    prefill_s, decode_s, decoded = q.serve(1.0, prefill_rate=200.0, decode_rate=10.0)
    assert (
        prefill_s == pytest.approx(0.5)
        and decoded == pytest.approx(5.0)
        and decode_s == pytest.approx(0.5)
    )
    assert q.backlog_output_tokens == pytest.approx(35.0)


def test_run_accounts_energy_cuts_fast_and_survives_a_failure() -> None:
    sim = run()
    res = sim.result
    per_job = sum(res.job_energy_j.values())
    assert 0 < per_job <= res.energy_j + 1e-6
    assert res.work["t"] > 0 and res.work["i"] > 0
    # the cut at 8 s is met within two control periods
    assert res.cut_response_s and res.cut_response_s[0] <= 2 * sim.plane.control_period_s
    assert res.budget_violation_s <= 2 * sim.plane.control_period_s
    # the training job was on the failed node, was placed again and kept going
    assert sim.runs["t"].phase == "running"
    assert res.power_w[-1] > 0
    # the controller learnt the training job is slower than declared
    assert sim.controller.model.version > 0
    declared = sim.runs["t"].spec.workload("train")
    curve = sim.controller.model.limit_curve("H100-SXM", declared, np.array([700.0]))
    prior = sim.controller.model.prior_limit_curve("H100-SXM", declared, np.array([700.0]))
    assert curve.rate[0] == pytest.approx(prior.rate[0] * 1.3e9 / 2.0e9, rel=0.05)


def test_runs_are_reproducible_and_min_energy_saves_energy() -> None:
    a, b = run("uniform"), run("uniform")
    assert a.result.energy_j == b.result.energy_j
    low = run("min-energy", budget={"frac_of_tdp": 1.0})
    high = run("uniform", budget={"frac_of_tdp": 1.0})
    assert low.result.joules_per_unit()["i"] < 0.9 * high.result.joules_per_unit()["i"]
    assert low.result.joules_per_unit()["t"] < high.result.joules_per_unit()["t"]
