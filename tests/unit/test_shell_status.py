"""Status and job listings stay bounded however many jobs were submitted; specs have limits;
operator writes are on disk before they are acknowledged, and refused when they cannot be."""

from __future__ import annotations

import json

import grpc
import pytest

from greenllm.config import parse_cluster_config
from scheduler.shell import operator, status
from scheduler.shell.controller import ControllerShell
from scheduler.shell.errors import BadInput
from scheduler.shell.jobs import RECENT_ENDED
from scheduler.shell.memstore import MemoryStore

CONFIG = {
    "nodes": [{"name": "a", "gpus": [{"type": "L4", "count": 2}]}],
    "budget": {"budget_w": 140, "reserve_w": 0},
    "policy": "uniform",
}
JOB = {"name": "j", "kind": "train"}


class Clock:
    def __init__(self) -> None:
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s


def shell(store: MemoryStore | None = None, config: dict | None = None) -> ControllerShell:  # type: ignore[type-arg]
    return ControllerShell(parse_cluster_config(config or CONFIG), store or MemoryStore(), Clock())


def code(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as info:
        fn()
    return info.value.code


def test_status_lists_active_and_recent_jobs_without_specs() -> None:
    store = MemoryStore()
    s = shell(store)
    for _ in range(300):
        job = operator.submit(s, json.dumps(JOB))
        operator.cancel(s, job.job_id)
    live = operator.submit(s, json.dumps(JOB))
    s.step()
    st = status.cluster_status(s)
    assert len(st.jobs) == RECENT_ENDED + 1 and live.job_id in {j.id for j in st.jobs}
    assert all(j.spec.spec_json == "" for j in st.jobs)
    assert st.jobs_total == 301 and st.ByteSize() < 64 * 1024
    page = status.list_jobs(s, 100, "")
    assert len(page.jobs) == 100 and page.total == 301 and page.next_page_token == "100"
    last = status.list_jobs(s, 1000, "300")
    assert [j.id for j in last.jobs] == ["j-1"] and last.next_page_token == ""
    assert code(lambda: status.list_jobs(s, 10, "nope")) == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(operator.get(s, "j-5").spec_json)["name"] == "j"
    # a controller restarted from that store stays bounded too
    again = shell(store)
    assert len(status.cluster_status(again).jobs) == RECENT_ENDED + 1
    assert again.jobs.last_seq == 301 and operator.submit(again, json.dumps(JOB)).job_id == "j-302"


def test_specs_have_length_limits() -> None:
    s = shell()
    huge = json.dumps({**JOB, "model": "m" * 3_000_000})
    assert code(lambda: operator.submit(s, huge)) == grpc.StatusCode.INVALID_ARGUMENT
    long_model = json.dumps({**JOB, "model": "m" * 5000})
    assert code(lambda: operator.submit(s, long_model)) == grpc.StatusCode.INVALID_ARGUMENT
    deep = "[" * 100_000 + "]" * 100_000
    assert code(lambda: operator.submit(s, deep)) == grpc.StatusCode.INVALID_ARGUMENT
    deep_dict = '{"a":' * 5000 + "1" + "}" * 5000
    assert code(lambda: operator.submit(s, deep_dict)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(lambda: operator.set_policy(s, "x" * 100_000)) == grpc.StatusCode.NOT_FOUND
    assert s.jobs.jobs == {}


def test_operator_writes_are_durable_or_refused() -> None:
    store = MemoryStore()
    s = shell(store)
    operator.set_budget(s, 130.0, None)
    assert store.settings["budget_w"] == 130.0
    store.fail_writes = "disk full"
    assert code(lambda: operator.set_budget(s, 139.0, None)) == grpc.StatusCode.UNAVAILABLE
    assert s.budget_w == 130.0, "a raise that is not on disk is not applied"
    assert code(lambda: operator.set_budget(s, 110.0, None)) == grpc.StatusCode.UNAVAILABLE
    assert s.budget_w == 110.0, "a cut is enforced even when it cannot be kept"
    assert code(lambda: operator.submit(s, json.dumps(JOB))) == grpc.StatusCode.UNAVAILABLE
    assert s.jobs.jobs == {} and s.jobs.last_seq == 0
    assert code(lambda: operator.set_policy(s, "max-throughput")) == grpc.StatusCode.UNAVAILABLE
    s.step()  # heartbeats and control carry on
    assert status.cluster_status(s).state_writable is False
    store.fail_writes = None
    operator.set_policy(s, "max-throughput")
    assert store.settings["policy"] == "max-throughput"
    assert status.cluster_status(s).state_writable is True


def test_a_thousand_nodes_of_eight_gpus() -> None:
    big = {
        "nodes": [
            {"name": f"n{i}", "gpus": [{"type": "H100-SXM", "count": 8}]} for i in range(1000)
        ],
        "budget": {"budget_w": 4_000_000},
    }
    s = shell(config=big)
    s.step()
    st = status.cluster_status(s)
    assert len(st.nodes) == 1000 and st.ByteSize() < 4 * 1024 * 1024


def test_status_is_bounded_by_job_count_and_counts_every_phase() -> None:
    """Issue 19 (b): 2,000 waiting jobs were all inlined in status (3.2 s, 948 KB live). Now
    status lists at most STATUS_JOBS_CAP jobs, the running ones first, says it truncated,
    and counts every job by phase (ended ones the controller no longer holds too)."""
    from pathlib import Path

    from scheduler.policies import load_policy
    from scheduler.sim.engine import Simulation
    from scheduler.sim.scenario import Scenario

    train = {"name": "t", "kind": "train", "shards": 1, "gpu_types": ["H100-SXM"]}
    doc = {
        "duration_s": 5.0,
        "nodes": [{"name": "n", "gpus": [{"type": "H100-SXM", "count": 2}]}],
        "jobs": [{**train, "name": f"t{i}"} for i in range(300)],
        "budget": {"budget_w": 1400, "reserve_w": 0},
    }
    sim = Simulation(Scenario.model_validate(doc), Path("."), load_policy("uniform"), "uniform")
    while sim.k * sim.plane.step_s < 3.0:
        sim.step()
    s = sim.shell
    assert s is not None
    for _ in range(RECENT_ENDED + 20):  # more ended jobs than the controller holds
        operator.cancel(s, operator.submit(s, json.dumps(JOB)).job_id)
    s.step()
    running = [j.job_id for j in s.jobs.active() if j.phase.value == "running"]
    assert len(running) == 2  # one H100 each
    st = status.cluster_status(s)
    assert len(st.jobs) == 100 == st.jobs_cap and st.jobs_truncated  # the documented cap
    assert {j.id for j in st.jobs[:2]} == set(running)  # running first
    assert dict(st.jobs_by_phase) == {
        "running": 2,
        "pending": 298,
        "cancelled": RECENT_ENDED + 20,
    }
    assert sum(st.jobs_by_phase.values()) == st.jobs_total == RECENT_ENDED + 320
    assert st.ByteSize() < 64 * 1024
    small = shell(MemoryStore())
    operator.submit(small, json.dumps(JOB))
    assert not status.cluster_status(small).jobs_truncated
