"""GPUs described by what they report: a type the catalog does not know joins with a prior
scaled from its reported range, and every GPU is planned within the range it reported."""

from __future__ import annotations

import json

from shellkit import Session

from greenllm.config import parse_cluster_config
from greenllm.devices.catalog import get_spec
from greenllm.proto.v1 import agent_pb2
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.memstore import MemoryStore

CONFIG = {
    "nodes": [{"name": "future", "backend": "nvml"}, {"name": "h200", "backend": "nvml"}],
    "budget": {"budget_w": 5000},
    "policy": "max-throughput",
}


def gpu(index: int, gpu_type: str, lo: float, hi: float) -> agent_pb2.GpuInfo:
    return agent_pb2.GpuInfo(
        index=index,
        type=gpu_type,
        uuid=f"GPU-{gpu_type}-{index}",
        min_power_limit_w=lo,
        max_power_limit_w=hi,
        default_power_limit_w=hi,
        power_limit_w=hi,
        min_sm_clock_mhz=210,
        max_sm_clock_mhz=2100,
        memory_total_mib=196_608,
    )


def limits_sent(messages: list[agent_pb2.ControllerMessage]) -> dict[int, float]:
    out: dict[int, float] = {}
    for msg in messages:
        for c in msg.commands.commands:
            if c.WhichOneof("action") == "set_power_limit":
                out[c.set_power_limit.gpu_index] = c.set_power_limit.power_limit_w
    return out


def test_unknown_and_new_types_register_and_are_planned_within_what_they_report() -> None:
    t = [0.0]
    shell = ControllerShell(parse_cluster_config(CONFIG), MemoryStore(), clock=lambda: t[0])
    future, h200 = Session("future"), Session("h200")
    shell.register(
        agent_pb2.Register(
            node="future", gpus=[gpu(i, "NVIDIA Future GPU", 300, 900) for i in range(2)]
        ),
        future,
    )
    # an H200 whose real minimum is above the catalog's
    catalog_min = get_spec("H200-SXM").min_power_limit_w
    shell.register(
        agent_pb2.Register(
            node="h200", gpus=[gpu(i, "H200-SXM", catalog_min + 150, 700) for i in range(2)]
        ),
        h200,
    )
    assert [g.gpu_type for g in shell.nodes["future"].gpus] == ["NVIDIA Future GPU"] * 2
    assert get_spec("NVIDIA Future GPU").max_power_limit_w == 900
    for name in ("a", "b"):
        operator.submit(shell, json.dumps({"name": name, "kind": "infer", "shards": 1}))
    operator.set_budget(shell, 1500, None)  # tight: every GPU near its minimum
    held = {"future": [900.0, 900.0], "h200": [700.0, 700.0]}
    for _ in range(8):
        t[0] += 0.5
        shell.step()
        for session in (future, h200):  # the agents: apply, ack, report
            acks = []
            for msg in session.sent:
                for c in msg.commands.commands:
                    if c.WhichOneof("action") == "set_power_limit":
                        held[session.node][c.set_power_limit.gpu_index] = (
                            c.set_power_limit.power_limit_w
                        )
                    acks.append(agent_pb2.CommandAck(command_id=c.command_id, success=True))
            session.seen = getattr(session, "seen", []) + session.sent
            session.sent = []
            if acks:
                shell.on_message(
                    session, agent_pb2.AgentMessage(acks=agent_pb2.AckBatch(acks=acks))
                )
            limits = held[session.node]
            samples = agent_pb2.GpuSamples(
                index=[0, 1],
                timestamp_s=[t[0]] * 2,
                power_w=[100.0] * 2,
                energy_j=[t[0]] * 2,
                power_limit_w=limits,
                sm_clock_mhz=[1000.0] * 2,
                utilization_pct=[50.0] * 2,
                temperature_c=[50.0] * 2,
                memory_used_mib=[1.0] * 2,
            )
            shell.on_message(
                session, agent_pb2.AgentMessage(telemetry=agent_pb2.TelemetryBatch(gpus=samples))
            )
    for node, session, lo, hi in (
        ("future", future, 300, 900),
        ("h200", h200, catalog_min + 150, 700),
    ):
        sent = limits_sent(session.seen)
        assert sent, node
        assert all(lo - 1e-6 <= w <= hi + 1e-6 for w in sent.values()), (node, sent)
    assert sum(held["future"]) + sum(held["h200"]) <= 1500 + 1e-6, held
    assert min(held["h200"]) >= catalog_min + 150 and min(held["future"]) >= 300
