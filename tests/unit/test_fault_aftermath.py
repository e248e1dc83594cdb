"""What a brief fault leaves behind (issue 25): each fault ends, and the cluster must be
within its budget, and its books right, at once after, not a minute later. Driven through
the shared shell with the in-memory transport and the real agent logic, checking the
limits the simulated GPUs really hold."""

from __future__ import annotations

from typing import Any

import pytest
from shellkit import NODES, two_node_sim

from scheduler.shell import operator
from scheduler.shell.status import cluster_status
from scheduler.sim.engine import Simulation

WIDE = {
    "name": "t",
    "kind": "train",
    "shards": 4,
    "gpu_types": ["H100-SXM"],
    "train": {"seq_len": 2048},
}


def sim(duration_s: float, **extra: Any) -> Simulation:
    return two_node_sim(duration_s, WIDE, **extra)


def test_a_disk_full_blip_on_an_agent_does_not_hold_a_later_cut_back() -> None:
    """A 1.5 s full disk under an agent's state directory while a cut lowers its GPUs, then a
    deeper cut 3 s after the disk is free: the GPUs hold the lowered limits all along (the
    write failed, the device did not refuse), so the second cut is enforced within a control
    period or two. Before: the lowerings were taken as refusals and those GPUs planned at
    their old limits for 60 s."""
    s = sim(
        12.0,
        failures=[{"node": "busy", "kind": "state_unwritable", "at_s": 3.0, "recover_s": 4.5}],
        budget={
            "budget_w": 2000,
            "reserve_w": 0,
            "schedule": [{"t_s": 3.2, "budget_w": 1600}, {"t_s": 7.5, "budget_w": 1000}],
        },
    )
    period_s = s.plane.control_period_s
    over_after_s = 0.0
    while s.k * s.plane.step_s < 12.0:
        s.step()
        t = s.k * s.plane.step_s
        if t >= 7.5 and s.real_limits_w() > 1000 + 1e-6:
            over_after_s = t - 7.5
    assert over_after_s <= 2 * period_s + 0.3, over_after_s
    assert s.shell is not None and s.shell.refused_lowerings == 0, "a failed write is no refusal"


def test_a_cut_the_gpus_cannot_meet_says_so() -> None:
    """GPUs that refuse lowerings, then a cut below what the rest can absorb: the others go
    to their minimum, and what is still over is reported (the SetBudget answer, status per
    GPU and for the cluster). Before: answered as if met, nothing in status."""
    s = sim(
        8.0,
        failures=[{"node": "busy", "kind": "refuse_lowering", "at_s": 0.0, "below_w": 450.0}],
        budget={"budget_w": 2000, "reserve_w": 0, "schedule": [{"t_s": 2.0, "budget_w": 1600}]},
    )
    while s.k * s.plane.step_s < 4.0:
        s.step()
    shell = s.shell
    assert shell is not None and shell.refused_lowerings > 0
    assert operator.budget_shortfall(shell) == (0.0, ""), "1,600 W can be met"
    operator.set_budget(shell, 1100.0, None)
    over_w, why = operator.budget_shortfall(shell)
    held_w = [g.power_limit_w() for g in s.nodes["busy"].gpus]
    least_w = sum(held_w) + 2 * 200.0  # "idle" at the H100's minimum limit
    assert over_w == pytest.approx(least_w - 1100.0) and over_w > 0
    assert "busy/0" in why and "refused" in why
    while s.k * s.plane.step_s < 8.0:
        s.step()
    assert limits_of(s, "idle") == [200.0, 200.0], "the rest absorbs what it can"
    status = cluster_status(shell)
    assert status.shortfall_w == pytest.approx(s.real_limits_w() - 1100.0)
    busy = next(n for n in status.nodes if n.name == "busy")
    assert all(g.above_plan_w > 0 and "refused" in g.above_plan_reason for g in busy.gpus)
    assert "shortfall" in [e.kind for e in s.store.event_log]


