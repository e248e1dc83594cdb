"""Telemetry that cannot poison the books (issue 25): a job's energy is booked from each
GPU's counter deltas that are non-negative and plausible, never decreases, and never
exceeds what its GPUs could draw; stored books with impossible values are checked on load.
Driven through the controller shell with hand-made telemetry and a manual clock."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from shellkit import Session

from greenllm.config import parse_cluster_config
from greenllm.proto.v1 import agent_pb2
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.jobs import measure_job, restored_job, stored_job
from scheduler.shell.memstore import MemoryStore
from scheduler.shell.status import cluster_status

CONFIG = {
    "nodes": [{"name": "n", "gpus": [{"type": "H100-SXM", "count": 2}]}],
    "budget": {"budget_w": 1400},
    "policy": "max-throughput",
}
START_S = 1_000.0


class Cluster:
    """A shell with one node of two H100s whose counters the test writes."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.t = START_S
        self.skew_s = skew_s  # the agent's clock minus the controller's
        self.shell = ControllerShell(
            parse_cluster_config(CONFIG),
            MemoryStore(),
            clock=lambda: self.t,
            wall_clock=lambda: self.t,
        )
        self.session = Session("n")
        info = [
            agent_pb2.GpuInfo(
                index=i,
                type="H100-SXM",
                uuid=f"GPU-{i}",
                min_power_limit_w=200,
                max_power_limit_w=700,
                default_power_limit_w=700,
                power_limit_w=200,
            )
            for i in range(2)
        ]
        self.shell.register(agent_pb2.Register(node="n", gpus=info), self.session)
        self.energy_j = [5_000.0, 7_000.0]
        self.shown_j = list(self.energy_j)

    def tick(
        self,
        dt_s: float = 1.0,
        watts: float = 300.0,
        glitch_j: float | None = None,
        stuck: bool = False,
    ) -> None:
        """``dt_s`` later: each counter grew by ``watts`` x ``dt_s`` (GPU 0 reads
        ``glitch_j`` instead, when given; both read as before when ``stuck``: a counter
        that updates seldom), then a control step; every command acked."""
        self.t += dt_s
        shown = list(self.shown_j) if stuck else None
        self.energy_j = [e + watts * dt_s for e in self.energy_j]
        readings = [glitch_j if glitch_j is not None else self.energy_j[0], self.energy_j[1]]
        readings = shown if shown is not None else readings
        self.shown_j = readings
        samples = agent_pb2.GpuSamples(
            index=[0, 1],
            timestamp_s=[self.t + self.skew_s] * 2,
            power_w=[watts, watts],
            energy_j=readings,
            power_limit_w=[-1.0, -1.0],
            sm_clock_mhz=[1500, 1500],
            utilization_pct=[50, 50],
            temperature_c=[50, 50],
            memory_used_mib=[0, 0],
        )
        batch = agent_pb2.TelemetryBatch(gpus=samples)
        self.shell.on_message(self.session, agent_pb2.AgentMessage(telemetry=batch))
        self.shell.step()
        for msg in self.session.sent:
            acks = [
                agent_pb2.CommandAck(command_id=c.command_id, success=True)
                for c in msg.commands.commands
            ]
            if acks:
                self.shell.on_message(
                    self.session, agent_pb2.AgentMessage(acks=agent_pb2.AckBatch(acks=acks))
                )
        self.session.sent.clear()

    def energy_of(self, job_id: str) -> float:
        job = self.shell.job(job_id)
        assert job is not None
        return measure_job(self.shell.nodes, job).energy_j


def test_an_agent_clock_far_behind_does_not_clip_what_a_job_drew() -> None:
    """The bound on a job's energy is on the controller's clock, not the agent's."""
    c = Cluster(skew_s=-900.0)
    job_id = placed_job(c)
    before_j = c.energy_of(job_id)
    c.tick(dt_s=4.0, watts=300.0)
    assert c.energy_of(job_id) == pytest.approx(before_j + 2 * 4 * 300.0)


def test_a_counter_that_updates_seldom_is_booked_whole() -> None:
    """A counter that stands still for two readings, then catches up with 3 s at 650 W: the
    jump is measured over the time it stood still, not the last second."""
    c = Cluster()
    job_id = placed_job(c)
    before_j = c.energy_of(job_id)
    c.tick(watts=650.0, stuck=True)
    c.tick(watts=650.0, stuck=True)
    c.tick(watts=650.0)
    assert c.energy_of(job_id) == pytest.approx(before_j + 2 * 3 * 650.0)
    assert cluster_status(c.shell).nodes[0].energy_samples_rejected == {}


def placed_job(c: Cluster) -> str:
    job = operator.submit(c.shell, json.dumps({"name": "j", "kind": "infer", "shards": 2}))
    for _ in range(3):
        c.tick()
    assert job.energy_start_j, "placed"
    return job.job_id


def test_one_glitched_reading_does_not_poison_a_cancelled_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A counter that reads 1e17 J for one reading while its job is cancelled. Before: the
    job was frozen at 1e17 J (agent_checks accepts up to 1e18 J)."""
    c = Cluster()
    job_id = placed_job(c)
    c.tick(dt_s=2.0)
    before_j = c.energy_of(job_id)
    with caplog.at_level(logging.WARNING):
        c.tick(glitch_j=1e17)
        c.tick(glitch_j=1e17)  # the same GPU and kind: counted, not logged again
    operator.cancel(c.shell, job_id)
    c.tick()
    c.tick()
    energy_j = c.energy_of(job_id)
    assert before_j <= energy_j <= before_j + 2 * 700 * 1.5 * 4, energy_j
    status = cluster_status(c.shell)
    (node,) = status.nodes
    assert node.energy_samples_rejected["implausible"] >= 1
    assert node.energy_samples_rejected["counter-back"] >= 1
    jumped = [r for r in caplog.records if "jumped" in r.getMessage()]
    assert len(jumped) == 1, [r.getMessage() for r in caplog.records]


def test_a_counter_that_goes_back_is_a_new_base_and_energy_never_drops() -> None:
    """A counter that goes back to 0 (a driver reload, a GPU reset) made a job's energy go
    down; now it is a new base and the job's energy keeps growing."""
    c = Cluster()
    job_id = placed_job(c)
    c.tick(dt_s=2.0)
    before_j = c.energy_of(job_id)
    c.energy_j = [0.0, 0.0]  # both GPUs reset
    c.tick()
    after_reset_j = c.energy_of(job_id)
    c.tick(dt_s=2.0, watts=300.0)
    assert before_j <= after_reset_j
    assert c.energy_of(job_id) == pytest.approx(after_reset_j + 2 * 2 * 300.0)


def test_stored_books_with_impossible_values_are_not_carried_forward(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Cluster()
    job_id = placed_job(c)
    job = c.shell.job(job_id)
    assert job is not None
    stored = stored_job(job, measure_job(c.shell.nodes, job))
    ended = replace(stored, phase="cancelled", final=True, ended_at_s=c.t, shards=())
    assert restored_job(ended, c.t, c.t).final == (ended.energy_j, ended.work_units)
    with caplog.at_level(logging.WARNING):
        poisoned = restored_job(replace(ended, energy_j=2e17), c.t, c.t)
    assert poisoned.final is not None and poisoned.final[0] == 0.0
    assert any("impossible" in r.getMessage() for r in caplog.records)
