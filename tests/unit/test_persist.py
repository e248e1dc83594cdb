"""A controller restart loses nothing: budget, policy, jobs, placements and ledgers."""

from __future__ import annotations

import json
from pathlib import Path

from greenllm.config import ClusterConfig, load_cluster_config
from scheduler.server.app import Controller
from scheduler.server.nodes import GpuRecord

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"name": "t", "kind": "train", "shards": 2, "gpu_types": ["H100-SXM"]}
INFER = {"name": "i", "kind": "infer", "shards": 1}


def config(tmp_path: Path) -> ClusterConfig:
    cfg = load_cluster_config(REPO / "cluster.yaml")
    return cfg.model_copy(update={"state_dir": tmp_path / "state"})


def test_restart_restores_settings_jobs_and_ids(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = Controller(cfg)
    train = first.jobs.submit(json.dumps(TRAIN))
    infer = first.jobs.submit(json.dumps(INFER))
    first.state.budget_w, first.state.reserve_w = 2000.0, 50.0
    first.loop.set_policy("min-energy")
    train.gpus = {0: ("node-h100", 0), 1: ("node-h100", 1)}
    train.energy_start_j = {("node-h100", 0): 10.0, ("node-h100", 1): None}
    train.state = "running"
    first.loop.cancel(infer)
    first.persistence.sync()
    first.store.close()

    second = Controller(cfg)
    assert (second.state.budget_w, second.state.reserve_w) == (2000.0, 50.0)
    assert second.state.policy_name == "min-energy"
    assert second.loop.policy is not None
    jobs = second.jobs.jobs
    assert list(jobs) == [train.job_id, infer.job_id]
    restored = jobs[train.job_id]
    assert restored.state == "running" and restored.final is None
    assert restored.gpus == train.gpus
    assert restored.energy_start_j == train.energy_start_j
    assert jobs[infer.job_id].state == "cancelled" and jobs[infer.job_id].final == (0.0, 0.0)
    third = second.jobs.submit(json.dumps(TRAIN))
    assert third.job_id == "t-3"
    kinds = sorted(e.kind for e in second.store.events())
    assert kinds == ["cancelled", "running", "settings", "submitted", "submitted"]


def test_cancelled_job_ledger_is_frozen(tmp_path: Path) -> None:
    ctl = Controller(config(tmp_path))
    job = ctl.jobs.submit(json.dumps(INFER))
    job.gpus = {0: ("node-l4", 0)}
    job.energy_start_j = {("node-l4", 0): 0.0}
    gpu = GpuRecord(0, "L4", "sim-node-l4-0", 40.0, 72.0, 72.0)
    ctl.state.nodes["node-l4"].gpus.append(gpu)
    gpu.energy_window.append((1.0, 500.0))
    ctl.loop.cancel(job)
    gpu.energy_window.append((2.0, 900.0))
    assert job.final == (500.0, 0.0)


def test_a_submitted_job_is_kept_at_once_with_its_event(tmp_path: Path) -> None:
    ctl = Controller(config(tmp_path))
    job = ctl.jobs.submit(json.dumps(TRAIN))
    ctl.persistence.submitted(job)
    job.state = "placed"
    ctl.persistence.sync()
    assert [e.kind for e in ctl.store.events(job.job_id)] == ["submitted", "placed"]
    assert [j.job_id for j in ctl.store.jobs()] == [job.job_id]