def limits_of(s: Simulation, node: str) -> list[float]:
    return [g.power_limit_w() for g in s.nodes[node].gpus]


def test_a_refusal_floor_ends_when_the_gpu_reports_holding_less() -> None:
    """A GPU that refused a lowering is planned at the limit it held for 60 s; when it
    reports (telemetry) holding less, the floor ends at once. An ack that says the lowering
    was applied is no refusal, whatever its success flag."""
    from greenllm.config import parse_cluster_config
    from greenllm.proto.v1 import agent_pb2
    from scheduler.shell.controller import ControllerShell
    from scheduler.shell.memstore import MemoryStore

    class Session:
        session_id = node = "n"

        def deliver(self, message: agent_pb2.ControllerMessage) -> None:
            pass

        def close(self, reason: str) -> None:
            pass

    doc = {
        "nodes": [{"name": "n", "gpus": [{"type": "H100-SXM", "count": 1}]}],
        "budget": {"budget_w": 700},
    }
    shell = ControllerShell(parse_cluster_config(doc), MemoryStore(), clock=lambda: 0.0)
    info = agent_pb2.GpuInfo(
        index=0, type="H100-SXM", min_power_limit_w=200, max_power_limit_w=700, power_limit_w=500
    )
    session = Session()
    shell.register(agent_pb2.Register(node="n", gpus=[info]), session)  # type: ignore[arg-type]
    gpu = shell.nodes["n"].gpus[0]

    def lower_and_ack(**ack: Any) -> None:
        cid = shell.ledger.send(
            "n",
            agent_pb2.Command(
                set_power_limit=agent_pb2.SetPowerLimit(gpu_index=0, power_limit_w=300)
            ),
            0.0,
        )
        assert cid is not None
        reply = agent_pb2.AckBatch(acks=[agent_pb2.CommandAck(command_id=cid, **ack)])
        shell.on_message(session, agent_pb2.AgentMessage(acks=reply))  # type: ignore[arg-type]

    lower_and_ack(success=False, reason="applied, not persisted", applied_limit_w=300.0)
    assert gpu.floor_w is None and gpu.acked_limit_w == 300.0 and shell.refused_lowerings == 0
    gpu.acked_limit_w = 500.0
    lower_and_ack(success=False, reason="the device refused", applied_limit_w=500.0)
    assert gpu.floor_w == 500.0 and shell.refused_lowerings == 1
    samples = agent_pb2.GpuSamples(
        index=[0],
        timestamp_s=[1.0],
        power_w=[100.0],
        energy_j=[10.0],
        power_limit_w=[250.0],  # holds less now (e.g. an operator's nvidia-smi)
        sm_clock_mhz=[1000.0],
        utilization_pct=[0.0],
        temperature_c=[40.0],
        memory_used_mib=[0.0],
    )
    telemetry = agent_pb2.TelemetryBatch(gpus=samples)
    shell.on_message(session, agent_pb2.AgentMessage(telemetry=telemetry))  # type: ignore[arg-type]
    assert gpu.floor_w is None, "the floor ends as soon as the GPU reports holding less"


def test_nodes_never_seen_are_no_shortfall() -> None:
    """A controller whose agents have not registered yet accounts their GPUs at their
    maximum (safety), but reports no shortfall for them: nothing says they hold anything."""
    from greenllm.config import parse_cluster_config
    from scheduler.shell.controller import ControllerShell
    from scheduler.shell.memstore import MemoryStore

    doc = {"nodes": NODES, "budget": {"budget_w": 1000}}
    shell = ControllerShell(parse_cluster_config(doc), MemoryStore(), clock=lambda: 0.0)
    assert sum(g.accounted_limit_w for g in shell.observed(0.0).gpus) == 4 * 700
    assert operator.budget_shortfall(shell) == (0.0, "")
    assert cluster_status(shell).shortfall_w == 0.0
