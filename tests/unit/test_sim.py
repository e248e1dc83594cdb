"""The simulator's pieces: scenario validation, arrivals, queues, and short runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greenllm.devices.physics import Workload
from greenllm.errors import ConfigError
from greenllm.jobspec import LoadSection
from greenllm.serving.arrivals import Arrival
from greenllm.serving.loadclient import fit_to_context
from greenllm.workloads.models import BUILTINS
from scheduler.core.lifecycle import JobPhase
from scheduler.policies import load_policy
from scheduler.sim.arrivals import ArrivalStream
from scheduler.sim.engine import Simulation
from scheduler.sim.legacy import upgrade_scenario
from scheduler.sim.replica import ReplicaModel, Request
from scheduler.sim.scenario import Scenario, load_scenario

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
    "control": {"lost_after_s": 4.0, "stale_after_s": 1.0, "failsafe_timeout_s": 2.0},
}


def run(policy: str = "max-throughput", **changes: object) -> Simulation:
    sc = Scenario.model_validate(upgrade_scenario({**BASE, **changes}, "test", []))
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
        "duration_s: 5\nnodes: [{name: n, gpus: [{type: Z9000}]}]\nbudget: {budget_w: 500}\n"
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


def test_trace_arrivals(tmp_path: Path) -> None:
    trace = tmp_path / "req.csv"
    trace.write_text("t_s,prompt_tokens,output_tokens\n0.5,100,10\n0.7,50,5\n2.0,10,1\n")
    load = LoadSection(process="trace", trace_file=Path("req.csv"), duration_s=100)
    stream = ArrivalStream(load, 1, 1, tmp_path, np.random.default_rng(0))
    assert [(r.arrive_s, r.prompt_tokens, r.output_tokens) for r in stream.take(0.0, 1.0)] == [
        (0.5, 100.0, 10.0),
        (0.7, 50.0, 5.0),
    ]
    assert [r.output_tokens for r in stream.take(1.0, 3.0)] == [1.0]


def test_requests_are_fitted_to_the_served_models_context(tmp_path: Path) -> None:
    """The live load client shrinks a request to the model's context (output first, the
    prompt cut); the simulator sends the same requests (the served tiny model: 256)."""
    trace = tmp_path / "req.csv"
    trace.write_text("t_s,prompt_tokens,output_tokens\n0.5,1000,100\n0.7,50,5\n0.9,30,900\n")
    load = LoadSection(process="trace", trace_file=trace, duration_s=100)
    stream = ArrivalStream(load, 1, 1, tmp_path, np.random.default_rng(0), context_tokens=256)
    got = [(r.prompt_tokens, r.output_tokens) for r in stream.take(0.0, 1.0)]
    asked = [Arrival(0.0, 1000, 100), Arrival(0.0, 50, 5), Arrival(0.0, 30, 900)]
    fitted, _ = fit_to_context(asked, 256)
    assert got == [(float(a.prompt_tokens), float(a.max_tokens)) for a in fitted]
    assert got == [(156.0, 100.0), (50.0, 5.0), (1.0, 255.0)]


def test_from_cluster_jobs_fit_their_builtin_models_context() -> None:
    """A scenario's requests are as asked (its ``simulated_model_params`` stands for a model
    with room); a job of ``sim --from-cluster``, served by the model it names, fits them."""
    plain = [j.arrivals for j in run("uniform").world.jobs.values() if j.arrivals is not None]
    assert plain and {a.context_tokens for a in plain} == {None}
    jobs = [
        {**j, "sim": {"fit_to_model_context": True}} if j["kind"] == "infer" else j
        for j in upgrade_scenario(BASE, "test", [])["jobs"]
    ]
    fitted = [j.arrivals for j in run("uniform", jobs=jobs).world.jobs.values() if j.arrivals]
    assert fitted and {a.context_tokens for a in fitted} == {BUILTINS["tiny"].n_positions}


def test_azure_trace_with_time_scale(tmp_path: Path) -> None:
    trace = tmp_path / "azure.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:56.6805900,10,2\n"
    )
    load = LoadSection(process="trace", trace_file=trace, time_scale=10.0, duration_s=100)
    stream = ArrivalStream(load, 1, 1, tmp_path, np.random.default_rng(0), start_s=5.0)
    first = stream.take(0.0, 5.5)
    assert [(r.arrive_s, r.prompt_tokens, r.output_tokens) for r in first] == [(5.0, 374.0, 44.0)]
    later = stream.take(5.5, 6.5)  # 10 s apart, replayed 10x faster
    assert [r.arrive_s for r in later] == pytest.approx([6.0])


def test_a_replica_batches_requests_and_measures_ttft_and_tpot() -> None:
    rep = ReplicaModel(max_batch=2)
    for t in (0.0, 0.0, 0.0):
        rep.add(Request(t, prompt_tokens=100, output_tokens=11))
    wl = Workload("decode", batch=1)
    pre = Workload("prefill", batch=1)
    # prefill 1,000 tokens/s; a batch of b decodes 10 * b tokens/s (10 per sequence)
    segments, tokens = rep.serve(0.0, 10.0, lambda: 1000.0, lambda b: 10.0 * b, pre, lambda b: wl)
    assert len(rep.done) == 3 and rep.empty
    ttft = sorted(f.ttft_s for f in rep.done)
    assert ttft[:2] == pytest.approx([0.2, 0.2])  # two fit in the batch: one step prefills both
    assert ttft[2] > 1.0  # the third waits for a slot
    assert all(0.1 - 1e-9 <= f.tpot_s <= 0.12 for f in rep.done)  # prefills pause the decode
    busy = sum(d for w, d in segments if w is not None)
    assert tokens == pytest.approx(3 * 11) and busy < 10.0  # output tokens: the unit


def _job(sim: Simulation, name: str):  # type: ignore[no-untyped-def]
    assert sim.shell is not None
    [job] = [j for j in sim.shell.jobs.jobs.values() if j.spec.name == name]
    return job


def test_run_accounts_energy_cuts_fast_and_survives_a_failure() -> None:
    sim = run()
    res = sim.result
    per_job = sum(res.job_energy_j.values())
    assert 0 < per_job <= res.energy_j + 1e-6
    assert res.work["t"] > 0 and res.work["i"] > 0
    # the cut at 8 s is met within two control periods
    assert res.cut_response_s and res.cut_response_s[0] <= 2 * sim.plane.control_period_s
    assert res.limits_over_budget_s == 0.0
    # the training job was on the failed node, was placed again and kept going
    job = _job(sim, "t")
    assert job.phase is JobPhase.RUNNING and job.restarts == 1
    assert res.power_w[-1] > 0
    # the controller learnt the training job is slower than declared
    shell = sim.shell
    assert shell is not None and shell.power_model.version > 0
    declared = job.spec.workload()
    curve = shell.power_model.limit_curve("H100-SXM", declared, np.array([700.0]))
    prior = shell.power_model.prior_limit_curve("H100-SXM", declared, np.array([700.0]))
    assert curve.rate[0] == pytest.approx(prior.rate[0] * 1.3e9 / 2.0e9, rel=0.05)


def test_runs_are_reproducible_and_min_energy_saves_energy() -> None:
    a, b = run("uniform"), run("uniform")
    assert a.result.energy_j == b.result.energy_j
    low = run("min-energy", budget={"frac_of_tdp": 1.0})
    high = run("uniform", budget={"frac_of_tdp": 1.0})
    assert low.result.joules_per_unit()["i"] < 0.9 * high.result.joules_per_unit()["i"]
    assert low.result.joules_per_unit()["t"] < high.result.joules_per_unit()["t"]


def test_old_scenario_keys_load_with_a_note_naming_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        "duration_s: 5\nnodes: [{name: n, gpus: [{type: L4, count: 2}]}]\nbudget: {budget_w: 150}\n"
        "jobs: [{id: i, kind: infer, allowed_gpu_types: [L4], model_params: 1.0e9, batch: 4,\n"
        "        arrivals: {rate_rps: 2, output_tokens: 9}}]\n"
    )
    notes: list[str] = []
    sc, _ = load_scenario(path, notes)
    job = sc.jobs[0]
    assert job.name == "i" and job.gpu_types == ["L4"] and job.simulated_model_params == 1e9
    assert job.infer_settings.batch_size == 4 and job.infer_settings.max_new_tokens == 9
    assert job.infer_settings.prompt_tokens == 512  # the old default, kept
    assert job.infer_settings.load.rate_per_s == 2
    assert f"{path}: jobs.0.allowed_gpu_types: deprecated, use gpu_types" in notes
    assert any("arrivals.rate_rps: deprecated, use infer.load.rate_per_s" in n for n in notes)


def test_scenarios_reject_what_cannot_work(tmp_path: Path) -> None:
    base = "duration_s: 5\nnodes: [{name: n, gpus: [{type: L4, count: 2}]}]\n"
    cases = {
        "budget: {budget_w: 100, reserve_w: 100}\n": "reserve_w 100 W is not below the budget",
        "budget: {budget_w: 70}\n": "below the sum of the GPUs' minimum power limits",
        "budget: {budget_w: 150, schedule: [{t_s: 9, budget_w: 140}]}\n": "not before duration_s",
        "budget: {budget_w: 150}\ncontrol: {stale_after_s: 3, lost_after_s: 2}\n": (
            "lost_after_s must be"
        ),
    }
    for text, message in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text(base + text)
        with pytest.raises(ConfigError, match=message):
            load_scenario(path)


def test_steady_jobs_run_undisturbed() -> None:
    sim = run(failures=[], duration_s=30)
    for name in ("t", "i"):
        job = _job(sim, name)
        assert job.phase is JobPhase.RUNNING and job.restarts == 0, (name, job.reason)
    assert sim.shell is not None and not sim.shell.stopping
