"""Bounded admission and a control step whose cost does not grow with the queue (issue 25):
10,000 small jobs submitted made the control step's p99 reach 1.9 s, so every cut waited
behind the queue. The benchmark (benchmarks/bench_waiting_jobs.py) times it; these tests
check what bounds it: a cap on waiting jobs, and a step that plans only what can be placed.
"""

from __future__ import annotations

import json

import grpc
import pytest

from greenllm.config import parse_cluster_config
from greenllm.errors import ConfigError
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.errors import BadInput
from scheduler.shell.memstore import MemoryStore

NODES = [{"name": "a", "gpus": [{"type": "L4", "count": 2}]}]
SMALL = json.dumps({"name": "small", "kind": "infer", "shards": 1})


def shell(max_waiting_jobs: int | None = None) -> ControllerShell:
    doc: dict = {"nodes": NODES, "budget": {"budget_w": 140}, "policy": "uniform"}  # type: ignore[type-arg]
    if max_waiting_jobs is not None:
        doc["controller"] = {"max_waiting_jobs": max_waiting_jobs}
    return ControllerShell(parse_cluster_config(doc), MemoryStore(), clock=lambda: 0.0)


def test_submissions_past_the_waiting_cap_are_refused_with_a_clear_message() -> None:
    s = shell(max_waiting_jobs=3)
    for _ in range(3):
        operator.submit(s, SMALL)
    with pytest.raises(BadInput) as refused:
        operator.submit(s, SMALL)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 jobs already wait" in refused.value.message
    assert "controller.max_waiting_jobs = 3" in refused.value.message
    assert s.jobs.last_seq == 3 and len(s.jobs.jobs) == 3, "nothing kept of the refused one"
    operator.cancel(s, "small-1")
    operator.submit(s, SMALL)  # room again


def test_the_cap_is_a_validated_config_key() -> None:
    assert shell().config.controller.max_waiting_jobs == 1000
    with pytest.raises(ConfigError, match="max_waiting_jobs"):
        shell(max_waiting_jobs=0)


def test_the_step_plans_only_what_can_be_placed() -> None:
    """With 10,000 jobs waiting and no agent connected (no free GPU), decide() is shown
    none of them; before, it was shown all 10,000 every step."""
    s = shell(max_waiting_jobs=20_000)
    for _ in range(10_000):
        operator.submit(s, SMALL)
    s.step()
    assert s.jobs.waiting == 10_000
    pending = [j for j in s.observed(0.0).jobs if j.phase == "pending"]
    assert pending == []


def test_what_the_step_shows_of_the_queue_keeps_placement_order() -> None:
    """Of the jobs that fit, the first ones by priority then submission, as many as there
    are free GPUs; a job that can never fit is shown too, so it is reported unplaceable."""
    from scheduler.core.types import GPUState
    from scheduler.shell.jobs import placeable

    s = shell(max_waiting_jobs=100)
    low = [operator.submit(s, SMALL) for _ in range(5)]
    wide = operator.submit(s, json.dumps({"name": "wide", "kind": "infer", "shards": 2}))
    never = operator.submit(s, json.dumps({"name": "never", "kind": "infer", "shards": 3}))
    high = operator.submit(
        s, json.dumps({"name": "hi", "kind": "infer", "shards": 1, "priority": 5})
    )
    free = GPUState("a", 0, "L4", 0.0, 0.0, 72.0)
    busy = GPUState("a", 1, "L4", 0.0, 0.0, 72.0, job_id="other")
    shown = placeable(s.jobs.queue(), (free, busy))
    assert shown == [never, high], "one free GPU: the highest priority job that fits"
    shown = placeable(s.jobs.queue(), (free, GPUState("a", 1, "L4", 0.0, 0.0, 72.0)))
    assert shown == [low[0], never, high], [j.job_id for j in shown]
    assert wide not in shown


def test_the_simulator_lets_every_job_of_a_scenario_wait() -> None:
    """A scenario submitting more jobs than the default cap runs (its simulated controller
    takes a cap that fits them; a refusal would end the run)."""
    from pathlib import Path

    from scheduler.policies import load_policy
    from scheduler.sim.engine import Simulation
    from scheduler.sim.scenario import Scenario

    jobs = [{"name": f"j{i}", "kind": "infer", "shards": 1} for i in range(1200)]
    doc = {"duration_s": 1.0, "nodes": NODES, "jobs": jobs, "budget": {"budget_w": 150}}
    s = Simulation(
        Scenario.model_validate(doc), Path("."), load_policy("max-throughput"), "max-throughput"
    )
    s.run()
    assert s.shell is not None and s.shell.jobs.waiting == 1198
