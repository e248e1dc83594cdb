"""What a shard reports of itself (``ShardSample.phase``, and the older string ``state``).

One vocabulary for the agents that report it (``workers``), the simulator's shards and the
controller that reads it: running, done (finished its work), stopped (on request) or
failed. On the wire the enum ``greenllm.v1.ShardState`` goes beside the string, which
agents keep sending for outside tools and older controllers; a controller reads the enum
and falls back to the string from an older agent.
"""

from __future__ import annotations

from enum import StrEnum

from greenllm.proto.v1 import agent_pb2


class ShardState(StrEnum):
    """A shard's own state."""

    RUNNING = "running"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def wire(self) -> agent_pb2.ShardState:
        """Its ``greenllm.v1.ShardState`` value."""
        value: agent_pb2.ShardState = getattr(agent_pb2, f"SHARD_STATE_{self.name}")
        return value


def reported_state(sample: agent_pb2.ShardSample) -> ShardState:
    """The state a sample reports: its enum, else its string (an older agent), else
    running (an agent that sends neither runs its shards). The controller refuses a
    string it does not know when the telemetry comes in.

    Raises:
        ValueError: The string is not a shard state.
    """
    if sample.phase:
        return ShardState[agent_pb2.ShardState.Name(sample.phase).removeprefix("SHARD_STATE_")]
    return ShardState(sample.state or ShardState.RUNNING)
