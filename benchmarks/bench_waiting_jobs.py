"""The control step with a queue: 0, 1,000 and 10,000 jobs waiting for GPUs.

In process: the controller shell (the live controller's own step) on the embedded
cluster.yaml (3 nodes, 12 simulated GPUs), with one in-memory session per node that
sends a telemetry reading per GPU before each step and acks every command at once (no
gRPC, no agents: the figures are the step's own cost). Three training jobs of four shards
hold every GPU; then N one-shard inference jobs are submitted and wait. For each N the
benchmark prints the control step's wall time, p50 and p99 over 60 steps, and the time
from a budget cut (to 60 %) to the end of the step that sends its lowerings (goal: p99
under 0.1 s at 10,000 waiting jobs, and a cut enforced as fast as with an empty queue).
Figures, and how they compare with the code before the queue was bounded: docs/faults.md.

``GREENLLM_WAITING_JOBS=0,500 python -m benchmarks waiting_jobs`` runs other sizes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from greenllm.config import load_cluster_config
from greenllm.proto.v1 import agent_pb2
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.memstore import MemoryStore

SIZES = (0, 1_000, 10_000)
STEPS = 60
GOAL_P99_S = 0.1
CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


class Session:
    """An in-memory stream to one node: keeps what the controller sends."""

    def __init__(self, node: str) -> None:
        self.session_id, self.node = node, node
        self.sent: list[agent_pb2.ControllerMessage] = []

    def deliver(self, message: agent_pb2.ControllerMessage) -> None:
        self.sent.append(message)

    def close(self, reason: str) -> None:
        pass


class Bench:
    """A shell, its nodes' sessions and their GPUs' limits."""

    def __init__(self, waiting: int) -> None:
        self.t = 0.0
        config = load_cluster_config(CLUSTER)
        self.config = config.model_copy(
            update={
                "controller": config.controller.model_copy(
                    update={"max_waiting_jobs": waiting + 10}
                )
            }
        )
        self.shell = ControllerShell(
            self.config, MemoryStore(), clock=lambda: self.t, wall_clock=lambda: 1e9 + self.t
        )
        self.sessions: dict[str, Session] = {}
        self.limits: dict[str, list[float]] = {}
        self.energy: dict[str, list[float]] = {}
        for node in self.config.nodes:
            types = node.gpu_types()
            from greenllm.devices.catalog import get_spec

            specs = [get_spec(t) for t in types]
            info = [
                agent_pb2.GpuInfo(
                    index=i,
                    type=s.name,
                    uuid=f"{node.name}-{i}",
                    min_power_limit_w=s.min_power_limit_w,
                    max_power_limit_w=s.max_power_limit_w,
                    default_power_limit_w=s.max_power_limit_w,
                    power_limit_w=s.min_power_limit_w,
                )
                for i, s in enumerate(specs)
            ]
            session = Session(node.name)
            self.sessions[node.name] = session
            self.limits[node.name] = [s.min_power_limit_w for s in specs]
            self.energy[node.name] = [0.0] * len(specs)
            self.shell.register(agent_pb2.Register(node=node.name, gpus=info), session)

    def step(self) -> float:
        """Telemetry, one control step (its wall seconds returned), every command acked."""
        self.t += self.config.control_period_s
        for name, session in self.sessions.items():
            n = len(self.limits[name])
            self.energy[name] = [
                e + 0.5 * w * 0.5 for e, w in zip(self.energy[name], self.limits[name], strict=True)
            ]
            samples = agent_pb2.GpuSamples(
                index=range(n),
                timestamp_s=[1e9 + self.t] * n,
                power_w=[0.5 * w for w in self.limits[name]],
                energy_j=self.energy[name],
                power_limit_w=self.limits[name],
                sm_clock_mhz=[1000] * n,
                utilization_pct=[50] * n,
                temperature_c=[50] * n,
                memory_used_mib=[0] * n,
            )
            self.shell.on_message(
                session, agent_pb2.AgentMessage(telemetry=agent_pb2.TelemetryBatch(gpus=samples))
            )
        started = time.perf_counter()
        self.shell.step()
        took_s = time.perf_counter() - started
        for name, session in self.sessions.items():
            acks = []
            for msg in session.sent:
                for c in msg.commands.commands:
                    if c.WhichOneof("action") == "set_power_limit":
                        body = c.set_power_limit
                        self.limits[name][body.gpu_index] = body.power_limit_w
                    acks.append(agent_pb2.CommandAck(command_id=c.command_id, success=True))
            session.sent.clear()
            if acks:
                self.shell.on_message(
                    session, agent_pb2.AgentMessage(acks=agent_pb2.AckBatch(acks=acks))
                )
        return took_s

    def held_w(self) -> float:
        return sum(sum(v) for v in self.limits.values())


def run(waiting: int) -> dict[str, float]:
    b = Bench(waiting)
    for name, shards, types in (
        ("h100", 4, ["H100-SXM"]),
        ("a100", 4, ["A100-SXM4"]),
        ("l4", 4, ["L4"]),
    ):
        spec = {"name": name, "kind": "train", "shards": shards, "gpu_types": types}
        operator.submit(b.shell, json.dumps(spec))
    for _ in range(6):
        b.step()
    started = time.perf_counter()
    small = json.dumps({"name": "small", "kind": "infer", "shards": 1})
    for _ in range(waiting):
        operator.submit(b.shell, small)
    submit_s = time.perf_counter() - started
    times = [b.step() for _ in range(STEPS)]
    cut_w = 0.6 * b.shell.budget_w
    operator.set_budget(b.shell, cut_w, None)
    started = time.perf_counter()
    steps = 0
    while b.held_w() > cut_w - b.shell.reserve_w + 1e-6 and steps < 10:
        b.step()
        steps += 1
    cut_s = time.perf_counter() - started
    return {
        "p50_s": float(np.percentile(times, 50)),
        "p99_s": float(np.percentile(times, 99)),
        "cut_s": cut_s,
        "cut_steps": steps,
        "submit_ms_per_job": 1e3 * submit_s / max(waiting, 1),
    }


def main() -> None:
    sizes = SIZES
    if os.environ.get("GREENLLM_WAITING_JOBS"):
        sizes = tuple(int(x) for x in os.environ["GREENLLM_WAITING_JOBS"].split(","))
    print(
        f"{'waiting':>8} {'step p50':>10} {'step p99':>10} {'cut (steps)':>14} {'submit/job':>11}"
    )
    for n in sizes:
        r = run(n)
        print(
            f"{n:>8} {1e3 * r['p50_s']:>8.1f}ms {1e3 * r['p99_s']:>8.1f}ms "
            f"{1e3 * r['cut_s']:>8.1f}ms ({r['cut_steps']:.0f}) {r['submit_ms_per_job']:>8.2f}ms"
            f"{'' if n < 10_000 or r['p99_s'] < GOAL_P99_S else '  ABOVE GOAL'}"
        )
