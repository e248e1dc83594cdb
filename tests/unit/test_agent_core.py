"""The agent's own logic (no sockets, no sleeping: time is passed in): boot bounds, the
fail-safe that only ever lowers, and limits persisted before a raise is applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.devices.simulated import SimulatedGPU
from greenllm.proto.v1 import agent_pb2
from workers.agent.core import AgentCore
from workers.agent.statefile import AgentState, AgentStateError, AgentStateFile, MemoryAgentState

SHARE_W = [240.0, 240.0]


def gpus(limit_w: float = 400.0) -> list[SimulatedGPU]:
    out = [SimulatedGPU("A100-SXM4", index=i, node="n") for i in range(2)]
    for g in out:
        g.set_power_limit_w(limit_w)
    return out


def core(
    state: MemoryAgentState | None = None, devices: list[SimulatedGPU] | None = None
) -> AgentCore:
    return AgentCore("n", devices or gpus(), SHARE_W, 5.0, state or MemoryAgentState())


def limits(agent: AgentCore) -> list[float]:
    return [g.power_limit_w() for g in agent.gpus]


def batch(*commands: agent_pb2.Command) -> agent_pb2.ControllerMessage:
    return agent_pb2.ControllerMessage(commands=agent_pb2.CommandBatch(commands=commands))


def limit(cid: int, index: int, watts: float) -> agent_pb2.Command:
    return agent_pb2.Command(
        command_id=cid,
        set_power_limit=agent_pb2.SetPowerLimit(gpu_index=index, power_limit_w=watts),
    )


def test_boot_lowers_to_the_least_of_failsafe_and_commanded() -> None:
    state = MemoryAgentState()
    state.state = AgentState((250.0, 300.0), (150.0, 350.0))
    agent = core(state)
    assert agent.boot(0.0) == []
    assert limits(agent) == [150.0, 300.0]
    # what each GPU holds after the boot is what it boots at next time
    assert agent.failsafe_limits_w == [250.0, 300.0] and agent.commanded_limits_w == [150.0, 300.0]
    assert state.state == AgentState((250.0, 300.0), (150.0, 300.0))


def test_boot_never_raises_and_a_persisted_failsafe_bounds_it() -> None:
    state = MemoryAgentState()
    state.state = AgentState(tuple(SHARE_W), None)
    agent = core(state, devices=gpus(400.0))
    agent.boot(0.0)
    assert limits(agent) == SHARE_W
    state.state = AgentState(tuple(SHARE_W), None)
    agent = core(state, devices=gpus(200.0))
    agent.boot(0.0)
    assert limits(agent) == [200.0, 200.0]


def test_a_power_cycle_brings_a_gpu_back_at_what_it_held() -> None:
    """A GPU held 200 W below its fail-safe share, never commanded (nothing persisted but
    the share). Its machine power-cycles: the GPU comes back at its default (400 W). Before,
    the agent booted it at the share (240 W) while the controller counted it at 200 W; the
    boot now persists what it holds, so the next boot brings it back to 200 W."""
    state = MemoryAgentState()
    state.state = AgentState(tuple(SHARE_W), None)
    core(state, devices=gpus(200.0)).boot(0.0)
    agent = core(state, devices=gpus(400.0))  # the same state, GPUs at their default
    agent.boot(1.0)
    assert limits(agent) == [200.0, 200.0]


def test_an_agent_with_no_state_boots_each_gpu_at_its_minimum_limit() -> None:
    """Issue 25: a node rebooted without its state file while the controller is down booted
    at its share of the config file's budget, not of the current (lower) one. With nothing
    persisted it cannot know its share now: each GPU starts at its minimum limit (A100: 100 W)
    until the controller speaks."""
    agent = core(devices=gpus(400.0))
    assert agent.boot(0.0) == []
    assert limits(agent) == [100.0, 100.0]
    assert agent.check_failsafe(10.0) is not None and limits(agent) == [100.0, 100.0]
    reply = agent.on_message(batch(limit(1, 0, 300.0)), 11.0)  # the controller speaks
    assert reply is not None and reply.acks.acks[0].success and limits(agent) == [300.0, 100.0]


def test_failsafe_after_silence_only_lowers_and_ends_on_any_message() -> None:
    agent = core(devices=[*gpus(400.0)[:1], *gpus(100.0)[1:]])
    agent.boot(0.0)  # no state: both at their minimum, 100 W
    agent.on_message(batch(limit(1, 0, 300.0)), 1.0)
    assert limits(agent) == [300.0, 100.0]
    assert agent.check_failsafe(5.9) is None and not agent.failsafe_active
    assert "fail-safe" in (agent.check_failsafe(6.1) or "")
    assert agent.failsafe_active and limits(agent) == [240.0, 100.0]
    agent.on_message(agent_pb2.ControllerMessage(heartbeat=agent_pb2.Heartbeat()), 7.0)
    assert not agent.failsafe_active
    assert agent.check_failsafe(11.9) is None
    assert agent.check_failsafe(12.1) is not None, "silent again: the fail-safe acts again"


def test_a_raise_is_persisted_before_it_is_applied() -> None:
    state = MemoryAgentState()
    agent = core(state, gpus(200.0))
    agent.boot(0.0)
    reply = agent.on_message(batch(limit(1, 0, 350.0), limit(2, 1, 150.0)), 1.0)
    assert reply is not None and all(a.success for a in reply.acks.acks)
    assert state.state.commanded_limits_w == (350.0, 150.0)
    assert limits(agent) == [350.0, 150.0]


def test_raises_are_refused_when_the_state_cannot_be_written() -> None:
    state = MemoryAgentState()
    state.state = AgentState((300.0, 300.0), (200.0, 200.0))
    agent = core(state, gpus(200.0))
    agent.boot(0.0)
    state.fail = "disk full"
    reply = agent.on_message(batch(limit(1, 0, 350.0), limit(2, 1, 150.0)), 1.0)
    assert reply is not None
    raise_ack, lower_ack = reply.acks.acks
    assert not raise_ack.success and "cannot write its state" in raise_ack.reason
    assert raise_ack.applied_limit_w == 200.0
    assert lower_ack.success and lower_ack.not_persisted, "applied: what the GPU holds"
    assert limits(agent) == [200.0, 150.0]


def test_a_lowering_that_cannot_be_persisted_is_applied_and_said_so() -> None:
    """Issue 25: a lowering applied during a full disk was acked as failed, and the controller
    took it for a refusal by the device. The ack says what the GPU holds and that it is not
    on disk (with the limit the state on disk boots it at); the agent says so in its
    telemetry and writes its state as soon as it can."""
    state = MemoryAgentState()
    state.state = AgentState((300.0, 300.0), (250.0, 250.0))
    agent = core(state, gpus(250.0))
    agent.boot(0.0)
    state.fail = "No space left on device"
    reply = agent.on_message(batch(limit(1, 1, 150.0)), 1.0)
    assert reply is not None
    (ack,) = reply.acks.acks
    assert ack.success and ack.applied_limit_w == 150.0
    assert ack.not_persisted and ack.persisted_limit_w == 250.0
    assert limits(agent) == [250.0, 150.0]
    told = agent.telemetry(agent_pb2.GpuSamples(), 1.5).telemetry
    assert "No space left" in told.state_error and list(told.persisted_limits_w) == [250.0, 250.0]
    assert agent.check_failsafe(2.0) is None, "still full: nothing to say"
    state.fail = None
    assert "on disk" in (agent.check_failsafe(3.0) or "")
    assert state.state.commanded_limits_w == (250.0, 150.0)
    assert agent.telemetry(agent_pb2.GpuSamples(), 3.5).telemetry.state_error == ""


def test_failsafe_limits_are_persisted_and_checked() -> None:
    state = MemoryAgentState()
    agent = core(state)
    agent.boot(0.0)
    body = agent_pb2.SetFailsafeLimits(limits_w=[200.0, 220.0])
    reply = agent.on_message(batch(agent_pb2.Command(command_id=1, set_failsafe_limits=body)), 1.0)
    assert reply is not None and reply.acks.acks[0].success
    assert state.state.failsafe_limits_w == (200.0, 220.0)
    bad = agent_pb2.SetFailsafeLimits(limits_w=[200.0])
    reply = agent.on_message(batch(agent_pb2.Command(command_id=2, set_failsafe_limits=bad)), 2.0)
    assert reply is not None and not reply.acks.acks[0].success


def test_shard_commands_without_a_runner_are_unimplemented() -> None:
    agent = core()
    start = agent_pb2.StartShard(shard_id="j-1-0", job_id="j-1", gpu_indices=[0], spec_json="{}")
    reply = agent.on_message(batch(agent_pb2.Command(command_id=1, start_shard=start)), 0.0)
    assert reply is not None and not reply.acks.acks[0].success


def test_state_file_round_trips_and_a_damaged_one_reads_as_empty(tmp_path: Path) -> None:
    f = AgentStateFile(tmp_path / "agent-n.json")
    assert f.load() == AgentState()
    f.save(AgentState((1.0, 2.0), (3.0, 4.0)))
    assert AgentStateFile(tmp_path / "agent-n.json").load() == AgentState((1.0, 2.0), (3.0, 4.0))
    (tmp_path / "agent-n.json").write_text('{"failsafe_limits_w": [1, "x"]')
    assert f.load() == AgentState()


def test_unwritable_state_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(AgentStateError, match="blocker"):
        AgentStateFile(tmp_path / "blocker" / "agent-n.json").save(AgentState((1.0,), None))
