"""Controller state: registration, ingestion, command/ack bookkeeping, and what decide()
is fed (no sockets)."""

from __future__ import annotations

import json
import math

import grpc
import pytest

from greenllm.config import parse_cluster_config
from greenllm.devices.discovery import simulated_gpus
from greenllm.proto.v1 import agent_pb2
from scheduler.server.errors import BadInput
from scheduler.server.jobs import JobTable
from scheduler.server.loop import ControlLoop
from scheduler.server.state import ClusterState
from workers.agent import devices

CONFIG = {
    "nodes": [
        {"name": "a", "gpus": [{"type": "A100-SXM4", "count": 2}]},
        {"name": "b", "gpus": [{"type": "L4", "count": 1}]},
    ],
    "budget": {"budget_w": 700, "reserve_w": 50},
    "policy": "uniform",
}


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def config():
    return parse_cluster_config(CONFIG)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(config, clock) -> ClusterState:
    return ClusterState(config, stale_after_s=1.0, clock=clock)


def _register(config, node: str) -> agent_pb2.Register:
    return agent_pb2.Register(node=node, gpus=devices.inventory(simulated_gpus(config.node(node))))


def _telemetry(config, node: str, **column_overrides: list[float]) -> agent_pb2.TelemetryBatch:
    cols = devices.sample(simulated_gpus(config.node(node)))
    for name, values in column_overrides.items():
        del getattr(cols, name)[:]
        getattr(cols, name).extend(values)
    return agent_pb2.TelemetryBatch(gpus=cols)


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(BadInput) as info:
        fn()
    return info.value.code


def test_registration_errors(config, state) -> None:
    unknown = _register(config, "a")
    unknown.node = "zz"
    assert _code(lambda: state.register(unknown)) == grpc.StatusCode.NOT_FOUND
    state.register(_register(config, "a"))
    assert _code(lambda: state.register(_register(config, "a"))) == grpc.StatusCode.ALREADY_EXISTS
    wrong = _register(config, "b")
    wrong.gpus[0].type = "H100-SXM"
    assert _code(lambda: state.register(wrong)) == grpc.StatusCode.FAILED_PRECONDITION
    gap = _register(config, "b")
    gap.gpus[0].index = 3
    assert _code(lambda: state.register(gap)) == grpc.StatusCode.INVALID_ARGUMENT
    bad_limit = _register(config, "b")
    bad_limit.gpus[0].power_limit_w = math.nan
    assert _code(lambda: state.register(bad_limit)) == grpc.StatusCode.INVALID_ARGUMENT


def test_ingest_is_all_or_nothing(config, state) -> None:
    session = state.register(_register(config, "a"))
    state.ingest(session, _telemetry(config, "a"))
    before = [g.latest for g in state.nodes["a"].gpus]
    bad = _telemetry(config, "a", power_w=[10.0, -1.0])
    assert _code(lambda: state.ingest(session, bad)) == grpc.StatusCode.INVALID_ARGUMENT
    assert [g.latest for g in state.nodes["a"].gpus] == before
    assert state.samples_ingested == 2


def test_latest_reading_per_gpu_wins(config, state) -> None:
    session = state.register(_register(config, "b"))
    batch = _telemetry(config, "b")
    cols = batch.gpus
    for name in ("index", "timestamp_s", "energy_j", "power_limit_w", "sm_clock_mhz"):
        getattr(cols, name).append(getattr(cols, name)[0])
    for name in ("utilization_pct", "temperature_c", "memory_used_mib"):
        getattr(cols, name).append(0.0)
    cols.power_w.append(33.0)
    state.ingest(session, batch)
    assert state.nodes["b"].gpus[0].latest.power_w == 33.0
    assert state.samples_ingested == 2


