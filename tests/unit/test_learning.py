"""Learning the power model from telemetry: a rank that waited does not teach it."""

from __future__ import annotations

import numpy as np
import pytest

from greenllm.devices.physics import Workload
from greenllm.pacing import WAIT_WINDOW_S
from greenllm.proto.v1 import agent_pb2
from scheduler.core.powermodel import PowerModel
from scheduler.core.reconcile import shard_id
from scheduler.core.types import GPUState, JobState, ObservedState
from scheduler.shell.learning import MAX_WAIT_FRACTION, learn, settled_rate
from scheduler.shell.nodes import GpuRecord, NodeRecord, ShardReport

WORK = Workload("train", batch=4, model_params=70e9, seq_len=128)


def _setup(waits: list[float | None]) -> tuple[ObservedState, dict[str, NodeRecord]]:
    """One training job, one rank per H100, each with the given reported wait fraction."""
    now = 100.0
    node = NodeRecord("n", ["H100-SXM"] * len(waits))
    gpus = []
    for i, wait in enumerate(waits):
        rec = GpuRecord(i, "H100-SXM", f"u{i}", 200.0, 700.0, 500.0, 700.0)
        rec.limit_since = (500.0, now - 2 * WAIT_WINDOW_S)
        rec.energy_window.extend([(now - 5.0, 0.0), (now, 2000.0)])  # 400 W
        node.gpus.append(rec)
        sample = agent_pb2.ShardSample(shard_id=shard_id("j", i), job_id="j")
        if wait is not None:
            sample.gpu_wait_fraction = wait
        report = ShardReport(sample)
        report.work_window.extend([(now - 5.0, 10.0), (now, 25.0)])
        node.shards[sample.shard_id] = report
        gpus.append(
            GPUState("n", i, "H100-SXM", 400.0, 1800.0, 500.0, job_id="j", shard=i, work_rate=3.0)
        )
    job = JobState("j", "train", "running", WORK, shards=len(waits))
    return ObservedState(now, 2800.0, 100.0, tuple(gpus), (job,)), {"n": node}


def test_ranks_that_waited_at_the_exchange_do_not_teach() -> None:
    # rank 0 set the pace; ranks 1 and 2 waited for it (their watts and work are diluted)
    observed, nodes = _setup([0.0, 0.5, MAX_WAIT_FRACTION + 0.01])
    assert learn(PowerModel(), observed, nodes, np.random.default_rng(0)) == 1


def test_ranks_that_do_not_report_waiting_still_teach() -> None:
    # real GPUs report no wait fraction; a wait at the threshold is still a busy GPU
    observed, nodes = _setup([None, MAX_WAIT_FRACTION])
    assert learn(PowerModel(), observed, nodes, np.random.default_rng(0)) == 2


def test_a_rank_whose_rate_still_spans_its_start_does_not_teach() -> None:
    # rank 1's rate window begins before its first sample of work (its process starting)
    observed, nodes = _setup([0.0, 0.0])
    window = nodes["n"].shards[shard_id("j", 1)].work_window
    window.clear()
    window.extend([(95.0, 0.0), (97.0, 0.0), (100.0, 8.0)])
    assert learn(PowerModel(), observed, nodes, np.random.default_rng(0)) == 1


def test_the_rate_taught_is_the_one_since_the_settings_took_effect() -> None:
    # the limit has held for 6 s; the rank did 1 unit/s before it, 5 units/s since
    observed, nodes = _setup([None])  # a real GPU: no wait fraction
    window = nodes["n"].shards[shard_id("j", 0)].work_window
    window.clear()
    window.extend([(90.0, 10.0), (93.0, 13.0), (94.0, 14.0), (97.0, 29.0), (100.0, 44.0)])
    node, g = nodes["n"], observed.gpus[0]
    assert settled_rate(g, node, 6.0) == pytest.approx(5.0)
    assert settled_rate(g, node, 1.0) is None  # too short a span to tell


def test_a_wait_fraction_taken_partly_under_earlier_settings_does_not_teach() -> None:
    observed, nodes = _setup([0.0])
    node, g = nodes["n"], observed.gpus[0]
    assert settled_rate(g, node, WAIT_WINDOW_S) is not None
    assert settled_rate(g, node, WAIT_WINDOW_S - 1.0) is None
