"""A shard's state on the wire: the enum beside the old string, read enum first."""

from __future__ import annotations

import pytest

from greenllm.proto.v1 import agent_pb2
from greenllm.shard_state import ShardState, reported_state
from workers.agent.core import shard_samples
from workers.shards.status import ShardStatus


class Runner:
    def __init__(self, statuses: list[ShardStatus]) -> None:
        self._statuses = statuses

    def statuses(self) -> list[ShardStatus]:
        return self._statuses


@pytest.mark.parametrize("state", list(ShardState))
def test_an_agent_sends_the_enum_and_the_string(state: ShardState) -> None:
    (sample,) = shard_samples(Runner([ShardStatus("j-0", "j", state=state)]), 0.0)
    assert sample.state == state.value and sample.phase == state.wire
    assert reported_state(sample) is state


def test_the_enum_wins_and_an_older_agents_string_is_read() -> None:
    both = agent_pb2.ShardSample(state="running", phase=agent_pb2.SHARD_STATE_FAILED)
    assert reported_state(both) is ShardState.FAILED
    assert reported_state(agent_pb2.ShardSample(state="done")) is ShardState.DONE
    assert reported_state(agent_pb2.ShardSample()) is ShardState.RUNNING  # sends neither
    with pytest.raises(ValueError):
        reported_state(agent_pb2.ShardSample(state="exploded"))


def test_the_controller_refuses_a_state_it_does_not_know() -> None:
    """A stream that reports a shard in a state of its own ends with a clear status; the
    old code took it for a shard that runs without progress."""
    import grpc

    from greenllm.config import parse_cluster_config
    from scheduler.shell.controller import ControllerShell
    from scheduler.shell.errors import BadInput
    from scheduler.shell.memstore import MemoryStore
    from tests.unit.shellkit import Session

    config = parse_cluster_config(
        {
            "nodes": [{"name": "n", "gpus": [{"type": "L4", "count": 1}]}],
            "budget": {"budget_w": 100},
        }
    )
    shell = ControllerShell(config, MemoryStore(), clock=lambda: 0.0, wall_clock=lambda: 0.0)
    gpu = agent_pb2.GpuInfo(
        index=0, type="L4", uuid="u", min_power_limit_w=40, max_power_limit_w=72,
        default_power_limit_w=72, power_limit_w=72, failsafe_limit_w=72,
    )  # fmt: skip
    session = Session("n")
    shell.register(agent_pb2.Register(node="n", gpus=[gpu]), session)
    bad = agent_pb2.TelemetryBatch(
        shards=[agent_pb2.ShardSample(shard_id="j-0", job_id="j", state="exploded")]
    )
    with pytest.raises(BadInput) as info:
        shell.on_message(session, agent_pb2.AgentMessage(telemetry=bad))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown state 'exploded'" in info.value.message
