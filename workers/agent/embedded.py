"""The agent logic for an embedding host (the simulator), reached through the
``greenllm.runtime`` entry point ``embedded-agent`` (scheduler/ never imports workers/)."""

from __future__ import annotations

from collections.abc import Sequence

from greenllm.devices.base import GPU
from greenllm.proto.v1 import agent_pb2
from workers.agent import devices
from workers.agent.core import AgentCore, ShardRunner
from workers.agent.statefile import AgentStateStore, MemoryAgentState


class EmbeddedAgents:
    """Makes agents that run in the host's process, on its clock."""

    @staticmethod
    def new_state() -> MemoryAgentState:
        """An agent state kept in memory (it outlives the agents that use it)."""
        return MemoryAgentState()

    @staticmethod
    def agent(
        node: str,
        gpus: Sequence[GPU],
        failsafe_limits_w: Sequence[float],
        failsafe_timeout_s: float,
        state: AgentStateStore,
        shards: ShardRunner | None,
        message_interval_s: float,
    ) -> AgentCore:
        """The agent of ``node`` (see :class:`workers.agent.core.AgentCore`)."""
        return AgentCore(
            node,
            gpus,
            failsafe_limits_w,
            failsafe_timeout_s,
            state,
            shards,
            "embedded",
            message_interval_s,
        )

    @staticmethod
    def sample(gpus: Sequence[GPU], now_s: float | None = None) -> agent_pb2.GpuSamples:
        """One telemetry tick of ``gpus`` (timestamped ``now_s``; default wall-clock)."""
        return devices.sample(gpus, now_s)
