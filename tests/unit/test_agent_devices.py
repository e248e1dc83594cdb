"""The agent's device side: commands never raise, failures are precise acks (no sockets)."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from greenllm.config import parse_cluster_config
from greenllm.devices.discovery import simulated_gpus
from greenllm.devices.simulated import SimulatedGPU
from greenllm.proto.v1 import agent_pb2
from workers.agent import devices
from workers.agent.agent import Backoff, NodeAgent

CONFIG = {
    "nodes": [{"name": "n", "gpus": [{"type": "A100-SXM4", "count": 2}]}],
    "budget": {"budget_w": 500, "reserve_w": 20},
    "policy": "uniform",
    "failsafe": {"timeout_s": 0.2},
}


def _limit(index: int, watts: float) -> agent_pb2.Command:
    body = agent_pb2.SetPowerLimit(gpu_index=index, power_limit_w=watts)
    return agent_pb2.Command(command_id=7, set_power_limit=body)


@pytest.fixture
def gpus() -> list[SimulatedGPU]:
    return [SimulatedGPU("A100-SXM4", index=i, node="n") for i in range(2)]


def test_set_power_limit(gpus) -> None:
    ack = devices.apply_command(gpus, "n", _limit(1, 250))
    assert ack.success and ack.command_id == 7 and ack.code == 0
    assert gpus[1].power_limit_w() == 250


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (_limit(5, 250), grpc.StatusCode.NOT_FOUND),
        (_limit(0, 5000), grpc.StatusCode.OUT_OF_RANGE),
        (_limit(0, math.nan), grpc.StatusCode.OUT_OF_RANGE),
        (agent_pb2.Command(command_id=7), grpc.StatusCode.INVALID_ARGUMENT),
        (
            agent_pb2.Command(
                command_id=7, lock_sm_clocks=agent_pb2.LockSmClocks(gpu_index=0, max_sm_clock_mhz=9)
            ),
            grpc.StatusCode.OUT_OF_RANGE,
        ),
        (
            agent_pb2.Command(command_id=7, stop_shard=agent_pb2.StopShard(shard_id="s")),
            grpc.StatusCode.UNIMPLEMENTED,
        ),
    ],
)
def test_failing_command_is_acked_with_its_error(gpus, command, code) -> None:
    ack = devices.apply_command(gpus, "n", command)
    assert not ack.success and ack.code == code.value[0] and ack.reason
    assert [g.power_limit_w() for g in gpus] == [400, 400], "nothing changed"


def test_backend_crash_is_an_internal_ack(gpus, monkeypatch) -> None:
    def boom(_: float) -> None:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(gpus[0], "set_power_limit_w", boom)
    ack = devices.apply_command(gpus, "n", _limit(0, 250))
    assert not ack.success and ack.code == grpc.StatusCode.INTERNAL.value[0]
    assert "driver exploded" in ack.reason


def test_clock_lock_and_reset(gpus) -> None:
    lock = agent_pb2.LockSmClocks(gpu_index=0, min_sm_clock_mhz=210, max_sm_clock_mhz=900)
    assert devices.apply_command(gpus, "n", agent_pb2.Command(lock_sm_clocks=lock)).success
    assert gpus[0].locked_sm_clocks_mhz() == (210, 900)
    reset = agent_pb2.Command(reset_sm_clocks=agent_pb2.ResetSmClocks(gpu_index=0))
    assert devices.apply_command(gpus, "n", reset).success
    assert gpus[0].locked_sm_clocks_mhz() is None


def test_sample_is_column_wise(gpus) -> None:
    cols = devices.sample(gpus)
    assert list(cols.index) == [0, 1]
    assert list(cols.power_limit_w) == [400, 400]
    assert len(cols.memory_used_mib) == 2 and cols.timestamp_s[0] > 1e9


def test_inventory(gpus) -> None:
    infos = devices.inventory(gpus)
    assert [(i.index, i.type, i.min_power_limit_w, i.max_power_limit_w) for i in infos] == [
        (0, "A100-SXM4", 100, 400),
        (1, "A100-SXM4", 100, 400),
    ]


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(initial_s=0.1, max_s=0.5, jitter=0.0)
    delays = [b.grow(None)]
    for _ in range(4):
        delays.append(b.grow(delays[-1]))
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert 0.08 <= Backoff(jitter=0.2).spread(0.1) <= 0.12


@pytest.mark.timeout(10)
def test_telemetry_ticks_travel_in_batches() -> None:
    config = parse_cluster_config({**CONFIG, "telemetry_interval_s": 0.01})
    gpus = simulated_gpus(config.node("n"))
    agent = NodeAgent(config, "n", gpus=gpus, run_shards=False, batch_ticks=3)

    async def scenario() -> agent_pb2.AgentMessage:
        outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        task = asyncio.create_task(agent._stream_telemetry(outbox))
        message = await outbox.get()
        task.cancel()
        return message

    cols = asyncio.run(scenario()).telemetry.gpus
    assert list(cols.index) == [0, 1] * 3
    assert cols.timestamp_s[0] < cols.timestamp_s[-1]
