"""One workload description: a job spec means the same work, in the same unit, to the live
cluster and to the simulator (training: samples of the spec's seq_len; inference: output
tokens), and both outputs state the unit."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.cli.jobs_cmd import job_document
from greenllm.config import load_cluster_config
from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.jobspec import load_job_spec
from greenllm.proto.v1 import cluster_pb2
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.from_cluster import build_scenario

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "examples" / "jobs"


def test_the_simulator_runs_the_workload_the_cluster_paces() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    sc = build_scenario(config, [JOBS / "train-tiny.yaml", JOBS / "infer-tiny.yaml"], 10.0)
    for path, job in zip(("train-tiny", "infer-tiny"), sc.jobs, strict=True):
        live = load_job_spec(JOBS / f"{path}.yaml").workload()  # what a live shard paces by
        kind = "train" if job.kind == "train" else "decode"
        assert job.true_workload(kind) == live
    assert sc.jobs[0].true_workload("train").seq_len == 128  # the spec's, not 2048


def test_training_units_are_samples_of_the_spec_and_inference_units_output_tokens(
    tmp_path: Path,
) -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    train = tmp_path / "t.yaml"
    train.write_text(
        "name: t\nkind: train\nshards: 1\ngpu_types: [H100-SXM]\nsimulated_model_params: 1e10\n"
        "train: {batch_size: 8, seq_len: 256, steps: 1000000}\n"
    )
    infer = tmp_path / "i.yaml"
    infer.write_text(
        "name: i\nkind: infer\nshards: 1\ngpu_types: [A100-SXM4]\n"
        "infer: {batch_size: 4, prompt_tokens: 200, max_new_tokens: 10,\n"
        "        load: {process: poisson, rate_per_s: 2, duration_s: 1000}}\n"
    )
    sc = build_scenario(config, [train, infer], 30.0)
    sim = Simulation(sc, tmp_path, load_policy(sc.policy), sc.policy)
    result = sim.run()
    summary = result.summary(None)
    assert summary["units"] == {"t": "samples", "i": "tokens"}
    assert "output tokens" in summary["unit_notes"]["tokens"]
    # training: samples of 256 tokens at the H100's rate for this model, once placed
    rate = physics.peak_throughput(get_spec("H100-SXM"), load_job_spec(train).workload())
    assert result.work["t"] / 30.0 == pytest.approx(rate, rel=0.1)
    # inference: output tokens only (10 per request), never the 200-token prompts
    [infer_job] = [j for j in sim.world.jobs.values() if j.name == "i"]
    finished = len(infer_job.finished)
    assert finished > 20
    assert result.work["i"] == pytest.approx(infer_job.served_output_tokens)
    assert result.work["i"] < 10 * (finished + 4 + 1)  # at most a batch part-way through


def test_the_cluster_states_the_unit_of_each_job() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    for kind, unit in (("train", "samples"), ("infer", "tokens")):
        job = cluster_pb2.Job(id="j-1", spec=cluster_pb2.JobSpec(name="j", kind=kind))
        doc = job_document(job, config)
        assert doc["unit"] == unit
        assert doc["gpu_wait_fraction"] is None and doc["cpu_bound"] is False