def test_command_ack_bookkeeping(config, state) -> None:
    session = state.register(_register(config, "a"))
    lower = agent_pb2.Command(
        set_power_limit=agent_pb2.SetPowerLimit(gpu_index=1, power_limit_w=150)
    )
    cid = state.send("a", lower)
    gpu = state.nodes["a"].gpus[1]
    assert gpu.pending_limit_w() == 150 and gpu.acked_limit_w == 400
    state.ingest(session, _telemetry(config, "a"))  # sampled before the command: no effect
    assert gpu.acked_limit_w == 400 and gpu.pending_limit_w() == 150

    state.flush()
    message = session.outbox.get_nowait()
    assert [c.command_id for c in message.commands.commands] == [cid]

    state.on_ack(session, agent_pb2.CommandAck(command_id=cid, success=True))
    assert gpu.acked_limit_w == 150 and gpu.pending_limit_w() is None
    raise_cmd = agent_pb2.Command(
        set_power_limit=agent_pb2.SetPowerLimit(gpu_index=1, power_limit_w=300)
    )
    cid2 = state.send("a", raise_cmd)
    state.on_ack(session, agent_pb2.CommandAck(command_id=cid2, success=False, reason="no"))
    assert gpu.acked_limit_w == 150, "a failed command leaves the acked limit"
    unknown = agent_pb2.CommandAck(command_id=999, success=True)
    assert _code(lambda: state.on_ack(session, unknown)) == grpc.StatusCode.INVALID_ARGUMENT


def test_no_stream_no_command(config, state) -> None:
    cmd = agent_pb2.Command(set_power_limit=agent_pb2.SetPowerLimit(gpu_index=0, power_limit_w=150))
    assert state.send("a", cmd) is None
    assert state.pending == {}


def test_observed_state_accounts_stale_nodes_safely(config, state, clock) -> None:
    loop = ControlLoop(state, JobTable())
    session = state.register(_register(config, "a"))
    state.ingest(session, _telemetry(config, "a"))
    observed = {g.key: g for g in loop.observed(clock()).gpus}
    share_l4_w = config.failsafe_limit_w("L4")
    never = observed[("b", 0)]
    assert never.stale and never.acked_limit_w == share_l4_w
    live = observed[("a", 0)]
    assert not live.stale and live.acked_limit_w == 400

    state.nodes["a"].gpus[0].acked_limit_w = 100  # lowered earlier
    clock.now_s += 5  # telemetry stops
    stale = {g.key: g for g in loop.observed(clock()).gpus}[("a", 0)]
    assert stale.stale
    assert stale.acked_limit_w == max(100, config.failsafe_limit_w("A100-SXM4"))


def test_step_lowers_first_and_flushes_per_node(config, state, clock) -> None:
    loop = ControlLoop(state, JobTable())
    sessions = {n: state.register(_register(config, n)) for n in ("a", "b")}
    for node, session in sessions.items():
        state.ingest(session, _telemetry(config, node))
    actions = loop.step()
    assert actions.power_limits, "idle GPUs at their max are lowered"
    usable_w = config.usable_budget_w()
    commanded_w = sum(g.commanded_limit_w for g in loop.observed(clock()).gpus)
    assert commanded_w <= usable_w
    for session in sessions.values():
        kinds = [session.outbox.get_nowait().WhichOneof("body") for _ in range(2)]
        assert kinds == ["commands", "heartbeat"]


def test_jobs_are_validated_and_placed(config, state, clock) -> None:
    jobs = JobTable()
    loop = ControlLoop(state, jobs)
    with pytest.raises(BadInput, match="shards"):
        jobs.submit(json.dumps({"name": "j", "kind": "train", "shards": 0}))
    job = jobs.submit(json.dumps({"name": "j", "kind": "infer", "shards": 2}))
    session = state.register(_register(config, "a"))
    state.ingest(session, _telemetry(config, "a"))
    loop.step()
    assert job.state == "placed" and sorted(job.gpus.values()) == [("a", 0), ("a", 1)]
    batch = session.outbox.get_nowait().commands.commands
    assert [c.WhichOneof("action") for c in batch].count("start_shard") == 2
    loop.cancel(job)
    assert job.state == "cancelled" and not job.gpus


def test_stale_threshold_follows_the_agents_message_interval(config, state, clock) -> None:
    msg = _register(config, "a")
    msg.telemetry_message_interval_s = 2.0
    session = state.register(msg)
    state.ingest(session, _telemetry(config, "a"))
    node = state.nodes["a"]
    clock.now_s += 5.0
    assert not state.is_stale(node, clock())  # 3 message intervals = 6 s
    clock.now_s += 1.5
    assert state.is_stale(node, clock())
    bad = _register(config, "b")
    bad.telemetry_message_interval_s = math.inf
    assert _code(lambda: state.register(bad)) == grpc.StatusCode.INVALID_ARGUMENT
    assert state.nodes["b"].session is None and state.nodes["b"].gpus == []
