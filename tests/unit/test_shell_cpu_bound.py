"""A job's simulated GPUs waiting for the CPU: its wait fraction from its shards' reports
(training: the pace-setting rank; inference: the most held-back replica), the cpu_bound
events with hysteresis, and the figures in the job's status."""

from __future__ import annotations

import json

import grpc
import pytest

from greenllm.config import parse_cluster_config
from greenllm.proto.v1 import agent_pb2
from scheduler.core.lifecycle import JobPhase, ShardPhase
from scheduler.shell import operator, status
from scheduler.shell.controller import ControllerShell
from scheduler.shell.cpubound import note_cpu_bound
from scheduler.shell.errors import BadInput
from scheduler.shell.jobs import JobRecord, ShardRecord, wait_fraction
from scheduler.shell.memstore import MemoryStore
from scheduler.shell.nodes import ShardReport

CONFIG = {
    "nodes": [{"name": "a", "gpus": [{"type": "L4", "count": 2}]}],
    "budget": {"budget_w": 140, "reserve_w": 0},
    "policy": "uniform",
}


def shell_with(kind: str) -> tuple[ControllerShell, MemoryStore, JobRecord]:
    store = MemoryStore()
    shell = ControllerShell(parse_cluster_config(CONFIG), store, lambda: 0.0)
    job = operator.submit(shell, json.dumps({"name": "j", "kind": kind, "shards": 2}))
    job.phase = JobPhase.RUNNING  # its shards run (a pending job holds none)
    for rank in (0, 1):
        job.shards[rank] = ShardRecord(job.job_id, rank, 0, "a", rank, ShardPhase.RUNNING, 0.0)
    return shell, store, job


def report(shell: ControllerShell, job: JobRecord, rank: int, wait: float | None) -> None:
    sample = agent_pb2.ShardSample(shard_id=f"{job.job_id}-{rank}", job_id=job.job_id)
    if wait is not None:
        sample.gpu_wait_fraction = wait
        sample.cpu_bound = wait > 0.1
    shell.nodes["a"].shards[sample.shard_id] = ShardReport(sample)


def events(store: MemoryStore, shell: ControllerShell) -> list[str]:
    shell.persist.step(0.0)
    return [e.message for e in store.event_log if e.kind == "cpu_bound"]


def test_training_counts_the_rank_that_waited_least() -> None:
    shell, _, job = shell_with("train")
    assert wait_fraction(shell.nodes, job) is None  # real GPUs, or nothing measured
    report(shell, job, 0, 0.6)  # waits for its slower peer, not for the CPU
    report(shell, job, 1, 0.02)  # the pace-setter keeps its GPU busy
    assert wait_fraction(shell.nodes, job) == pytest.approx(0.02)
    proto = status.job_proto(shell, job)
    assert proto.HasField("gpu_wait_fraction") and not proto.cpu_bound


def test_inference_counts_the_replica_that_waited_most() -> None:
    shell, _, job = shell_with("infer")
    report(shell, job, 0, 0.02)
    report(shell, job, 1, 0.4)
    assert wait_fraction(shell.nodes, job) == pytest.approx(0.4)


def test_cpu_bound_events_start_and_stop_with_hysteresis() -> None:
    shell, store, job = shell_with("train")
    for wait in (0.3, 0.3):
        report(shell, job, 0, wait)
        report(shell, job, 1, wait)
    note_cpu_bound(shell)
    assert job.cpu_bound and status.job_proto(shell, job).cpu_bound
    [started] = events(store, shell)
    assert "is CPU-bound" in started and "30%" in started
    for wait in (0.08, 0.2):  # between the thresholds: still CPU-bound, no new event
        report(shell, job, 0, wait)
        report(shell, job, 1, wait)
        note_cpu_bound(shell)
    assert job.cpu_bound and len(events(store, shell)) == 1
    report(shell, job, 1, 0.01)
    note_cpu_bound(shell)
    assert not job.cpu_bound
    assert "no longer CPU-bound" in events(store, shell)[-1]


def test_an_implausible_wait_fraction_is_refused() -> None:
    shell, _, job = shell_with("train")
    batch = agent_pb2.TelemetryBatch(
        shards=[agent_pb2.ShardSample(shard_id=f"{job.job_id}-0", gpu_wait_fraction=1.5)]
    )
    session = type("S", (), {"node": "a"})()
    with pytest.raises(BadInput) as info:
        shell.ledger.ingest(session, batch, 0.0)  # type: ignore[arg-type]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
