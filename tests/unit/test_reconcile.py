"""The control loop ends finished jobs and places again jobs that lost a node or a shard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenllm.config import load_cluster_config
from greenllm.proto.v1 import agent_pb2
from scheduler.server.app import Controller
from scheduler.server.jobs import JobRecord
from scheduler.server.loop import MAX_RESTARTS
from scheduler.server.nodes import GpuRecord, ShardRecord

REPO = Path(__file__).resolve().parents[2]
TRAIN = {"name": "t", "kind": "train", "shards": 2, "gpu_types": ["H100-SXM"]}


@pytest.fixture
def ctl(tmp_path: Path) -> Controller:
    cfg = load_cluster_config(REPO / "cluster.yaml")
    return Controller(cfg.model_copy(update={"state_dir": tmp_path / "state"}))


def placed(ctl: Controller) -> JobRecord:
    job = ctl.jobs.submit(json.dumps(TRAIN))
    job.gpus = {0: ("node-h100", 0), 1: ("node-h100", 1)}
    job.state = "running"
    return job


def report(ctl: Controller, job: JobRecord, shard: int, state: str, generation: int = 0,
           work: float = 10.0, error: str = "") -> None:  # fmt: skip
    sample = agent_pb2.ShardSample(
        shard_id=job.shard_id(shard), job_id=job.job_id, work_units=work, state=state,
        error=error, generation=generation,
    )  # fmt: skip
    ctl.state.nodes["node-h100"].shards[sample.shard_id] = ShardRecord(
        sample.shard_id, job.job_id, sample
    )


def connect(ctl: Controller, node: str, last_s: float) -> None:
    """Recent telemetry: the node is not lost (commands to it are dropped: no stream)."""
    ctl.state.nodes[node].last_telemetry_s = last_s


def test_job_is_done_when_every_shard_is(ctl: Controller) -> None:
    job = placed(ctl)
    connect(ctl, "node-h100", 1.0)
    report(ctl, job, 0, "done")
    report(ctl, job, 1, "running")
    ctl.loop._reconcile_jobs(1.0)
    assert job.state == "running"
    report(ctl, job, 1, "done")
    ctl.loop._reconcile_jobs(1.0)
    assert job.state == "done" and job.gpus == {} and job.final == (0.0, 20.0)


def test_lost_node_places_the_job_again(ctl: Controller) -> None:
    job = placed(ctl)
    report(ctl, job, 0, "running", work=7.0)
    ctl.state.nodes["node-h100"].session = None
    ctl.state.nodes["node-h100"].last_telemetry_s = 0.0
    ctl.loop._reconcile_jobs(ctl.loop.lost_after_s() / 2)
    assert job.state == "running"  # not gone long enough yet (a controller restart)
    ctl.loop._reconcile_jobs(ctl.loop.lost_after_s() + 1)
    assert job.state == "pending" and job.gpus == {}
    assert job.generation == 1 and job.restarts == 1 and job.carried == (0.0, 7.0)
    [event] = [e for e in ctl.store.events(job.job_id) if e.kind == "restart"]
    assert "node node-h100 lost" in event.message


def test_failed_shard_restarts_then_fails_the_job(ctl: Controller) -> None:
    job = placed(ctl)
    connect(ctl, "node-h100", 1.0)
    for attempt in range(MAX_RESTARTS + 1):
        job.gpus = {0: ("node-h100", 0), 1: ("node-h100", 1)}
        job.state = "running"
        report(ctl, job, 0, "failed", generation=job.generation, error="peer gone")
        ctl.loop._reconcile_jobs(1.0)
        expected = "pending" if attempt < MAX_RESTARTS else "failed"
        assert job.state == expected
    assert job.restarts == MAX_RESTARTS


def test_nodes_not_heard_from_after_a_restart_are_not_lost_at_once(ctl: Controller) -> None:
    job = placed(ctl)
    start = ctl.loop.started_s
    ctl.loop._reconcile_jobs(start + ctl.loop.lost_after_s() / 2)
    assert job.state == "running"
    ctl.loop._reconcile_jobs(start + ctl.loop.lost_after_s() + 1)
    assert job.state == "pending"


def test_reports_of_an_older_generation_are_ignored(ctl: Controller) -> None:
    job = placed(ctl)
    job.generation = 1
    connect(ctl, "node-h100", 1.0)
    report(ctl, job, 0, "failed", generation=0)
    report(ctl, job, 1, "done", generation=0)
    ctl.loop._reconcile_jobs(1.0)
    assert job.state == "running" and job.restarts == 0


def test_every_node_of_a_job_gets_all_its_load_weights(ctl: Controller) -> None:
    from scheduler.core.types import Actions, LoadWeight

    job = ctl.jobs.submit(json.dumps({"name": "i", "kind": "infer", "shards": 2}))
    job.gpus = {0: ("node-l4", 0), 1: ("node-a100", 2)}
    job.state = "running"
    sent: dict[str, dict[str, float]] = {}

    def send(node: str, command: agent_pb2.Command) -> int:
        sent[node] = dict(command.set_load_weights.weights)
        return 1

    ctl.state.send = send  # type: ignore[method-assign]
    weights = (
        LoadWeight(job.job_id, "node-l4", 0, 0.25),
        LoadWeight(job.job_id, "node-a100", 2, 0.75),
    )
    ctl.loop._send_load_weights(Actions(load_weights=weights))
    expected = {"i-1-0": 0.25, "i-1-1": 0.75}
    assert sent == {"node-l4": expected, "node-a100": expected}


def test_settled_training_readings_teach_the_power_model(ctl: Controller) -> None:
    job = placed(ctl)
    gpu = GpuRecord(0, "H100-SXM", "sim-node-h100-0", 200.0, 700.0, 400.0)
    ctl.state.nodes["node-h100"].gpus = [gpu, GpuRecord(1, "H100-SXM", "u1", 200.0, 700.0, 400.0)]
    report(ctl, job, 0, "running")
    record = ctl.state.nodes["node-h100"].shards[job.shard_id(0)]
    record.work_window.extend([(0.0, 0.0), (10.0, 50.0)])  # 5 samples/s
    gpu.energy_window.extend([(0.0, 0.0), (10.0, 3900.0)])  # 390 W
    ctl.state.is_stale = lambda node, now_s: False  # type: ignore[method-assign]
    before = ctl.loop.power_model.version
    start = ctl.state.clock()
    ctl.loop._learn(ctl.loop.observed(start))
    assert ctl.loop.power_model.version == before  # limit just seen: not settled yet
    ctl.loop._learn(ctl.loop.observed(start + 1.0))
    assert ctl.loop.power_model.version == before
    ctl.loop._learn(ctl.loop.observed(start + 5.0))
    assert ctl.loop.power_model.version == before + 1
    assert ctl.loop.observed(start).power_model is ctl.loop.power_model


def test_stale_node_counts_at_the_larger_of_its_limits_and_its_failsafe_limits(
    ctl: Controller,
) -> None:
    node = ctl.state.nodes["node-h100"]
    limits_w = (264.0, 264.0, 200.0, 200.0)
    node.gpus = [GpuRecord(i, "H100-SXM", f"u{i}", 200.0, 700.0, w) for i, w in enumerate(limits_w)]
    for g in node.gpus:
        g.failsafe_w = 221.0
    observed = {g.key: g for g in ctl.loop.observed(ctl.state.clock()).gpus}
    mine = [observed[("node-h100", i)].accounted_limit_w for i in range(4)]
    assert mine == [264.0, 264.0, 200.0, 200.0]  # 928 W beats 884 W of fail-safe limits
    node.gpus[0].pending_failsafe_w[7] = 400.0  # a raise in flight: 1063 W beats 928 W
    observed = {g.key: g for g in ctl.loop.observed(ctl.state.clock()).gpus}
    assert [observed[("node-h100", i)].accounted_limit_w for i in range(4)] == [
        400.0, 221.0, 221.0, 221.0,
    ]  # fmt: skip
