"""Inference that follows its load: min-energy drains replicas when the load is low, brings
them back for bursts, and no request is dropped."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from greenllm.errors import ConfigError
from greenllm.jobspec import parse_job_spec
from scheduler.policies import load_policy
from scheduler.shell.jobs import measure_job
from scheduler.shell.status import cluster_status
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

SCENARIO = {
    "duration_s": 90,
    "seed": 4,
    "nodes": [{"name": "a100", "count": 2, "gpus": [{"type": "A100-SXM4", "count": 4}]}],
    "budget": {"frac_of_tdp": 1.0},
    "jobs": [
        {
            "name": "chat",
            "kind": "infer",
            "shards": 8,
            "min_shards": 1,
            "simulated_model_params": 7.0e9,
            "infer": {
                "batch_size": 32,
                "prompt_tokens": 512,
                "max_new_tokens": 256,
                "load": {
                    "process": "bursty",
                    "rate_per_s": 1.0,
                    "burst_factor": 8,
                    "burst_s": 20,
                    "period_s": 40,
                    "duration_s": 75,
                },
            },
        }
    ],
}


def run(policy: str) -> Simulation:
    sim = Simulation(Scenario.model_validate(SCENARIO), Path("."), load_policy(policy), policy)
    sim.run()
    return sim


def test_replicas_follow_the_load_and_no_request_is_dropped() -> None:
    sim = run("min-energy")
    counts = [
        int(e.message.split(":")[1].split()[0]) for e in sim.store.event_log if e.kind == "replicas"
    ]
    assert min(counts) <= 3 and max(counts) == 8, counts
    assert any(b < a for a, b in pairwise(counts)), "drained"
    assert any(b > a for a, b in pairwise(counts)), "brought back"
    [job] = sim.world.jobs.values()
    arrived = job.offered_output_tokens / 256
    assert len(job.finished) == pytest.approx(arrived) and not job.backlog
    assert all(s.replica.empty for s in sim.world.current_shards(job))
    baseline = run("max-throughput")
    [base] = baseline.world.jobs.values()
    assert len(base.finished) == len(job.finished)
    assert sim.result.joules_per_unit()["chat"] < 0.85 * baseline.result.joules_per_unit()["chat"]


def test_min_shards_is_checked() -> None:
    with pytest.raises(ConfigError, match="min_shards 3 is more than shards 2"):
        parse_job_spec({"name": "x", "kind": "infer", "shards": 2, "min_shards": 3}, "x.yaml")
    with pytest.raises(ConfigError, match="min_shards is for inference"):
        parse_job_spec({"name": "x", "kind": "train", "shards": 2, "min_shards": 1}, "x.yaml")


def test_a_drained_replica_is_off_the_jobs_books_live_and_simulated() -> None:
    """The controller's books (the shell's, as the live cluster keeps them) and the
    simulated truth agree that a drained replica's GPU is the cluster's: the job's energy is
    that of the GPUs it held while it held them, well under what all its GPUs drew."""
    sim = run("min-energy")
    [truth] = sim.world.jobs.values()
    assert sim.shell is not None
    [record] = sim.shell.jobs.jobs.values()
    booked_j = measure_job(sim.shell.nodes, record).energy_j
    assert booked_j == pytest.approx(truth.energy_j, rel=0.05)
    all_gpus_j = sum(sim.result.idle_energy_j.values()) + truth.energy_j
    assert truth.energy_j < 0.8 * all_gpus_j  # parked GPUs drew the rest, as idle
    assert record.parked_j > 0


def test_the_controller_books_the_idle_energy_of_parked_gpus_per_node() -> None:
    """What the drained replicas' GPUs drew is the cluster's idle energy, per node, in the
    controller's books (read every 5 s) as in the simulated truth; status says which nodes
    no job holds a GPU of."""
    sim = run("min-energy")
    assert sim.shell is not None
    booked = sim.shell.idle.by_node_j
    truth = sim.result.idle_energy_j
    assert sum(truth.values()) > 0
    assert sum(booked.values()) == pytest.approx(sum(truth.values()), rel=0.2)
    status = cluster_status(sim.shell)
    by_name = {n.name: n for n in status.nodes}
    assert all(by_name[n].idle_energy_j == pytest.approx(j) for n, j in booked.items())
    # the load has ended: the job is done and its GPUs are free, so every node is releasable
    assert all(n.releasable for n in status.nodes)
