"""What unit tests of the controller shell share: a session that keeps what the controller
sends (no transport), and a small two-node scenario driven through the shared shell by the
simulator's in-memory transport and the real agent logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greenllm.proto.v1 import agent_pb2
from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

#: Control timing of the small scenario: fast staleness, fail-safe and loss, slow acks.
CONTROL = {"stale_after_s": 0.8, "failsafe_timeout_s": 1.0, "lost_after_s": 2.0, "ack_delay_s": 0.1}
#: Two nodes of two H100s each.
NODES = [
    {"name": "busy", "gpus": [{"type": "H100-SXM", "count": 2}]},
    {"name": "idle", "gpus": [{"type": "H100-SXM", "count": 2}]},
]


class Session:
    """An in-memory stream to one node: keeps what the controller sends."""

    def __init__(self, node: str) -> None:
        self.session_id, self.node = node, node
        self.sent: list[agent_pb2.ControllerMessage] = []

    def deliver(self, message: agent_pb2.ControllerMessage) -> None:
        self.sent.append(message)

    def close(self, reason: str) -> None:
        pass


def two_node_sim(duration_s: float, job: dict[str, Any], **extra: Any) -> Simulation:
    """``job`` on :data:`NODES` under a 2,000 W budget (max-throughput); ``extra`` adds or
    replaces scenario keys."""
    doc: dict[str, Any] = {
        "duration_s": duration_s,
        "nodes": NODES,
        "jobs": [job],
        "control": CONTROL,
        "budget": {"budget_w": 2000, "reserve_w": 0},
        **extra,
    }
    return Simulation(
        Scenario.model_validate(doc), Path("."), load_policy("max-throughput"), "max-throughput"
    )
